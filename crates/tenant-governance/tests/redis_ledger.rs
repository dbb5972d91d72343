#![cfg(feature = "redis")]
//! Quotas on the Redis ledger: shared across OS processes, atomic, failing
//! closed when Redis is down and recovering when it comes back; crashes
//! and stalls charged, never forgotten; floods refused to the flooding
//! tenant only.

mod support;

use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

use support::*;
use tenant_core::{ContextIssuer, KeyId, MasterKey, TenantContext, TenantId};
use tenant_governance::*;
use tenant_testkit::TestRedis;

const HOUR: Duration = Duration::from_secs(3600);
const TENANT_LIMIT: u64 = 30_000;
const ROUNDS: usize = 30;
const PROCESSES: usize = 3;
const TASKS_PER_PROCESS: usize = 64;

fn policy() -> Policy {
    Policy::new(
        TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(TENANT_LIMIT, HOUR)),
    )
}

fn ledger(url: &str, prefix: &str) -> RedisLedgerBuilder {
    RedisLedger::builder()
        .url(url)
        .prefix(prefix)
        .op_timeout(Duration::from_millis(300))
}

fn redis_quotas(url: &str, prefix: &str, issuer: &ContextIssuer, policy: Policy) -> Quotas {
    Quotas::builder(&issuer.authority())
        .ledger(ledger(url, prefix).build().unwrap())
        .policy(policy)
        .build()
        .unwrap()
}

/// A plain client connection, to look at or steer the server directly.
async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Entry point of the child processes spawned by
/// `sixty_four_tasks_per_process_across_three_processes_never_settle_past_the_budget`.
/// Ignored when run directly; the parent runs it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "child process of the cross-process race"]
async fn cross_process_race_worker() {
    let Ok(url) = std::env::var("TG_RACE_URL") else {
        return;
    };
    let tokens = std::env::var("TG_RACE_TOKENS").unwrap();
    let me: u64 = std::env::var("TG_RACE_WORKER").unwrap().parse().unwrap();
    let issuer = fixed_issuer();
    let quotas = redis_quotas(&url, "race", &issuer, policy());
    let mut conn = connect(&url).await;
    for (round, token) in tokens.split(',').enumerate() {
        // The same root context in every process, rebuilt from its signed token.
        let root = issuer.accept_token(token).unwrap();
        // Barrier: start each round together so the processes really race.
        let key = format!("barrier:{round}");
        let _: i64 = redis::cmd("INCR")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        loop {
            let n: i64 = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if n >= PROCESSES as i64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let outcome = race(&quotas, &root, TASKS_PER_PROCESS, me * 1000 + round as u64).await;
        // Settlements are deferred: applied before the parent reads Redis.
        quotas.flush().await.unwrap();
        for s in &outcome.per_sub_agent {
            assert!(*s <= SUB_BUDGET);
        }
        println!(
            "RACE-RESULT {round} {} {}",
            outcome.settled, outcome.refusals
        );
    }
}

#[tokio::test]
async fn sixty_four_tasks_per_process_across_three_processes_never_settle_past_the_budget() {
    let redis = TestRedis::start().unwrap();
    let issuer = fixed_issuer();
    let roots: Vec<_> = (0..ROUNDS)
        .map(|_| root(&issuer, TenantId::random(), Some(ROOT_BUDGET)))
        .collect();
    let tokens = roots
        .iter()
        .map(|r| r.to_token().as_str().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            spawn_child(
                "cross_process_race_worker",
                &[
                    ("TG_RACE_URL", redis.url()),
                    ("TG_RACE_TOKENS", tokens.clone()),
                    ("TG_RACE_WORKER", i.to_string()),
                ],
            )
        })
        .collect();
    let mut per_round = vec![0u64; ROUNDS];
    let mut reports = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{text}");
        // The harness may print "test ... " on the same line as the first report.
        for line in text
            .lines()
            .filter_map(|l| l.find("RACE-RESULT").map(|i| &l[i..]))
        {
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            per_round[f[0] as usize] += f[1];
            reports += 1;
        }
    }
    assert_eq!(
        reports,
        ROUNDS * PROCESSES,
        "every process reported every round"
    );
    let quotas = redis_quotas(&redis.url(), "race", &issuer, policy());
    for (round, settled) in per_round.iter().enumerate() {
        assert!(
            *settled <= ROOT_BUDGET,
            "round {round}: {settled} settled across processes > {ROOT_BUDGET}"
        );
        assert!(
            *settled > ROOT_BUDGET / 2,
            "round {round}: only {settled} settled"
        );
        let root_usage = quotas
            .usage(&roots[round], QuotaLevel::Context)
            .await
            .unwrap();
        assert_eq!(
            (root_usage.tokens_used, root_usage.tokens_held),
            (*settled, 0),
            "round {round}: Redis agrees with the children"
        );
    }
}

#[tokio::test]
async fn redis_down_fails_closed_and_a_restart_recovers() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "outage", &issuer, policy());
    let ctx = root(&issuer, TenantId::random(), None);
    quotas
        .reserve(&ctx, &Estimate::new("m", 10, 0))
        .await
        .unwrap()
        .settle(Usage::new(10, 0))
        .await
        .unwrap();
    quotas.flush().await.unwrap();

    redis.stop().unwrap();
    let err = quotas
        .reserve(&ctx, &Estimate::new("m", 10, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LedgerUnavailable { .. }), "{err:?}");
    assert!(matches!(
        quotas.usage(&ctx, QuotaLevel::Tenant).await,
        Err(Error::LedgerUnavailable { .. })
    ));

    redis.restart().unwrap();
    let r = reserve_eventually(&quotas, &ctx, &Estimate::new("m", 10, 0)).await;
    assert!(r.is_accounted());
    r.settle(Usage::new(10, 0)).await.unwrap();
    // The restarted server is empty (no persistence in tests): only the new call counts.
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (10, 0));
}

/// `reserve` until Redis is back.
async fn reserve_eventually(quotas: &Quotas, ctx: &TenantContext, e: &Estimate) -> Reservation {
    let started = Instant::now();
    loop {
        match quotas.reserve(ctx, e).await {
            Ok(r) => return r,
            Err(Error::LedgerUnavailable { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the ledger did not recover: {e}"),
        }
    }
}

/// Fail-open admits against a small per-tenant allowance only, and what it
/// admitted is charged once Redis is back.
#[tokio::test]
async fn a_fail_open_tier_admits_only_its_allowance_while_redis_is_down_and_is_charged_after() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let open = Policy::new(
        TenantPolicy::new()
            .tenant_limits(Limits::unlimited().tokens_per(TENANT_LIMIT, HOUR))
            .on_ledger_failure(FailureMode::open(1_000, 0)),
    );
    let quotas = redis_quotas(&redis.url(), "open", &issuer, open);
    let a = root(&issuer, TenantId::random(), None);
    let b = root(&issuer, TenantId::random(), None);
    redis.stop().unwrap();

    let first = quotas
        .reserve(&a, &Estimate::new("m", 600, 0))
        .await
        .unwrap();
    assert!(!first.is_accounted());
    let err = quotas
        .reserve(&a, &Estimate::new("m", 500, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LedgerUnavailable { reason, .. } if reason.contains("allowance")),
        "600 + 500 is past the allowance: {err:?}"
    );
    // The call used 400: that stays counted until the ledger has it.
    first.settle(Usage::new(400, 0)).await.unwrap();
    assert!(quotas
        .reserve(&a, &Estimate::new("m", 601, 0))
        .await
        .is_err());
    let second = quotas
        .reserve(&a, &Estimate::new("m", 600, 0))
        .await
        .unwrap();
    second.settle(Usage::new(250, 0)).await.unwrap();
    // Another tenant's allowance is its own.
    quotas
        .reserve(&b, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap()
        .settle(Usage::new(1_000, 0))
        .await
        .unwrap();

    redis.restart().unwrap();
    flush_eventually(&quotas).await;
    let u = quotas.usage(&a, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (650, 0));
    let u = quotas.usage(&b, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (1_000, 0));
    // The ledger has answered for the tenant: its allowance is whole again.
    let r = quotas
        .reserve(&a, &Estimate::new("m", 10, 0))
        .await
        .unwrap();
    assert!(r.is_accounted());
    r.release().await.unwrap();
    redis.stop().unwrap();
    let again = quotas
        .reserve(&a, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    assert!(!again.is_accounted());
}

fn crash_policy() -> Policy {
    Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(1_000, HOUR)))
}

fn crash_quotas(url: &str, issuer: &ContextIssuer, lease: Duration) -> Quotas {
    Quotas::builder(&issuer.authority())
        .ledger(ledger(url, "crash").lease_ttl(lease).build().unwrap())
        .policy(crash_policy())
        .build()
        .unwrap()
}

const CRASH_LEASE: Duration = Duration::from_secs(1);

/// Entry point of the child processes of the crash tests: reserves 1 000
/// (the tenant's whole budget) and says `HELD`; then, per `TG_CRASH_STEP`,
/// waits for a line on stdin, settles 600 (flushing it when the step is
/// `settle-flushed`) and says `SETTLED`; then waits to be killed.
#[tokio::test]
#[ignore = "child process of the crash tests"]
async fn crash_holder_worker() {
    let Ok(url) = std::env::var("TG_CRASH_URL") else {
        return;
    };
    let issuer = fixed_issuer();
    let ctx = issuer
        .accept_token(&std::env::var("TG_CRASH_TOKEN").unwrap())
        .unwrap();
    let quotas = crash_quotas(&url, &issuer, CRASH_LEASE);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    println!("HELD");
    let step = std::env::var("TG_CRASH_STEP").unwrap_or_default();
    if step.starts_with("settle") {
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
            .await
            .unwrap()
            .unwrap();
        r.settle(Usage::new(600, 0)).await.unwrap();
        if step == "settle-flushed" {
            quotas.flush().await.unwrap();
        }
        println!("SETTLED");
    } else {
        std::mem::forget(r);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Reads the tenant's state once the crashed holder's lease has expired
/// (a usage read sweeps expired instances).
async fn state_after_the_lease(quotas: &Quotas, ctx: &TenantContext) -> LevelUsage {
    tokio::time::sleep(CRASH_LEASE + Duration::from_millis(100)).await;
    let started = Instant::now();
    loop {
        let u = quotas.usage(ctx, QuotaLevel::Tenant).await.unwrap();
        if u.tokens_held == 0 || started.elapsed() > Duration::from_secs(10) {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn crash_child(redis: &TestRedis, ctx: &TenantContext, step: &str) -> Child {
    spawn_child(
        "crash_holder_worker",
        &[
            ("TG_CRASH_URL", redis.url()),
            ("TG_CRASH_TOKEN", ctx.to_token().as_str().to_owned()),
            ("TG_CRASH_STEP", step.to_owned()),
        ],
    )
}

/// A replica dies (`kill -9`) holding the whole budget mid-call: its hold is
/// charged at its estimate, so a second replica is never admitted for the
/// same budget, during the lease or after it.
#[tokio::test]
async fn a_crashed_holder_is_charged_its_estimate_and_no_replica_gets_its_budget_again() {
    let redis = TestRedis::start().unwrap();
    let issuer = fixed_issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let mut child = crash_child(&redis, &ctx, "hold");
    assert!(wait_for(&mut child, "HELD"), "the holder reserved");
    kill_9(&mut child);

    let replica = crash_quotas(&redis.url(), &issuer, CRASH_LEASE);
    let refused = |r: Result<Reservation>| {
        matches!(
            r,
            Err(Error::QuotaExceeded {
                level: QuotaLevel::Tenant,
                ..
            })
        )
    };
    assert!(refused(
        replica.reserve(&ctx, &Estimate::new("m", 1, 0)).await
    ));
    let u = state_after_the_lease(&replica, &ctx).await;
    assert_eq!(
        (u.tokens_used, u.tokens_held),
        (1_000, 0),
        "the crashed hold is charged, not freed"
    );
    assert!(refused(
        replica.reserve(&ctx, &Estimate::new("m", 1, 0)).await
    ));
}

/// A replica settles (the settlement is applied), then dies: exactly the
/// settlement is charged; the sweep of its lease charges nothing more.
#[tokio::test]
async fn a_crash_after_an_applied_settlement_charges_exactly_the_settlement() {
    let redis = TestRedis::start().unwrap();
    let issuer = fixed_issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let mut child = crash_child(&redis, &ctx, "settle-flushed");
    assert!(wait_for(&mut child, "HELD"));
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(wait_for(&mut child, "SETTLED"));
    kill_9(&mut child);

    let replica = crash_quotas(&redis.url(), &issuer, CRASH_LEASE);
    let u = state_after_the_lease(&replica, &ctx).await;
    assert_eq!((u.tokens_used, u.tokens_held), (600, 0));
    let rest = replica
        .reserve(&ctx, &Estimate::new("m", 400, 0))
        .await
        .unwrap();
    assert!(replica
        .reserve(&ctx, &Estimate::new("m", 1, 0))
        .await
        .is_err());
    rest.release().await.unwrap();
}

/// A replica's settlement is deferred, and the replica dies (`kill -9`)
/// before Redis applied it (Redis holds writes meanwhile, so the call never
/// runs): the lost settlement is re-derived as the hold's estimate, never
/// as nothing.
#[tokio::test]
async fn a_crash_before_a_deferred_settlement_reached_redis_charges_the_estimate() {
    let redis = TestRedis::start().unwrap();
    let issuer = fixed_issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let mut child = crash_child(&redis, &ctx, "settle");
    assert!(wait_for(&mut child, "HELD"));
    let mut admin = connect(&redis.url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5_000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(wait_for(&mut child, "SETTLED"), "settle returned (queued)");
    // Let its batch reach the paused server, then kill the process.
    tokio::time::sleep(Duration::from_millis(50)).await;
    kill_9(&mut child);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();

    let replica = crash_quotas(&redis.url(), &issuer, CRASH_LEASE);
    let u = state_after_the_lease(&replica, &ctx).await;
    assert_eq!(
        (u.tokens_used, u.tokens_held),
        (1_000, 0),
        "the lost settlement of 600 is charged as the estimate of 1 000"
    );
}

#[tokio::test]
async fn a_live_holders_reservation_keeps_counting_past_its_lease_ttl() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let lease = Duration::from_millis(400);
    let holder = crash_quotas(&redis.url(), &issuer, lease);
    let other = crash_quotas(&redis.url(), &issuer, lease);
    let ctx = root(&issuer, TenantId::random(), None);
    let r = holder
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(lease).await;
        assert!(matches!(
            other.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
            Err(Error::QuotaExceeded { .. })
        ));
    }
    r.settle(Usage::new(600, 0)).await.unwrap();
    // Settlements are deferred: another process sees them once applied.
    holder.flush().await.unwrap();
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (600, 0));
}

/// The lease key of the only instance under `prefix`, expired by hand (the
/// holder "stalled" past its lease).
async fn expire_the_only_lease(url: &str, leases: &str) {
    let mut conn = connect(url).await;
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(leases)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let _: i64 = redis::cmd("ZADD")
        .arg(leases)
        .arg(0)
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A holder stalls past its lease: its hold is charged at its estimate (no
/// over-admission while its call may still run), and its late settlement
/// adds only what the usage exceeds the estimate by; nothing is subtracted
/// twice, and the stalled process carries on under a new instance.
#[tokio::test]
async fn a_stalled_holder_is_charged_its_estimate_and_its_late_settlement_only_the_excess() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let holder = crash_quotas(&redis.url(), &issuer, Duration::from_secs(30));
    let other = crash_quotas(&redis.url(), &issuer, Duration::from_secs(30));
    let ctx = root(&issuer, TenantId::random(), None);
    let small = holder
        .reserve(&ctx, &Estimate::new("m", 300, 0))
        .await
        .unwrap();
    let large = holder
        .reserve(&ctx, &Estimate::new("m", 300, 0))
        .await
        .unwrap();
    expire_the_only_lease(&redis.url(), "crash:leases").await;
    // The other process sweeps the stalled instance: both holds charged.
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (600, 0));
    let mine = other
        .reserve(&ctx, &Estimate::new("m", 400, 0))
        .await
        .unwrap();
    assert!(other
        .reserve(&ctx, &Estimate::new("m", 1, 0))
        .await
        .is_err());
    // The stalled holder finishes: a call that used less adds nothing, one
    // that used more adds its excess.
    small.settle(Usage::new(100, 0)).await.unwrap();
    large.settle(Usage::new(350, 0)).await.unwrap();
    holder.flush().await.unwrap();
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (650, 400));
    mine.release().await.unwrap();
    other.flush().await.unwrap();
    // The holder carries on with a new instance.
    holder
        .reserve(&ctx, &Estimate::new("m", 350, 0))
        .await
        .unwrap()
        .settle(Usage::new(350, 0))
        .await
        .unwrap();
    holder.flush().await.unwrap();
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (1_000, 0));
}

/// A hold whose release never reaches Redis while its process lives (here:
/// leaked) is charged at its estimate once its TTL and the lease have
/// passed.
#[tokio::test]
async fn a_leaked_hold_of_a_live_process_is_charged_when_its_ttl_passes() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let lease = Duration::from_millis(150);
    let quotas = Quotas::builder(&issuer.authority())
        .ledger(
            ledger(&redis.url(), "leak")
                .lease_ttl(lease)
                .build()
                .unwrap(),
        )
        .policy(crash_policy())
        .hold_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let ctx = root(&issuer, TenantId::random(), None);
    std::mem::forget(
        quotas
            .reserve(&ctx, &Estimate::new("m", 700, 0))
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let u = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
        if u.tokens_held == 0 || started.elapsed() > Duration::from_secs(10) {
            break u;
        }
    };
    assert_eq!((u.tokens_used, u.tokens_held), (700, 0));
}

#[tokio::test]
async fn a_dropped_reservation_is_released_in_the_background() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "drop", &issuer, policy());
    let ctx = root(&issuer, TenantId::random(), None);
    drop(
        quotas
            .reserve(&ctx, &Estimate::new("m", TENANT_LIMIT, 0))
            .await
            .unwrap(),
    );
    // No flush: the release is applied before the next operation.
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (0, 0));
    let _r = quotas
        .reserve(&ctx, &Estimate::new("m", TENANT_LIMIT, 0))
        .await
        .unwrap();
}

/// Concurrent operations are sent to Redis in batches; every operation of a
/// batch must still be applied exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_operations_charge_exactly_what_was_settled_and_hold_nothing_after() {
    let redis = TestRedis::start().unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let quotas = redis_quotas(&redis.url(), "batch", &issuer, policy());
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(tenant_core::PrincipalId::new("alice").unwrap())
        .capabilities(tenant_core::Capabilities::unrestricted().with_token_budget(10_000))
        .issue()
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let (q, c) = (quotas.clone(), ctx.clone());
        set.spawn(async move {
            let r = q.reserve(&c, &Estimate::new("m", 100, 0)).await.unwrap();
            if i % 4 == 0 {
                r.release().await.unwrap();
                0
            } else {
                r.settle(Usage::new(i, 0)).await.unwrap();
                i
            }
        });
    }
    let mut settled = 0;
    while let Some(n) = set.join_next().await {
        settled += n.unwrap();
    }
    // No flush: the process reads its own deferred settlements, in order.
    let usage = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((usage.tokens_used, usage.tokens_held), (settled, 0));
}

/// `flush` until it succeeds (Redis may still be coming back).
async fn flush_eventually(quotas: &Quotas) {
    let started = Instant::now();
    loop {
        match quotas.flush().await {
            Ok(()) => return,
            Err(Error::LedgerUnavailable { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("deferred settlements never applied: {e}"),
        }
    }
}

async fn script_calls(url: &str) -> u64 {
    let mut conn = connect(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_settlement_made_while_redis_is_down_is_applied_when_it_is_back() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "deferred", &issuer, policy());
    let ctx = root(&issuer, TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 0))
        .await
        .unwrap();
    redis.stop().unwrap();
    // The call happened: its settlement is queued, not lost.
    r.settle(Usage::new(70, 0)).await.unwrap();
    assert!(matches!(
        quotas.flush().await,
        Err(Error::LedgerUnavailable { .. })
    ));
    assert!(matches!(
        quotas.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
        Err(Error::LedgerUnavailable { .. })
    ));
    redis.restart().unwrap();
    flush_eventually(&quotas).await;
    // The restarted server is empty (no persistence in tests): its hold is
    // gone with it, its usage is charged.
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (70, 0));
}

/// Redis takes the settlement but answers only after the client gave up on
/// it (outcome unknown): the client re-sends it, and the re-sends must not
/// charge it again.
#[tokio::test]
async fn a_settlement_whose_answer_was_lost_is_applied_exactly_once() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "once", &issuer, policy());
    let ctx = root(&issuer, TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 500, 0))
        .await
        .unwrap();
    let before = script_calls(&redis.url()).await;
    let mut admin = connect(&redis.url()).await;
    // Three times the ledger's 300 ms operation timeout.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(900)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    r.settle(Usage::new(400, 0)).await.unwrap();
    flush_eventually(&quotas).await;
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (400, 0));
    // The settlement's batch ran, then at least one re-send, then the usage
    // read.
    let calls = script_calls(&redis.url()).await - before;
    assert!(calls >= 3, "only {calls} script calls: nothing was re-sent");
}

/// Reserves 100 and settles `used` on `quotas` (another ledger under
/// `prefix` sees it at once, without a flush); then settles again with
/// Redis down, which must report the outage.
async fn settle_is_applied_on_return_and_reports_an_outage(
    redis: &mut TestRedis,
    quotas: &Quotas,
    issuer: &ContextIssuer,
    prefix: &str,
    used: u64,
) {
    let ctx = root(issuer, TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 0))
        .await
        .unwrap();
    r.settle(Usage::new(used, 0)).await.unwrap();
    let other = redis_quotas(&redis.url(), prefix, issuer, policy());
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (used, 0));
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 0))
        .await
        .unwrap();
    redis.stop().unwrap();
    assert!(matches!(
        r.settle(Usage::new(used, 0)).await,
        Err(Error::LedgerUnavailable { .. })
    ));
}

#[tokio::test]
async fn acknowledged_settlement_is_visible_at_once_and_reports_a_redis_outage() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = Quotas::builder(&issuer.authority())
        .ledger(
            ledger(&redis.url(), "ack")
                .acknowledged_settlement(true)
                .build()
                .unwrap(),
        )
        .policy(policy())
        .build()
        .unwrap();
    settle_is_applied_on_return_and_reports_an_outage(&mut redis, &quotas, &issuer, "ack", 10)
        .await;
}

/// A settlement above its estimate is not left to a crash: it waits until
/// Redis has applied it, even with deferred settlement (and stays queued
/// when Redis is down).
#[tokio::test]
async fn a_settlement_above_its_estimate_waits_for_redis() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "overrun", &issuer, policy());
    settle_is_applied_on_return_and_reports_an_outage(&mut redis, &quotas, &issuer, "overrun", 150)
        .await;
}

/// A process's operations apply in the order it queued them, on any
/// runtime: a dropped reservation's release (and a deferred settlement) is
/// applied before the reservation queued after it, so the whole budget is
/// free again at once, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_reserves_again_right_after_dropping_or_settling_without_waiting() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "order", &issuer, policy());
    let ctx = root(&issuer, TenantId::random(), None);
    let all = Estimate::new("m", TENANT_LIMIT, 0);
    for round in 0..200 {
        let r = quotas
            .reserve(&ctx, &all)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the previous hold was still counted: {e}"));
        if round % 2 == 0 {
            drop(r);
        } else {
            r.settle(Usage::new(0, 0)).await.unwrap();
        }
    }
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (0, 0));
}

/// Level keys expire: each write keeps a key for the longest retention any
/// operation of the batch asks for (here two periods of the hourly budget,
/// plus a minute), and never shortens it.
#[tokio::test]
async fn level_keys_expire_after_their_retention() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "ttl", &issuer, policy());
    let ctx = root(&issuer, TenantId::random(), None);
    quotas
        .reserve(&ctx, &Estimate::new("m", 10, 0))
        .await
        .unwrap()
        .settle(Usage::new(10, 0))
        .await
        .unwrap();
    quotas.flush().await.unwrap();
    let mut conn = connect(&redis.url()).await;
    let key = format!("ttl:lv:t:{}", ctx.tenant());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let retention = 2 * HOUR.as_millis() as i64 + 60_000;
    assert!(
        pttl > retention - 60_000 && pttl <= retention,
        "{key}: PTTL {pttl} ms, expected about {retention} ms"
    );
}

/// While a failed batch's deferred settlement is being re-sent, reservations
/// fail at once and are dropped: none of them runs, unwanted, when Redis is
/// back (the request bucket, which a release does not refill, would show it).
#[tokio::test]
async fn reservations_refused_during_an_outage_take_nothing_when_redis_returns() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let policy = Policy::new(
        TenantPolicy::new().tenant_limits(
            Limits::unlimited()
                .tokens_per(TENANT_LIMIT, HOUR)
                .requests(3, 0.001),
        ),
    );
    let quotas = redis_quotas(&redis.url(), "outage-bucket", &issuer, policy);
    let ctx = root(&issuer, TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 0))
        .await
        .unwrap();
    redis.stop().unwrap();
    r.settle(Usage::new(70, 0)).await.unwrap();
    for _ in 0..5 {
        assert!(matches!(
            quotas.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
            Err(Error::LedgerUnavailable { .. })
        ));
    }
    // The restarted server is empty: a full bucket of 3 requests.
    redis.restart().unwrap();
    flush_eventually(&quotas).await;
    for i in 0..3 {
        quotas
            .reserve(&ctx, &Estimate::new("m", 1, 0))
            .await
            .unwrap_or_else(|e| panic!("request {i} after the outage: {e}"))
            .release()
            .await
            .unwrap();
    }
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (70, 0));
}

/// One tenant floods the ledger with far more concurrent calls than it may
/// have pending: the excess is refused with `Overloaded` at once (its own
/// calls only), while another tenant's calls, made meanwhile through the
/// same ledger, all succeed; nothing is lost for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_gets_overloaded_while_another_tenants_calls_all_succeed() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let unlimited = Policy::new(
        TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(MAX_AMOUNT, HOUR)),
    );
    let quotas = Quotas::builder(&issuer.authority())
        .ledger(
            ledger(&redis.url(), "flood")
                .op_timeout(Duration::from_secs(2))
                .max_pending_per_tenant(16)
                .build()
                .unwrap(),
        )
        .policy(unlimited)
        .build()
        .unwrap();
    let flooder = root(&issuer, TenantId::random(), None);
    let victim = root(&issuer, TenantId::random(), None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let (q, ctx, stop) = (quotas.clone(), flooder.clone(), stop.clone());
        flood.spawn(async move {
            let (mut settled, mut overloaded) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match q.reserve(&ctx, &Estimate::new("m", 5, 0)).await {
                    Ok(r) => {
                        r.settle(Usage::new(3, 0)).await.unwrap();
                        settled += 3;
                    }
                    Err(Error::Overloaded { .. }) => {
                        overloaded += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("the flooding tenant got {e}"),
                }
            }
            (settled, overloaded)
        });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..100 {
        quotas
            .reserve(&victim, &Estimate::new("m", 20, 0))
            .await
            .unwrap_or_else(|e| panic!("call {i} of the other tenant: {e}"))
            .settle(Usage::new(10, 0))
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut settled, mut overloaded) = (0, 0);
    while let Some(r) = flood.join_next().await {
        let (s, o) = r.unwrap();
        settled += s;
        overloaded += o;
    }
    assert!(overloaded > 0, "the flood was never refused");
    quotas.flush().await.unwrap();
    let u = quotas.usage(&flooder, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (settled, 0));
    let u = quotas.usage(&victim, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (1_000, 0));
}
