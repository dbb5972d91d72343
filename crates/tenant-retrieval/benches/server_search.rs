//! Search on a Qdrant server: SDK vs raw `qdrant-client` with the same
//! filter, and a Pool tenant on the fallback shard key vs a Silo tenant on
//! its own shard key, on the test kit's 3-node cluster (shard-key layout).
//!
//! `BENCH_POINTS` (default 100000) points over 100 Pool tenants on the
//! fallback key, 384 dims, top-10 with payload; the measured Pool tenant's
//! points are also stored, with the same vectors, for a Silo tenant on its
//! own key, moved to the node holding the fallback key so that both pay the
//! same network hops. Prints p50 ratios measured in the same run
//! (interleaved). Without the Qdrant binary it says so and measures nothing.

mod corpus;

use std::hint::black_box;
use std::time::{Duration, Instant};

use corpus::{client, context, documents, points, vector, DIMS, TENANTS};
use criterion::{criterion_group, Criterion};
use qdrant_client::qdrant::update_collection_cluster_setup_request::Operation;
use qdrant_client::qdrant::{
    CollectionClusterInfoRequest, Condition, Filter, MoveShard, SearchPointsBuilder, ShardKey,
    ShardKeySelector, UpdateCollectionClusterSetupRequest,
};
use qdrant_client::Qdrant;
use rand::SeedableRng;
use tenant_core::{
    ContextIssuer, DerivedKeyProvider, IsolationTier, KeyId, MasterKey, StaticTiers, TenantId,
};
use tenant_retrieval::{
    CollectionSpec, Naming, QdrantBackend, QdrantLayout, Retrieval, RetrievalClient, SearchQuery,
};
use tenant_testkit::bench_ratio::interleaved_p50s;
use tenant_testkit::{TestQdrantCluster, TestkitError};

const TOP_K: u64 = 10;

struct Setup {
    rt: tokio::runtime::Runtime,
    retrieval: Retrieval,
    raw: Qdrant,
    pool_client: RetrievalClient,
    silo_client: RetrievalClient,
    pool_tenant: TenantId,
    physical: String,
    naming: Naming,
    queries: Vec<Vec<f32>>,
    _cluster: TestQdrantCluster,
}

fn setup(cluster: TestQdrantCluster) -> Setup {
    let per_tenant = (points(100_000) / TENANTS).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = cluster.grpc_url(0);
    let naming = Naming::with_prefix("bench").unwrap();
    let backend = QdrantBackend::builder(url.clone())
        .layout(QdrantLayout::ShardKeys)
        .build()
        .unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let tenants: Vec<TenantId> = (0..TENANTS).map(|_| TenantId::random()).collect();
    let silo_tenant = TenantId::random();
    let tiers = StaticTiers::new(IsolationTier::Pool).with(silo_tenant, IsolationTier::Silo);
    let retrieval = rt
        .block_on(
            Retrieval::builder(backend)
                .authority(issuer.authority())
                .naming(naming.clone())
                .collection(CollectionSpec::new("docs", DIMS).unwrap())
                .tiers(tiers)
                .keys(DerivedKeyProvider::new(MasterKey::generate(
                    KeyId::new("d").unwrap(),
                )))
                .build(),
        )
        .unwrap();
    let ctx = |t| context(&issuer, t);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    let mut pool_tenant_docs = Vec::new();
    for (k, t) in tenants.iter().enumerate() {
        let docs = documents(&mut rng, per_tenant);
        if k == 0 {
            pool_tenant_docs = docs.clone();
        }
        let c = client(&retrieval, &ctx(*t), "docs");
        for chunk in docs.chunks(500) {
            rt.block_on(c.upsert(chunk.to_vec())).unwrap();
        }
    }
    let silo_client = client(&retrieval, &ctx(silo_tenant), "docs");
    for chunk in pool_tenant_docs.chunks(500) {
        rt.block_on(silo_client.upsert(chunk.to_vec())).unwrap();
    }
    println!(
        "setup: {} points on the fallback key ({TENANTS} tenants x {per_tenant}), {per_tenant} \
         on a Silo tenant's key, 3-node cluster, built in {:.1?}",
        per_tenant * TENANTS,
        started.elapsed()
    );
    let raw = Qdrant::from_url(&url)
        .skip_compatibility_check()
        .build()
        .unwrap();
    let physical = naming.sharded("docs");
    let silo_key = naming.tenant_key(silo_tenant);
    rt.block_on(colocate(&raw, &physical, naming.pool_key(), &silo_key));
    let queries = (0..64).map(|_| vector(&mut rng)).collect();
    Setup {
        pool_client: client(&retrieval, &ctx(tenants[0]), "docs"),
        pool_tenant: tenants[0],
        physical,
        naming,
        retrieval,
        raw,
        rt,
        silo_client,
        queries,
        _cluster: cluster,
    }
}

/// (key, shard id, peer, no transfer running) of every shard of
/// `collection`.
async fn placement(raw: &Qdrant, collection: &str) -> Vec<(String, u32, u64, bool)> {
    use qdrant_client::qdrant::shard_key::Key;
    let info = raw
        .collection_cluster_info(CollectionClusterInfoRequest {
            collection_name: collection.to_owned(),
        })
        .await
        .unwrap();
    let name = |k: &Option<ShardKey>| match k.as_ref().and_then(|k| k.key.as_ref()) {
        Some(Key::Keyword(s)) => s.clone(),
        _ => String::new(),
    };
    let settled = info.shard_transfers.is_empty();
    info.local_shards
        .iter()
        .map(|s| (name(&s.shard_key), s.shard_id, info.peer_id, settled))
        .chain(
            info.remote_shards
                .iter()
                .map(|s| (name(&s.shard_key), s.shard_id, s.peer_id, settled)),
        )
        .collect()
}

/// Moves the Silo key's shard to the node holding the fallback key, so
/// both arms pay the same network hops (the server places keys at random).
async fn colocate(raw: &Qdrant, collection: &str, pool_key: &str, silo_key: &str) {
    let find = |p: &[(String, u32, u64, bool)], key: &str| {
        p.iter()
            .find(|(k, ..)| k == key)
            .map(|(_, shard, peer, _)| (*shard, *peer))
            .unwrap()
    };
    let now = placement(raw, collection).await;
    let (_, pool_peer) = find(&now, pool_key);
    let (silo_shard, silo_peer) = find(&now, silo_key);
    if pool_peer == silo_peer {
        println!("placement: both keys on one node already");
        return;
    }
    raw.update_collection_cluster_setup(UpdateCollectionClusterSetupRequest {
        collection_name: collection.to_owned(),
        timeout: None,
        operation: Some(Operation::MoveShard(MoveShard {
            shard_id: silo_shard,
            to_shard_id: None,
            from_peer_id: silo_peer,
            to_peer_id: pool_peer,
            method: None,
        })),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = placement(raw, collection).await;
        if now.iter().all(|(.., settled)| *settled) && find(&now, silo_key).1 == pool_peer {
            println!("placement: moved the Silo key's shard to the fallback key's node");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "moving the Silo key's shard timed out"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sdk_search(s: &Setup, c: &RetrievalClient, q: &[f32]) -> usize {
    s.rt.block_on(c.search(SearchQuery::new(q.to_vec()).top_k(TOP_K as usize)))
        .unwrap()
        .len()
}

/// What the SDK sends for a Pool tenant, built by hand: the tenant filter
/// and the tenant's key with the fallback key.
fn raw_search(s: &Setup, q: &[f32]) -> usize {
    let req = SearchPointsBuilder::new(s.physical.as_str(), q.to_vec(), TOP_K)
        .filter(Filter::must([Condition::matches(
            "tenant_id",
            s.pool_tenant.to_string(),
        )]))
        .with_payload(true)
        .shard_key_selector(ShardKeySelector {
            shard_keys: vec![ShardKey::from(s.naming.tenant_key(s.pool_tenant))],
            fallback: Some(ShardKey::from(s.naming.pool_key())),
        });
    s.rt.block_on(s.raw.search_points(req))
        .unwrap()
        .result
        .len()
}

fn bench(c: &mut Criterion, s: &Setup) {
    let q = |i: usize| s.queries[i % s.queries.len()].as_slice();
    let mut g = c.benchmark_group("server_search_top10");
    g.bench_function("pool_sdk", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(sdk_search(s, &s.pool_client, q(i)))
        })
    });
    g.bench_function("pool_raw_qdrant_client", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(raw_search(s, q(i)))
        })
    });
    g.bench_function("silo_sdk", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(sdk_search(s, &s.silo_client, q(i)))
        })
    });
    g.finish();

    let rounds = 400;
    let r = interleaved_p50s(
        rounds,
        &mut [
            &mut |i| {
                black_box(sdk_search(s, &s.pool_client, q(i)));
            },
            &mut |i| {
                black_box(raw_search(s, q(i)));
            },
            &mut |i| {
                black_box(sdk_search(s, &s.silo_client, q(i)));
            },
        ],
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("\n== tenant-retrieval server search (p50 of {rounds} interleaved rounds) ==");
    println!(
        "pool SDK {:?}  pool raw qdrant-client {:?}  silo SDK {:?}",
        r[0], r[1], r[2]
    );
    println!(
        "RATIO sdk/raw   (Pool on the fallback key)   = {:.3}  (target <= 1.05)",
        ratio(r[0], r[1])
    );
    println!(
        "RATIO pool/silo (fallback key / own key)     = {:.3}  (target <= 1.10)",
        ratio(r[0], r[2])
    );
    println!(
        "quarantined hits during the run: {} (must be 0)",
        s.retrieval.quarantined()
    );
}

fn run(c: &mut Criterion) {
    let cluster = match TestQdrantCluster::start() {
        Ok(cluster) => cluster,
        Err(TestkitError::QdrantNotFound { .. }) => {
            println!("qdrant server bench: SKIPPED (no ../shared/bin/qdrant binary)");
            return;
        }
        Err(e) => panic!("starting a Qdrant cluster: {e}"),
    };
    let s = setup(cluster);
    bench(c, &s);
}

criterion_group!(benches, run);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
