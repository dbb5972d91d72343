//! [`RetrievalClient`]: one tenant's handle on one collection.

use std::fmt;
use std::sync::Arc;

use tenant_core::telemetry::traced;
use tenant_core::{operation_span, Scoped, TenantContext, WantsTenant};
use tracing::Instrument;
use uuid::Uuid;

use crate::backend::{RouteAuthority, SearchRequest, StoredPage};
use crate::collection::CollectionSpec;
use crate::document::{validate_doc_id, validate_vector, Document, Record};
use crate::error::{Error, Result};
use crate::filter::{MetadataFilter, Node, ScopedFilter};
use crate::guard;
use crate::keys::TenantKeys;
use crate::point::{point_id, StoredHit, StoredPoint};
use crate::quarantine;
use crate::retrieval::Retrieval;
use crate::route::Access;

/// The span of one client operation: the context's attributes, the store
/// and the logical collection.
macro_rules! client_span {
    ($name:literal, $client:expr) => {
        operation_span!(
            $name,
            &$client.ctx,
            db.system = "qdrant",
            db.collection.name = $client.spec.name(),
        )
    };
}

/// Largest accepted `top_k` and scroll page.
pub const MAX_LIMIT: usize = 1_000;

/// How many extra searches run, each excluding the points quarantined so
/// far, so that planted points cannot crowd a tenant's own hits out of its
/// top-k.
const REFILL_ROUNDS: usize = 3;

/// A similarity search.
///
/// ```
/// use tenant_retrieval::{MetadataFilter, SearchQuery};
/// let q = SearchQuery::new(vec![0.1; 8]).top_k(5).filter(MetadataFilter::eq("lang", "en")).score_threshold(0.2);
/// # let _ = q;
/// ```
#[derive(Clone, Debug)]
pub struct SearchQuery {
    vector: Vec<f32>,
    top_k: usize,
    filter: Option<MetadataFilter>,
    score_threshold: Option<f32>,
}

impl SearchQuery {
    /// The 10 nearest documents to `vector`.
    pub fn new(vector: Vec<f32>) -> Self {
        Self {
            vector,
            top_k: 10,
            filter: None,
            score_threshold: None,
        }
    }

    /// Returns at most `k` hits (1..=[`MAX_LIMIT`]). Hits that fail the
    /// per-hit check are quarantined and replaced by the next best.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Only documents whose metadata matches `filter`.
    pub fn filter(mut self, filter: MetadataFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Drops hits scoring worse than `threshold`.
    pub fn score_threshold(mut self, threshold: f32) -> Self {
        self.score_threshold = Some(threshold);
        self
    }
}

/// Where a scroll continues (opaque).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(Uuid);

/// One page of [`RetrievalClient::scroll`].
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The records (point-id order, stable across pages).
    pub records: Vec<Record>,
    /// Pass to the next call to continue; `None` at the end.
    pub next: Option<Cursor>,
}

/// Builds a [`RetrievalClient`]:
///
/// 1. [`RetrievalClient::builder`] (state [`WantsTenant`]);
/// 2. `.backend(&retrieval)` and `.collection("docs")` (any state);
/// 3. `.tenant(&ctx)` (state [`Scoped`]);
/// 4. `.build()` — only in the `Scoped` state; admits the context under the
///    platform authority and checks that its capabilities allow the
///    collection.
#[must_use]
pub struct RetrievalClientBuilder<S> {
    retrieval: Option<Retrieval>,
    collection: Option<String>,
    state: S,
}

impl<S> RetrievalClientBuilder<S> {
    /// The platform's retrieval service.
    pub fn backend(mut self, retrieval: &Retrieval) -> Self {
        self.retrieval = Some(retrieval.clone());
        self
    }

    /// The logical collection.
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = Some(name.into());
        self
    }
}

impl RetrievalClientBuilder<WantsTenant> {
    /// The context the client acts for.
    pub fn tenant(self, ctx: &TenantContext) -> RetrievalClientBuilder<Scoped> {
        RetrievalClientBuilder {
            retrieval: self.retrieval,
            collection: self.collection,
            state: Scoped::new(ctx),
        }
    }
}

impl RetrievalClientBuilder<Scoped> {
    /// Admits the context (issued under the platform's authority, valid,
    /// unrevoked), checks its collection capability and builds.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] with [`tenant_core::Error::ForeignAuthority`] for
    /// a context minted by any other issuer (whatever key it used), or the
    /// context's own check error; [`Error::CollectionNotAllowed`];
    /// [`Error::UnknownCollection`].
    pub fn build(self) -> Result<RetrievalClient> {
        let retrieval = self
            .retrieval
            .ok_or_else(|| Error::invalid("builder", "`.backend(&retrieval)` was not called"))?;
        let collection = self
            .collection
            .ok_or_else(|| Error::invalid("builder", "`.collection(name)` was not called"))?;
        let ctx = self.state.into_admitted_context(retrieval.authority())?;
        RetrievalClient::open(retrieval, ctx, &collection, None)
    }
}

/// One tenant's handle on one collection.
///
/// Every operation admits the context under the platform authority, runs
/// inside its span, carries the tenant condition, and checks every
/// returned point (tenant field, keyed leak tag, derived id, seal) before
/// anything of it is returned; a point that fails is quarantined (see
/// [`LeakPolicy`](crate::LeakPolicy)). No method takes a tenant id.
#[derive(Clone)]
pub struct RetrievalClient {
    retrieval: Retrieval,
    ctx: TenantContext,
    spec: Arc<CollectionSpec>,
    keys: Arc<TenantKeys>,
}

impl fmt::Debug for RetrievalClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrievalClient")
            .field("tenant", &self.ctx.tenant())
            .field("agent", self.ctx.agent())
            .field("collection", &self.spec.name())
            .finish_non_exhaustive()
    }
}

impl RetrievalClient {
    /// Starts building a client (see [`RetrievalClientBuilder`]).
    pub fn builder() -> RetrievalClientBuilder<WantsTenant> {
        RetrievalClientBuilder {
            retrieval: None,
            collection: None,
            state: WantsTenant,
        }
    }

    /// `keys` are the tenant's keys for this collection if already derived
    /// (a delegation reuses its parent's).
    fn open(
        retrieval: Retrieval,
        ctx: TenantContext,
        collection: &str,
        keys: Option<Arc<TenantKeys>>,
    ) -> Result<Self> {
        if !ctx.capabilities().collections().allows(collection) {
            let err = Error::CollectionNotAllowed(collection.to_owned());
            ctx.deny("retrieval.open", collection, &err);
            return Err(err);
        }
        let spec = retrieval.spec(collection)?;
        let keys = match keys {
            Some(keys) => keys,
            None => Arc::new(retrieval.tenant_keys(ctx.tenant(), &spec)?),
        };
        ctx.audit_allowed("retrieval.open", collection);
        Ok(Self {
            retrieval,
            ctx,
            spec,
            keys,
        })
    }

    /// A client for a sub-agent: `child` must be issued under the platform
    /// authority, descend from this client's context and be allowed this
    /// collection.
    pub fn delegate(&self, child: &TenantContext) -> Result<RetrievalClient> {
        self.retrieval.admit(child)?;
        self.ctx.check_descendant(child)?;
        Self::open(
            self.retrieval.clone(),
            child.clone(),
            self.spec.name(),
            Some(self.keys.clone()),
        )
    }

    /// The context the client acts for.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// `Ok` while the client's context is still admitted: issued under the
    /// platform authority, unexpired and unrevoked (what every operation
    /// checks first).
    pub fn check(&self) -> Result<()> {
        self.retrieval.admit(&self.ctx)
    }

    /// The logical collection.
    pub fn collection(&self) -> &str {
        self.spec.name()
    }

    /// Inserts or replaces documents (by the caller's id). Returns once they
    /// are durable. All documents are validated first; nothing is written
    /// if any is invalid. Batch documents: each call costs one flush.
    pub async fn upsert(&self, docs: impl IntoIterator<Item = Document>) -> Result<()> {
        let span = client_span!("retrieval.upsert", self);
        traced(span, self.upsert_in_span(docs)).await
    }

    async fn upsert_in_span(&self, docs: impl IntoIterator<Item = Document>) -> Result<()> {
        self.check()?;
        let docs: Vec<Document> = docs.into_iter().collect();
        async {
            for d in &docs {
                d.validate(self.spec.dims(), self.spec.name())?;
            }
            let tenant = self.ctx.tenant();
            let points = docs
                .into_iter()
                .map(|d| guard::encode(tenant, &self.spec, &self.keys, d))
                .collect::<Result<Vec<StoredPoint>>>()?;
            let store = &self.retrieval.inner.store;
            // The batch is moved into the first attempt; only a backend
            // shared with other processes can need another (after a route
            // change), so only then is a copy kept.
            let spare = (store.route_authority() == RouteAuthority::Shared).then(|| points.clone());
            let first = &std::sync::Mutex::new(Some(points));
            let spare = &spare;
            self.retrieval
                .routed(&self.ctx, &self.spec, Access::Write, |place| async move {
                    let batch = crate::retrieval::lock(first)
                        .take()
                        .or_else(|| spare.clone())
                        .unwrap_or_default();
                    store.upsert(&place, batch).await
                })
                .await
        }
        .instrument(self.ctx.span())
        .await
    }

    /// The nearest documents, best first.
    ///
    /// The query vector must have the collection's dimensions and finite
    /// values ([`Error::DimensionMismatch`], [`Error::NonFinite`]).
    pub async fn search(&self, query: SearchQuery) -> Result<Vec<Record>> {
        let span = client_span!("retrieval.search", self);
        traced(span, self.search_in_span(query)).await
    }

    async fn search_in_span(&self, mut query: SearchQuery) -> Result<Vec<Record>> {
        self.check()?;
        async {
            check_limit(query.top_k, "top_k")?;
            validate_vector(
                &query.vector,
                self.spec.dims(),
                self.spec.name(),
                "query vector",
            )?;
            if query.score_threshold.is_some_and(|t| !t.is_finite()) {
                return Err(Error::NonFinite {
                    what: "score threshold",
                });
            }
            let scope = self.scope(query.filter.take())?;
            let mut excluded: Vec<Uuid> = Vec::new();
            let mut round = 0;
            loop {
                // Each refill excludes what was quarantined so far and
                // looks four times further, so a crowd of planted points
                // near the query cannot push the tenant's own hits out.
                let limit = query
                    .top_k
                    .saturating_mul(1 << (2 * round))
                    .min(MAX_LIMIT)
                    .max(query.top_k);
                let scope = scope.excluding(&excluded);
                let hits = self.search_once(&scope, &query, limit).await?;
                let before = excluded.len();
                let mut records = self.check_all(
                    "retrieval.search",
                    hits.into_iter().map(hit_parts),
                    &mut excluded,
                )?;
                if excluded.len() == before || round == REFILL_ROUNDS {
                    records.truncate(query.top_k);
                    return Ok(records);
                }
                round += 1;
            }
        }
        .instrument(self.ctx.span())
        .await
    }

    async fn search_once(
        &self,
        scope: &ScopedFilter,
        query: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<StoredHit>> {
        let store = &self.retrieval.inner.store;
        self.retrieval
            .routed(&self.ctx, &self.spec, Access::Read, |place| async move {
                store
                    .search(
                        &place,
                        SearchRequest {
                            vector: &query.vector,
                            filter: scope,
                            limit,
                            score_threshold: query.score_threshold,
                        },
                    )
                    .await
            })
            .await
    }

    /// The document with `doc_id`, if this tenant has one.
    pub async fn get(&self, doc_id: &str) -> Result<Option<Record>> {
        Ok(self.get_many(&[doc_id]).await?.into_iter().next())
    }

    /// The documents with these ids that this tenant has (others are
    /// skipped), in point-id order.
    pub async fn get_many(&self, doc_ids: &[&str]) -> Result<Vec<Record>> {
        let span = client_span!("retrieval.get", self);
        traced(span, self.get_many_in_span(doc_ids)).await
    }

    async fn get_many_in_span(&self, doc_ids: &[&str]) -> Result<Vec<Record>> {
        self.check()?;
        async {
            let scope = self.ids_scope(doc_ids)?;
            let page = self.scroll_once(&scope, None, doc_ids.len().max(1)).await?;
            self.check_all(
                "retrieval.get",
                page.points.into_iter().map(point_parts),
                &mut Vec::new(),
            )
        }
        .instrument(self.ctx.span())
        .await
    }

    /// Deletes this tenant's documents with these ids; returns how many
    /// existed. Another tenant's document with the same id is untouched.
    pub async fn delete(&self, doc_ids: &[&str]) -> Result<u64> {
        let span = client_span!("retrieval.delete", self);
        traced(span, self.delete_in_span(doc_ids)).await
    }

    async fn delete_in_span(&self, doc_ids: &[&str]) -> Result<u64> {
        self.check()?;
        let scope = self.ids_scope(doc_ids);
        async { self.delete_scope(scope?).await }
            .instrument(self.ctx.span())
            .await
    }

    /// Deletes this tenant's documents matching `filter`; returns how many.
    pub async fn delete_where(&self, filter: MetadataFilter) -> Result<u64> {
        let span = client_span!("retrieval.delete_where", self);
        traced(span, self.delete_where_in_span(filter)).await
    }

    async fn delete_where_in_span(&self, filter: MetadataFilter) -> Result<u64> {
        self.check()?;
        let scope = self.scope(Some(filter));
        async { self.delete_scope(scope?).await }
            .instrument(self.ctx.span())
            .await
    }

    /// How many points this tenant has stored (matching `filter`, if
    /// given). Counting reads no payloads, so points that a read would
    /// quarantine are counted too.
    pub async fn count(&self, filter: Option<MetadataFilter>) -> Result<u64> {
        let span = client_span!("retrieval.count", self);
        traced(span, self.count_in_span(filter)).await
    }

    async fn count_in_span(&self, filter: Option<MetadataFilter>) -> Result<u64> {
        self.check()?;
        async {
            let scope = self.scope(filter)?;
            let store = &self.retrieval.inner.store;
            let scope = &scope;
            self.retrieval
                .routed(&self.ctx, &self.spec, Access::Read, |place| async move {
                    store.count(&place, scope).await
                })
                .await
        }
        .instrument(self.ctx.span())
        .await
    }

    /// Lists this tenant's documents (matching `filter`), `limit` at a
    /// time (1..=[`MAX_LIMIT`]), continuing from `cursor`. A page holds
    /// fewer than `limit` records when points were quarantined; continue
    /// while `next` is set.
    pub async fn scroll(
        &self,
        filter: Option<MetadataFilter>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let span = client_span!("retrieval.scroll", self);
        traced(span, self.scroll_in_span(filter, cursor, limit)).await
    }

    async fn scroll_in_span(
        &self,
        filter: Option<MetadataFilter>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page> {
        self.check()?;
        async {
            check_limit(limit, "limit")?;
            let scope = self.scope(filter)?;
            let page = self.scroll_once(&scope, cursor.map(|c| c.0), limit).await?;
            let records = self.check_all(
                "retrieval.scroll",
                page.points.into_iter().map(point_parts),
                &mut Vec::new(),
            )?;
            Ok(Page {
                records,
                next: page.next.map(Cursor),
            })
        }
        .instrument(self.ctx.span())
        .await
    }

    async fn scroll_once(
        &self,
        scope: &ScopedFilter,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<StoredPage> {
        let store = &self.retrieval.inner.store;
        self.retrieval
            .routed(&self.ctx, &self.spec, Access::Read, |place| async move {
                store.scroll(&place, scope, offset, limit, false).await
            })
            .await
    }

    async fn delete_scope(&self, scope: ScopedFilter) -> Result<u64> {
        let store = &self.retrieval.inner.store;
        let scope = &scope;
        self.retrieval
            .routed(&self.ctx, &self.spec, Access::Write, |place| async move {
                let n = store.count(&place, scope).await?;
                if n > 0 {
                    store.delete(&place, scope).await?;
                }
                Ok(n)
            })
            .await
    }

    fn scope(&self, filter: Option<MetadataFilter>) -> Result<ScopedFilter> {
        let tenant = self.ctx.tenant();
        match filter {
            None => Ok(ScopedFilter::tenant_only(tenant)),
            Some(f) => {
                let spec = &self.spec;
                let node = f.into_payload_node(&|k| spec.is_clear(k))?;
                Ok(ScopedFilter::narrowed(tenant, node))
            }
        }
    }

    fn ids_scope(&self, doc_ids: &[&str]) -> Result<ScopedFilter> {
        check_limit(doc_ids.len().max(1), "number of ids")?;
        let tenant = self.ctx.tenant();
        let ids = doc_ids
            .iter()
            .map(|d| validate_doc_id(d).map(|()| point_id(tenant, d)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ScopedFilter::narrowed(tenant, Node::HasId(ids)))
    }

    /// Checks every point. Failures are quarantined (their ids appended to
    /// `quarantined`) or, in strict mode, refuse the whole response.
    fn check_all(
        &self,
        action: &str,
        points: impl ExactSizeIterator<Item = Unchecked>,
        quarantined: &mut Vec<Uuid>,
    ) -> Result<Vec<Record>> {
        let tenant = self.ctx.tenant();
        let mut out = Vec::with_capacity(points.len());
        for (id, score, payload) in points {
            match guard::check(tenant, &self.keys, id, score, payload) {
                Ok(r) => out.push(r),
                Err(reason) => {
                    quarantined.push(id);
                    if let Some(err) = quarantine::report(
                        self.retrieval.inner.leak_policy,
                        &self.retrieval.inner.leaks,
                        &self.ctx,
                        action,
                        self.spec.name(),
                        id,
                        reason,
                    ) {
                        return Err(err);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What the leak check needs of a stored point: id, score (searches only)
/// and the payload, which the check consumes.
type Unchecked = (
    Uuid,
    Option<f32>,
    serde_json::Map<String, serde_json::Value>,
);

fn hit_parts(h: StoredHit) -> Unchecked {
    (h.id, Some(h.score), h.payload)
}

fn point_parts(p: StoredPoint) -> Unchecked {
    (p.id, None, p.payload)
}

fn check_limit(n: usize, what: &'static str) -> Result<()> {
    if n == 0 || n > MAX_LIMIT {
        return Err(Error::invalid(
            what,
            format!("{n} is not in 1..={MAX_LIMIT}"),
        ));
    }
    Ok(())
}
