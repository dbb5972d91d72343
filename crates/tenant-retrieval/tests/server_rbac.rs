//! A Qdrant server with an API key and JWT RBAC: the SDK makes every data
//! call with a token scoped to one physical collection. What such a token
//! does and does not protect, per layout, proven on real servers:
//!
//! - collection per tenant: a Silo tenant's token reaches only its own
//!   collection (not the Pool, not another Silo, no management);
//! - shared collection and the Pool collection: the token reaches every
//!   tenant's points in it (only the SDK's tenant condition separates them);
//! - shard keys: one collection holds every key, so the token reaches every
//!   tenant's key and the fallback key; it cannot manage shard keys.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use qdrant_client::qdrant::{
    CreateCollectionBuilder, CreateShardKey, CreateShardKeyRequest, DeleteCollectionBuilder,
    ScrollPointsBuilder, ShardKey, ShardKeySelector, VectorParamsBuilder,
};
use qdrant_client::Qdrant;
use sha2::Sha256;
use support::*;
use tenant_core::{ContextIssuer, IsolationTier, KeyId, MasterKey, StaticTiers, TenantId};
use tenant_retrieval::{Naming, QdrantBackend, QdrantLayout, SearchQuery};
use tenant_testkit::{QdrantOptions, TestQdrant, TestQdrantCluster, TestkitError};

const SIGNING_KEY: &str = "rbac-signing-key-for-tests-only";

/// An HS256 token with `claims`, signed with the server's key.
fn token(claims: serde_json::Value) -> String {
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = B64URL.encode(serde_json::to_vec(&claims).unwrap());
    let input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

/// A client holding a token like the SDK's for `collection` only.
fn scoped_client(url: &str, collection: &str) -> Qdrant {
    let exp = (SystemTime::now() + Duration::from_secs(600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = token(serde_json::json!({
        "exp": exp,
        "access": [{ "collection": collection, "access": "rw" }],
    }));
    Qdrant::from_url(url)
        .api_key(jwt)
        .skip_compatibility_check()
        .build()
        .unwrap()
}

/// Tenant ids found by an unfiltered scroll of `collection` (optionally
/// one shard key) with `client`, or the error.
async fn tenants_seen(
    client: &Qdrant,
    collection: &str,
    key: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut req = ScrollPointsBuilder::new(collection)
        .limit(1000)
        .with_payload(true);
    if let Some(k) = key {
        req = req.shard_key_selector(ShardKeySelector {
            shard_keys: vec![ShardKey::from(k)],
            fallback: None,
        });
    }
    let res = client.scroll(req).await.map_err(|e| e.to_string())?;
    let mut seen: Vec<String> = res
        .result
        .into_iter()
        .filter_map(|p| {
            p.payload
                .get("tenant_id")
                .and_then(|v| v.as_str().map(|s| s.to_string()))
        })
        .collect();
    seen.sort();
    seen.dedup();
    Ok(seen)
}

fn denied(r: Result<impl std::fmt::Debug, impl std::fmt::Display>) -> bool {
    match r {
        Ok(_) => false,
        Err(e) => {
            let e = e.to_string().to_lowercase();
            e.contains("permission") || e.contains("denied") || e.contains("unauthenticated")
        }
    }
}

struct Platform {
    world: World,
    pool: [TenantId; 2],
    silo: [TenantId; 2],
}

/// A platform on `url` with two Pool and two Silo tenants, each holding
/// three documents written and read back through the SDK (so every data
/// call went through a collection token).
async fn platform_with_tenants(url: &str, layout: QdrantLayout, kind: Kind) -> Platform {
    let prefix = fresh_prefix();
    let backend = QdrantBackend::builder(url)
        .api_key(SIGNING_KEY)
        .routes_collection(format!("{prefix}__routes"))
        .layout(layout)
        .build()
        .unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let pool = [TenantId::random(), TenantId::random()];
    let silo = [TenantId::random(), TenantId::random()];
    let tiers = StaticTiers::new(IsolationTier::Pool)
        .with(silo[0], IsolationTier::Silo)
        .with(silo[1], IsolationTier::Silo);
    let operators = TenantId::random();
    let retrieval = platform(backend, &issuer, tiers, operators)
        .naming(Naming::with_prefix(&prefix).unwrap())
        .build()
        .await
        .unwrap();
    let world = World::on_server(issuer, retrieval, operators, kind);
    for t in pool.iter().chain(&silo) {
        let c = world.client(&world.ctx(*t), DOCS);
        c.upsert((0..3).map(|i| world.doc(&format!("d{i}"), &format!("text {i}"))))
            .await
            .unwrap();
        let hits = c
            .search(SearchQuery::new(world.embed.embed_one("text 1")).top_k(10))
            .await
            .unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(c.count(None).await.unwrap(), 3);
    }
    Platform { world, pool, silo }
}

fn sorted(ids: &[TenantId]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_tokens_confine_a_silo_tenant_but_not_a_shared_collection() {
    let qdrant = match tokio::task::spawn_blocking(|| {
        TestQdrant::start_with(&QdrantOptions::new().jwt_rbac(SIGNING_KEY))
    })
    .await
    .unwrap()
    {
        Ok(q) => q,
        Err(TestkitError::QdrantNotFound { .. }) => {
            report_skipped(Kind::Server);
            return;
        }
        Err(e) => panic!("starting Qdrant with JWT RBAC: {e}"),
    };
    let url = qdrant.grpc_url();
    let p = platform_with_tenants(&url, QdrantLayout::CollectionPerTenant, Kind::Server).await;
    let naming = p.world.retrieval.naming();
    let pool_name = naming.pool(DOCS);
    let silo_name = naming.silo(DOCS, p.silo[0]);
    let other_silo = naming.silo(DOCS, p.silo[1]);

    // A Silo tenant's token: its own collection only, no management.
    let silo_token = scoped_client(&url, &silo_name);
    assert_eq!(
        tenants_seen(&silo_token, &silo_name, None).await.unwrap(),
        sorted(&[p.silo[0]])
    );
    assert!(denied(tenants_seen(&silo_token, &pool_name, None).await));
    assert!(denied(tenants_seen(&silo_token, &other_silo, None).await));
    assert!(denied(
        silo_token
            .delete_collection(DeleteCollectionBuilder::new(other_silo.as_str()))
            .await
    ));
    assert!(denied(
        silo_token
            .create_collection(
                CreateCollectionBuilder::new(format!("{}_x", naming.prefix())).vectors_config(
                    VectorParamsBuilder::new(4, qdrant_client::qdrant::Distance::Cosine)
                ),
            )
            .await
    ));
    assert!(denied(
        tenants_seen(&silo_token, &naming.routes(), None).await
    ));

    // The Pool collection's token reaches every Pool tenant: there only
    // the SDK's tenant condition separates them.
    let pool_token = scoped_client(&url, &pool_name);
    assert_eq!(
        tenants_seen(&pool_token, &pool_name, None).await.unwrap(),
        sorted(&p.pool)
    );
    assert!(denied(tenants_seen(&pool_token, &silo_name, None).await));

    // Nothing changed: every tenant still reads its three documents.
    for t in p.pool.iter().chain(&p.silo) {
        let c = p.world.client(&p.world.ctx(*t), DOCS);
        assert_eq!(c.count(None).await.unwrap(), 3);
    }
    report_passed(
        Kind::Server,
        "JWT RBAC, collection per tenant",
        1,
        "a Silo tenant's token reaches only its collection; the Pool token reaches every Pool tenant",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_shard_key_layout_one_collection_token_reaches_every_key() {
    let cluster = match tokio::task::spawn_blocking(|| {
        TestQdrantCluster::start_with(3, &QdrantOptions::new().jwt_rbac(SIGNING_KEY))
    })
    .await
    .unwrap()
    {
        Ok(c) => c,
        Err(TestkitError::QdrantNotFound { .. }) => {
            report_skipped(Kind::Cluster);
            return;
        }
        Err(e) => panic!("starting a Qdrant cluster with JWT RBAC: {e}"),
    };
    let url = cluster.grpc_url(0);
    let p = platform_with_tenants(&url, QdrantLayout::ShardKeys, Kind::Cluster).await;
    let naming = p.world.retrieval.naming();
    let sharded = naming.sharded(DOCS);
    let token = scoped_client(&url, &sharded);

    // The token reaches the fallback key and every tenant's key.
    assert_eq!(
        tenants_seen(&token, &sharded, Some(naming.pool_key()))
            .await
            .unwrap(),
        sorted(&p.pool)
    );
    let own = naming.tenant_key(p.silo[0]);
    let other = naming.tenant_key(p.silo[1]);
    assert_eq!(
        tenants_seen(&token, &sharded, Some(&own)).await.unwrap(),
        sorted(&[p.silo[0]])
    );
    assert_eq!(
        tenants_seen(&token, &sharded, Some(&other)).await.unwrap(),
        sorted(&[p.silo[1]])
    );
    // A request naming no key reads them all.
    let mut everyone: Vec<TenantId> = p.pool.to_vec();
    everyone.extend(p.silo);
    assert_eq!(
        tenants_seen(&token, &sharded, None).await.unwrap(),
        sorted(&everyone)
    );
    // It cannot manage shard keys.
    assert!(denied(
        token
            .create_shard_key(CreateShardKeyRequest {
                collection_name: sharded.clone(),
                request: Some(CreateShardKey {
                    shard_key: Some(ShardKey::from("intruder")),
                    ..Default::default()
                }),
                timeout: None,
            })
            .await
    ));
    for t in p.pool.iter().chain(&p.silo) {
        let c = p.world.client(&p.world.ctx(*t), DOCS);
        assert_eq!(c.count(None).await.unwrap(), 3);
    }
    report_passed(
        Kind::Cluster,
        "JWT RBAC, shard keys",
        1,
        "the collection token reaches every shard key; it cannot create one",
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
