//! [`TenantIndex`]: one tenant's collection as a rig [`VectorStoreIndex`].

use std::fmt;
use std::sync::Arc;

use rig_core::vector_store::{
    VectorSearchIdResult, VectorSearchRequest, VectorSearchResult, VectorStoreError,
    VectorStoreIndex,
};
use rig_core::wasm_compat::WasmCompatSend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tenant_core::TenantContext;
use tenant_retrieval::{Embedder, Record, RetrievalClient, SearchQuery, MAX_LIMIT};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::filter::{metadata_filter, RigFilter};

/// What a [`TenantIndex`] hands rig for each hit: the caller's document
/// id, text and metadata (never the tenant field, which the SDK strips).
///
/// Ask for it with `top_n::<TenantDocument>`, or deserialise into any type
/// with the same shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantDocument {
    /// The caller's document id.
    pub id: String,
    /// The text.
    pub text: String,
    /// The metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl From<Record> for TenantDocument {
    fn from(r: Record) -> Self {
        Self {
            id: r.id,
            text: r.text,
            metadata: r.metadata,
        }
    }
}

/// One tenant's collection as a rig [`VectorStoreIndex`].
///
/// The tenant is fixed when the index is made: it is the tenant of the
/// [`RetrievalClient`], which can only be built from a verified
/// [`TenantContext`]. No method takes a tenant id, and a request's filter
/// (which rig lets the *model* choose when the index is used as a tool) is
/// translated by [`metadata_filter`] and nested beneath the tenant
/// condition by the client — it can narrow the tenant's documents, never
/// widen them. A filter naming `tenant_id`, or one the store cannot
/// express, is refused with a typed [`Error`].
///
/// Because its filter is rig's JSON [`RigFilter`], rig's blanket impl also
/// makes the index a model-callable tool (`search_vector_store`); that is
/// safe for the same reason.
#[derive(Clone)]
pub struct TenantIndex {
    client: RetrievalClient,
    embedder: Arc<dyn Embedder>,
}

impl fmt::Debug for TenantIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantIndex")
            .field("client", &self.client)
            .field("dims", &self.embedder.dims())
            .finish()
    }
}

impl TenantIndex {
    /// An index over `client`'s tenant and collection, embedding queries
    /// with `embedder` (which must produce the collection's dimensions).
    pub fn new(client: RetrievalClient, embedder: impl Embedder + 'static) -> Self {
        Self::with_shared_embedder(client, Arc::new(embedder))
    }

    /// Like [`TenantIndex::new`], sharing one embedder between indexes.
    pub fn with_shared_embedder(client: RetrievalClient, embedder: Arc<dyn Embedder>) -> Self {
        Self { client, embedder }
    }

    /// The context the index acts for.
    pub fn context(&self) -> &TenantContext {
        self.client.context()
    }

    /// The underlying retrieval client.
    pub fn client(&self) -> &RetrievalClient {
        &self.client
    }

    /// An index for a sub-agent: `child` must be issued under the platform
    /// authority, descend from this index's context and be allowed the
    /// collection.
    pub fn delegate(&self, child: &TenantContext) -> Result<TenantIndex> {
        Ok(Self {
            client: self.client.delegate(child)?,
            embedder: self.embedder.clone(),
        })
    }

    /// Searches this tenant's documents: rig's request in, typed errors
    /// out. The trait methods of [`VectorStoreIndex`] call this.
    pub async fn search(
        &self,
        req: &VectorSearchRequest<RigFilter>,
    ) -> Result<Vec<(f64, TenantDocument)>> {
        // Admitted under the platform authority, unexpired, unrevoked.
        self.client.check()?;
        self.search_in_span(req)
            .instrument(self.client.context().span())
            .await
    }

    async fn search_in_span(
        &self,
        req: &VectorSearchRequest<RigFilter>,
    ) -> Result<Vec<(f64, TenantDocument)>> {
        let ctx = self.client.context();
        let filter = match req.filter().map(metadata_filter).transpose() {
            Ok(f) => f,
            Err(err) => {
                ctx.audit_denied("rig.search", self.client.collection(), &err);
                return Err(err);
            }
        };
        let top_k = usize::try_from(req.samples()).unwrap_or(usize::MAX);
        let vector = self
            .embedder
            .embed(&[req.query()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| tenant_retrieval::Error::InvalidInput {
                what: "embedding",
                reason: "the embedder returned no vector".into(),
            })?;
        let mut query = SearchQuery::new(vector).top_k(top_k);
        if let Some(f) = filter {
            query = query.filter(f);
        }
        if let Some(t) = req.threshold() {
            query = query.score_threshold(t as f32);
        }
        let hits = self.client.search(query).await?;
        Ok(hits
            .into_iter()
            .map(|r| {
                (
                    f64::from(r.score.unwrap_or_default()),
                    TenantDocument::from(r),
                )
            })
            .collect())
    }

    async fn search_for_rig(
        &self,
        req: &VectorSearchRequest<RigFilter>,
    ) -> std::result::Result<Vec<(f64, TenantDocument)>, VectorStoreError> {
        if req.samples() > MAX_LIMIT as u64 {
            return Err(VectorStoreError::SamplesOutOfRange {
                requested: req.samples(),
                max: MAX_LIMIT as u64,
            });
        }
        self.search(req).await.map_err(Error::into_vector_store)
    }
}

impl VectorStoreIndex for TenantIndex {
    type Filter = RigFilter;

    async fn top_n<T: DeserializeOwned + WasmCompatSend>(
        &self,
        req: VectorSearchRequest<RigFilter>,
    ) -> std::result::Result<Vec<VectorSearchResult<T>>, VectorStoreError> {
        let hits = self.search_for_rig(&req).await?;
        let mut out = Vec::with_capacity(hits.len());
        for (score, doc) in hits {
            let id = doc.id.clone();
            let document = serde_json::from_value(serde_json::to_value(doc)?)?;
            out.push(VectorSearchResult {
                score,
                id,
                document,
            });
        }
        Ok(out)
    }

    async fn top_n_ids(
        &self,
        req: VectorSearchRequest<RigFilter>,
    ) -> std::result::Result<Vec<VectorSearchIdResult>, VectorStoreError> {
        Ok(self
            .search_for_rig(&req)
            .await?
            .into_iter()
            .map(|(score, doc)| VectorSearchIdResult { score, id: doc.id })
            .collect())
    }
}
