//! [`EdgeBackend`]: embedded qdrant-edge shards on local disk.
//!
//! One shard directory per physical collection under
//! `<root>/collections/<name>`, plus `<root>/routes.json`.
//!
//! One process at a time: qdrant-edge keeps a shard's state in memory and
//! never sees another process's writes, so [`EdgeBackend::open`] takes an
//! exclusive lock on `<root>/.lock` (released when the last clone is
//! dropped, or by the kernel when the process dies) and a second opener
//! gets [`Error::BackendInUse`]. Routes are therefore authoritative in
//! memory and shared by every `Retrieval` built on clones of the backend.
//!
//! Durability: qdrant-edge 0.7.0 does not replay its WAL on load, and
//! `EdgeShard::flush` panics when another thread is inside `update`. So
//! every shard has one writer lock; each write (a whole batch) runs
//! `update` and then `flush` under it, and returns only after the flush:
//! an acknowledged write survives `kill -9`. Batch documents into one
//! `upsert` call to pay for one flush.

use std::collections::HashMap;
use std::fs;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{Condition, HasIdCondition, NamedQuery, Payload};
use qdrant_edge::{
    CreateIndex, EdgeConfig, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, FieldCondition,
    FieldIndexOperations, Filter, KeywordIndexParams, Match, PayloadFieldSchema,
    PayloadSchemaParams, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    QueryEnum, Range, Record, ScoredPoint, UpdateOperation, ValueVariants, VectorStructInternal,
    VectorStructPersisted, WalOptions, WithPayloadInterface, WithVector, DEFAULT_VECTOR_NAME,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use tenant_core::TenantId;

use super::{
    sealed, CollectionLayout, Layout, Place, RetrievalBackend, RouteAuthority, SearchRequest,
    Store, StoredPage,
};
use crate::collection::Distance;
use crate::error::{Error, Result};
use crate::filter::{FilterValue, Node, ScopedFilter};
use crate::health::CollectionHealth;
use crate::point::{StoredHit, StoredPoint, TENANT_FIELD};
use crate::route::{RouteEntry, RouteTable};

const ROUTES_FILE: &str = "routes.json";
const COLLECTIONS_DIR: &str = "collections";
const LOCK_FILE: &str = ".lock";

const WAL_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// One open shard and the lock that serializes its writes with its flushes.
struct EdgeCollection {
    shard: EdgeShard,
    writer: Mutex<()>,
}

impl EdgeCollection {
    /// Runs `op` then flushes, both under the writer lock.
    fn write(&self, op: UpdateOperation) -> Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.shard.update(op).map_err(Error::edge_source)?;
        flush(&self.shard)
    }
}

fn flush(shard: &EdgeShard) -> Result<()> {
    // `flush` panics instead of returning errors; the writer lock rules out
    // the known cause, this turns anything else into an error.
    catch_unwind(AssertUnwindSafe(|| shard.flush()))
        .map_err(|_| Error::edge("flush failed (panicked)"))
}

struct Inner {
    root: PathBuf,
    shards: RwLock<HashMap<String, Arc<EdgeCollection>>>,
    open_lock: Mutex<()>,
    routes_lock: Mutex<()>,
    routes: Arc<RouteTable>,
    inline_reads: AtomicBool,
    /// Holds the exclusive lock on the root for the backend's lifetime.
    _root_lock: fs::File,
}

/// Embedded vector storage on qdrant-edge 0.7.0 (the default backend).
///
/// ```
/// # async fn demo() -> tenant_retrieval::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let backend = tenant_retrieval::EdgeBackend::open(dir.path())?;
/// # let _ = backend; Ok(()) }
/// ```
///
/// Not `Clone`: handing it to [`Retrieval::builder`](crate::Retrieval::builder)
/// moves it into the platform, and the root lock keeps anyone from opening
/// the same root again, so no handle on the raw storage is left behind.
/// (The test-only `test-support` feature makes it `Clone` for the crate's
/// own tests and benchmarks.)
pub struct EdgeBackend {
    inner: Arc<Inner>,
}

#[cfg(feature = "test-support")]
impl Clone for EdgeBackend {
    fn clone(&self) -> Self {
        self.handle()
    }
}

impl std::fmt::Debug for EdgeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeBackend")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl sealed::Sealed for EdgeBackend {
    fn into_store(self, _: sealed::Token) -> Arc<dyn Store> {
        Arc::new(self)
    }
}

impl RetrievalBackend for EdgeBackend {
    fn kind(&self) -> &'static str {
        "edge"
    }
}

impl EdgeBackend {
    /// Opens (creating if needed) a backend rooted at `root` and locks the
    /// root for this process. Collections are opened lazily.
    ///
    /// # Errors
    ///
    /// [`Error::BackendInUse`] while another process (or another
    /// `EdgeBackend` not cloned from this one) has the root open;
    /// [`Error::Io`] if the root cannot be created.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let dir = root.join(COLLECTIONS_DIR);
        fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        let lock_path = root.join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::Io {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::BackendInUse { path: root }),
            Err(fs::TryLockError::Error(source)) => {
                return Err(Error::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                shards: RwLock::default(),
                open_lock: Mutex::new(()),
                routes_lock: Mutex::new(()),
                routes: Arc::default(),
                inline_reads: AtomicBool::new(false),
                _root_lock: lock,
            }),
        })
    }

    /// Runs searches, scrolls and counts directly on the calling async task,
    /// without telling the runtime: the lowest latency, but the worker
    /// thread can run nothing else for the duration of the search (use it
    /// when searches are short and the runtime has spare workers).
    ///
    /// By default (`false`) a read on tokio's multi-threaded runtime runs on
    /// the calling thread through [`tokio::task::block_in_place`], which
    /// first hands the worker's other tasks to another thread, so there is
    /// no thread hop on the way back; on a current-thread runtime it runs on
    /// the blocking pool (`spawn_blocking`); outside any tokio runtime it
    /// runs inline. Writes always run on the blocking pool.
    pub fn set_inline_reads(&self, inline: bool) {
        self.inner.inline_reads.store(inline, Ordering::Relaxed);
    }

    /// Another handle on the same backend (for this crate's blocking tasks).
    fn handle(&self) -> EdgeBackend {
        EdgeBackend {
            inner: self.inner.clone(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn dir_of(&self, physical: &str) -> PathBuf {
        self.inner.root.join(COLLECTIONS_DIR).join(physical)
    }

    fn get(&self, physical: &str) -> Result<Arc<EdgeCollection>> {
        if let Some(c) = read(&self.inner.shards).get(physical) {
            return Ok(c.clone());
        }
        let _g = self
            .inner
            .open_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = read(&self.inner.shards).get(physical) {
            return Ok(c.clone());
        }
        let dir = self.dir_of(physical);
        if !dir.join("edge_config.json").exists() {
            return Err(Error::edge(format!(
                "collection `{physical}` does not exist"
            )));
        }
        let shard = EdgeShard::load(&dir, None).map_err(Error::edge_source)?;
        Ok(self.insert(physical, shard))
    }

    fn insert(&self, physical: &str, shard: EdgeShard) -> Arc<EdgeCollection> {
        let c = Arc::new(EdgeCollection {
            shard,
            writer: Mutex::new(()),
        });
        write(&self.inner.shards).insert(physical.to_owned(), c.clone());
        c
    }

    fn create(&self, physical: &str, layout: CollectionLayout) -> Result<()> {
        if self.get(physical).is_ok() {
            return Ok(());
        }
        let _g = self
            .inner
            .open_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if read(&self.inner.shards).contains_key(physical) {
            return Ok(());
        }
        let dir = self.dir_of(physical);
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let shard = EdgeShard::load(&dir, Some(edge_config(layout))).map_err(Error::edge_source)?;
        let index =
            UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: json_path(TENANT_FIELD)?,
                field_schema: Some(PayloadFieldSchema::FieldParams(
                    PayloadSchemaParams::Keyword(KeywordIndexParams {
                        r#type: Default::default(),
                        is_tenant: Some(true),
                        on_disk: None,
                        enable_hnsw: None,
                    }),
                )),
            }));
        shard.update(index).map_err(Error::edge_source)?;
        flush(&shard)?;
        self.insert(physical, shard);
        Ok(())
    }

    /// Inspects every collection under this backend's root: point count and
    /// whether the SDK's `tenant_id` field carries a keyword index marked
    /// `is_tenant` (what `tenant-doctor --qdrant-path` reports). Reads no
    /// payloads.
    pub fn inspect(&self) -> Result<Vec<CollectionHealth>> {
        let dir = self.inner.root.join(COLLECTIONS_DIR);
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("edge_config.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let info = {
                    let c = self.get(&name)?;
                    let _w = c.writer.lock().unwrap_or_else(|e| e.into_inner());
                    c.shard.info()
                };
                let tenant = info
                    .payload_schema
                    .iter()
                    .find(|(key, _)| key.to_string() == TENANT_FIELD)
                    .map(|(_, index)| index);
                let is_tenant = tenant.is_some_and(|index| {
                    matches!(
                        &index.params,
                        Some(PayloadSchemaParams::Keyword(KeywordIndexParams {
                            is_tenant: Some(true),
                            ..
                        }))
                    )
                });
                Ok(CollectionHealth {
                    physical_name: name,
                    points: info.points_count,
                    tenant_index: tenant.is_some(),
                    tenant_index_is_tenant: is_tenant,
                })
            })
            .collect()
    }

    /// Test support only (feature `test-support`, never enable it in a
    /// production build): runs `f` on the raw qdrant-edge shard of
    /// `physical`, holding its writer lock. This bypasses every tenant
    /// check; benchmarks use it as the raw baseline and tests to plant
    /// points behind the SDK's back. Call `flush` after writing.
    #[cfg(feature = "test-support")]
    pub fn with_raw_shard<T>(&self, physical: &str, f: impl FnOnce(&EdgeShard) -> T) -> Result<T> {
        let c = self.get(physical)?;
        let _w = c.writer.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&c.shard))
    }

    /// Runs qdrant-edge's optimizers (segment merging, HNSW indexing) on
    /// `physical`, under its writer lock, then flushes.
    pub async fn optimize(&self, physical: &str) -> Result<()> {
        let c = self.get(physical)?;
        blocking(move || {
            let _w = c.writer.lock().unwrap_or_else(|e| e.into_inner());
            c.shard.optimize().map_err(Error::edge_source)?;
            flush(&c.shard)
        })
        .await
    }

    async fn read_op<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.inner.inline_reads.load(Ordering::Relaxed) {
            return f();
        }
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
            Ok(_) => blocking(f).await,
            Err(_) => f(),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::edge(format!("blocking task failed: {e}")))?
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn edge_config(layout: CollectionLayout) -> EdgeConfig {
    let distance = match layout.distance {
        Distance::Cosine => qdrant_edge::Distance::Cosine,
        Distance::Dot => qdrant_edge::Distance::Dot,
        Distance::Euclid => qdrant_edge::Distance::Euclid,
    };
    EdgeConfigBuilder::new()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParamsBuilder::new(layout.dims, distance).build(),
        )
        .wal_options(WalOptions {
            segment_capacity: WAL_SEGMENT_BYTES,
            segment_queue_len: 0,
            retain_closed: NonZeroUsize::MIN,
        })
        .build()
}

fn json_path(key: &str) -> Result<qdrant_edge::JsonPath> {
    key.parse()
        .map_err(|_| Error::invalid("payload path", key.to_owned()))
}

fn value(v: &FilterValue) -> ValueVariants {
    match v {
        FilterValue::Str(s) => ValueVariants::String(s.clone()),
        FilterValue::Int(i) => ValueVariants::Integer(*i),
        FilterValue::Bool(b) => ValueVariants::Bool(*b),
    }
}

fn condition(node: &Node) -> Result<Condition> {
    Ok(match node {
        Node::All(v) => Condition::Filter(Filter {
            must: Some(v.iter().map(condition).collect::<Result<_>>()?),
            ..Filter::default()
        }),
        Node::Any(v) => Condition::Filter(Filter {
            should: Some(v.iter().map(condition).collect::<Result<_>>()?),
            ..Filter::default()
        }),
        Node::Not(n) => Condition::Filter(Filter {
            must_not: Some(vec![condition(n)?]),
            ..Filter::default()
        }),
        Node::Eq(k, v) => Condition::Field(FieldCondition::new_match(
            json_path(k)?,
            Match::new_value(value(v)),
        )),
        Node::In(k, vs) => Condition::Filter(Filter {
            should: Some(
                vs.iter()
                    .map(|v| {
                        Ok(Condition::Field(FieldCondition::new_match(
                            json_path(k)?,
                            Match::new_value(value(v)),
                        )))
                    })
                    .collect::<Result<_>>()?,
            ),
            ..Filter::default()
        }),
        Node::Range(k, b) => {
            let f = |x: Option<f64>| x.map(OrderedFloat);
            Condition::Field(FieldCondition::new_range(
                json_path(k)?,
                Range {
                    lt: f(b.lt),
                    gt: f(b.gt),
                    gte: f(b.gte),
                    lte: f(b.lte),
                },
            ))
        }
        Node::HasId(ids) => Condition::HasId(HasIdCondition::from_iter(
            ids.iter().map(|id| PointId::Uuid(*id)),
        )),
    })
}

/// The scope as a qdrant-edge filter: `must: [tenant, narrowing]`.
pub(crate) fn edge_filter(scope: &ScopedFilter) -> Result<Filter> {
    let Node::All(conds) = scope.to_node() else {
        return Err(Error::edge("scope is not a conjunction"));
    };
    Ok(Filter {
        must: Some(conds.iter().map(condition).collect::<Result<_>>()?),
        ..Filter::default()
    })
}

fn to_uuid(id: &PointId) -> Result<Uuid> {
    match id {
        PointId::Uuid(u) => Ok(*u),
        PointId::NumId(n) => Err(Error::edge(format!("unexpected numeric point id {n}"))),
    }
}

fn payload_map(p: Option<Payload>) -> Map<String, Value> {
    p.map(|p| p.0).unwrap_or_default()
}

fn dense(v: Option<VectorStructInternal>) -> Vec<f32> {
    match v {
        Some(VectorStructInternal::Single(v)) => v,
        Some(VectorStructInternal::Named(mut m)) => match m.remove(DEFAULT_VECTOR_NAME) {
            Some(qdrant_edge::VectorInternal::Dense(v)) => v,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn record_to_point(r: Record) -> Result<StoredPoint> {
    Ok(StoredPoint {
        id: to_uuid(&r.id)?,
        vector: dense(r.vector),
        payload: payload_map(r.payload),
    })
}

fn scored_to_hit(p: ScoredPoint) -> Result<StoredHit> {
    Ok(StoredHit {
        id: to_uuid(&p.id)?,
        score: p.score,
        payload: payload_map(p.payload),
    })
}

#[async_trait]
impl Store for EdgeBackend {
    fn kind(&self) -> &'static str {
        "edge"
    }

    fn routes(&self) -> &Arc<RouteTable> {
        &self.inner.routes
    }

    fn route_authority(&self) -> RouteAuthority {
        RouteAuthority::Local
    }

    fn layout(&self) -> Layout {
        Layout::CollectionPerTier
    }

    async fn ensure_collection(&self, place: &Place, layout: CollectionLayout) -> Result<()> {
        let this = self.handle();
        let physical = place.collection.clone();
        blocking(move || this.create(&physical, layout)).await
    }

    async fn collection_exists(&self, physical: &str) -> Result<bool> {
        Ok(read(&self.inner.shards).contains_key(physical)
            || self.dir_of(physical).join("edge_config.json").exists())
    }

    async fn drop_collection(&self, physical: &str) -> Result<()> {
        let this = self.handle();
        let physical = physical.to_owned();
        blocking(move || {
            let _g = this
                .inner
                .open_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let taken = write(&this.inner.shards).remove(&physical);
            if let Some(mut c) = taken {
                // Wait for in-flight operations to release the shard, so it
                // is flushed and closed before its files go.
                let mut waited = 0;
                loop {
                    match Arc::try_unwrap(c) {
                        Ok(c) => {
                            drop(c);
                            break;
                        }
                        Err(back) if waited < 3000 => {
                            c = back;
                            waited += 1;
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        Err(_) => return Err(Error::edge("collection still in use")),
                    }
                }
            }
            let dir = this.dir_of(&physical);
            match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(Error::Io { path: dir, source }),
            }
        })
        .await
    }

    async fn upsert(&self, place: &Place, points: Vec<StoredPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let c = self.get(&place.collection)?;
        blocking(move || {
            let points = points
                .into_iter()
                .map(|p| PointStructPersisted {
                    id: PointId::Uuid(p.id),
                    vector: VectorStructPersisted::Single(p.vector),
                    payload: Some(Payload(p.payload.into_iter().collect())),
                })
                .collect();
            c.write(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
        })
        .await
    }

    async fn search(&self, place: &Place, request: SearchRequest<'_>) -> Result<Vec<StoredHit>> {
        let c = self.get(&place.collection)?;
        let req = qdrant_edge::SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::default_dense(request.vector.to_vec())),
            filter: Some(edge_filter(request.filter)?),
            params: None,
            limit: request.limit,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: None,
            score_threshold: request.score_threshold,
        };
        self.read_op(move || {
            c.shard
                .search(req)
                .map_err(Error::edge_source)?
                .into_iter()
                .map(scored_to_hit)
                .collect()
        })
        .await
    }

    async fn scroll(
        &self,
        place: &Place,
        filter: &ScopedFilter,
        offset: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<StoredPage> {
        let c = self.get(&place.collection)?;
        let req = qdrant_edge::ScrollRequest {
            offset: offset.map(PointId::Uuid),
            limit: Some(limit.max(1)),
            filter: Some(edge_filter(filter)?),
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: WithVector::Bool(with_vectors),
            order_by: None,
        };
        self.read_op(move || {
            let (records, next) = c.shard.scroll(req).map_err(Error::edge_source)?;
            Ok(StoredPage {
                points: records
                    .into_iter()
                    .map(record_to_point)
                    .collect::<Result<_>>()?,
                next: next.as_ref().map(to_uuid).transpose()?,
            })
        })
        .await
    }

    async fn count(&self, place: &Place, filter: &ScopedFilter) -> Result<u64> {
        let c = self.get(&place.collection)?;
        let req = qdrant_edge::CountRequest {
            filter: Some(edge_filter(filter)?),
            exact: true,
        };
        self.read_op(move || Ok(c.shard.count(req).map_err(Error::edge_source)? as u64))
            .await
    }

    async fn delete(&self, place: &Place, filter: &ScopedFilter) -> Result<()> {
        let c = self.get(&place.collection)?;
        let filter = edge_filter(filter)?;
        blocking(move || {
            c.write(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(filter),
            ))
        })
        .await
    }

    async fn create_shard_key(&self, _: &str, _: &str, _: bool) -> Result<()> {
        Err(no_shard_keys())
    }

    async fn replicate(&self, _: &str, _: &str, _: &str, _: &ScopedFilter) -> Result<()> {
        Err(no_shard_keys())
    }

    async fn drop_shard_key(&self, _: &str, _: &str) -> Result<()> {
        Err(no_shard_keys())
    }

    async fn load_routes(&self) -> Result<Vec<RouteEntry>> {
        let path = self.inner.root.join(ROUTES_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::edge(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    async fn fetch_route(&self, tenant: TenantId, collection: &str) -> Result<Option<RouteEntry>> {
        Ok(self
            .inner
            .routes
            .snapshot()
            .into_iter()
            .find(|r| r.tenant == tenant && r.collection == collection))
    }

    async fn store_route(&self, entry: &RouteEntry) -> Result<()> {
        let mut table = self.inner.routes.snapshot();
        table.retain(|r| !(r.tenant == entry.tenant && r.collection == entry.collection));
        table.push(entry.clone());
        table.sort_by(|a, b| (a.tenant, &a.collection).cmp(&(b.tenant, &b.collection)));
        let bytes = serde_json::to_vec_pretty(&table).map_err(Error::edge_source)?;
        let this = self.handle();
        blocking(move || {
            let _g = this
                .inner
                .routes_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            write_atomically(&this.inner.root, ROUTES_FILE, &bytes)
        })
        .await
    }

    async fn health(&self, prefix: &str) -> Result<Vec<CollectionHealth>> {
        let this = self.handle();
        let prefix = prefix.to_owned();
        blocking(move || {
            Ok(this
                .inspect()?
                .into_iter()
                .filter(|h| h.physical_name.starts_with(&prefix))
                .collect())
        })
        .await
    }
}

fn no_shard_keys() -> Error {
    Error::edge("shard keys are a Qdrant server feature")
}

/// Temp file, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}
