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

#[cfg(feature = "edge")]
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

/// How a backend lays tenants out in physical collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A shared Pool collection per logical collection and a dedicated
    /// collection per Silo tenant (edge; server collection-per-tenant).
    CollectionPerTier,
    /// One collection per logical collection holding every tenant: one
    /// tier (server shared-collection layout).
    Shared,
    /// One collection per logical collection with custom sharding: Pool
    /// tenants on a fallback shard key, each Silo tenant on its own key,
    /// routed by the server (server shard-key layout).
    ShardKeys,
}

/// Which shards of a collection an operation addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shards {
    /// The collection has no custom sharding.
    Unsharded,
    /// The tenant's dedicated key if it exists and is active, else the
    /// fallback key: the server decides.
    Routed {
        /// The tenant's dedicated key.
        target: String,
        /// The shared key of Pool tenants.
        fallback: String,
    },
    /// Exactly this key.
    Key(String),
}

/// Where an operation runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    /// The physical collection.
    pub collection: String,
    /// Which of its shards.
    pub shards: Shards,
}

impl Place {
    /// A collection without custom sharding.
    pub fn unsharded(collection: String) -> Self {
        Self {
            collection,
            shards: Shards::Unsharded,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shards {
            Shards::Unsharded => f.write_str(&self.collection),
            Shards::Routed { target, fallback } => {
                write!(f, "{}[{target}|{fallback}]", self.collection)
            }
            Shards::Key(k) => write!(f, "{}[{k}]", self.collection),
        }
    }
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

    /// How tenants are laid out.
    fn layout(&self) -> Layout;

    /// Creates the collection of `place` with the tenant keyword index
    /// (`is_tenant`) if it does not exist; in a collection with custom
    /// sharding, also the fallback key and, for `Shards::Key`, that key.
    async fn ensure_collection(&self, place: &Place, layout: CollectionLayout) -> Result<()>;

    /// Whether the physical `collection` exists.
    async fn collection_exists(&self, collection: &str) -> Result<bool>;

    /// Deletes the physical `collection` and everything in it.
    async fn drop_collection(&self, collection: &str) -> Result<()>;

    /// Inserts or replaces points; returns once they are durable.
    async fn upsert(&self, place: &Place, points: Vec<StoredPoint>) -> Result<()>;

    /// Nearest neighbours within the scope, best first.
    async fn search(&self, place: &Place, request: SearchRequest<'_>) -> Result<Vec<StoredHit>>;

    /// Points within the scope in id order, from `offset`.
    async fn scroll(
        &self,
        place: &Place,
        filter: &ScopedFilter,
        offset: Option<Uuid>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<StoredPage>;

    /// Exact number of points within the scope.
    async fn count(&self, place: &Place, filter: &ScopedFilter) -> Result<u64>;

    /// Deletes the points within the scope; returns once durable.
    async fn delete(&self, place: &Place, filter: &ScopedFilter) -> Result<()>;

    /// Creates shard key `key` in `collection`, empty and active, or (with
    /// `partial`) waiting to be filled by [`Store::replicate`].
    async fn create_shard_key(&self, collection: &str, key: &str, partial: bool) -> Result<()>;

    /// Copies the points of `scope` from key `from` to the partial key `to`
    /// inside the server, and returns once `to` is active.
    async fn replicate(
        &self,
        collection: &str,
        from: &str,
        to: &str,
        scope: &ScopedFilter,
    ) -> Result<()>;

    /// Deletes shard key `key` of `collection` and its points (nothing if
    /// it does not exist).
    async fn drop_shard_key(&self, collection: &str, key: &str) -> Result<()>;

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
