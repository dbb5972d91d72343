//! Search cost: Pool vs Silo, SDK vs raw qdrant-edge, sealing per hit.
//!
//! `BENCH_POINTS` (default 100000) points over 100 tenants, 384 dims,
//! top-10. Prints p50 ratios measured in the same run (interleaved). The
//! SDK arms include everything a client does per search: admitting the
//! context under the platform authority, the route check, and the per-hit
//! check with keyed leak tags. The raw arm needs the test-only
//! `test-support` feature.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tenant_testkit::bench_ratio::interleaved_p50s;

use criterion::{criterion_group, Criterion};
use rand::{Rng, SeedableRng};
use tenant_core::{
    Capabilities, ContextIssuer, DerivedKeyProvider, IsolationTier, KeyId, MasterKey, PrincipalId,
    StaticTiers, TenantContext, TenantId,
};
use tenant_retrieval::testing::qdrant_edge::{
    self, Condition, FieldCondition, Filter, Match, NamedQuery, QueryEnum, ValueVariants,
    WithPayloadInterface,
};
use tenant_retrieval::{
    CollectionSpec, Document, EdgeBackend, Retrieval, RetrievalClient, SearchQuery,
};

const DIMS: usize = 384;
const TENANTS: usize = 100;
const TOP_K: usize = 10;

struct Setup {
    rt: tokio::runtime::Runtime,
    retrieval: Retrieval,
    edge: EdgeBackend,
    pool_client: RetrievalClient,
    silo_client: RetrievalClient,
    sealed_client: RetrievalClient,
    clear_client: RetrievalClient,
    pool_tenant: TenantId,
    pool_physical: String,
    queries: Vec<Vec<f32>>,
    _dir: tempfile::TempDir,
}

fn vector(rng: &mut impl Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn client(r: &Retrieval, ctx: &TenantContext, c: &str) -> RetrievalClient {
    RetrievalClient::builder()
        .backend(r)
        .collection(c)
        .tenant(ctx)
        .build()
        .unwrap()
}

fn setup() -> Setup {
    let points: usize = std::env::var("BENCH_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let per_tenant = points / TENANTS;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeBackend::open(dir.path()).unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let tenants: Vec<TenantId> = (0..TENANTS).map(|_| TenantId::random()).collect();
    let silo_tenant = TenantId::random();
    let tiers = StaticTiers::new(IsolationTier::Pool).with(silo_tenant, IsolationTier::Silo);
    let retrieval = rt
        .block_on(
            Retrieval::builder(edge.clone())
                .authority(issuer.authority())
                .collection(CollectionSpec::new("docs", DIMS).unwrap())
                .collection(
                    CollectionSpec::new("sealed", DIMS)
                        .unwrap()
                        .sealed(["lang"])
                        .unwrap(),
                )
                .collection(CollectionSpec::new("clear", DIMS).unwrap())
                .tiers(tiers)
                .keys(DerivedKeyProvider::new(MasterKey::generate(
                    KeyId::new("d").unwrap(),
                )))
                .build(),
        )
        .unwrap();
    let ctx = |t| {
        issuer
            .context()
            .tenant(t)
            .principal(PrincipalId::new("bench").unwrap())
            .capabilities(Capabilities::unrestricted())
            .issue()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    let docs_for = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<Document> {
        (0..n)
            .map(|i| {
                Document::new(
                    format!("doc-{i}"),
                    vector(rng),
                    format!("text of document {i} with some words in it"),
                )
                .with_metadata("lang", "en")
                .with_metadata("n", i as i64)
            })
            .collect()
    };
    // The benchmarked Pool tenant's points are the ones copied into a Silo
    // collection for the Silo tenant (same vectors), so both searches rank
    // the same 1/100 of the data.
    let mut pool_tenant_docs = Vec::new();
    for (k, t) in tenants.iter().enumerate() {
        let docs = docs_for(&mut rng, per_tenant);
        if k == 0 {
            pool_tenant_docs = docs.clone();
        }
        let c = client(&retrieval, &ctx(*t), "docs");
        for chunk in docs.chunks(1000) {
            rt.block_on(c.upsert(chunk.to_vec())).unwrap();
        }
    }
    let silo_ctx = ctx(silo_tenant);
    let silo_client = client(&retrieval, &silo_ctx, "docs");
    for chunk in pool_tenant_docs.chunks(1000) {
        rt.block_on(silo_client.upsert(chunk.to_vec())).unwrap();
    }
    let small = docs_for(&mut rng, 1000);
    let sealed_client = client(&retrieval, &ctx(tenants[1]), "sealed");
    let clear_client = client(&retrieval, &ctx(tenants[1]), "clear");
    rt.block_on(sealed_client.upsert(small.clone())).unwrap();
    rt.block_on(clear_client.upsert(small)).unwrap();
    println!(
        "setup: {} points in the Pool ({} tenants x {per_tenant}), {per_tenant} in the Silo, built in {:.1?}",
        per_tenant * TENANTS, TENANTS, started.elapsed()
    );
    let queries = (0..64).map(|_| vector(&mut rng)).collect();
    Setup {
        pool_client: client(&retrieval, &ctx(tenants[0]), "docs"),
        pool_tenant: tenants[0],
        pool_physical: retrieval.naming().pool("docs"),
        retrieval,
        rt,
        edge,
        silo_client,
        sealed_client,
        clear_client,
        queries,
        _dir: dir,
    }
}

fn sdk_search(s: &Setup, c: &RetrievalClient, q: &[f32]) -> usize {
    s.rt.block_on(c.search(SearchQuery::new(q.to_vec()).top_k(TOP_K)))
        .unwrap()
        .len()
}

fn raw_search(s: &Setup, q: &[f32]) -> usize {
    let filter = Filter {
        must: Some(vec![Condition::Field(FieldCondition::new_match(
            "tenant_id".parse().unwrap(),
            Match::new_value(ValueVariants::String(s.pool_tenant.to_string())),
        ))]),
        ..Filter::default()
    };
    let req = qdrant_edge::SearchRequest {
        query: QueryEnum::Nearest(NamedQuery::default_dense(q.to_vec())),
        filter: Some(filter),
        params: None,
        limit: TOP_K,
        offset: 0,
        with_payload: Some(WithPayloadInterface::Bool(true)),
        with_vector: None,
        score_threshold: None,
    };
    s.edge
        .with_raw_shard(&s.pool_physical, |shard| shard.search(req).unwrap().len())
        .unwrap()
}

fn get_ten(s: &Setup, c: &RetrievalClient, offset: usize) -> usize {
    let ids: Vec<String> = (0..10)
        .map(|i| format!("doc-{}", (offset + i * 37) % 1000))
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    s.rt.block_on(c.get_many(&refs)).unwrap().len()
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let q = |i: usize| s.queries[i % s.queries.len()].as_slice();

    let mut g = c.benchmark_group("search_top10");
    g.bench_function("pool_sdk", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(sdk_search(&s, &s.pool_client, q(i)))
        })
    });
    g.bench_function("silo_sdk", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(sdk_search(&s, &s.silo_client, q(i)))
        })
    });
    g.bench_function("pool_raw_qdrant_edge", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(raw_search(&s, q(i)))
        })
    });
    s.edge.set_inline_reads(true);
    g.bench_function("pool_sdk_inline_reads", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(sdk_search(&s, &s.pool_client, q(i)))
        })
    });
    s.edge.set_inline_reads(false);
    g.finish();

    let mut g = c.benchmark_group("get_10_by_id");
    g.bench_function("sealed", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(get_ten(&s, &s.sealed_client, i))
        })
    });
    g.bench_function("clear", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(get_ten(&s, &s.clear_client, i))
        })
    });
    g.finish();

    // Ratios, p50 of interleaved samples.
    let rounds = 400;
    let r = interleaved_p50s(
        rounds,
        &mut [
            &mut |i| {
                black_box(sdk_search(&s, &s.pool_client, q(i)));
            },
            &mut |i| {
                black_box(sdk_search(&s, &s.silo_client, q(i)));
            },
            &mut |i| {
                black_box(raw_search(&s, q(i)));
            },
        ],
    );
    s.edge.set_inline_reads(true);
    let inline = interleaved_p50s(
        rounds,
        &mut [
            &mut |i| {
                black_box(sdk_search(&s, &s.pool_client, q(i)));
            },
            &mut |i| {
                black_box(sdk_search(&s, &s.silo_client, q(i)));
            },
            &mut |i| {
                black_box(raw_search(&s, q(i)));
            },
        ],
    );
    s.edge.set_inline_reads(false);
    let seal = interleaved_p50s(
        rounds,
        &mut [
            &mut |i| {
                black_box(get_ten(&s, &s.sealed_client, i));
            },
            &mut |i| {
                black_box(get_ten(&s, &s.clear_client, i));
            },
        ],
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("\n== tenant-retrieval search (p50 of {rounds} interleaved rounds) ==");
    println!(
        "default reads (block_in_place): pool {:?}  silo {:?}  raw qdrant-edge {:?}",
        r[0], r[1], r[2]
    );
    println!(
        "RATIO pool/silo (SDK, default reads)        = {:.3}  (target <= 1.10)",
        ratio(r[0], r[1])
    );
    println!(
        "RATIO sdk/raw   (Pool, default reads)       = {:.3}  (target <= 1.05)",
        ratio(r[0], r[2])
    );
    println!(
        "inline reads:         pool {:?}  silo {:?}  raw qdrant-edge {:?}",
        inline[0], inline[1], inline[2]
    );
    println!(
        "RATIO pool/silo (SDK, inline reads)          = {:.3}  (target <= 1.10)",
        ratio(inline[0], inline[1])
    );
    println!(
        "RATIO sdk/raw   (Pool, inline reads)         = {:.3}  (target <= 1.05)",
        ratio(inline[0], inline[2])
    );
    println!(
        "quarantined hits during the run: {} (must be 0)",
        s.retrieval.quarantined()
    );
    println!(
        "get 10 by id: sealed {:?}  clear {:?}  => sealing open cost per hit ~ {:.2?}",
        seal[0],
        seal[1],
        seal[0].saturating_sub(seal[1]) / 10
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
