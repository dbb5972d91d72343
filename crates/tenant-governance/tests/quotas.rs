//! Quotas: reservation, hierarchy, refusal, release, and racing tasks that
//! must never overspend.
//!
//! The semantic tests are a conformance suite shared by every ledger: each
//! is one `async fn name(backend: Backend)` body, and [`on_every_ledger!`]
//! turns it into three tests, `name::in_process` (the default
//! [`InProcessLedger`]), `name::on_redis` (a [`RedisLedger`] on the test
//! binary's shared `redis-server`) and `name::on_redis_cluster` (a
//! `RedisLedger` on the test binary's shared three-master Redis Cluster),
//! each Redis ledger under a key prefix of its own; they fail when
//! `redis-server` cannot be started. Tests of the in-process ledger's own
//! eviction and capacity stay in-process only.

mod support;

use std::sync::Arc;
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
    /// A [`RedisLedger`] on [`tenant_testkit::TestRedisCluster::shared`]
    /// (three masters on loopback).
    #[cfg(feature = "redis")]
    Cluster { test: &'static str },
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

    /// The Redis Cluster backend for `test`.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be started.
    #[cfg(feature = "redis")]
    fn cluster(test: &'static str) -> Backend {
        if let Err(e) = tenant_testkit::TestRedisCluster::try_shared() {
            panic!("{test}: cannot start a Redis Cluster: {e}");
        }
        Backend::Cluster { test }
    }

    /// Rounds of the 64-task race: fewer on Redis, where each round takes
    /// longer (every operation is a script call).
    fn race_rounds(self) -> u64 {
        match self {
            Backend::InProcess => 40,
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => 10,
            #[cfg(feature = "redis")]
            Backend::Cluster { .. } => 6,
        }
    }

    /// A fresh ledger of this backend: on Redis, a new `RedisLedger` under
    /// a key prefix no other ledger uses.
    fn ledger(self) -> Arc<dyn Ledger> {
        match self {
            Backend::InProcess => Arc::new(InProcessLedger::default()),
            #[cfg(feature = "redis")]
            Backend::Redis { test } => Arc::new(
                RedisLedger::builder()
                    .url(tenant_testkit::TestRedis::shared().url())
                    .prefix(format!("quotas:{test}:{}", uuid::Uuid::new_v4().simple()))
                    .build()
                    .unwrap(),
            ),
            #[cfg(feature = "redis")]
            Backend::Cluster { test } => Arc::new(
                RedisLedger::builder()
                    .cluster(tenant_testkit::TestRedisCluster::shared().urls())
                    .prefix(format!("quotas:{test}:{}", uuid::Uuid::new_v4().simple()))
                    .build()
                    .unwrap(),
            ),
        }
    }

    /// A `Quotas` builder for contexts of `issuer` on a fresh ledger of this
    /// backend.
    fn quotas(self, issuer: &ContextIssuer) -> QuotasBuilder {
        Quotas::builder(&issuer.authority()).shared_ledger(self.ledger())
    }
}

/// Three tests from `async fn $name(backend: Backend)`: `$name::in_process`,
/// `$name::on_redis` and `$name::on_redis_cluster`, with the given
/// `#[tokio::test(...)]` arguments.
macro_rules! on_every_ledger {
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

            #[cfg(feature = "redis")]
            #[tokio::test $(($($runtime)*))?]
            async fn on_redis_cluster() {
                super::$name(super::Backend::cluster(stringify!($name))).await;
            }
        }
    };
}

fn tenant_limited(tokens: u64) -> Policy {
    Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(tokens, HOUR)))
}

on_every_ledger!(
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

on_every_ledger!(refused_reservation_changes_nothing);

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

on_every_ledger!(tenant_b_does_not_draw_from_tenant_a_budget);

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

on_every_ledger!(sub_agent_cannot_pass_its_own_budget_even_with_the_parent_pool_free);

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

on_every_ledger!(sub_agents_together_cannot_pass_the_parent_pool);

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

on_every_ledger!(revoked_context_cannot_reserve_and_nothing_is_charged);

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

on_every_ledger!(handle_delegate_rejects_a_context_that_does_not_descend_from_it);

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

on_every_ledger!(output_tokens_burn_down_at_the_model_multiplier);

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

on_every_ledger!(cost_budget_refuses_before_the_call);

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

on_every_ledger!(request_rate_bucket_refuses_with_the_time_until_refill);

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

on_every_ledger!(platform_total_binds_across_tenants_and_agent_limit_within_one);

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

on_every_ledger!(per_tenant_override_beats_the_tier_default);

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

on_every_ledger!(usage_beyond_the_reservation_is_charged_and_flagged);

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

/// (used, held) tokens of `ctx` at `level`.
async fn tokens(
    quotas: &Quotas,
    ctx: &tenant_core::TenantContext,
    level: QuotaLevel,
) -> (u64, u64) {
    let u = quotas.usage(ctx, level).await.unwrap();
    (u.tokens_used, u.tokens_held)
}

fn foreign(err: &Error) -> bool {
    matches!(err, Error::Context(tenant_core::Error::ForeignAuthority))
}

on_every_ledger!(a_context_of_another_issuer_is_refused_everywhere_and_nothing_changes);

/// Contexts minted by another issuer, even one holding the same master key
/// and naming the same tenant, are refused by every entry point before the
/// ledger is touched.
async fn a_context_of_another_issuer_is_refused_everywhere_and_nothing_changes(backend: Backend) {
    let key = [9u8; 32];
    let mint = |_| {
        tenant_core::ContextIssuer::new(tenant_core::MasterKey::from_bytes(
            tenant_core::KeyId::new("k1").unwrap(),
            key,
        ))
    };
    let (platform, rogue) = (mint(()), mint(()));
    let quotas = backend
        .quotas(&platform)
        .policy(tenant_limited(1_000))
        .build()
        .unwrap();
    let tenant = TenantId::random();
    let real = root(&platform, tenant, Some(1_000));
    let forged = root(&rogue, tenant, Some(1_000));
    let forged_child = sub_agent(&forged, "w", 500);

    let err = quotas
        .reserve(&forged, &Estimate::new("m", 10, 0))
        .await
        .unwrap_err();
    assert!(foreign(&err), "{err:?}");
    let err = quotas
        .reserve(&forged_child, &Estimate::new("m", 10, 0))
        .await
        .unwrap_err();
    assert!(foreign(&err), "{err:?}");
    assert!(foreign(&quotas.register(&forged).await.unwrap_err()));
    assert!(foreign(
        &quotas.usage(&forged, QuotaLevel::Tenant).await.unwrap_err()
    ));
    let err = TenantQuota::builder()
        .quotas(&quotas)
        .tenant(&forged)
        .build()
        .unwrap_err();
    assert!(foreign(&err));
    let handle = TenantQuota::builder()
        .quotas(&quotas)
        .tenant(&real)
        .build()
        .unwrap();
    assert!(foreign(&handle.delegate(&forged_child).await.unwrap_err()));

    assert_eq!(tokens(&quotas, &real, QuotaLevel::Tenant).await, (0, 0));
    assert_eq!(tokens(&quotas, &real, QuotaLevel::Context).await, (0, 0));
    // The forged pool was never registered: a real child of the real root
    // cannot use the forged root's id as its pool either.
    quotas
        .reserve(&real, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

on_every_ledger!(amounts_beyond_what_the_ledger_represents_are_refused_and_nothing_changes);

async fn amounts_beyond_what_the_ledger_represents_are_refused_and_nothing_changes(
    backend: Backend,
) {
    let issuer = issuer();
    let rates = ModelRates::new()
        .with("m", ModelRate::new())
        .with("heavy", ModelRate::new().output_weight(3));
    // A request bucket only: the tenant level exists, its tokens unlimited.
    let policy =
        Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().requests(1_000, 0.0)));
    let quotas = backend
        .quotas(&issuer)
        .policy(policy)
        .rates(rates)
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    for estimate in [
        Estimate::new("m", MAX_AMOUNT + 1, 0),
        Estimate::new("m", u64::MAX, u64::MAX),
        // Weighted: 3 × (MAX / 2) is past MAX.
        Estimate::new("heavy", 0, MAX_AMOUNT / 2),
    ] {
        let err = quotas.reserve(&ctx, &estimate).await.unwrap_err();
        assert!(
            matches!(err, Error::AmountOutOfRange { max, .. } if max == MAX_AMOUNT),
            "{estimate:?}: {err:?}"
        );
    }
    assert_eq!(tokens(&quotas, &ctx, QuotaLevel::Tenant).await, (0, 0));

    // Holding MAX is fine; one more token at the same level is not
    // representable, even without a token limit.
    let all = quotas
        .reserve(&ctx, &Estimate::new("m", MAX_AMOUNT, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&ctx, &Estimate::new("m", 1, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AmountOutOfRange { .. }), "{err:?}");
    assert_eq!(
        tokens(&quotas, &ctx, QuotaLevel::Tenant).await,
        (0, MAX_AMOUNT)
    );
    all.release().await.unwrap();

    // A usage past the range is refused by settle, and charged as the most
    // the ledger holds (the call happened): every budget on its path is spent.
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 10, 0))
        .await
        .unwrap();
    let err = r.settle(Usage::new(u64::MAX, 0)).await.unwrap_err();
    assert!(matches!(err, Error::AmountOutOfRange { .. }), "{err:?}");
    assert_eq!(
        tokens(&quotas, &ctx, QuotaLevel::Tenant).await,
        (MAX_AMOUNT, 0)
    );
}

on_every_ledger!(a_request_with_a_non_finite_rate_or_foreign_levels_is_refused_by_the_ledger);

/// The ledger itself (not only `Quotas`) refuses what it cannot represent,
/// before touching any state: a non-finite refill rate, an amount past the
/// range, levels of two tenants in one request.
async fn a_request_with_a_non_finite_rate_or_foreign_levels_is_refused_by_the_ledger(
    backend: Backend,
) {
    let ledger = backend.ledger();
    let (a, b) = (TenantId::random(), TenantId::random());
    let level = |t, refill: f64| LevelSpec {
        key: LevelKey::Tenant(t),
        tokens: Bound::Periodic(PeriodBudget {
            limit: 1_000,
            period: HOUR,
        }),
        cost: Bound::Unlimited,
        requests: Some(RateLimit {
            capacity: 5,
            refill_per_second: refill,
        }),
    };
    let request = |levels: Vec<LevelSpec>, tokens| HoldRequest {
        levels: levels.into(),
        amount: Amount {
            tokens,
            cost_micros: 0,
        },
        ttl: Duration::from_secs(60),
    };
    for refill in [f64::NAN, f64::INFINITY, -1.0] {
        let err = ledger
            .reserve(&request(vec![level(a, refill)], 10))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::AmountOutOfRange { .. }),
            "{refill}: {err:?}"
        );
    }
    let err = ledger
        .reserve(&request(vec![level(a, 1.0)], MAX_AMOUNT + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AmountOutOfRange { .. }), "{err:?}");
    let err = ledger
        .reserve(&request(vec![level(a, 1.0), level(b, 1.0)], 10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfiguration(_)), "{err:?}");
    for t in [a, b] {
        assert_eq!(
            ledger.usage(&level(t, 1.0)).await.unwrap(),
            LevelUsage::default()
        );
    }
}

on_every_ledger!(an_unregistered_ancestor_is_an_error_not_an_unlimited_pool);

async fn an_unregistered_ancestor_is_an_error_not_an_unlimited_pool(backend: Backend) {
    let issuer = issuer();
    let quotas = backend.quotas(&issuer).build().unwrap();
    let parent = root(&issuer, TenantId::random(), Some(1_000));
    let (a, b) = (sub_agent(&parent, "a", 800), sub_agent(&parent, "b", 800));
    let err = quotas
        .reserve(&a, &Estimate::new("m", 700, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AncestorNotRegistered), "{err:?}");
    assert_eq!(tokens(&quotas, &a, QuotaLevel::Context).await, (0, 0));
    // Registered, the parent's pool binds the siblings together.
    quotas.register(&parent).await.unwrap();
    let ra = quotas
        .reserve(&a, &Estimate::new("m", 700, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&b, &Estimate::new("m", 700, 0))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            level: QuotaLevel::Context,
            ..
        }
    ));
    assert_eq!(tokens(&quotas, &b, QuotaLevel::Context).await, (0, 0));
    ra.release().await.unwrap();

    // A root without a budget must be registered too (as unlimited).
    let open_root = root(&issuer, TenantId::random(), None);
    let child = sub_agent(&open_root, "c", 500);
    assert!(matches!(
        quotas.reserve(&child, &Estimate::new("m", 10, 0)).await,
        Err(Error::AncestorNotRegistered)
    ));
    quotas.register(&open_root).await.unwrap();
    quotas
        .reserve(&child, &Estimate::new("m", 500, 0))
        .await
        .unwrap()
        .settle(Usage::new(500, 0))
        .await
        .unwrap();
    assert_eq!(tokens(&quotas, &child, QuotaLevel::Context).await, (500, 0));
}

on_every_ledger!(unpriced_models_and_their_aliases_are_refused_where_a_cost_budget_applies);

async fn unpriced_models_and_their_aliases_are_refused_where_a_cost_budget_applies(
    backend: Backend,
) {
    let issuer = issuer();
    let rates = ModelRates::new()
        .with("gpt", ModelRate::new().price_per_1k(1_000, 1_000))
        .alias("gpt-latest", "gpt")
        .alias("ghost", "not-priced");
    let costed =
        Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().cost_per(10_000, HOUR)));
    let quotas = backend
        .quotas(&issuer)
        .policy(costed.clone())
        .rates(rates.clone())
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    for model in ["gpt-4o-2024", "GPT", "ghost", "not-priced"] {
        let err = quotas
            .reserve(&ctx, &Estimate::new(model, 1_000, 0))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ModelUnpriced { model: m } if m == model),
            "{model}: {err:?}"
        );
    }
    assert_eq!(tokens(&quotas, &ctx, QuotaLevel::Tenant).await, (0, 0));
    // An alias of a priced model costs what the model costs.
    let r = quotas
        .reserve(&ctx, &Estimate::new("gpt-latest", 1_000, 0))
        .await
        .unwrap();
    assert_eq!(r.reserved().cost_micros, 1_000);
    r.release().await.unwrap();
    // An explicit default price covers every other name.
    let priced = backend
        .quotas(&issuer)
        .policy(costed)
        .rates(rates.default_rate(ModelRate::new().price_per_1k(5_000, 5_000)))
        .build()
        .unwrap();
    let r = priced
        .reserve(&ctx, &Estimate::new("gpt-4o-2024", 1_000, 0))
        .await
        .unwrap();
    assert_eq!(r.reserved().cost_micros, 5_000);
    // Without a cost budget an unpriced model only burns tokens.
    let tokens_only = backend
        .quotas(&issuer)
        .policy(tenant_limited(10_000))
        .build()
        .unwrap();
    tokens_only
        .reserve(&ctx, &Estimate::new("anything", 1_000, 0))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

on_every_ledger!(a_hold_ends_only_in_the_ledger_that_issued_it);

/// Holds are not `Clone` (a double release does not compile, see
/// `tests/compile_fail/hold_ended_twice.rs`); a hold made by hand, or
/// issued by another ledger, is refused and frees nothing.
async fn a_hold_ends_only_in_the_ledger_that_issued_it(backend: Backend) {
    let (mine, other) = (backend.ledger(), backend.ledger());
    let tenant = TenantId::random();
    let level = LevelSpec {
        key: LevelKey::Tenant(tenant),
        tokens: Bound::Periodic(PeriodBudget {
            limit: 1_000,
            period: HOUR,
        }),
        cost: Bound::Unlimited,
        requests: None,
    };
    let request = HoldRequest {
        levels: vec![level.clone()].into(),
        amount: Amount {
            tokens: 600,
            cost_micros: 0,
        },
        ttl: Duration::from_secs(60),
    };
    let held = mine.reserve(&request).await.unwrap();
    let forged = Hold::new(&request);
    assert!(matches!(
        mine.release(forged).await,
        Err(Error::UnknownHold)
    ));
    let foreign = other.reserve(&request).await.unwrap();
    assert!(matches!(
        mine.settle(foreign, Amount::default()).await,
        Err(Error::UnknownHold)
    ));
    mine.release_detached(Hold::new(&request));
    let u = mine.usage(&level).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (0, 600));
    mine.settle(
        held,
        Amount {
            tokens: 100,
            cost_micros: 0,
        },
    )
    .await
    .unwrap();
    let u = mine.usage(&level).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (100, 0));
}

on_every_ledger!(
    a_poisoned_batch_of_one_tenant_changes_nothing_of_the_others(
        flavor = "multi_thread",
        worker_threads = 2
    )
);

/// Concurrent operations of several tenants share batches; one tenant's
/// invalid operations (amounts past the range, a hold past what a level
/// represents, an absurd usage) are refused on their own and leave every
/// other tenant's state exactly as its valid operations made it.
async fn a_poisoned_batch_of_one_tenant_changes_nothing_of_the_others(backend: Backend) {
    let issuer = issuer();
    let policy =
        Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().requests(100_000, 0.0)));
    let quotas = backend.quotas(&issuer).policy(policy).build().unwrap();
    let honest: Vec<_> = (0..3)
        .map(|_| root(&issuer, TenantId::random(), None))
        .collect();
    let poisoner = root(&issuer, TenantId::random(), None);
    let mut set = tokio::task::JoinSet::new();
    for round in 0..8u64 {
        for (i, ctx) in honest.iter().enumerate() {
            let (q, ctx) = (quotas.clone(), ctx.clone());
            set.spawn(async move {
                let r = q.reserve(&ctx, &Estimate::new("m", 100, 0)).await.unwrap();
                let used = 10 * (i as u64 + 1) + round;
                r.settle(Usage::new(used, 0)).await.unwrap();
                (Some(i), used)
            });
        }
        let (q, ctx) = (quotas.clone(), poisoner.clone());
        set.spawn(async move {
            assert!(matches!(
                q.reserve(&ctx, &Estimate::new("m", MAX_AMOUNT + 1, 0))
                    .await,
                Err(Error::AmountOutOfRange { .. })
            ));
            (None, 0)
        });
    }
    // The poisoner holds MAX, then tries to hold more while the others run.
    let all = quotas
        .reserve(&poisoner, &Estimate::new("m", MAX_AMOUNT, 0))
        .await
        .unwrap();
    for _ in 0..4 {
        let (q, ctx) = (quotas.clone(), poisoner.clone());
        set.spawn(async move {
            assert!(matches!(
                q.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
                Err(Error::AmountOutOfRange { .. })
            ));
            (None, 0)
        });
    }
    let mut expected = [0u64; 3];
    while let Some(r) = set.join_next().await {
        if let (Some(i), used) = r.unwrap() {
            expected[i] += used;
        }
    }
    assert!(all.settle(Usage::new(u64::MAX, 0)).await.is_err());
    for (i, ctx) in honest.iter().enumerate() {
        assert_eq!(
            tokens(&quotas, ctx, QuotaLevel::Tenant).await,
            (expected[i], 0),
            "tenant {i}"
        );
    }
    assert_eq!(
        tokens(&quotas, &poisoner, QuotaLevel::Tenant).await,
        (MAX_AMOUNT, 0)
    );
}

// In-process only: the per-tenant key bound is the in-process ledger's own
// (on Redis a tenant's keys live in its own key group).
#[tokio::test]
async fn one_tenant_cannot_fill_the_in_process_ledger_for_other_tenants() {
    let issuer = issuer();
    let ledger = Arc::new(
        InProcessLedger::builder()
            .shards(1)
            .capacity(64)
            .max_keys_per_tenant(8)
            .build(),
    );
    let quotas = Quotas::builder(&issuer.authority())
        .shared_ledger(ledger.clone())
        .policy(tenant_limited(1_000_000))
        .build()
        .unwrap();
    let greedy = root(&issuer, TenantId::random(), Some(1_000_000));
    let handle = TenantQuota::builder()
        .quotas(&quotas)
        .tenant(&greedy)
        .build()
        .unwrap();
    // Each sub-agent with a budget is one more key of the tenant, held busy.
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..20 {
        let child = sub_agent(&greedy, &format!("w{i}"), 10);
        let sub = handle.delegate(&child).await.unwrap();
        match sub.reserve(&Estimate::new("m", 10, 0)).await {
            Ok(r) => held.push(r),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(Error::Overloaded { .. })),
        "{refused:?}"
    );
    assert!(ledger.len() <= 8);
    // Another tenant in the same (only) shard is served.
    let other = root(&issuer, TenantId::random(), None);
    quotas
        .reserve(&other, &Estimate::new("m", 10, 0))
        .await
        .unwrap()
        .settle(Usage::new(10, 0))
        .await
        .unwrap();
    assert_eq!(tokens(&quotas, &other, QuotaLevel::Tenant).await, (10, 0));
    // The greedy tenant's admitted holds are intact.
    let n = held.len() as u64;
    assert_eq!(
        tokens(&quotas, &greedy, QuotaLevel::Tenant).await,
        (0, 10 * n)
    );
}
