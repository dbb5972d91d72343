//! [`QdrantBackend`]: a Qdrant server over gRPC (qdrant-client 1.20).
//!
//! Three layouts ([`QdrantLayout`]): a collection per tier (a shared Pool
//! collection plus a collection per Silo tenant), one shared collection for
//! every tenant, or one collection with custom shard keys (Pool tenants on
//! a fallback key, a key per Silo tenant, routed by the server; needs
//! cluster mode). Every write uses `wait = true`, so it returns once the
//! server has applied it (and written its WAL).
//!
//! With an API key configured, data calls do not use it: each physical
//! collection gets its own short-lived JWT (HS256 signed with the API key,
//! `access: [{collection, rw}]`), so the calls for one collection cannot
//! touch any other even through a bug in this crate. The API key itself is
//! used only for creating/dropping collections and shard keys, shard
//! transfers, and the routing table.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use qdrant_client::qdrant::condition::ConditionOneOf;
use qdrant_client::qdrant::payload_index_params::IndexParams;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::update_collection_cluster_setup_request::Operation as ClusterOperation;
use qdrant_client::qdrant::vector_output::Vector as VectorKind;
use qdrant_client::qdrant::{
    CollectionClusterInfoRequest, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, CreateShardKey, CreateShardKeyRequest,
    DeleteCollectionBuilder, DeletePointsBuilder, DeleteShardKey, DeleteShardKeyRequest,
    FieldCondition, FieldType, Filter, GetPointsBuilder, KeywordIndexParamsBuilder,
    ListShardKeysRequest, Match, PointId, PointStruct, Range, ReplicaState, ReplicatePoints,
    ScrollPointsBuilder, SearchPointsBuilder, ShardKey, ShardKeySelector, ShardingMethod,
    UpdateCollectionClusterSetupRequest, UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::{Map, Value};
use sha2::Sha256;
use tenant_core::TenantId;
use uuid::Uuid;

use super::{
    sealed, CollectionLayout, Layout, Place, RetrievalBackend, RouteAuthority, SearchRequest,
    Shards, Store, StoredPage,
};
use crate::collection::Distance;
use crate::error::{Error, Result};
use crate::filter::{FilterValue, Node, ScopedFilter};
use crate::health::CollectionHealth;
use crate::point::{StoredHit, StoredPoint, TENANT_FIELD};
use crate::route::{RouteEntry, RouteTable};

const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const ROUTES_DIMS: u64 = 1;
const TRANSFER_POLL: Duration = Duration::from_millis(100);

/// How a [`QdrantBackend`] lays tenants out on the server. See
/// `docs/retrieval.md` for when to pick which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QdrantLayout {
    /// A shared Pool collection per logical collection and a dedicated
    /// collection per Silo tenant; a promotion copies between collections.
    /// Runs on a single node. Every operation re-reads its route.
    #[default]
    CollectionPerTenant,
    /// One collection per logical collection holding every tenant; one
    /// tier (promotion is refused). Runs on a single node.
    SharedCollection,
    /// One collection per logical collection with custom sharding: Pool
    /// tenants on the fallback shard key, each Silo tenant on its own key.
    /// The server routes every request (dedicated key if it exists and is
    /// active, else the fallback); a promotion replicates the tenant's
    /// points to its key by filter. Needs cluster mode.
    ShardKeys,
}

/// A failure of the server, keeping its error as the source.
fn err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend_source("qdrant", e)
}

/// A failure of the server described by the SDK.
fn fail(message: impl fmt::Display) -> Error {
    Error::backend("qdrant", message)
}

/// Configures a [`QdrantBackend`].
#[must_use]
pub struct QdrantBackendBuilder {
    url: String,
    api_key: Option<String>,
    routes_collection: String,
    timeout: Duration,
    layout: QdrantLayout,
    replication_factor: u32,
    transfer_timeout: Duration,
}

impl QdrantBackendBuilder {
    /// The server's API key (also the JWT signing secret when the server
    /// has `jwt_rbac` enabled).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Name of the collection holding the routing table (default
    /// `tr__routes`).
    pub fn routes_collection(mut self, name: impl Into<String>) -> Self {
        self.routes_collection = name.into();
        self
    }

    /// Per-request timeout (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How tenants are laid out (default
    /// [`QdrantLayout::CollectionPerTenant`]).
    pub fn layout(mut self, layout: QdrantLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Replicas of every shard this backend creates (default 1).
    pub fn replication_factor(mut self, replicas: u32) -> Self {
        self.replication_factor = replicas.max(1);
        self
    }

    /// How long a promotion waits for the server to replicate a tenant's
    /// points to its shard key (default 5 min).
    pub fn transfer_timeout(mut self, timeout: Duration) -> Self {
        self.transfer_timeout = timeout;
        self
    }

    /// Connects lazily (the first call opens the channel).
    pub fn build(self) -> Result<QdrantBackend> {
        let admin = self.client(self.api_key.clone())?;
        Ok(QdrantBackend {
            admin,
            url: self.url,
            api_key: self.api_key,
            timeout: self.timeout,
            routes_collection: self.routes_collection,
            layout: self.layout,
            replication_factor: self.replication_factor,
            transfer_timeout: self.transfer_timeout,
            scoped: Mutex::default(),
            routes: Arc::default(),
        })
    }

    fn client(&self, key: Option<String>) -> Result<Qdrant> {
        Qdrant::from_url(&self.url)
            .api_key(key)
            .timeout(self.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(err)
    }
}

struct ScopedClient {
    client: std::sync::Arc<Qdrant>,
    expires: SystemTime,
}

/// A Qdrant server reached over gRPC.
///
/// ```no_run
/// # fn demo() -> tenant_retrieval::Result<()> {
/// let backend = tenant_retrieval::QdrantBackend::builder("http://localhost:6334")
///     .api_key(std::env::var("QDRANT_API_KEY").unwrap_or_default())
///     .build()?;
/// # let _ = backend; Ok(()) }
/// ```
pub struct QdrantBackend {
    admin: Qdrant,
    url: String,
    api_key: Option<String>,
    timeout: Duration,
    routes_collection: String,
    layout: QdrantLayout,
    replication_factor: u32,
    transfer_timeout: Duration,
    scoped: Mutex<HashMap<String, ScopedClient>>,
    routes: Arc<RouteTable>,
}

impl fmt::Debug for QdrantBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantBackend")
            .field("url", &self.url)
            .field("layout", &self.layout)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl sealed::Sealed for QdrantBackend {
    fn into_store(self, _: sealed::Token) -> Arc<dyn Store> {
        Arc::new(self)
    }
}

impl RetrievalBackend for QdrantBackend {
    fn kind(&self) -> &'static str {
        "qdrant"
    }
}

impl QdrantBackend {
    /// Starts configuring a backend for the gRPC endpoint `url`
    /// (e.g. `http://localhost:6334`).
    pub fn builder(url: impl Into<String>) -> QdrantBackendBuilder {
        QdrantBackendBuilder {
            url: url.into(),
            api_key: None,
            routes_collection: "tr__routes".to_owned(),
            timeout: Duration::from_secs(30),
            layout: QdrantLayout::default(),
            replication_factor: 1,
            transfer_timeout: Duration::from_secs(300),
        }
    }

    /// The client for data calls on `physical`: the admin client without an
    /// API key, else one authenticated by a JWT scoped to that collection.
    fn data_client(&self, physical: &str) -> Result<std::sync::Arc<Qdrant>> {
        let Some(key) = &self.api_key else {
            return Ok(std::sync::Arc::new(self.admin.clone()));
        };
        let now = SystemTime::now();
        let mut cache = self.scoped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(physical) {
            if c.expires > now + Duration::from_secs(60) {
                return Ok(c.client.clone());
            }
        }
        let expires = now + TOKEN_TTL;
        let token = collection_token(key, physical, expires)?;
        let client = std::sync::Arc::new(
            Qdrant::from_url(&self.url)
                .api_key(token)
                .timeout(self.timeout)
                .skip_compatibility_check()
                .build()
                .map_err(err)?,
        );
        cache.insert(
            physical.to_owned(),
            ScopedClient {
                client: client.clone(),
                expires,
            },
        );
        Ok(client)
    }
}

/// An HS256 JWT granting read-write access to one collection only.
fn collection_token(secret: &str, collection: &str, expires: SystemTime) -> Result<String> {
    let exp = expires.duration_since(UNIX_EPOCH).map_err(err)?.as_secs();
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "exp": exp,
        "access": [{ "collection": collection, "access": "rw" }],
    });
    let claims = B64URL.encode(serde_json::to_vec(&claims).map_err(err)?);
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(err)?;
    mac.update(signing_input.as_bytes());
    let sig = B64URL.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{sig}"))
}

fn keyword(v: &FilterValue) -> MatchValue {
    match v {
        // Explicitly a keyword: qdrant-client turns a `String` containing
        // whitespace into a full-text match.
        FilterValue::Str(s) => MatchValue::Keyword(s.clone()),
        FilterValue::Int(i) => MatchValue::Integer(*i),
        FilterValue::Bool(b) => MatchValue::Boolean(*b),
    }
}

fn field_match(key: &str, v: &FilterValue) -> Condition {
    Condition {
        condition_one_of: Some(ConditionOneOf::Field(FieldCondition {
            key: key.to_owned(),
            r#match: Some(Match {
                match_value: Some(keyword(v)),
            }),
            ..Default::default()
        })),
    }
}

fn condition(node: &Node) -> Condition {
    match node {
        Node::All(v) => Filter::must(v.iter().map(condition)).into(),
        Node::Any(v) => Filter::should(v.iter().map(condition)).into(),
        Node::Not(n) => Filter::must_not([condition(n)]).into(),
        Node::Eq(k, v) => field_match(k, v),
        Node::In(k, vs) => Filter::should(vs.iter().map(|v| field_match(k, v))).into(),
        Node::Range(k, b) => Condition::range(
            k.clone(),
            Range {
                lt: b.lt,
                gt: b.gt,
                gte: b.gte,
                lte: b.lte,
            },
        ),
        Node::HasId(ids) => Condition::has_id(ids.iter().map(|id| PointId::from(id.to_string()))),
    }
}

/// The scope as a server filter: `must: [tenant, narrowing]`.
fn server_filter(scope: &ScopedFilter) -> Result<Filter> {
    let Node::All(conds) = scope.to_node() else {
        return Err(fail("scope is not a conjunction"));
    };
    Ok(Filter::must(conds.iter().map(condition)))
}

fn to_uuid(id: Option<PointId>) -> Result<Uuid> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => s.parse().map_err(err),
        other => Err(fail(format!("unexpected point id {other:?}"))),
    }
}

fn to_map(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    Map::from(Payload::from(payload))
}

/// The shard key selector of a place (none for an unsharded collection).
fn selector(shards: &Shards) -> Option<ShardKeySelector> {
    match shards {
        Shards::Unsharded => None,
        Shards::Routed { target, fallback } => Some(ShardKeySelector {
            shard_keys: vec![ShardKey::from(target.as_str())],
            fallback: Some(ShardKey::from(fallback.as_str())),
        }),
        Shards::Key(key) => Some(ShardKeySelector {
            shard_keys: vec![ShardKey::from(key.as_str())],
            fallback: None,
        }),
    }
}

fn key_name(key: &Option<ShardKey>) -> Option<String> {
    use qdrant_client::qdrant::shard_key::Key;
    match key.as_ref().and_then(|k| k.key.as_ref()) {
        Some(Key::Keyword(s)) => Some(s.clone()),
        Some(Key::Number(n)) => Some(n.to_string()),
        None => None,
    }
}

/// The routes collection's point for (`tenant`, `collection`): one point
/// per route, id derived from both, so an upsert replaces exactly it.
fn route_point_id(tenant: TenantId, collection: &str) -> PointId {
    PointId::from(crate::point::point_id(tenant, &format!("route:{collection}")).to_string())
}

#[async_trait]
impl Store for QdrantBackend {
    fn kind(&self) -> &'static str {
        "qdrant"
    }

    fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    fn route_authority(&self) -> RouteAuthority {
        RouteAuthority::Shared
    }

    fn layout(&self) -> Layout {
        match self.layout {
            QdrantLayout::CollectionPerTenant => Layout::CollectionPerTier,
            QdrantLayout::SharedCollection => Layout::Shared,
            QdrantLayout::ShardKeys => Layout::ShardKeys,
        }
    }

    async fn ensure_collection(&self, place: &Place, layout: CollectionLayout) -> Result<()> {
        let physical = place.collection.as_str();
        if !self.admin.collection_exists(physical).await.map_err(err)? {
            self.create_collection(physical, layout).await?;
        }
        match &place.shards {
            Shards::Unsharded => Ok(()),
            Shards::Routed { fallback, .. } => self.ensure_shard_key(physical, fallback).await,
            Shards::Key(key) => self.ensure_shard_key(physical, key).await,
        }
    }

    async fn collection_exists(&self, physical: &str) -> Result<bool> {
        self.admin.collection_exists(physical).await.map_err(err)
    }

    async fn drop_collection(&self, physical: &str) -> Result<()> {
        if self.admin.collection_exists(physical).await.map_err(err)? {
            self.admin
                .delete_collection(DeleteCollectionBuilder::new(physical))
                .await
                .map_err(err)?;
        }
        self.scoped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(physical);
        Ok(())
    }

    async fn upsert(&self, place: &Place, points: Vec<StoredPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| PointStruct::new(p.id.to_string(), p.vector, Payload::from(p.payload)))
            .collect();
        let mut req = UpsertPointsBuilder::new(place.collection.as_str(), points).wait(true);
        if let Some(s) = selector(&place.shards) {
            req = req.shard_key_selector(s);
        }
        self.data_client(&place.collection)?
            .upsert_points(req)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn search(&self, place: &Place, request: SearchRequest<'_>) -> Result<Vec<StoredHit>> {
        let mut search = SearchPointsBuilder::new(
            place.collection.as_str(),
            request.vector.to_vec(),
            request.limit as u64,
        )
        .filter(server_filter(request.filter)?)
        .with_payload(true);
        if let Some(t) = request.score_threshold {
            search = search.score_threshold(t);
        }
        if let Some(s) = selector(&place.shards) {
            search = search.shard_key_selector(s);
        }
        let res = self
            .data_client(&place.collection)?
            .search_points(search)
            .await
            .map_err(err)?;
        res.result
            .into_iter()
            .map(|p| {
                Ok(StoredHit {
                    id: to_uuid(p.id)?,
                    score: p.score,
                    payload: to_map(p.payload),
                })
            })
            .collect()
    }

    async fn scroll(
        &self,
        place: &Place,
        filter: &ScopedFilter,
        offset: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<StoredPage> {
        let mut req = ScrollPointsBuilder::new(place.collection.as_str())
            .filter(server_filter(filter)?)
            .limit(u32::try_from(limit.max(1)).unwrap_or(u32::MAX))
            .with_payload(true)
            .with_vectors(with_vectors);
        if let Some(o) = offset {
            req = req.offset(PointId::from(o.to_string()));
        }
        if let Some(s) = selector(&place.shards) {
            req = req.shard_key_selector(s);
        }
        let res = self
            .data_client(&place.collection)?
            .scroll(req)
            .await
            .map_err(err)?;
        let points = res
            .result
            .into_iter()
            .map(|p| {
                let vector = match p.vectors.and_then(|v| v.get_vector()) {
                    Some(VectorKind::Dense(d)) => d.data,
                    _ => Vec::new(),
                };
                Ok(StoredPoint {
                    id: to_uuid(p.id)?,
                    vector,
                    payload: to_map(p.payload),
                })
            })
            .collect::<Result<_>>()?;
        let next = match res.next_page_offset {
            Some(id) => Some(to_uuid(Some(id))?),
            None => None,
        };
        Ok(StoredPage { points, next })
    }

    async fn count(&self, place: &Place, filter: &ScopedFilter) -> Result<u64> {
        let mut req = CountPointsBuilder::new(place.collection.as_str())
            .filter(server_filter(filter)?)
            .exact(true);
        if let Some(s) = selector(&place.shards) {
            req = req.shard_key_selector(s);
        }
        let res = self
            .data_client(&place.collection)?
            .count(req)
            .await
            .map_err(err)?;
        Ok(res.result.map(|r| r.count).unwrap_or(0))
    }

    async fn delete(&self, place: &Place, filter: &ScopedFilter) -> Result<()> {
        let mut req = DeletePointsBuilder::new(place.collection.as_str())
            .points(server_filter(filter)?)
            .wait(true);
        if let Some(s) = selector(&place.shards) {
            req = req.shard_key_selector(s);
        }
        self.data_client(&place.collection)?
            .delete_points(req)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn create_shard_key(&self, collection: &str, key: &str, partial: bool) -> Result<()> {
        self.admin
            .create_shard_key(CreateShardKeyRequest {
                collection_name: collection.to_owned(),
                request: Some(CreateShardKey {
                    shard_key: Some(ShardKey::from(key)),
                    shards_number: Some(1),
                    replication_factor: Some(self.replication_factor),
                    placement: Vec::new(),
                    initial_state: partial.then_some(ReplicaState::Partial as i32),
                }),
                timeout: None,
            })
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn replicate(
        &self,
        collection: &str,
        from: &str,
        to: &str,
        scope: &ScopedFilter,
    ) -> Result<()> {
        self.admin
            .update_collection_cluster_setup(UpdateCollectionClusterSetupRequest {
                collection_name: collection.to_owned(),
                timeout: None,
                operation: Some(ClusterOperation::ReplicatePoints(ReplicatePoints {
                    from_shard_key: Some(ShardKey::from(from)),
                    to_shard_key: Some(ShardKey::from(to)),
                    filter: Some(server_filter(scope)?),
                })),
            })
            .await
            .map_err(err)?;
        self.await_active(collection, to).await
    }

    async fn drop_shard_key(&self, collection: &str, key: &str) -> Result<()> {
        if !self.shard_key_exists(collection, key).await? {
            return Ok(());
        }
        self.admin
            .delete_shard_key(DeleteShardKeyRequest {
                collection_name: collection.to_owned(),
                request: Some(DeleteShardKey {
                    shard_key: Some(ShardKey::from(key)),
                }),
                timeout: None,
            })
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn load_routes(&self) -> Result<Vec<RouteEntry>> {
        let name = &self.routes_collection;
        self.ensure_routes_collection().await?;
        let mut out = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollPointsBuilder::new(name)
                .limit(1000)
                .with_payload(true);
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let res = self.admin.scroll(req).await.map_err(err)?;
            for p in res.result {
                let entry: RouteEntry =
                    serde_json::from_value(Value::Object(to_map(p.payload))).map_err(err)?;
                out.push(entry);
            }
            match res.next_page_offset {
                Some(o) => offset = Some(o),
                None => break,
            }
        }
        Ok(out)
    }

    async fn fetch_route(&self, tenant: TenantId, collection: &str) -> Result<Option<RouteEntry>> {
        let res = self
            .admin
            .get_points(
                GetPointsBuilder::new(
                    self.routes_collection.as_str(),
                    vec![route_point_id(tenant, collection)],
                )
                .with_payload(true),
            )
            .await
            .map_err(err)?;
        match res.result.into_iter().next() {
            Some(p) => Ok(Some(
                serde_json::from_value(Value::Object(to_map(p.payload))).map_err(err)?,
            )),
            None => Ok(None),
        }
    }

    async fn store_route(&self, entry: &RouteEntry) -> Result<()> {
        let payload = match serde_json::to_value(entry).map_err(err)? {
            Value::Object(m) => m,
            _ => return Err(fail("route entry is not an object")),
        };
        let point = PointStruct::new(
            route_point_id(entry.tenant, &entry.collection),
            vec![1.0f32],
            Payload::from(payload),
        );
        self.admin
            .upsert_points(
                UpsertPointsBuilder::new(self.routes_collection.as_str(), vec![point]).wait(true),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn health(&self, prefix: &str) -> Result<Vec<CollectionHealth>> {
        let mut names: Vec<String> = self
            .admin
            .list_collections()
            .await
            .map_err(err)?
            .collections
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with(prefix) && *n != self.routes_collection)
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let info = self
                .admin
                .collection_info(name.as_str())
                .await
                .map_err(err)?
                .result
                .unwrap_or_default();
            let index = info.payload_schema.get(TENANT_FIELD);
            let is_tenant = index
                .and_then(|i| i.params.as_ref())
                .and_then(|p| p.index_params.as_ref())
                .is_some_and(|p| {
                    matches!(
                        p,
                        IndexParams::KeywordIndexParams(k) if k.is_tenant == Some(true)
                    )
                });
            out.push(CollectionHealth {
                physical_name: name,
                points: usize::try_from(info.points_count.unwrap_or(0)).unwrap_or(usize::MAX),
                tenant_index: index.is_some(),
                tenant_index_is_tenant: is_tenant,
            });
        }
        Ok(out)
    }
}

/// Where a shard key's replicas are.
enum KeyState {
    Missing,
    /// Some replica is still receiving points.
    Filling,
    Active,
    /// Some replica is dead.
    Failed,
}

impl QdrantBackend {
    /// Creates a physical collection with the tenant index (custom sharding
    /// in the shard-key layout), tolerating a concurrent creation.
    async fn create_collection(&self, physical: &str, layout: CollectionLayout) -> Result<()> {
        let distance = match layout.distance {
            Distance::Cosine => qdrant_client::qdrant::Distance::Cosine,
            Distance::Dot => qdrant_client::qdrant::Distance::Dot,
            Distance::Euclid => qdrant_client::qdrant::Distance::Euclid,
        };
        let mut create = CreateCollectionBuilder::new(physical)
            .vectors_config(VectorParamsBuilder::new(layout.dims as u64, distance))
            .replication_factor(self.replication_factor);
        if self.layout == QdrantLayout::ShardKeys {
            create = create
                .sharding_method(ShardingMethod::Custom as i32)
                .shard_number(1);
        }
        if let Err(e) = self.admin.create_collection(create).await {
            // Lost a creation race with another replica: fine if it exists.
            if !self.admin.collection_exists(physical).await.map_err(err)? {
                return Err(err(e));
            }
        }
        self.admin
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(physical, TENANT_FIELD, FieldType::Keyword)
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                    .wait(true),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn shard_key_exists(&self, collection: &str, key: &str) -> Result<bool> {
        let keys = self
            .admin
            .list_shard_keys(ListShardKeysRequest {
                collection_name: collection.to_owned(),
            })
            .await
            .map_err(err)?;
        Ok(keys
            .shard_keys
            .iter()
            .any(|d| key_name(&d.key).as_deref() == Some(key)))
    }

    /// Creates shard key `key` (active) unless it exists.
    async fn ensure_shard_key(&self, collection: &str, key: &str) -> Result<()> {
        if self.shard_key_exists(collection, key).await? {
            return Ok(());
        }
        if let Err(e) = self.create_shard_key(collection, key, false).await {
            if !self.shard_key_exists(collection, key).await? {
                return Err(e);
            }
        }
        self.await_active(collection, key).await
    }

    /// Waits until every replica of shard key `key` is active: after a
    /// replication, and after creating a key (a write to a key whose
    /// replica another node has not set up yet fails with "no target
    /// shard").
    async fn await_active(&self, collection: &str, key: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.transfer_timeout;
        loop {
            match self.key_state(collection, key).await? {
                KeyState::Active => return Ok(()),
                KeyState::Failed => {
                    return Err(fail(format!(
                        "a replica of shard key `{key}` of `{collection}` is dead"
                    )))
                }
                KeyState::Missing => {
                    return Err(fail(format!(
                        "shard key `{key}` of `{collection}` vanished while being filled"
                    )))
                }
                KeyState::Filling => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "shard key `{key}` of `{collection}` was not active after {:?}",
                    self.transfer_timeout
                )));
            }
            tokio::time::sleep(TRANSFER_POLL).await;
        }
    }

    async fn key_state(&self, collection: &str, key: &str) -> Result<KeyState> {
        let info = self
            .admin
            .collection_cluster_info(CollectionClusterInfoRequest {
                collection_name: collection.to_owned(),
            })
            .await
            .map_err(err)?;
        let states: Vec<i32> = info
            .local_shards
            .iter()
            .filter(|s| key_name(&s.shard_key).as_deref() == Some(key))
            .map(|s| s.state)
            .chain(
                info.remote_shards
                    .iter()
                    .filter(|s| key_name(&s.shard_key).as_deref() == Some(key))
                    .map(|s| s.state),
            )
            .collect();
        Ok(if states.is_empty() {
            KeyState::Missing
        } else if states.contains(&(ReplicaState::Dead as i32)) {
            KeyState::Failed
        } else if states.iter().all(|s| *s == ReplicaState::Active as i32) {
            KeyState::Active
        } else {
            KeyState::Filling
        })
    }

    /// Creates the routes collection if it is missing (tolerating a
    /// concurrent creation by another process).
    async fn ensure_routes_collection(&self) -> Result<()> {
        let name = self.routes_collection.as_str();
        if self.admin.collection_exists(name).await.map_err(err)? {
            return Ok(());
        }
        let created = self
            .admin
            .create_collection(CreateCollectionBuilder::new(name).vectors_config(
                VectorParamsBuilder::new(ROUTES_DIMS, qdrant_client::qdrant::Distance::Dot),
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if self.admin.collection_exists(name).await.map_err(err)? => {
                let _ = e;
                Ok(())
            }
            Err(e) => Err(err(e)),
        }
    }
}
