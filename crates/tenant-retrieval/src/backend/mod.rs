//! The storage side: one public marker trait, one private operations trait,
//! two implementations.
//!
//! [`RetrievalBackend`] is what users see: a sealed trait with no method
//! that touches data. Everything a backend can do (create and drop
//! collections, write stored points, search, persist routes) lives on
//! [`Store`], which no code outside this crate can name or call: a backend
//! handed to [`Retrieval::builder`](crate::Retrieval::builder) is reachable
//! only through the tenant-scoped client and the audited operator handle.
//! Reads, counts, scrolls and deletes take a [`ScopedFilter`], which only
//! this crate can make and which always starts with the tenant condition.

use std::sync::Arc;

use async_trait::async_trait;
use tenant_core::TenantId;
use uuid::Uuid;

use crate::collection::Distance;
use crate::error::Result;
use crate::filter::ScopedFilter;
use crate::health::CollectionHealth;
use crate::point::{StoredHit, StoredPoint};
use crate::route::{RouteEntry, RouteTable};

pub(crate) mod edge;
#[cfg(feature = "server")]
pub(crate) mod server;

pub(crate) mod sealed {
    /// Proof that a call comes from inside this crate: it cannot be made
    /// anywhere else.
    pub struct Token(pub(crate) ());

    pub trait Sealed {
        /// The backend's operations, for [`Retrieval`](crate::Retrieval).
        fn into_store(self, token: Token) -> std::sync::Arc<dyn super::Store>;
    }
}

/// Vector storage a [`Retrieval`](crate::Retrieval) can run on:
/// [`EdgeBackend`](crate::EdgeBackend) (embedded qdrant-edge) and, with the
/// `server` feature, [`QdrantBackend`](crate::QdrantBackend).
///
/// Sealed and without data methods: once a backend is handed to
/// [`Retrieval::builder`](crate::Retrieval::builder), tenant data is
/// reachable only through a [`RetrievalClient`](crate::RetrievalClient)
/// (which carries the tenant condition on every call) or an audited
/// [`RetrievalOperator`](crate::RetrievalOperator).
pub trait RetrievalBackend: sealed::Sealed + Send + Sync + 'static {
    /// Short name for errors and logs (`edge`, `qdrant`).
    fn kind(&self) -> &'static str;
}

/// What a backend needs to create a physical collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectionLayout {
    /// Vector dimensions.
    pub dims: usize,
    /// Distance.
    pub distance: Distance,
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

/// Who holds the truth about routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteAuthority {
    /// This process alone serves the backend (the edge root is locked), so
    /// the in-memory route table is the truth.
    Local,
    /// Other processes share the backend: every operation re-reads its
    /// route after running and retries when it changed.
    Shared,
}

/// Everything a backend does. Not nameable outside this crate.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name for errors and logs (`edge`, `qdrant`).
    fn kind(&self) -> &'static str;

    /// The in-process route cache and migration gates, shared by every
    /// [`Retrieval`](crate::Retrieval) built on this backend.
    fn routes(&self) -> &Arc<RouteTable>;

    /// Whether other processes can change routes.
    fn route_authority(&self) -> RouteAuthority;

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

    /// The persisted route of (`tenant`, `collection`), read now.
    async fn fetch_route(&self, tenant: TenantId, collection: &str) -> Result<Option<RouteEntry>>;

    /// Persists one route entry; returns once durable.
    async fn store_route(&self, entry: &RouteEntry) -> Result<()>;

    /// Isolation health of every physical collection whose name starts
    /// with `prefix`.
    async fn health(&self, prefix: &str) -> Result<Vec<CollectionHealth>>;
}
