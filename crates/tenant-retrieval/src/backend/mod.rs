//! The storage side: one trait, two implementations.
//!
//! A backend stores points in physical collections. It never decides the
//! tenant scope: every read, count, scroll and delete takes a
//! [`ScopedFilter`], which only this crate can make and which always
//! starts with the tenant condition. The trait is sealed: a backend is
//! trusted only after passing the crate's conformance suite.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenant_core::{IsolationTier, TenantId};
use uuid::Uuid;

use crate::collection::Distance;
use crate::error::Result;
use crate::filter::ScopedFilter;
use crate::point::{StoredHit, StoredPoint};

pub mod edge;
#[cfg(feature = "server")]
pub mod server;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// What a backend needs to create a physical collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectionLayout {
    /// Vector dimensions.
    pub dims: usize,
    /// Distance.
    pub distance: Distance,
}

/// A persisted routing decision: `tenant`'s points of `collection` live on
/// `tier`, whatever the tier resolver says (written by promote/demote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The tenant.
    pub tenant: TenantId,
    /// The logical collection.
    pub collection: String,
    /// Where its points live.
    pub tier: IsolationTier,
}

/// One page of a scroll.
#[derive(Clone, Debug, Default)]
pub struct StoredPage {
    /// Points of the page, in id order.
    pub points: Vec<StoredPoint>,
    /// Where the next page starts, if any.
    pub next: Option<Uuid>,
}

/// A search as the backend sees it.
#[derive(Clone, Debug)]
pub struct SearchRequest<'a> {
    /// Query vector.
    pub vector: &'a [f32],
    /// The tenant scope (and caller's narrowing filter).
    pub filter: &'a ScopedFilter,
    /// Maximum number of hits.
    pub limit: usize,
    /// Hits scoring worse than this are dropped.
    pub score_threshold: Option<f32>,
}

/// Vector storage used by [`Retrieval`](crate::Retrieval).
///
/// Implementations: [`EdgeBackend`](crate::EdgeBackend) (embedded
/// qdrant-edge) and, with the `server` feature,
/// [`QdrantBackend`](crate::QdrantBackend) (gRPC). Writes return only once
/// durable.
#[async_trait]
pub trait RetrievalBackend: sealed::Sealed + Send + Sync + 'static {
    /// Short name for errors and logs (`edge`, `qdrant`).
    fn kind(&self) -> &'static str;

    /// Creates `physical` with the tenant keyword index (`is_tenant`) if it
    /// does not exist.
    async fn ensure_collection(&self, physical: &str, layout: CollectionLayout) -> Result<()>;

    /// Whether `physical` exists.
    async fn collection_exists(&self, physical: &str) -> Result<bool>;

    /// Deletes `physical` and everything in it.
    async fn drop_collection(&self, physical: &str) -> Result<()>;

    /// Inserts or replaces points; returns once they are durable.
    async fn upsert(&self, physical: &str, points: Vec<StoredPoint>) -> Result<()>;

    /// Nearest neighbours within the scope, best first.
    async fn search(&self, physical: &str, request: SearchRequest<'_>) -> Result<Vec<StoredHit>>;

    /// Points within the scope in id order, from `offset`.
    async fn scroll(
        &self,
        physical: &str,
        filter: &ScopedFilter,
        offset: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<StoredPage>;

    /// Exact number of points within the scope.
    async fn count(&self, physical: &str, filter: &ScopedFilter) -> Result<u64>;

    /// Deletes the points within the scope; returns once durable.
    async fn delete(&self, physical: &str, filter: &ScopedFilter) -> Result<()>;

    /// The persisted routing table.
    async fn load_routes(&self) -> Result<Vec<RouteEntry>>;

    /// Replaces the persisted routing table; returns once durable.
    async fn store_routes(&self, routes: &[RouteEntry]) -> Result<()>;
}
