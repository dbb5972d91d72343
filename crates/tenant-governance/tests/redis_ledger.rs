#![cfg(feature = "redis")]
//! Quotas on the Redis ledger: shared across OS processes, atomic, failing
//! closed when Redis is down and recovering when it comes back.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use tenant_core::{ContextIssuer, KeyId, MasterKey, TenantId};
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

fn redis_quotas(url: &str, prefix: &str, policy: Policy) -> Quotas {
    let ledger = RedisLedger::builder()
        .url(url)
        .prefix(prefix)
        .op_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    Quotas::builder()
        .ledger(ledger)
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

fn fixed_issuer() -> (ContextIssuer, String) {
    let key = [7u8; 32];
    (
        ContextIssuer::new(MasterKey::from_bytes(KeyId::new("k1").unwrap(), key)),
        hex::encode(key),
    )
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
    let (issuer, _) = fixed_issuer();
    let quotas = redis_quotas(&url, "race", policy());
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
    let (issuer, _) = fixed_issuer();
    let roots: Vec<_> = (0..ROUNDS)
        .map(|_| root(&issuer, TenantId::random(), Some(ROOT_BUDGET)))
        .collect();
    let tokens = roots
        .iter()
        .map(|r| r.to_token().as_str().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "cross_process_race_worker",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("TG_RACE_URL", redis.url())
                .env("TG_RACE_TOKENS", &tokens)
                .env("TG_RACE_WORKER", i.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
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
    let quotas = redis_quotas(&redis.url(), "race", policy());
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
            root_usage.tokens_used, *settled,
            "round {round}: Redis agrees with the children"
        );
        assert_eq!(root_usage.tokens_held, 0);
    }
}

#[tokio::test]
async fn sixty_four_tasks_in_one_process_on_redis_never_settle_past_the_budget() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "single", policy());
    for round in 0..5 {
        let root = root(&issuer, TenantId::random(), Some(ROOT_BUDGET));
        let outcome = race(&quotas, &root, 64, round).await;
        assert!(outcome.settled <= ROOT_BUDGET, "{outcome:?}");
        let u = quotas.usage(&root, QuotaLevel::Tenant).await.unwrap();
        assert_eq!((u.tokens_used, u.tokens_held), (outcome.settled, 0));
    }
}

#[tokio::test]
async fn redis_down_fails_closed_and_a_restart_recovers() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "outage", policy());
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
    let mut recovered = None;
    for _ in 0..50 {
        match quotas.reserve(&ctx, &Estimate::new("m", 10, 0)).await {
            Ok(r) => {
                recovered = Some(r);
                break;
            }
            Err(Error::LedgerUnavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let r = recovered.expect("the ledger recovers after Redis restarts");
    assert!(r.is_accounted());
    r.settle(Usage::new(10, 0)).await.unwrap();
    // The restarted server is empty (no persistence in tests): only the new call counts.
    assert_eq!(
        quotas
            .usage(&ctx, QuotaLevel::Tenant)
            .await
            .unwrap()
            .tokens_used,
        10
    );
}

#[tokio::test]
async fn a_fail_open_tier_admits_unaccounted_calls_while_redis_is_down() {
    let mut redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let open = Policy::new(
        TenantPolicy::new()
            .tenant_limits(Limits::unlimited().tokens_per(TENANT_LIMIT, HOUR))
            .on_ledger_failure(FailureMode::Open),
    );
    let quotas = redis_quotas(&redis.url(), "open", open);
    let ctx = root(&issuer, TenantId::random(), None);
    redis.stop().unwrap();
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 10, 0))
        .await
        .unwrap();
    assert!(!r.is_accounted());
    r.settle(Usage::new(10, 0)).await.unwrap();
}

fn crash_policy() -> Policy {
    Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(1_000, HOUR)))
}

fn crash_quotas(url: &str, lease: Duration) -> Quotas {
    let ledger = RedisLedger::builder()
        .url(url)
        .prefix("crash")
        .lease_ttl(lease)
        .build()
        .unwrap();
    Quotas::builder()
        .ledger(ledger)
        .policy(crash_policy())
        .build()
        .unwrap()
}

const CRASH_LEASE: Duration = Duration::from_secs(1);

/// Entry point of the child process of
/// `a_crashed_holders_reservation_stops_counting_when_its_lease_expires`:
/// reserves the tenant's whole budget, says so, and waits to be killed.
#[tokio::test]
#[ignore = "child process of the crash test"]
async fn crash_holder_worker() {
    let Ok(url) = std::env::var("TG_CRASH_URL") else {
        return;
    };
    let (issuer, _) = fixed_issuer();
    let ctx = issuer
        .accept_token(&std::env::var("TG_CRASH_TOKEN").unwrap())
        .unwrap();
    let quotas = crash_quotas(&url, CRASH_LEASE);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    println!("HELD");
    tokio::time::sleep(Duration::from_secs(60)).await;
    drop(r);
}

#[tokio::test]
async fn a_crashed_holders_reservation_stops_counting_when_its_lease_expires() {
    use std::io::BufRead;
    let redis = TestRedis::start().unwrap();
    let (issuer, _) = fixed_issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_holder_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TG_CRASH_URL", redis.url())
        .env("TG_CRASH_TOKEN", ctx.to_token().as_str())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let held = stdout
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l.contains("HELD"));
    assert!(held, "the holder reserved");
    // The holder dies mid-call: no settle, no release, no more lease refreshes.
    child.kill().unwrap();
    child.wait().unwrap();

    let quotas = crash_quotas(&redis.url(), CRASH_LEASE);
    assert!(matches!(
        quotas.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
        Err(Error::QuotaExceeded { .. })
    ));
    let started = std::time::Instant::now();
    let r = loop {
        match quotas.reserve(&ctx, &Estimate::new("m", 1_000, 0)).await {
            Ok(r) => break r,
            Err(Error::QuotaExceeded { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the crashed holder's hold was never reclaimed: {e}"),
        }
    };
    r.release().await.unwrap();
    let u = quotas.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (0, 0));
}

#[tokio::test]
async fn a_live_holders_reservation_keeps_counting_past_its_lease_ttl() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let lease = Duration::from_millis(150);
    let holder = crash_quotas(&redis.url(), lease);
    let other = crash_quotas(&redis.url(), lease);
    let ctx = root(&issuer, TenantId::random(), None);
    let r = holder
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    for _ in 0..5 {
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

/// A holder whose lease was swept (it stalled past its lease) settles later:
/// its usage is charged, but its hold is not subtracted a second time (which
/// would free budget another process still holds).
#[tokio::test]
async fn a_settle_after_the_holders_lease_was_swept_subtracts_nothing_twice() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let holder = crash_quotas(&redis.url(), Duration::from_secs(30));
    let other = crash_quotas(&redis.url(), Duration::from_secs(30));
    let ctx = root(&issuer, TenantId::random(), None);
    let stalled = holder
        .reserve(&ctx, &Estimate::new("m", 600, 0))
        .await
        .unwrap();
    // Kill the holder's lease: every lease so far (only the holder's) expired.
    let mut conn = connect(&redis.url()).await;
    let leases: Vec<String> = redis::cmd("ZRANGE")
        .arg("crash:leases")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    let _: i64 = redis::cmd("ZADD")
        .arg("crash:leases")
        .arg(0)
        .arg(&leases[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    // The other process sweeps it and may take the whole budget.
    let mine = other
        .reserve(&ctx, &Estimate::new("m", 1_000, 0))
        .await
        .unwrap();
    // The stalled holder finishes: charged 100, but nothing more is freed.
    stalled.settle(Usage::new(100, 0)).await.unwrap();
    holder.flush().await.unwrap();
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (100, 1_000));
    assert!(matches!(
        holder.reserve(&ctx, &Estimate::new("m", 1, 0)).await,
        Err(Error::QuotaExceeded { .. })
    ));
    mine.release().await.unwrap();
    other.flush().await.unwrap();
    // The holder carries on with a new instance.
    holder
        .reserve(&ctx, &Estimate::new("m", 900, 0))
        .await
        .unwrap()
        .settle(Usage::new(900, 0))
        .await
        .unwrap();
    holder.flush().await.unwrap();
    let u = other.usage(&ctx, QuotaLevel::Tenant).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_held), (1_000, 0));
}

#[tokio::test]
async fn a_dropped_reservation_is_released_in_the_background() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "drop", policy());
    let ctx = root(&issuer, TenantId::random(), None);
    drop(
        quotas
            .reserve(&ctx, &Estimate::new("m", TENANT_LIMIT, 0))
            .await
            .unwrap(),
    );
    let mut held = u64::MAX;
    for _ in 0..100 {
        held = quotas
            .usage(&ctx, QuotaLevel::Tenant)
            .await
            .unwrap()
            .tokens_held;
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(held, 0);
    let _r = quotas
        .reserve(&ctx, &Estimate::new("m", TENANT_LIMIT, 0))
        .await
        .unwrap();
}

#[tokio::test]
async fn tenants_sharing_a_redis_ledger_do_not_share_budgets() {
    let redis = TestRedis::start().unwrap();
    let issuer = issuer();
    let quotas = redis_quotas(&redis.url(), "iso", policy());
    let a = root(&issuer, TenantId::random(), None);
    let b = root(&issuer, TenantId::random(), None);
    quotas
        .reserve(&a, &Estimate::new("m", TENANT_LIMIT, 0))
        .await
        .unwrap()
        .settle(Usage::new(TENANT_LIMIT, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&a, &Estimate::new("m", 1, 0))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            level: QuotaLevel::Tenant,
            retry_after: Some(_),
            ..
        }
    ));
    let u_b = quotas.usage(&b, QuotaLevel::Tenant).await.unwrap();
    assert_eq!(u_b, LevelUsage::default());
    let _r = quotas
        .reserve(&b, &Estimate::new("m", TENANT_LIMIT, 0))
        .await
        .unwrap();
}

/// Concurrent operations are sent to Redis in batches; every operation of a
/// batch must still be applied exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_operations_charge_exactly_what_was_settled_and_hold_nothing_after() {
    let redis = TestRedis::start().unwrap();
    let quotas = redis_quotas(&redis.url(), "batch", policy());
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
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
    assert_eq!(usage.tokens_used, settled);
    assert_eq!(usage.tokens_held, 0);
}

/// `flush` until it succeeds (Redis may still be coming back).
async fn flush_eventually(quotas: &Quotas) {
    let started = std::time::Instant::now();
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
    let quotas = redis_quotas(&redis.url(), "deferred", policy());
    let ctx = root(&issuer(), TenantId::random(), None);
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
    let quotas = redis_quotas(&redis.url(), "once", policy());
    let ctx = root(&issuer(), TenantId::random(), None);
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
    // The settlement's batch ran, then at least one re-send, then the flush
    // and the usage read.
    let calls = script_calls(&redis.url()).await - before;
    assert!(calls >= 4, "only {calls} script calls: nothing was re-sent");
}

#[tokio::test]
async fn acknowledged_settlement_reports_a_redis_outage() {
    let mut redis = TestRedis::start().unwrap();
    let ledger = RedisLedger::builder()
        .url(redis.url())
        .prefix("ack")
        .op_timeout(Duration::from_millis(300))
        .acknowledged_settlement(true)
        .build()
        .unwrap();
    let quotas = Quotas::builder()
        .ledger(ledger)
        .policy(policy())
        .build()
        .unwrap();
    let ctx = root(&issuer(), TenantId::random(), None);
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 0))
        .await
        .unwrap();
    r.settle(Usage::new(10, 0)).await.unwrap();
    // Acknowledged: visible to anyone as soon as settle returns.
    let other = redis_quotas(&redis.url(), "ack", policy());
    assert_eq!(
        other
            .usage(&ctx, QuotaLevel::Tenant)
            .await
            .unwrap()
            .tokens_used,
        10
    );
    let r = quotas
        .reserve(&ctx, &Estimate::new("m", 100, 0))
        .await
        .unwrap();
    redis.stop().unwrap();
    assert!(matches!(
        r.settle(Usage::new(10, 0)).await,
        Err(Error::LedgerUnavailable { .. })
    ));
}

/// A process's operations apply in the order it queued them, on any
/// runtime: a dropped reservation's release (and a deferred settlement) is
/// applied before the reservation queued after it, so the whole budget is
/// free again at once, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_reserves_again_right_after_dropping_or_settling_without_waiting() {
    let redis = TestRedis::start().unwrap();
    let quotas = redis_quotas(&redis.url(), "order", policy());
    let ctx = root(&issuer(), TenantId::random(), None);
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
    let quotas = redis_quotas(&redis.url(), "ttl", policy());
    let ctx = root(&issuer(), TenantId::random(), None);
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
    let policy = Policy::new(
        TenantPolicy::new().tenant_limits(
            Limits::unlimited()
                .tokens_per(TENANT_LIMIT, HOUR)
                .requests(3, 0.001),
        ),
    );
    let quotas = redis_quotas(&redis.url(), "outage-bucket", policy);
    let ctx = root(&issuer(), TenantId::random(), None);
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
