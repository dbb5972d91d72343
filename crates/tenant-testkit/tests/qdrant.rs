//! Starts real Qdrant servers: a single node (plain, API key, JWT RBAC) and a
//! three-node cluster with custom sharding, one node killed and restarted.
//!
//! Without a Qdrant binary every test prints that it was skipped.

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tenant_testkit::{QdrantOptions, TestQdrant, TestQdrantCluster, TestkitError};

/// A plain-HTTP client. When the whole workspace is built, another crate
/// enables reqwest's `rustls-no-provider`, and reqwest then needs a
/// process-wide crypto provider before it builds any client, TLS or not.
fn http_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

/// `Some(value)` or, when the binary is absent, a skip notice and `None`.
fn or_skip<T>(started: Result<T, TestkitError>) -> Option<T> {
    match started {
        Ok(value) => Some(value),
        Err(TestkitError::QdrantNotFound { searched }) => {
            eprintln!(
                "Qdrant server binary not found (searched {searched:?}): server test skipped"
            );
            None
        }
        Err(e) => panic!("starting Qdrant: {e}"),
    }
}

async fn call(
    client: &Client,
    method: Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, &url);
    if let Some(key) = key {
        request = request.header("api-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn ok(client: &Client, method: Method, url: String, body: Option<Value>) -> Value {
    let (status, value) = call(client, method, url.clone(), None, body).await;
    assert!(status.is_success(), "{url}: {status} {value}");
    value
}

fn points(ids: std::ops::Range<u64>, tenant: &str) -> Value {
    let points: Vec<Value> = ids
        .map(|id| json!({"id": id, "vector": [1.0, 0.5, 0.25, id as f32], "payload": {"tenant": tenant}}))
        .collect();
    json!(points)
}

#[tokio::test]
async fn single_node_stores_and_searches_points() {
    let Some(mut qdrant) = or_skip(TestQdrant::start()) else {
        return;
    };
    assert!(qdrant.is_ready() && qdrant.is_running());
    assert!(qdrant.grpc_url().ends_with(&qdrant.grpc_port().to_string()));
    let client = http_client();
    let base = qdrant.rest_url();
    ok(
        &client,
        Method::PUT,
        format!("{base}/collections/notes"),
        Some(json!({"vectors": {"size": 4, "distance": "Cosine"}})),
    )
    .await;
    ok(
        &client,
        Method::PUT,
        format!("{base}/collections/notes/points?wait=true"),
        Some(json!({"points": points(0..10, "acme")})),
    )
    .await;
    let found = ok(
        &client,
        Method::POST,
        format!("{base}/collections/notes/points/query"),
        Some(json!({"query": [1.0, 0.5, 0.25, 3.0], "limit": 3})),
    )
    .await;
    assert_eq!(
        found["result"]["points"].as_array().map(Vec::len),
        Some(3),
        "{found}"
    );

    // A crash keeps what was acknowledged with wait=true.
    let storage = qdrant.storage_dir();
    qdrant.kill().expect("kill");
    assert!(!qdrant.is_running() && !qdrant.is_ready());
    assert!(storage.exists(), "storage kept while killed");
    qdrant.restart().expect("restart");
    // A new client: pooled connections died with the old process.
    let client = http_client();
    let count = ok(
        &client,
        Method::POST,
        format!("{base}/collections/notes/points/count"),
        Some(json!({"exact": true})),
    )
    .await;
    assert_eq!(count["result"]["count"], 10, "{count}");

    let dir = storage.parent().expect("node dir").to_path_buf();
    let pid = qdrant.pid().expect("running");
    drop(qdrant);
    assert!(!dir.exists(), "node dir removed on drop");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn api_key_and_jwt_rbac_are_enforced() {
    let Some(qdrant) = or_skip(TestQdrant::start_with(
        &QdrantOptions::new().jwt_rbac("signing-key-123"),
    )) else {
        return;
    };
    assert_eq!(qdrant.api_key(), Some("signing-key-123"));
    let client = http_client();
    let base = qdrant.rest_url();
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/collections"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no key is refused");
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/collections"),
        Some("wrong"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a wrong key is refused");
    let (status, _) = call(
        &client,
        Method::PUT,
        format!("{base}/collections/notes"),
        Some("signing-key-123"),
        Some(json!({"vectors": {"size": 4, "distance": "Cosine"}})),
    )
    .await;
    assert!(
        status.is_success(),
        "the key may create a collection: {status}"
    );

    // A read-only JWT signed with the key may read but not write.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"access": "r"}),
        &jsonwebtoken::EncodingKey::from_secret(b"signing-key-123"),
    )
    .expect("sign");
    let bearer = |method: Method, url: String| {
        client
            .request(method, url)
            .header("authorization", format!("Bearer {token}"))
    };
    let read = bearer(Method::GET, format!("{base}/collections/notes"))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), StatusCode::OK);
    let write = bearer(Method::DELETE, format!("{base}/collections/notes"))
        .send()
        .await
        .expect("write");
    assert_eq!(
        write.status(),
        StatusCode::FORBIDDEN,
        "read-only token cannot delete"
    );
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/collections/notes"),
        Some("signing-key-123"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "collection still there");
}

#[tokio::test]
async fn cluster_forms_shards_by_key_and_survives_a_killed_node() {
    let Some(mut cluster) = or_skip(TestQdrantCluster::start()) else {
        return;
    };
    assert_eq!(cluster.len(), 3);
    let client = http_client();
    let peer_ids: Vec<u64> = (0..3).map(|i| cluster.peer_id(i)).collect();
    for i in 0..3 {
        let view = ok(
            &client,
            Method::GET,
            format!("{}/cluster", cluster.rest_url(i)),
            None,
        )
        .await;
        let peers = view["result"]["peers"].as_object().expect("peers");
        assert_eq!(peers.len(), 3, "node {i} sees every peer: {view}");
        for id in &peer_ids {
            assert!(
                peers.contains_key(&id.to_string()),
                "node {i} knows peer {id}"
            );
        }
    }

    let base = cluster.rest_url(0);
    ok(
        &client,
        Method::PUT,
        format!("{base}/collections/tiered"),
        Some(json!({
            "vectors": {"size": 4, "distance": "Cosine"},
            "sharding_method": "custom",
            "shard_number": 1,
            "replication_factor": 1
        })),
    )
    .await;
    // The pool's fallback key on node 0, a silo tenant's key on node 2.
    for (key, peer) in [("pool", peer_ids[0]), ("silo_acme", peer_ids[2])] {
        ok(
            &client,
            Method::PUT,
            format!("{base}/collections/tiered/shards"),
            Some(json!({"shard_key": key, "placement": [peer]})),
        )
        .await;
    }
    ok(
        &client,
        Method::PUT,
        format!("{base}/collections/tiered/points?wait=true"),
        Some(json!({"points": points(0..5, "beta"), "shard_key": "pool"})),
    )
    .await;
    ok(
        &client,
        Method::PUT,
        format!("{base}/collections/tiered/points?wait=true"),
        Some(json!({"points": points(100..103, "acme"), "shard_key": "silo_acme"})),
    )
    .await;
    let urls = cluster.rest_urls();
    let count = |node: usize, key: &'static str| {
        let url = format!("{}/collections/tiered/points/count", urls[node]);
        let client = client.clone();
        async move {
            call(
                &client,
                Method::POST,
                url,
                None,
                Some(json!({"exact": true, "shard_key": key})),
            )
            .await
        }
    };
    for node in 0..3 {
        let (_, pool) = count(node, "pool").await;
        assert_eq!(pool["result"]["count"], 5, "node {node}: {pool}");
        let (_, silo) = count(node, "silo_acme").await;
        assert_eq!(silo["result"]["count"], 3, "node {node}: {silo}");
    }

    // Crash the node holding the silo shard: its key becomes unreadable,
    // the pool stays readable, nothing else is returned in its place.
    cluster.kill_node(2).expect("kill node 2");
    assert!(!cluster.is_running(2));
    let refused = client.get(format!("{}/readyz", urls[2])).send().await;
    assert!(refused.is_err(), "node 2 is down: {refused:?}");
    let (status, pool) = count(0, "pool").await;
    assert!(
        status.is_success(),
        "pool readable with node 2 down: {pool}"
    );
    assert_eq!(pool["result"]["count"], 5);
    let (status, silo) = count(0, "silo_acme").await;
    assert!(
        !status.is_success(),
        "silo shard unavailable while its node is down: {silo}"
    );

    cluster.restart_node(2).expect("restart node 2");
    assert!(cluster.is_running(2));
    assert_eq!(cluster.peer_id(2), peer_ids[2], "same peer after restart");
    for node in 0..3 {
        let (status, silo) = count(node, "silo_acme").await;
        assert!(status.is_success(), "node {node} after rejoin: {silo}");
        assert_eq!(silo["result"]["count"], 3, "node {node}: {silo}");
    }
}
