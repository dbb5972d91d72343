//! Quotas: reservation, hierarchy, refusal, release, and racing tasks that
//! must never overspend.
//!
//! The semantic tests are a conformance suite shared by both ledgers: each
//! is one `async fn name(backend: Backend)` body, and [`on_both_ledgers!`]
//! turns it into two tests, `name::in_process` (the default
//! [`InProcessLedger`]) and `name::on_redis` (a [`RedisLedger`] on the test
//! binary's shared `redis-server`, under a key prefix of its own; they fail
//! when `redis-server` cannot be started). Tests of the in-process ledger's
//! own eviction and capacity stay in-process only.

mod support;

use std::time::Duration;

use support::*;
use tenant_core::{ContextIssuer, IsolationTier, TenantId};
use tenant_governance::*;

const HOUR: Duration = Duration::from_secs(3600);

/// The ledger a test runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// The default [`InProcessLedger`].
    InProcess,
    /// A [`RedisLedger`] on [`tenant_testkit::TestRedis::shared`]; `test`
    /// names the key prefix (made unique per ledger).
    #[cfg(feature = "redis")]
    Redis { test: &'static str },
}

impl Backend {
    /// The Redis backend for `test`.
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started (`.ci/setup-services.sh`
    /// installs it).
    #[cfg(feature = "redis")]
    fn redis(test: &'static str) -> Backend {
        if let Err(e) = tenant_testkit::TestRedis::try_shared() {
            panic!("{test}: cannot start redis-server: {e}");
        }
        Backend::Redis { test }
    }

    /// Rounds of the 64-task race: fewer on Redis, where each round takes
    /// longer (every operation is a script call).
    fn race_rounds(self) -> u64 {
        match self {
            Backend::InProcess => 40,
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => 10,
        }
    }

    /// A `Quotas` builder for contexts of `issuer` on a fresh ledger of this
    /// backend: on Redis, a new `RedisLedger` under a key prefix no other
    /// ledger uses.
    fn quotas(self, issuer: &ContextIssuer) -> QuotasBuilder {
        match self {
            Backend::InProcess => Quotas::builder(&issuer.authority()),
            #[cfg(feature = "redis")]
            Backend::Redis { test } => {
                let ledger = RedisLedger::builder()
                    .url(tenant_testkit::TestRedis::shared().url())
                    .prefix(format!("quotas:{test}:{}", uuid::Uuid::new_v4().simple()))
                    .build()
                    .unwrap();
                Quotas::builder(&issuer.authority()).ledger(ledger)
            }
        }
    }
}

/// Two tests from `async fn $name(backend: Backend)`: `$name::in_process`
/// and `$name::on_redis`, with the given `#[tokio::test(...)]` arguments.
macro_rules! on_both_ledgers {
    ($name:ident $(($($runtime:tt)*))?) => {
        mod $name {
            #[tokio::test $(($($runtime)*))?]
            async fn in_process() {
                super::$name(super::Backend::InProcess).await;
            }

            #[cfg(feature = "redis")]
            #[tokio::test $(($($runtime)*))?]
            async fn on_redis() {
                super::$name(super::Backend::redis(stringify!($name))).await;
            }
        }
    };
}

fn tenant_limited(tokens: u64) -> Policy {
    Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(tokens, HOUR)))
}

on_both_ledgers!(
    sixty_four_tasks_with_sub_agents_never_settle_past_the_budget(
        flavor = "multi_thread",
        worker_threads = 4
    )
);

async fn sixty_four_tasks_with_sub_agents_never_settle_past_the_budget(backend: Backend) {
    let issuer = issuer();
    for round in 0..backend.race_rounds() {
        // Tenant limit above the root budget in even rounds, below it in odd
        // rounds, so both levels get to be the binding one.
        let tenant_limit = if round % 2 == 0 { 25_000 } else { 15_000 };
        let quotas = backend
            .quotas(&issuer)
            .policy(tenant_limited(tenant_limit))
            .build()
            .unwrap();
        let root = root(&issuer, TenantId::random(), Some(ROOT_BUDGET));
        let outcome = race(&quotas, &root, 64, round).await;
        let bound = ROOT_BUDGET.min(tenant_limit);
        assert!(
            outcome.settled <= bound,
            "round {round}: settled {} > {bound}",
            outcome.settled
        );
        assert!(
            outcome.settled > bound / 2,
            "round {round}: race barely used the budget: {outcome:?}"
        );
        for (i, s) in outcome.per_sub_agent.iter().enumerate() {
            assert!(*s <= SUB_BUDGET, "round {round}: sub-agent {i} settled {s}");
        }
        assert!(outcome.refusals > 0);
        let tenant = quotas.usage(&root, QuotaLevel::Tenant).await.unwrap();
        assert_eq!(
            tenant.tokens_used, outcome.settled,
            "ledger agrees with the settlements"
        );
        assert_eq!(tenant.tokens_held, 0, "nothing left held");
    }
}

on_both_ledgers!(refused_reservation_changes_nothing);

async fn refused_reservation_changes_nothing(backend: Backend) {
    let issuer = issuer();
    let quotas = backend
        .quotas(&issuer)
        .policy(tenant_limited(1_000))
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    let held = quotas
        .reserve(&ctx, &Estimate::new("m", 600, 0))
        .await
        .unwrap();
    let before = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();

    let err = quotas
        .reserve(&ctx, &Estimate::new("m", 500, 0))
        .await
        .unwrap_err();
    match err {
        Error::QuotaExceeded {
            level,
            resource,
            retry_after,
        } => {
            assert_eq!(level, QuotaLevel::Tenant);
            assert_eq!(resource, Resource::Tokens);
            let retry = retry_after.expect("a periodic budget refills");
            assert!(retry > Duration::ZERO && retry <= HOUR);
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(
        quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap(),
        before
    );
    held.settle(Usage::new(600, 0)).await.unwrap();
}

on_both_ledgers!(tenant_b_does_not_draw_from_tenant_a_budget);

async fn tenant_b_does_not_draw_from_tenant_a_budget(backend: Backend) {
    let issuer = issuer();
    let quotas = backend
        .quotas(&issuer)
        .policy(tenant_limited(1_000))
        .build()
        .unwrap();
    let a = root(&issuer, TenantId::random(), None);
    let b = root(&issuer, TenantId::random(), None);
    quotas
        .reserve(&a, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap()
        .settle(Usage::new(1_000, 0))
        .await
        .unwrap();
    assert!(matches!(
        quotas.reserve(&a, &Estimate::new("m", 1, 0)).await,
        Err(Error::QuotaExceeded {
            level: QuotaLevel::Tenant,
            ..
        })
    ));
    let r = quotas
        .reserve(&b, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    r.settle(Usage::new(1_000, 0)).await.unwrap();
    assert_eq!(
        quotas
            .usage(&a, QuotaLevel::Tenant)
            .await
            .unwrap()
            .tokens_used,
        1_000
    );
    assert_eq!(
        quotas
            .usage(&b, QuotaLevel::Tenant)
            .await
            .unwrap()
            .tokens_used,
        1_000
    );
}

on_both_ledgers!(sub_agent_cannot_pass_its_own_budget_even_with_the_parent_pool_free);

async fn sub_agent_cannot_pass_its_own_budget_even_with_the_parent_pool_free(backend: Backend) {
    let issuer = issuer();
    let quotas = backend.quotas(&issuer).build().unwrap();
    let parent = root(&issuer, TenantId::random(), Some(10_000));
    let child = sub_agent(&parent, "researcher", 500);
    quotas.register(&parent).await.unwrap();
    let r = quotas
        .reserve(&child, &Estimate::new("m", 400, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&child, &Estimate::new("m", 200, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                level: QuotaLevel::Context,
                resource: Resource::Tokens,
                retry_after: None
            }
        ),
        "{err:?}"
    );
    drop(r);
    // Released on drop: the budget is whole again.
    quotas
        .reserve(&child, &Estimate::new("m", 500, 0))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

on_both_ledgers!(sub_agents_together_cannot_pass_the_parent_pool);

async fn sub_agents_together_cannot_pass_the_parent_pool(backend: Backend) {
    let issuer = issuer();
    let quotas = backend.quotas(&issuer).build().unwrap();
    let parent = root(&issuer, TenantId::random(), Some(1_000));
    let handle = TenantQuota::builder()
        .quotas(&quotas)
        .tenant(&parent)
        .build()
        .unwrap();
    let a = handle
        .delegate(&sub_agent(&parent, "a", 800))
        .await
        .unwrap();
    let b = handle
        .delegate(&sub_agent(&parent, "b", 800))
        .await
        .unwrap();
    let ra = a.reserve(&Estimate::new("m", 700, 0)).await.unwrap();
    let err = b.reserve(&Estimate::new("m", 700, 0)).await.unwrap_err();
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            level: QuotaLevel::Context,
            ..
        }
    ));
    let rb = b.reserve(&Estimate::new("m", 300, 0)).await.unwrap();
    ra.settle(Usage::new(700, 0)).await.unwrap();
    rb.settle(Usage::new(300, 0)).await.unwrap();
    assert_eq!(
        handle.usage(QuotaLevel::Context).await.unwrap().tokens_used,
        1_000
    );
}

on_both_ledgers!(revoked_context_cannot_reserve_and_nothing_is_charged);

async fn revoked_context_cannot_reserve_and_nothing_is_charged(backend: Backend) {
    let issuer = issuer();
    let quotas = backend
        .quotas(&issuer)
        .policy(tenant_limited(1_000))
        .build()
        .unwrap();
    let parent = root(&issuer, TenantId::random(), None);
    let child = sub_agent(&parent, "rogue", 1_000);
    issuer.revocations().revoke(&parent);
    let err = quotas
        .reserve(&child, &Estimate::new("m", 10, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(tenant_core::Error::ContextRevoked)),
        "{err:?}"
    );
    // Usage is readable only with a valid context: check with a fresh root of the same tenant.
    let fresh = root(&issuer, parent.tenant(), None);
    let u = quotas.usage(&fresh, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (0, 0));
}

on_both_ledgers!(handle_delegate_rejects_a_context_that_does_not_descend_from_it);

async fn handle_delegate_rejects_a_context_that_does_not_descend_from_it(backend: Backend) {
    let issuer = issuer();
    let quotas = backend.quotas(&issuer).build().unwrap();
    let a = root(&issuer, TenantId::random(), Some(100));
    let b = root(&issuer, TenantId::random(), Some(100));
    let handle = TenantQuota::builder()
        .quotas(&quotas)
        .tenant(&a)
        .build()
        .unwrap();
    let err = handle.delegate(&b).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Context(tenant_core::Error::NotDescendant)
    ));
}

on_both_ledgers!(output_tokens_burn_down_at_the_model_multiplier);

async fn output_tokens_burn_down_at_the_model_multiplier(backend: Backend) {
    let issuer = issuer();
    let rates = ModelRates::new()
        .with(
            "large",
            ModelRate::new().output_weight(5).price_per_1k(1_000, 5_000),
        )
        .with("small", ModelRate::new());
    let policy = Policy::new(
        TenantPolicy::new().tenant_limits(
            Limits::unlimited()
                .tokens_per(10_000, HOUR)
                .cost_per(20_000, HOUR),
        ),
    );
    let quotas = backend
        .quotas(&issuer)
        .policy(policy)
        .rates(rates)
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("large", 1_000, 1_000))
        .await
        .unwrap();
    assert_eq!(
        r.reserved(),
        Amount {
            tokens: 6_000,
            cost_micros: 6_000
        }
    );
    let s = r.settle(Usage::new(1_000, 200)).await.unwrap();
    assert_eq!(
        s.charged,
        Amount {
            tokens: 2_000,
            cost_micros: 2_000
        }
    );
    // 8_000 weighted tokens left: 1_000 in + 1_500 out × 5 = 8_500 is refused.
    let err = quotas
        .reserve(&ctx, &Estimate::new("large", 1_000, 1_500))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            resource: Resource::Tokens,
            ..
        }
    ));
    // The same tokens on an unweighted model fit.
    let _held = quotas
        .reserve(&ctx, &Estimate::new("small", 1_000, 1_500))
        .await
        .unwrap();
}

on_both_ledgers!(cost_budget_refuses_before_the_call);

async fn cost_budget_refuses_before_the_call(backend: Backend) {
    let issuer = issuer();
    let rates = ModelRates::new().default_rate(ModelRate::new().price_per_1k(10_000, 10_000));
    let policy =
        Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().cost_per(15_000, HOUR)));
    let quotas = backend
        .quotas(&issuer)
        .policy(policy)
        .rates(rates)
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    let _r = quotas
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            resource: Resource::Cost,
            level: QuotaLevel::Tenant,
            ..
        }
    ));
}

on_both_ledgers!(request_rate_bucket_refuses_with_the_time_until_refill);

async fn request_rate_bucket_refuses_with_the_time_until_refill(backend: Backend) {
    let issuer = issuer();
    let policy =
        Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().requests(3, 10.0)));
    let quotas = backend.quotas(&issuer).policy(policy).build().unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    for _ in 0..3 {
        quotas
            .reserve(&ctx, &Estimate::new("m", 1, 0))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    match quotas
        .reserve(&ctx, &Estimate::new("m", 1, 0))
        .await
        .unwrap_err()
    {
        Error::QuotaExceeded {
            resource: Resource::Requests,
            retry_after: Some(d),
            ..
        } => {
            assert!(d <= Duration::from_millis(100), "{d:?}");
            tokio::time::sleep(d + Duration::from_millis(5)).await;
        }
        other => panic!("{other:?}"),
    }
    let _held = quotas
        .reserve(&ctx, &Estimate::new("m", 1, 0))
        .await
        .unwrap();
}

on_both_ledgers!(platform_total_binds_across_tenants_and_agent_limit_within_one);

async fn platform_total_binds_across_tenants_and_agent_limit_within_one(backend: Backend) {
    let issuer = issuer();
    let policy =
        Policy::new(TenantPolicy::new().agent_limits(Limits::unlimited().tokens_per(600, HOUR)))
            .platform(Limits::unlimited().tokens_per(1_000, HOUR));
    let quotas = backend.quotas(&issuer).policy(policy).build().unwrap();
    let a = root(&issuer, TenantId::random(), None);
    let b = root(&issuer, TenantId::random(), None);
    let _ra = quotas
        .reserve(&a, &Estimate::new("m", 600, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&a, &Estimate::new("m", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                level: QuotaLevel::Agent,
                ..
            }
        ),
        "{err:?}"
    );
    let err = quotas
        .reserve(&b, &Estimate::new("m", 500, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                level: QuotaLevel::Platform,
                ..
            }
        ),
        "{err:?}"
    );
    let _held = quotas
        .reserve(&b, &Estimate::new("m", 400, 0))
        .await
        .unwrap();
}

on_both_ledgers!(per_tenant_override_beats_the_tier_default);

async fn per_tenant_override_beats_the_tier_default(backend: Backend) {
    let issuer = issuer();
    let vip = TenantId::random();
    let policy = tenant_limited(100)
        .tier(IsolationTier::Silo, TenantPolicy::new())
        .tenant(
            vip,
            TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(10_000, HOUR)),
        );
    let quotas = backend.quotas(&issuer).policy(policy).build().unwrap();
    let normal = root(&issuer, TenantId::random(), None);
    assert!(quotas
        .reserve(&normal, &Estimate::new("m", 1_000, 0))
        .await
        .is_err());
    let vip_ctx = root(&issuer, vip, None);
    let _held = quotas
        .reserve(&vip_ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
}

// In-process only: eviction and its bound are the in-process ledger's own
// (Redis keys expire instead).
#[tokio::test]
async fn idle_tenants_are_evicted_but_busy_ones_keep_their_usage() {
    let issuer = issuer();
    let ledger = std::sync::Arc::new(InProcessLedger::builder().shards(1).capacity(8).build());
    let quotas = Quotas::builder(&issuer.authority())
        .shared_ledger(ledger.clone())
        .policy(Policy::new(
            TenantPolicy::new().tenant_limits(Limits::unlimited().requests(5, 1000.0)),
        ))
        .build()
        .unwrap();
    let busy = root(&issuer, TenantId::random(), None);
    let busy_hold = quotas
        .reserve(&busy, &Estimate::new("m", 10, 0))
        .await
        .unwrap();
    // Many idle tenants: each reserves and releases, then refills.
    for _ in 0..50 {
        let t = root(&issuer, TenantId::random(), None);
        quotas
            .reserve(&t, &Estimate::new("m", 1, 0))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(ledger.len() <= 8, "bounded: {}", ledger.len());
    let u = quotas.usage(&busy, QuotaLevel::Tenant).await.unwrap();
    assert_eq!(
        u.tokens_held, 10,
        "the busy tenant's hold survived eviction"
    );
    busy_hold.release().await.unwrap();
}

// In-process only: the capacity bound is the in-process ledger's own.
#[tokio::test]
async fn ledger_full_of_busy_tenants_fails_closed() {
    let issuer = issuer();
    let ledger = InProcessLedger::builder().shards(1).capacity(2).build();
    let quotas = Quotas::builder(&issuer.authority())
        .ledger(ledger)
        .policy(tenant_limited(1_000))
        .build()
        .unwrap();
    let mut holds = Vec::new();
    for _ in 0..2 {
        let t = root(&issuer, TenantId::random(), None);
        holds.push(quotas.reserve(&t, &Estimate::new("m", 1, 0)).await.unwrap());
    }
    let third = root(&issuer, TenantId::random(), None);
    let err = quotas
        .reserve(&third, &Estimate::new("m", 1, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LedgerUnavailable { .. }), "{err:?}");
}

on_both_ledgers!(usage_beyond_the_reservation_is_charged_and_flagged);

async fn usage_beyond_the_reservation_is_charged_and_flagged(backend: Backend) {
    let issuer = issuer();
    let quotas = backend
        .quotas(&issuer)
        .policy(tenant_limited(1_000))
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 10))
        .await
        .unwrap();
    let s = r.settle(Usage::new(100, 50)).await.unwrap();
    assert!(s.overrun);
    assert_eq!(
        quotas
            .usage(&ctx, QuotaLevel::Tenant)
            .await
            .unwrap()
            .tokens_used,
        150
    );
}
