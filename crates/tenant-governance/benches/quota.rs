//! Quota benchmarks, each with a baseline measured in the same run:
//!
//! * `per_tenant_check/*`: a per-tenant request-rate decision over 10k
//!   tenants — `RequestRateLimiter::check_verified` vs `governor`'s keyed
//!   GCRA check (same semantics, same keys). Target ≤ 1.0×. For
//!   information: `InProcessLedger`'s full hierarchical check-and-hold
//!   (rate only; and reserve + settle with a token budget) against the same
//!   baseline.
//! * `redis/*`: reserve + settle on `RedisLedger` vs one `INCR` round trip,
//!   sequential and with 64 in flight. Target ≥ 0.5× throughput, for the
//!   default ledger (deferred settlement); with acknowledged settlement
//!   (settle waits for Redis) for information. Also printed: the ratio of
//!   p50s over rounds that interleave each arm with its baseline.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use governor::{Quota, RateLimiter};
use tenant_core::*;
use tenant_governance::*;
use tenant_testkit::bench_ratio::{interleaved_p50s, report};
use tenant_testkit::TestRedis;

const TENANTS: usize = 10_000;

fn requests(levels: Vec<LevelSpec>, tokens: u64) -> HoldRequest {
    HoldRequest {
        levels: levels.into(),
        amount: Amount {
            tokens,
            cost_micros: 0,
        },
        ttl: Duration::from_secs(60),
    }
}

fn tenant_level(t: TenantId, with_budget: bool) -> LevelSpec {
    let limits = Limits::unlimited().requests(u32::MAX, 1e12);
    let limits = if with_budget {
        limits.tokens_per(MAX_AMOUNT, Duration::from_secs(3600))
    } else {
        limits
    };
    LevelSpec {
        key: LevelKey::Tenant(t),
        tokens: limits
            .token_budget()
            .map_or(Bound::Unlimited, Bound::Periodic),
        cost: Bound::Unlimited,
        requests: limits.rate_limit(),
    }
}

fn per_tenant_check(c: &mut Criterion) {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let contexts: Vec<TenantContext> = (0..TENANTS)
        .map(|_| {
            issuer
                .context()
                .tenant(TenantId::random())
                .principal(PrincipalId::new("bench").unwrap())
                .issue()
                .unwrap()
        })
        .collect();
    let tenants: Vec<TenantId> = contexts.iter().map(TenantContext::tenant).collect();
    let mut g = c.benchmark_group("per_tenant_check");

    let limiter = RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX));
    let mut i = 0;
    g.bench_function("governor_keyed", |b| {
        b.iter(|| {
            i = (i + 1) % TENANTS;
            // Both arms start from the request's context, as a real caller does.
            black_box(limiter.check_key(&contexts[i].tenant()).is_ok())
        })
    });

    // Same semantics as the governor arm: one keyed GCRA request-rate
    // decision, keyed by the same TenantIds, limit never reached.
    let rate_limiter = RequestRateLimiter::builder(&issuer.authority())
        .limit(RateLimit {
            capacity: u32::MAX,
            refill_per_second: 1e9,
        })
        .build();
    let mut i = 0;
    g.bench_function("request_rate_check", |b| {
        b.iter(|| {
            i = (i + 1) % TENANTS;
            black_box(rate_limiter.check_verified(&contexts[i]).is_ok())
        })
    });

    let ledger = InProcessLedger::default();
    let rate_only: Vec<HoldRequest> = tenants
        .iter()
        .map(|t| requests(vec![tenant_level(*t, false)], 0))
        .collect();
    let mut i = 0;
    g.bench_function("ledger_rate_check", |b| {
        b.iter(|| {
            i = (i + 1) % TENANTS;
            black_box(ledger.try_reserve(&rate_only[i]).is_ok())
        })
    });

    let with_budget: Vec<HoldRequest> = tenants
        .iter()
        .map(|t| requests(vec![tenant_level(*t, true)], 100))
        .collect();
    let mut i = 0;
    g.bench_function("ledger_reserve_settle", |b| {
        b.iter(|| {
            i = (i + 1) % TENANTS;
            let hold = ledger.try_reserve(&with_budget[i]).expect("within budget");
            ledger
                .settle_now(
                    hold,
                    Amount {
                        tokens: 90,
                        cost_micros: 0,
                    },
                )
                .expect("issued by this ledger");
        })
    });
    g.finish();

    report(
        "in-process per-tenant request-rate check vs governor keyed (10k tenants)",
        ("per_tenant_check", "request_rate_check"),
        ("per_tenant_check", "governor_keyed"),
        "<= 1.0x",
        false,
    );
    report(
        "in-process hierarchical ledger rate-only reserve vs governor keyed (10k tenants)",
        ("per_tenant_check", "ledger_rate_check"),
        ("per_tenant_check", "governor_keyed"),
        "info",
        false,
    );
    report(
        "in-process reserve+settle vs governor keyed (10k tenants)",
        ("per_tenant_check", "ledger_reserve_settle"),
        ("per_tenant_check", "governor_keyed"),
        "info",
        false,
    );
}

fn redis(c: &mut Criterion) {
    let server = match TestRedis::start() {
        Ok(s) => s,
        Err(e) => {
            println!("SKIP redis benches: {e}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("bench").unwrap())
        .capabilities(Capabilities::unrestricted().with_token_budget(MAX_AMOUNT))
        .issue()
        .unwrap();
    let quotas = |acknowledged: bool| {
        let ledger = RedisLedger::builder()
            .url(server.url())
            .op_timeout(Duration::from_secs(2))
            .acknowledged_settlement(acknowledged)
            .build()
            .unwrap();
        let policy = Policy::new(
            TenantPolicy::new().tenant_limits(
                Limits::unlimited()
                    .tokens_per(MAX_AMOUNT, Duration::from_secs(3600))
                    .requests(u32::MAX, 1e9),
            ),
        );
        let quotas = Quotas::builder(&issuer.authority())
            .ledger(ledger)
            .policy(policy)
            .build()
            .unwrap();
        Arc::new((quotas, ctx.clone(), Estimate::new("m", 100, 50)))
    };
    let (deferred, acknowledged, conn) = rt.block_on(async {
        let conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (quotas(false), quotas(true), conn)
    });
    let mut g = c.benchmark_group("redis");
    g.bench_function("incr_round_trip", |b| {
        b.to_async(&rt).iter(|| incr(conn.clone()))
    });
    g.bench_function("incr_64_in_flight", |b| {
        b.to_async(&rt).iter(|| incr_in_flight(conn.clone()))
    });
    for (name, shared) in [
        ("reserve_settle", &deferred),
        ("reserve_settle_acknowledged", &acknowledged),
    ] {
        // Server-side script time per pair, from `INFO commandstats`.
        let pairs = AtomicU64::new(0);
        rt.block_on(reset_stats(&conn));
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                reserve_settle(shared.clone()).await;
                pairs.fetch_add(1, Ordering::Relaxed);
            })
        });
        rt.block_on(shared.0.flush()).unwrap();
        rt.block_on(print_script_time(&conn, name, &pairs));
        let pairs = AtomicU64::new(0);
        rt.block_on(reset_stats(&conn));
        let name = format!("{name}_64_in_flight");
        g.bench_function(&name, |b| {
            b.to_async(&rt).iter(|| async {
                reserve_settle_in_flight(shared.clone()).await;
                pairs.fetch_add(IN_FLIGHT as u64, Ordering::Relaxed);
            })
        });
        rt.block_on(shared.0.flush()).unwrap();
        rt.block_on(print_script_time(&conn, &name, &pairs));
    }
    g.finish();
    for (what, subject, baseline, target) in [
        ("sequential", "reserve_settle", "incr_round_trip", ">= 0.5x"),
        (
            "64 in flight",
            "reserve_settle_64_in_flight",
            "incr_64_in_flight",
            ">= 0.5x",
        ),
        (
            "acknowledged settlement, sequential",
            "reserve_settle_acknowledged",
            "incr_round_trip",
            "info",
        ),
        (
            "acknowledged settlement, 64 in flight",
            "reserve_settle_acknowledged_64_in_flight",
            "incr_64_in_flight",
            "info",
        ),
    ] {
        report(
            &format!("redis reserve+settle vs INCR, {what} (throughput)"),
            ("redis", subject),
            ("redis", baseline),
            target,
            true,
        );
    }
    interleaved(&rt, &conn, &deferred, &acknowledged);
    drop(server);
}

type Shared = Arc<(Quotas, TenantContext, Estimate)>;

const IN_FLIGHT: usize = 64;

/// The baseline: one `INCR` round trip.
async fn incr(mut conn: redis::aio::MultiplexedConnection) {
    let _: i64 = redis::cmd("INCR")
        .arg("bench:counter")
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// One reservation and its settlement, as an agent's LLM call does.
async fn reserve_settle(shared: Shared) {
    let (q, ctx, e) = &*shared;
    let r = q.reserve(ctx, e).await.unwrap();
    r.settle(Usage::new(100, 20)).await.unwrap();
}

/// [`IN_FLIGHT`] tasks, one `INCR` each.
async fn incr_in_flight(conn: redis::aio::MultiplexedConnection) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        set.spawn(incr(conn.clone()));
    }
    while set.join_next().await.is_some() {}
}

/// [`IN_FLIGHT`] tasks, one reserve + settle each.
async fn reserve_settle_in_flight(shared: Shared) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        set.spawn(reserve_settle(shared.clone()));
    }
    while set.join_next().await.is_some() {}
}

/// The arms sampled round by round against their baseline, the order
/// alternating, so that the machine's drift between criterion's
/// back-to-back measurements does not land on one arm only. Prints the
/// ratios of the p50s.
fn interleaved(
    rt: &tokio::runtime::Runtime,
    conn: &redis::aio::MultiplexedConnection,
    deferred: &Shared,
    acknowledged: &Shared,
) {
    const ROUNDS: usize = 1000;
    /// Sequential calls per sample, so one sample is well above the timer's
    /// resolution and the runtime's wake-up jitter.
    const SEQUENTIAL: usize = 16;
    let incr_seq = || {
        rt.block_on(async {
            for _ in 0..SEQUENTIAL {
                incr(conn.clone()).await;
            }
        })
    };
    let pair_seq = |shared: &Shared| {
        rt.block_on(async {
            for _ in 0..SEQUENTIAL {
                reserve_settle(shared.clone()).await;
            }
        })
    };
    let incr_par = || rt.block_on(incr_in_flight(conn.clone()));
    let pair_par = |shared: &Shared| rt.block_on(reserve_settle_in_flight(shared.clone()));
    let arms: [(&str, &Shared, bool, &str); 4] = [
        ("sequential", deferred, false, ">= 0.5x"),
        ("64 in flight", deferred, true, ">= 0.5x"),
        (
            "acknowledged settlement, sequential",
            acknowledged,
            false,
            "info",
        ),
        (
            "acknowledged settlement, 64 in flight",
            acknowledged,
            true,
            "info",
        ),
    ];
    for (name, shared, in_flight, target) in arms {
        let p50 = if in_flight {
            interleaved_p50s(
                ROUNDS,
                &mut [&mut |_| pair_par(shared), &mut |_| incr_par()],
            )
        } else {
            interleaved_p50s(
                ROUNDS,
                &mut [&mut |_| pair_seq(shared), &mut |_| incr_seq()],
            )
        };
        let (s50, b50) = (p50[0], p50[1]);
        println!(
            "RATIO redis reserve+settle vs INCR, {name} (throughput), p50 of {ROUNDS} interleaved rounds: \
             {:.3}x (subject {s50:?}, baseline {b50:?}; target {target})",
            b50.as_secs_f64() / s50.as_secs_f64()
        );
    }
}

async fn reset_stats(conn: &redis::aio::MultiplexedConnection) {
    let mut c = conn.clone();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .unwrap();
}

/// Prints the server's script (`EVALSHA`) time per reserve+settle pair since
/// the last [`reset_stats`], and the operations per script call.
async fn print_script_time(conn: &redis::aio::MultiplexedConnection, arm: &str, pairs: &AtomicU64) {
    let mut c = conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let field = |line: &str, name: &str| -> f64 {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0.0)
    };
    let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")) else {
        return;
    };
    let (calls, usec) = (field(line, "calls"), field(line, "usec"));
    let pairs = pairs.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "REDIS-SERVER {arm}: {:.1} µs of script time per reserve+settle pair, {:.1} operations per EVALSHA ({calls} calls, {:.1} µs each)",
        usec / pairs,
        2.0 * pairs / calls.max(1.0),
        usec / calls.max(1.0),
    );
}

criterion_group!(benches, per_tenant_check, redis);
criterion_main!(benches);
