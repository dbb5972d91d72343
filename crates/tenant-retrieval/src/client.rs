//! [`RetrievalClient`]: one tenant's handle on one collection.

use std::fmt;

use std::sync::Arc;

use tenant_core::{Scoped, TenantContext, WantsTenant};
use tracing::Instrument;
use uuid::Uuid;

use crate::backend::SearchRequest;
use crate::collection::CollectionSpec;
use crate::document::{validate_doc_id, Document, Record};
use crate::error::{Error, Result};
use crate::filter::{MetadataFilter, Node, ScopedFilter};
use crate::guard;
use crate::point::{point_id, StoredHit, StoredPoint};
use crate::retrieval::Retrieval;
use crate::seal::Sealer;

/// Largest accepted `top_k` and scroll page.
pub const MAX_LIMIT: usize = 1_000;

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

    /// Returns at most `k` hits (1..=[`MAX_LIMIT`]).
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
/// 4. `.build()` — only in the `Scoped` state; checks the context and that
///    its capabilities allow the collection.
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
    /// The verified context the client acts for.
    pub fn tenant(self, ctx: &TenantContext) -> RetrievalClientBuilder<Scoped> {
        RetrievalClientBuilder {
            retrieval: self.retrieval,
            collection: self.collection,
            state: Scoped::new(ctx),
        }
    }
}

impl RetrievalClientBuilder<Scoped> {
    /// Checks the context and its collection capability and builds.
    pub fn build(self) -> Result<RetrievalClient> {
        let ctx = self.state.into_checked_context()?;
        let retrieval = self
            .retrieval
            .ok_or_else(|| Error::invalid("builder", "`.backend(&retrieval)` was not called"))?;
        let collection = self
            .collection
            .ok_or_else(|| Error::invalid("builder", "`.collection(name)` was not called"))?;
        RetrievalClient::open(retrieval, ctx, &collection)
    }
}

/// One tenant's handle on one collection.
///
/// Every operation checks the context, runs inside its span, carries the
/// tenant condition, and checks every returned point before anything of it
/// is returned. No method takes a tenant id.
#[derive(Clone)]
pub struct RetrievalClient {
    retrieval: Retrieval,
    ctx: TenantContext,
    spec: Arc<CollectionSpec>,
    sealer: Option<Arc<Sealer>>,
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

    fn open(retrieval: Retrieval, ctx: TenantContext, collection: &str) -> Result<Self> {
        if !ctx.capabilities().collections().allows(collection) {
            let err = Error::CollectionNotAllowed(collection.to_owned());
            ctx.audit_denied("retrieval.open", collection, &err);
            return Err(err);
        }
        let spec = retrieval.spec(collection)?;
        let sealer = if spec.is_sealed() {
            let keys = retrieval
                .inner
                .keys
                .as_ref()
                .ok_or_else(|| Error::Sealing("no key provider".into()))?;
            Some(Arc::new(Sealer::new(
                keys.as_ref(),
                ctx.tenant(),
                collection,
            )?))
        } else {
            None
        };
        ctx.audit_allowed("retrieval.open", collection);
        Ok(Self {
            retrieval,
            ctx,
            spec,
            sealer,
        })
    }

    /// A client for a sub-agent: `child` must descend from this client's
    /// context and be allowed this collection.
    pub fn delegate(&self, child: &TenantContext) -> Result<RetrievalClient> {
        self.ctx.check_descendant(child)?;
        Self::open(self.retrieval.clone(), child.clone(), self.spec.name())
    }

    /// The context the client acts for.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The logical collection.
    pub fn collection(&self) -> &str {
        self.spec.name()
    }

    /// Inserts or replaces documents (by the caller's id). Returns once they
    /// are durable. All documents are validated first; nothing is written
    /// if any is invalid. Batch documents: each call costs one flush.
    pub async fn upsert(&self, docs: impl IntoIterator<Item = Document>) -> Result<()> {
        self.ctx.check()?;
        let docs: Vec<Document> = docs.into_iter().collect();
        async {
            for d in &docs {
                d.validate(self.spec.dims(), self.spec.name())?;
            }
            let tenant = self.ctx.tenant();
            let points = docs
                .into_iter()
                .map(|d| guard::encode(tenant, &self.spec, self.sealer.as_deref(), d))
                .collect::<Result<Vec<StoredPoint>>>()?;
            let gate = self.retrieval.gate(tenant, self.spec.name());
            let _writes = gate.writes.clone().read_owned().await;
            let (_route, physical) = self.route(&gate).await?;
            self.retrieval.inner.backend.upsert(&physical, points).await
        }
        .instrument(self.ctx.span())
        .await
    }

    /// The nearest documents, best first.
    pub async fn search(&self, query: SearchQuery) -> Result<Vec<Record>> {
        self.ctx.check()?;
        async {
            check_limit(query.top_k, "top_k")?;
            if query.vector.len() != self.spec.dims() {
                return Err(Error::DimensionMismatch {
                    collection: self.spec.name().to_owned(),
                    expected: self.spec.dims(),
                    actual: query.vector.len(),
                });
            }
            let scope = self.scope(query.filter)?;
            let gate = self.retrieval.gate(self.ctx.tenant(), self.spec.name());
            let (_route, physical) = self.route(&gate).await?;
            let hits = self
                .retrieval
                .inner
                .backend
                .search(
                    &physical,
                    SearchRequest {
                        vector: &query.vector,
                        filter: &scope,
                        limit: query.top_k,
                        score_threshold: query.score_threshold,
                    },
                )
                .await?;
            self.check_all("retrieval.search", hits.into_iter().map(hit_parts))
        }
        .instrument(self.ctx.span())
        .await
    }

    /// The document with `doc_id`, if this tenant has one.
    pub async fn get(&self, doc_id: &str) -> Result<Option<Record>> {
        Ok(self.get_many(&[doc_id]).await?.into_iter().next())
    }

    /// The documents with these ids that this tenant has (others are
    /// skipped), in point-id order.
    pub async fn get_many(&self, doc_ids: &[&str]) -> Result<Vec<Record>> {
        self.ctx.check()?;
        async {
            let scope = self.ids_scope(doc_ids)?;
            let gate = self.retrieval.gate(self.ctx.tenant(), self.spec.name());
            let (_route, physical) = self.route(&gate).await?;
            let page = self
                .retrieval
                .inner
                .backend
                .scroll(&physical, &scope, None, doc_ids.len().max(1), false)
                .await?;
            self.check_all("retrieval.get", page.points.into_iter().map(point_parts))
        }
        .instrument(self.ctx.span())
        .await
    }

    /// Deletes this tenant's documents with these ids; returns how many
    /// existed. Another tenant's document with the same id is untouched.
    pub async fn delete(&self, doc_ids: &[&str]) -> Result<u64> {
        self.ctx.check()?;
        let scope = self.ids_scope(doc_ids);
        async { self.delete_scope(scope?).await }
            .instrument(self.ctx.span())
            .await
    }

    /// Deletes this tenant's documents matching `filter`; returns how many.
    pub async fn delete_where(&self, filter: MetadataFilter) -> Result<u64> {
        self.ctx.check()?;
        let scope = self.scope(Some(filter));
        async { self.delete_scope(scope?).await }
            .instrument(self.ctx.span())
            .await
    }

    /// How many documents this tenant has (matching `filter`, if given).
    pub async fn count(&self, filter: Option<MetadataFilter>) -> Result<u64> {
        self.ctx.check()?;
        async {
            let scope = self.scope(filter)?;
            let gate = self.retrieval.gate(self.ctx.tenant(), self.spec.name());
            let (_route, physical) = self.route(&gate).await?;
            self.retrieval.inner.backend.count(&physical, &scope).await
        }
        .instrument(self.ctx.span())
        .await
    }

    /// Lists this tenant's documents (matching `filter`), `limit` at a
    /// time (1..=[`MAX_LIMIT`]), continuing from `cursor`.
    pub async fn scroll(
        &self,
        filter: Option<MetadataFilter>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page> {
        self.ctx.check()?;
        async {
            check_limit(limit, "limit")?;
            let scope = self.scope(filter)?;
            let gate = self.retrieval.gate(self.ctx.tenant(), self.spec.name());
            let (_route, physical) = self.route(&gate).await?;
            let page = self
                .retrieval
                .inner
                .backend
                .scroll(&physical, &scope, cursor.map(|c| c.0), limit, false)
                .await?;
            let records =
                self.check_all("retrieval.scroll", page.points.into_iter().map(point_parts))?;
            Ok(Page {
                records,
                next: page.next.map(Cursor),
            })
        }
        .instrument(self.ctx.span())
        .await
    }

    async fn route(
        &self,
        gate: &crate::retrieval::Gate,
    ) -> Result<(tokio::sync::OwnedRwLockReadGuard<()>, String)> {
        self.retrieval.route_for(gate, &self.ctx, &self.spec).await
    }

    async fn delete_scope(&self, scope: ScopedFilter) -> Result<u64> {
        let gate = self.retrieval.gate(self.ctx.tenant(), self.spec.name());
        let _writes = gate.writes.clone().read_owned().await;
        let (_route, physical) = self.route(&gate).await?;
        let backend = &self.retrieval.inner.backend;
        let n = backend.count(&physical, &scope).await?;
        if n > 0 {
            backend.delete(&physical, &scope).await?;
        }
        Ok(n)
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

    /// Checks every point; one failure refuses the whole response.
    fn check_all(
        &self,
        action: &str,
        points: impl ExactSizeIterator<Item = Unchecked>,
    ) -> Result<Vec<Record>> {
        let tenant = self.ctx.tenant();
        let mut out = Vec::with_capacity(points.len());
        for (id, score, payload) in points {
            match guard::check(tenant, self.sealer.as_deref(), id, score, payload) {
                Ok(r) => out.push(r),
                Err(reason) => {
                    let err = Error::LeakDetected {
                        collection: self.spec.name().to_owned(),
                        reason,
                    };
                    self.ctx
                        .audit_denied(action, &format!("{}/{id}", self.spec.name()), &err);
                    return Err(err);
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
