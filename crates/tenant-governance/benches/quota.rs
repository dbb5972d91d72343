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
//! * `redis_cluster/*`: the same on a three-master Redis Cluster on
//!   loopback, against `INCR` through the cluster client. Target ≥ 0.5×.

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
use tenant_testkit::{TestRedis, TestRedisCluster};

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match TestRedis::start() {
        Ok(server) => {
            let url = server.url();
            let baseline = rt.block_on(async {
                Baseline::Single(
                    redis::Client::open(url.as_str())
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap(),
                )
            });
            redis_arms(c, &rt, "redis", &baseline, true, || {
                RedisLedger::builder().url(url.as_str())
            });
        }
        Err(e) => println!("SKIP redis benches: {e}"),
    }
    match TestRedisCluster::start() {
        Ok(cluster) => {
            let urls = cluster.urls();
            let baseline = rt.block_on(async {
                Baseline::Cluster(
                    redis::cluster::ClusterClient::new(urls.clone())
                        .unwrap()
                        .get_async_connection()
                        .await
                        .unwrap(),
                )
            });
            redis_arms(c, &rt, "redis_cluster", &baseline, false, || {
                RedisLedger::builder().cluster(urls.clone())
            });
        }
        Err(e) => println!("SKIP redis cluster benches: {e}"),
    }
}

/// The baseline's connection: one server, or a cluster (`INCR` routed to
/// the master of its key).
#[derive(Clone)]
enum Baseline {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// Reserve + settle against `INCR` on one deployment (criterion group
/// `group`), sequential and 64 in flight, plus the interleaved p50 ratios;
/// with `acknowledged`, the acknowledged-settlement arms too (information).
fn redis_arms(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    baseline: &Baseline,
    acknowledged: bool,
    ledger: impl Fn() -> RedisLedgerBuilder,
) {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("bench").unwrap())
        .capabilities(Capabilities::unrestricted().with_token_budget(MAX_AMOUNT))
        .issue()
        .unwrap();
    let quotas = |acknowledged: bool| {
        let ledger = ledger()
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
            .rates(ModelRates::new().default_rate(ModelRate::new()))
            .build()
            .unwrap();
        Arc::new((quotas, ctx.clone(), Estimate::new("m", 100, 50)))
    };
    let mut arms = vec![("reserve_settle", rt.block_on(async { quotas(false) }))];
    if acknowledged {
        arms.push((
            "reserve_settle_acknowledged",
            rt.block_on(async { quotas(true) }),
        ));
    }
    let mut g = c.benchmark_group(group);
    g.bench_function("incr_round_trip", |b| {
        b.to_async(rt).iter(|| incr(baseline.clone()))
    });
    g.bench_function("incr_64_in_flight", |b| {
        b.to_async(rt).iter(|| incr_in_flight(baseline.clone()))
    });
    for (name, shared) in &arms {
        // Server-side script time per pair, from `INFO commandstats`.
        let pairs = AtomicU64::new(0);
        rt.block_on(reset_stats(baseline));
        g.bench_function(*name, |b| {
            b.to_async(rt).iter(|| async {
                reserve_settle(shared.clone()).await;
                pairs.fetch_add(1, Ordering::Relaxed);
            })
        });
        rt.block_on(shared.0.flush()).unwrap();
        rt.block_on(print_script_time(baseline, group, name, &pairs));
        let pairs = AtomicU64::new(0);
        rt.block_on(reset_stats(baseline));
        let name = format!("{name}_64_in_flight");
        g.bench_function(&name, |b| {
            b.to_async(rt).iter(|| async {
                reserve_settle_in_flight(shared.clone()).await;
                pairs.fetch_add(IN_FLIGHT as u64, Ordering::Relaxed);
            })
        });
        rt.block_on(shared.0.flush()).unwrap();
        rt.block_on(print_script_time(baseline, group, &name, &pairs));
    }
    g.finish();
    let mut reports = vec![
        ("sequential", "reserve_settle", "incr_round_trip", ">= 0.5x"),
        (
            "64 in flight",
            "reserve_settle_64_in_flight",
            "incr_64_in_flight",
            ">= 0.5x",
        ),
    ];
    if acknowledged {
        reports.push((
            "acknowledged settlement, sequential",
            "reserve_settle_acknowledged",
            "incr_round_trip",
            "info",
        ));
        reports.push((
            "acknowledged settlement, 64 in flight",
            "reserve_settle_acknowledged_64_in_flight",
            "incr_64_in_flight",
            "info",
        ));
    }
    for (what, subject, base, target) in reports {
        report(
            &format!("{group} reserve+settle vs INCR, {what} (throughput)"),
            (group, subject),
            (group, base),
            target,
            true,
        );
    }
    interleaved(rt, group, baseline, &arms);
}

type Shared = Arc<(Quotas, TenantContext, Estimate)>;

const IN_FLIGHT: usize = 64;

/// The baseline: one `INCR` round trip.
async fn incr(conn: Baseline) {
    let cmd = redis::cmd("INCR").arg("bench:counter").clone();
    let _: i64 = match conn {
        Baseline::Single(mut c) => cmd.query_async(&mut c).await.unwrap(),
        Baseline::Cluster(mut c) => cmd.query_async(&mut c).await.unwrap(),
    };
}

/// One reservation and its settlement, as an agent's LLM call does.
async fn reserve_settle(shared: Shared) {
    let (q, ctx, e) = &*shared;
    let r = q.reserve(ctx, e).await.unwrap();
    r.settle(Usage::new(100, 20)).await.unwrap();
}

/// [`IN_FLIGHT`] tasks, one `INCR` each.
async fn incr_in_flight(conn: Baseline) {
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
    group: &str,
    baseline: &Baseline,
    arms: &[(&str, Shared)],
) {
    const ROUNDS: usize = 1000;
    /// Sequential calls per sample, so one sample is well above the timer's
    /// resolution and the runtime's wake-up jitter.
    const SEQUENTIAL: usize = 16;
    let incr_seq = || {
        rt.block_on(async {
            for _ in 0..SEQUENTIAL {
                incr(baseline.clone()).await;
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
    let incr_par = || rt.block_on(incr_in_flight(baseline.clone()));
    let pair_par = |shared: &Shared| rt.block_on(reserve_settle_in_flight(shared.clone()));
    for (arm, shared) in arms {
        let (label, target) = if arm.ends_with("acknowledged") {
            ("acknowledged settlement, ", "info")
        } else {
            ("", ">= 0.5x")
        };
        for in_flight in [false, true] {
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
            let what = if in_flight {
                "64 in flight"
            } else {
                "sequential"
            };
            println!(
                "RATIO {group} reserve+settle vs INCR, {label}{what} (throughput), p50 of {ROUNDS} interleaved rounds: \
                 {:.3}x (subject {s50:?}, baseline {b50:?}; target {target})",
                b50.as_secs_f64() / s50.as_secs_f64()
            );
        }
    }
}

/// The server(s) behind `baseline`: every master of a cluster.
async fn servers(baseline: &Baseline) -> Vec<redis::aio::MultiplexedConnection> {
    match baseline {
        Baseline::Single(c) => vec![c.clone()],
        Baseline::Cluster(c) => {
            let mut c = c.clone();
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut c)
                .await
                .unwrap();
            let mut out = Vec::new();
            for line in nodes.lines().filter(|l| l.contains("master")) {
                let Some(addr) = line.split(' ').nth(1).and_then(|a| a.split('@').next()) else {
                    continue;
                };
                out.push(
                    redis::Client::open(format!("redis://{addr}"))
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap(),
                );
            }
            out
        }
    }
}

async fn reset_stats(baseline: &Baseline) {
    for mut c in servers(baseline).await {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// Prints the servers' script (`EVALSHA`) time per reserve+settle pair since
/// the last [`reset_stats`], and the operations per script call.
async fn print_script_time(baseline: &Baseline, group: &str, arm: &str, pairs: &AtomicU64) {
    let field = |line: &str, name: &str| -> f64 {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0.0)
    };
    let (mut calls, mut usec) = (0.0, 0.0);
    for mut c in servers(baseline).await {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        if let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")) {
            calls += field(line, "calls");
            usec += field(line, "usec");
        }
    }
    let pairs = pairs.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "REDIS-SERVER {group} {arm}: {:.1} µs of script time per reserve+settle pair, {:.1} operations per EVALSHA ({calls} calls, {:.1} µs each)",
        usec / pairs,
        2.0 * pairs / f64::max(calls, 1.0),
        usec / f64::max(calls, 1.0),
    );
}

criterion_group!(benches, per_tenant_check, redis);
criterion_main!(benches);
