//! A node of a 3-node Qdrant cluster (shard-key layout) is killed and
//! restarted while three tenants read: no read ever returns another
//! tenant's point, and every read either fails with a typed error or
//! returns the tenant's complete set. Runs on its own cluster (the shared
//! one of the other suites cannot lose a node).

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qdrant_client::qdrant::CollectionClusterInfoRequest;
use support::*;
use tenant_core::{ContextIssuer, IsolationTier, KeyId, MasterKey, StaticTiers, TenantId};
use tenant_retrieval::{
    Error, HashEmbedder, Naming, QdrantBackend, QdrantLayout, RetrievalClient, SearchQuery,
};
use tenant_testkit::{TestQdrantCluster, TestkitError};

const PER_TENANT: usize = 40;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// What one reader saw.
#[derive(Default)]
struct Tally {
    complete: AtomicUsize,
    failed: AtomicUsize,
}

/// A node holding a shard of `collection`: killing it takes data away.
async fn node_holding_a_shard(cluster: &TestQdrantCluster, collection: &str) -> usize {
    for node in 0..cluster.len() {
        let client = qdrant_client::Qdrant::from_url(&cluster.grpc_url(node))
            .skip_compatibility_check()
            .build()
            .unwrap();
        let info = client
            .collection_cluster_info(CollectionClusterInfoRequest {
                collection_name: collection.to_owned(),
            })
            .await
            .unwrap();
        if !info.local_shards.is_empty() {
            return node;
        }
    }
    panic!("no node holds a shard of {collection}");
}

/// A platform on node `node` of the cluster, sharing `prefix` (and so the
/// collections and routes) with every other platform built here.
async fn platform_on(
    cluster: &TestQdrantCluster,
    node: usize,
    prefix: &str,
    issuer: &ContextIssuer,
    tiers: StaticTiers,
) -> tenant_retrieval::Retrieval {
    grpc_ready(&cluster.grpc_url(node)).await;
    let backend = QdrantBackend::builder(cluster.grpc_url(node))
        .routes_collection(format!("{prefix}__routes"))
        .layout(QdrantLayout::ShardKeys)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    platform(backend, issuer, tiers, TenantId::random())
        .naming(Naming::with_prefix(prefix).unwrap())
        .build()
        .await
        .unwrap()
}

/// Waits until the node's gRPC service answers (the test kit waits for
/// REST readiness; gRPC may come up a moment later).
async fn grpc_ready(url: &str) {
    let client = qdrant_client::Qdrant::from_url(url)
        .skip_compatibility_check()
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = client.list_collections().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gRPC never answered: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read_once(
    client: &RetrievalClient,
    embed: &HashEmbedder,
    expected: &BTreeSet<String>,
    tally: &Tally,
) {
    let hits = client
        .search(SearchQuery::new(embed.embed_one("doc 7")).top_k(1000))
        .await;
    let counted = client.count(None).await;
    match (hits, counted) {
        (Ok(hits), Ok(n)) => {
            let ids: BTreeSet<String> = hits.into_iter().map(|h| h.id).collect();
            // Any foreign point would show up here as an unexpected id.
            assert_eq!(&ids, expected, "a read returned a foreign or partial set");
            assert_eq!(n, expected.len() as u64, "a count was partial");
            tally.complete.fetch_add(1, Ordering::Relaxed);
        }
        (hits, counted) => {
            for e in [hits.err(), counted.err()].into_iter().flatten() {
                assert!(
                    matches!(e, Error::Backend { .. }),
                    "unexpected error during the outage: {e:?}"
                );
            }
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_a_node_mid_read_never_crosses_tenants() {
    let cluster = match tokio::task::spawn_blocking(TestQdrantCluster::start)
        .await
        .unwrap()
    {
        Ok(cluster) => cluster,
        Err(TestkitError::QdrantNotFound { .. }) => {
            report_skipped(Kind::Cluster);
            return;
        }
        Err(e) => panic!("starting a Qdrant cluster: {e}"),
    };
    let prefix = fresh_prefix();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let silo = TenantId::random();
    let tenants = [silo, TenantId::random(), TenantId::random()];
    let tiers = StaticTiers::new(IsolationTier::Pool).with(silo, IsolationTier::Silo);
    let retrieval = platform_on(&cluster, 0, &prefix, &issuer, tiers.clone()).await;
    let w = World::on_server(issuer, retrieval, TenantId::random(), Kind::Cluster);
    let mut expected = Vec::new();
    for (t, tenant) in tenants.iter().enumerate() {
        let client = w.client(&w.ctx(*tenant), DOCS);
        // Every tenant stores the same document ids and texts: only the
        // tenant scope tells them apart.
        client
            .upsert((0..PER_TENANT).map(|i| w.doc(&format!("d{i}"), &format!("doc {i}"))))
            .await
            .unwrap();
        client
            .upsert([w.doc(&format!("only-{t}"), "doc 7")])
            .await
            .unwrap();
        let mut ids: BTreeSet<String> = (0..PER_TENANT).map(|i| format!("d{i}")).collect();
        ids.insert(format!("only-{t}"));
        expected.push(ids);
    }

    // Kill a node that holds data; read through another one.
    let victim = node_holding_a_shard(&cluster, &w.retrieval.naming().sharded(DOCS)).await;
    let entry = (victim + 1) % cluster.len();
    let readers_platform = platform_on(&cluster, entry, &prefix, &w.issuer, tiers).await;
    let mut readers = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    for (tenant, expected) in tenants.iter().zip(expected) {
        let client = RetrievalClient::builder()
            .backend(&readers_platform)
            .collection(DOCS)
            .tenant(&w.ctx(*tenant))
            .build()
            .unwrap();
        let (stop, tally, embed) = (stop.clone(), tally.clone(), w.embed);
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                read_once(&client, &embed, &expected, &tally).await;
            }
            (client, expected)
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.kill_node(victim).unwrap();
        // Longer than a request may take: some read must meet the outage.
        std::thread::sleep(REQUEST_TIMEOUT + Duration::from_secs(1));
        cluster.restart_node(victim).unwrap();
        cluster
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for r in readers {
        clients.push(r.await.unwrap());
    }

    // After the restart every tenant reads its complete set again.
    let after = Tally::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (client, expected) in &clients {
        loop {
            let before = after.complete.load(Ordering::Relaxed);
            read_once(client, &w.embed, expected, &after).await;
            if after.complete.load(Ordering::Relaxed) > before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reads did not recover after the node rejoined"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (complete, failed) = (
        tally.complete.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert!(complete > 0);
    assert!(failed > 0, "no read met the outage");
    report_passed(
        Kind::Cluster,
        "node kill/restart drill",
        1,
        &format!("node {victim} killed mid-read through node {entry}: {complete} complete reads, {failed} typed errors, no foreign point"),
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
