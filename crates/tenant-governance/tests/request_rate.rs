//! `RequestRateLimiter`: the per-tenant request-rate check.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenant_core::*;
use tenant_governance::Error;
use tenant_governance::*;

fn issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()))
}

fn ctx(issuer: &ContextIssuer) -> TenantContext {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("alice").unwrap())
        .issue()
        .unwrap()
}

fn limit(capacity: u32, refill_per_second: f64) -> RateLimit {
    RateLimit {
        capacity,
        refill_per_second,
    }
}

#[test]
fn a_tenant_gets_its_burst_then_a_typed_refusal_with_the_refill_time() {
    let issuer = issuer();
    let a = ctx(&issuer);
    let limiter = RequestRateLimiter::builder(&issuer.authority())
        .limit(limit(3, 1.0))
        .build();
    for _ in 0..3 {
        limiter.check(&a).unwrap();
    }
    match limiter.check(&a) {
        Err(Error::QuotaExceeded {
            level: QuotaLevel::Tenant,
            resource: Resource::Requests,
            retry_after: Some(d),
        }) => assert!(d > Duration::from_millis(900) && d <= Duration::from_secs(1)),
        other => panic!("expected a request-rate refusal, got {other:?}"),
    }
}

#[test]
fn one_tenant_exhausting_its_rate_does_not_touch_another_tenants() {
    let issuer = issuer();
    let (a, b) = (ctx(&issuer), ctx(&issuer));
    let limiter = RequestRateLimiter::builder(&issuer.authority())
        .limit(limit(2, 0.0))
        .build();
    limiter.check(&a).unwrap();
    limiter.check(&a).unwrap();
    assert!(matches!(
        limiter.check(&a),
        Err(Error::QuotaExceeded {
            retry_after: None,
            ..
        })
    ));
    limiter.check(&b).unwrap();
    limiter.check(&b).unwrap();
}

#[test]
fn per_tenant_overrides_apply() {
    let issuer = issuer();
    let (a, b) = (ctx(&issuer), ctx(&issuer));
    let limiter = RequestRateLimiter::builder(&issuer.authority())
        .limit(limit(1, 0.0))
        .tenant_limit(b.tenant(), limit(3, 0.0))
        .build();
    limiter.check(&a).unwrap();
    assert!(limiter.check(&a).is_err());
    for _ in 0..3 {
        limiter.check(&b).unwrap();
    }
    assert!(limiter.check(&b).is_err());
}

#[test]
fn sixty_four_threads_racing_one_tenant_never_get_more_than_the_capacity() {
    let issuer = issuer();
    for _ in 0..20 {
        let a = ctx(&issuer);
        let limiter = Arc::new(
            RequestRateLimiter::builder(&issuer.authority())
                .limit(limit(50, 0.0))
                .build(),
        );
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (limiter, admitted, ctx) =
                    (Arc::clone(&limiter), Arc::clone(&admitted), a.clone());
                std::thread::spawn(move || {
                    for _ in 0..4 {
                        if limiter.check_verified(&ctx).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
    }
}

#[test]
fn memory_is_bounded_idle_tenants_are_evicted_and_busy_ones_fail_closed() {
    let issuer = issuer();
    // One shard of two tenants; a fast refill makes a tenant idle quickly.
    let limiter = RequestRateLimiter::builder(&issuer.authority())
        .shards(1)
        .capacity(2)
        .limit(limit(1, 1000.0))
        .build();
    for _ in 0..10 {
        limiter.check(&ctx(&issuer)).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(limiter.len() <= 2);

    // Tenants that are rate-limited right now cannot be forgotten.
    let slow = RequestRateLimiter::builder(&issuer.authority())
        .shards(1)
        .capacity(2)
        .limit(limit(1, 0.001))
        .build();
    slow.check(&ctx(&issuer)).unwrap();
    slow.check(&ctx(&issuer)).unwrap();
    assert!(matches!(
        slow.check(&ctx(&issuer)),
        Err(Error::LedgerUnavailable { .. })
    ));
    assert_eq!(slow.len(), 2);
}

#[test]
fn a_revoked_context_is_refused_and_takes_nothing() {
    let issuer = issuer();
    let a = ctx(&issuer);
    let limiter = RequestRateLimiter::builder(&issuer.authority())
        .limit(limit(1, 0.0))
        .build();
    issuer.revocations().revoke(&a);
    assert!(matches!(limiter.check(&a), Err(Error::Context(_))));
    assert!(limiter.is_empty());
}

#[test]
fn a_context_of_another_issuer_is_refused_and_takes_nothing() {
    let issuer = issuer();
    let rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let real = ctx(&issuer);
    let forged = rogue
        .context()
        .tenant(real.tenant())
        .principal(PrincipalId::new("mallory").unwrap())
        .issue()
        .unwrap();
    let limiter = RequestRateLimiter::builder(&issuer.authority())
        .limit(limit(1, 0.0))
        .build();
    for attempt in [limiter.check(&forged), limiter.check_verified(&forged)] {
        assert!(matches!(
            attempt,
            Err(Error::Context(tenant_core::Error::ForeignAuthority))
        ));
    }
    assert!(limiter.is_empty());
    // The real tenant still has its one request.
    limiter.check(&real).unwrap();
}
