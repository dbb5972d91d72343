//! [`QdrantBackend`]: a Qdrant server over gRPC (qdrant-client 1.20).
//!
//! Pool and Silo collections are ordinary collections on one node (custom
//! shard keys would need cluster mode). Every write uses `wait = true`, so
//! it returns once the server has applied it (and written its WAL).
//!
//! With an API key configured, data calls do not use it: each physical
//! collection gets its own short-lived JWT (HS256 signed with the API key,
//! `access: [{collection, rw}]`), so a Silo tenant's calls cannot touch any
//! other collection even through a bug in this crate. The API key itself is
//! used only for creating/dropping collections and the routing table.

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
use qdrant_client::qdrant::vector_output::Vector as VectorKind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteCollectionBuilder, DeletePointsBuilder, FieldCondition, FieldType, Filter,
    GetPointsBuilder, KeywordIndexParamsBuilder, Match, PointId, PointStruct, Range,
    ScrollPointsBuilder, SearchPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::{Map, Value};
use sha2::Sha256;
use tenant_core::TenantId;
use uuid::Uuid;

use super::{
    sealed, CollectionLayout, RetrievalBackend, RouteAuthority, SearchRequest, Store, StoredPage,
};
use crate::collection::Distance;
use crate::error::{Error, Result};
use crate::filter::{FilterValue, Node, ScopedFilter};
use crate::health::CollectionHealth;
use crate::point::{StoredHit, StoredPoint, TENANT_FIELD};
use crate::route::{RouteEntry, RouteTable};

const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const ROUTES_DIMS: u64 = 1;

fn err(e: impl fmt::Display) -> Error {
    Error::Backend {
        backend: "qdrant",
        message: e.to_string(),
    }
}

/// Configures a [`QdrantBackend`].
#[must_use]
pub struct QdrantBackendBuilder {
    url: String,
    api_key: Option<String>,
    routes_collection: String,
    timeout: Duration,
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

    /// Connects lazily (the first call opens the channel).
    pub fn build(self) -> Result<QdrantBackend> {
        let admin = self.client(self.api_key.clone())?;
        Ok(QdrantBackend {
            admin,
            url: self.url,
            api_key: self.api_key,
            timeout: self.timeout,
            routes_collection: self.routes_collection,
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
    scoped: Mutex<HashMap<String, ScopedClient>>,
    routes: Arc<RouteTable>,
}

impl fmt::Debug for QdrantBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantBackend")
            .field("url", &self.url)
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
        return Err(err("scope is not a conjunction"));
    };
    Ok(Filter::must(conds.iter().map(condition)))
}

fn to_uuid(id: Option<PointId>) -> Result<Uuid> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => s.parse().map_err(err),
        other => Err(err(format!("unexpected point id {other:?}"))),
    }
}

fn to_map(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    Map::from(Payload::from(payload))
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

    async fn ensure_collection(&self, physical: &str, layout: CollectionLayout) -> Result<()> {
        if self.admin.collection_exists(physical).await.map_err(err)? {
            return Ok(());
        }
        let distance = match layout.distance {
            Distance::Cosine => qdrant_client::qdrant::Distance::Cosine,
            Distance::Dot => qdrant_client::qdrant::Distance::Dot,
            Distance::Euclid => qdrant_client::qdrant::Distance::Euclid,
        };
        let created = self
            .admin
            .create_collection(
                CreateCollectionBuilder::new(physical)
                    .vectors_config(VectorParamsBuilder::new(layout.dims as u64, distance)),
            )
            .await;
        if let Err(e) = created {
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

    async fn upsert(&self, physical: &str, points: Vec<StoredPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| PointStruct::new(p.id.to_string(), p.vector, Payload::from(p.payload)))
            .collect();
        self.data_client(physical)?
            .upsert_points(UpsertPointsBuilder::new(physical, points).wait(true))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn search(&self, physical: &str, request: SearchRequest<'_>) -> Result<Vec<StoredHit>> {
        let mut search =
            SearchPointsBuilder::new(physical, request.vector.to_vec(), request.limit as u64)
                .filter(server_filter(request.filter)?)
                .with_payload(true);
        if let Some(t) = request.score_threshold {
            search = search.score_threshold(t);
        }
        let res = self
            .data_client(physical)?
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
        physical: &str,
        filter: &ScopedFilter,
        offset: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<StoredPage> {
        let mut req = ScrollPointsBuilder::new(physical)
            .filter(server_filter(filter)?)
            .limit(u32::try_from(limit.max(1)).unwrap_or(u32::MAX))
            .with_payload(true)
            .with_vectors(with_vectors);
        if let Some(o) = offset {
            req = req.offset(PointId::from(o.to_string()));
        }
        let res = self.data_client(physical)?.scroll(req).await.map_err(err)?;
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

    async fn count(&self, physical: &str, filter: &ScopedFilter) -> Result<u64> {
        let res = self
            .data_client(physical)?
            .count(
                CountPointsBuilder::new(physical)
                    .filter(server_filter(filter)?)
                    .exact(true),
            )
            .await
            .map_err(err)?;
        Ok(res.result.map(|r| r.count).unwrap_or(0))
    }

    async fn delete(&self, physical: &str, filter: &ScopedFilter) -> Result<()> {
        self.data_client(physical)?
            .delete_points(
                DeletePointsBuilder::new(physical)
                    .points(server_filter(filter)?)
                    .wait(true),
            )
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
            _ => return Err(err("route entry is not an object")),
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

impl QdrantBackend {
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
