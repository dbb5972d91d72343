#![cfg(feature = "redis")]
//! The Redis ledger on a three-master Redis Cluster: each tenant's keys in
//! one slot, tenants spread over the masters, the platform's level in a
//! slot of its own and never overspent, a crashed replica charged. (The
//! quota semantics suite in `tests/quotas.rs` runs on the cluster too.)

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use support::*;
use tenant_core::{ContextIssuer, TenantContext, TenantId};
use tenant_governance::*;
use tenant_testkit::redis_cluster::key_slot;
use tenant_testkit::TestRedisCluster;

const HOUR: Duration = Duration::from_secs(3600);

fn cluster_quotas(prefix: &str, issuer: &ContextIssuer, policy: Policy, lease: Duration) -> Quotas {
    let ledger = RedisLedger::builder()
        .cluster(TestRedisCluster::shared().urls())
        .prefix(prefix)
        .op_timeout(Duration::from_secs(1))
        .lease_ttl(lease)
        .build()
        .unwrap();
    Quotas::builder(&issuer.authority())
        .ledger(ledger)
        .policy(policy)
        .build()
        .unwrap()
}

/// Every key under `prefix` on each master, by master index.
async fn keys_by_master(prefix: &str) -> Vec<Vec<String>> {
    let cluster = TestRedisCluster::shared();
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        let mut conn = redis::Client::open(cluster.url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push(keys);
    }
    out
}

#[tokio::test]
async fn a_tenants_keys_share_one_slot_and_tenants_spread_over_the_masters() {
    let issuer = issuer();
    let policy = Policy::new(
        TenantPolicy::new()
            .tenant_limits(Limits::unlimited().tokens_per(100_000, HOUR))
            .agent_limits(Limits::unlimited().tokens_per(50_000, HOUR)),
    );
    let prefix = format!("layout{}", uuid::Uuid::new_v4().simple());
    let quotas = cluster_quotas(&prefix, &issuer, policy, Duration::from_secs(30));
    let roots: Vec<TenantContext> = (0..24)
        .map(|_| root(&issuer, TenantId::random(), Some(10_000)))
        .collect();
    for ctx in &roots {
        let handle = TenantQuota::builder()
            .quotas(&quotas)
            .tenant(ctx)
            .build()
            .unwrap();
        let sub = handle
            .delegate(&sub_agent(ctx, "worker", 1_000))
            .await
            .unwrap();
        sub.reserve(&Estimate::new("m", 100, 0))
            .await
            .unwrap()
            .settle(Usage::new(100, 0))
            .await
            .unwrap();
    }
    quotas.flush().await.unwrap();
    let by_master = keys_by_master(&prefix).await;
    let mut masters_of: HashMap<TenantId, HashSet<usize>> = HashMap::new();
    let mut slots_of: HashMap<TenantId, HashSet<u16>> = HashMap::new();
    for (m, keys) in by_master.iter().enumerate() {
        for key in keys {
            let Some(ctx) = roots.iter().find(|c| key.contains(&c.tenant().to_string())) else {
                continue;
            };
            masters_of.entry(ctx.tenant()).or_default().insert(m);
            slots_of
                .entry(ctx.tenant())
                .or_default()
                .insert(key_slot(key.as_bytes()));
        }
    }
    assert_eq!(masters_of.len(), roots.len(), "every tenant has keys");
    for (t, slots) in &slots_of {
        assert_eq!(slots.len(), 1, "tenant {t}: keys in slots {slots:?}");
    }
    let used: HashSet<usize> = masters_of.values().flatten().copied().collect();
    assert!(
        used.len() >= 2,
        "24 tenants all landed on one master: {used:?}"
    );
}

/// A platform limit lives in its own slot; reservations hold there first,
/// then at the tenant's levels, and give the platform hold back when the
/// tenant refuses. Racing tenants never pass the platform limit, and the
/// platform's books equal the sum of the tenants'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_limit_in_another_slot_is_never_passed_and_refusals_give_its_hold_back() {
    let issuer = issuer();
    let policy =
        Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(1_500, HOUR)))
            .platform(Limits::unlimited().tokens_per(5_000, HOUR));
    let prefix = format!("platform{}", uuid::Uuid::new_v4().simple());
    let quotas = cluster_quotas(&prefix, &issuer, policy, Duration::from_secs(30));
    // A refusal at the tenant's levels (checked after the platform's, in
    // another slot) gives the platform hold back.
    let fresh = root(&issuer, TenantId::random(), None);
    let err = quotas
        .reserve(&fresh, &Estimate::new("m", 1_501, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                level: QuotaLevel::Tenant,
                ..
            }
        ),
        "{err:?}"
    );
    // No flush: the release is applied before this process's next operation
    // on the platform's slot.
    assert_eq!(
        quotas.usage(&fresh, QuotaLevel::Platform).await.unwrap(),
        LevelUsage::default()
    );
    assert_eq!(
        quotas.usage(&fresh, QuotaLevel::Tenant).await.unwrap(),
        LevelUsage::default()
    );

    let tenants: Vec<TenantContext> = (0..6)
        .map(|_| root(&issuer, TenantId::random(), None))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..48usize {
        let (q, ctx) = (quotas.clone(), tenants[t % tenants.len()].clone());
        set.spawn(async move {
            let mut rng = Rng((t as u64 + 1) * 7919);
            let (mut settled, mut refused) = (0u64, 0u32);
            while refused < 3 {
                let est = rng.between(50, 300);
                match q.reserve(&ctx, &Estimate::new("m", est, 0)).await {
                    Ok(r) => {
                        refused = 0;
                        let used = rng.between(0, est);
                        r.settle(Usage::new(used, 0)).await.unwrap();
                        settled += used;
                    }
                    Err(Error::QuotaExceeded { level, .. }) => {
                        assert!(matches!(level, QuotaLevel::Platform | QuotaLevel::Tenant));
                        refused += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (ctx.tenant(), settled)
        });
    }
    let mut per_tenant: HashMap<TenantId, u64> = HashMap::new();
    while let Some(r) = set.join_next().await {
        let (t, s) = r.unwrap();
        *per_tenant.entry(t).or_default() += s;
    }
    quotas.flush().await.unwrap();
    let mut sum = 0;
    for ctx in &tenants {
        let u = quotas.usage(ctx, QuotaLevel::Tenant).await.unwrap();
        assert_eq!(
            (u.tokens_used, u.tokens_held),
            (per_tenant[&ctx.tenant()], 0)
        );
        assert!(u.tokens_used <= 1_500);
        sum += u.tokens_used;
    }
    let p = quotas
        .usage(&tenants[0], QuotaLevel::Platform)
        .await
        .unwrap();
    assert_eq!((p.tokens_used, p.tokens_held), (sum, 0));
    assert!(sum <= 5_000, "the platform passed its limit: {sum}");
}

const CRASH_LEASE: Duration = Duration::from_secs(1);

fn crash_policy() -> Policy {
    Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(1_000, HOUR)))
        .platform(Limits::unlimited().tokens_per(1_000_000, HOUR))
}

/// Entry point of the child process of
/// `a_replica_killed_holding_on_the_cluster_is_charged_at_the_platform_and_the_tenant`:
/// reserves 1 000 (two slots: platform and tenant), says `HELD`, waits to
/// be killed.
#[tokio::test]
#[ignore = "child process of the cluster crash test"]
async fn cluster_crash_holder_worker() {
    let Ok(prefix) = std::env::var("TG_CLUSTER_PREFIX") else {
        return;
    };
    let issuer = fixed_issuer();
    let ctx = issuer
        .accept_token(&std::env::var("TG_CLUSTER_TOKEN").unwrap())
        .unwrap();
    let nodes: Vec<String> = std::env::var("TG_CLUSTER_NODES")
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let ledger = RedisLedger::builder()
        .cluster(nodes)
        .prefix(prefix)
        .lease_ttl(CRASH_LEASE)
        .build()
        .unwrap();
    let quotas = Quotas::builder(&issuer.authority())
        .ledger(ledger)
        .policy(crash_policy())
        .build()
        .unwrap();
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    println!("HELD");
    std::mem::forget(r);
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_replica_killed_holding_on_the_cluster_is_charged_at_the_platform_and_the_tenant() {
    let cluster = TestRedisCluster::shared();
    let issuer = fixed_issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let prefix = format!("crash{}", uuid::Uuid::new_v4().simple());
    let mut child = spawn_child(
        "cluster_crash_holder_worker",
        &[
            ("TG_CLUSTER_PREFIX", prefix.clone()),
            ("TG_CLUSTER_TOKEN", ctx.to_token().as_str().to_owned()),
            ("TG_CLUSTER_NODES", cluster.urls().join(",")),
        ],
    );
    assert!(wait_for(&mut child, "HELD"), "the holder reserved");
    kill_9(&mut child);

    let replica = cluster_quotas(&prefix, &issuer, crash_policy(), CRASH_LEASE);
    assert!(matches!(
        replica.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
        Err(Error::QuotaExceeded {
            level: QuotaLevel::Tenant,
            ..
        })
    ));
    tokio::time::sleep(CRASH_LEASE + Duration::from_millis(100)).await;
    // Usage reads sweep expired instances, each in its own slot.
    let started = Instant::now();
    let (tenant, platform) = loop {
        let t = replica.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
        let p = replica.usage(&ctx, QuotaLevel::Platform).await.unwrap();
        if (t.tokens_held == 0 && p.tokens_held == 0) || started.elapsed() > Duration::from_secs(10)
        {
            break (t, p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((tenant.tokens_used, tenant.tokens_held), (1_000, 0));
    assert_eq!((platform.tokens_used, platform.tokens_held), (1_000, 0));
    assert!(replica
        .reserve(&ctx, &Estimate::new("m", 1, 0))
        .await
        .is_err());
}
