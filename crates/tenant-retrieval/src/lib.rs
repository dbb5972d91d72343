//! # tenant-retrieval
//!
//! Tenant-scoped vector retrieval on Qdrant: embedded
//! [qdrant-edge](https://crates.io/crates/qdrant-edge) shards
//! ([`EdgeBackend`], the default) or a Qdrant server over gRPC
//! ([`QdrantBackend`], feature `server`).
//!
//! Similarity search never errors when it returns another tenant's
//! fragment, and Qdrant enforces nothing per tenant inside a collection.
//! So this crate makes the tenant structural and checks what comes back:
//!
//! - A [`Retrieval`] is configured with the platform's
//!   [`PlatformAuthority`](tenant_core::PlatformAuthority); a
//!   [`RetrievalClient`] is built only from a context issued under it, and
//!   only for a collection its capabilities allow; no method takes a tenant
//!   id. The backend is never reachable around the client: operator powers
//!   (raw inspection, drops, leak drills) live on the audited
//!   [`RetrievalOperator`].
//! - **Pool** tenants share a collection: the SDK writes `tenant_id` into
//!   every payload (callers cannot), indexes it as the tenant key, derives
//!   point ids from (tenant, document id), and puts the tenant condition on
//!   every search, get, scroll, count and delete. A caller's filter is
//!   nested beneath it, never merged.
//! - **Silo** tenants get their own collection; the tenant condition is
//!   still applied. [`Retrieval::promote`] / [`Retrieval::demote`] move a
//!   tenant online (copy, verify, switch atomically, delete the source);
//!   routes live in the backend, so every process sees the move.
//! - **Keyed leak tags**: every point carries a MAC under its tenant's key
//!   over tenant, collection, point id and payload, checked on every hit.
//!   A point written without the key is quarantined: dropped, counted and
//!   raised as a `tenant_audit` alarm, while the tenant's own results are
//!   served ([`LeakPolicy::Strict`] returns [`Error::LeakDetected`]).
//! - **Sealing** (per collection): text and metadata are sealed with
//!   XChaCha20-Poly1305 under the tenant's key, bound to tenant ‖ collection
//!   ‖ point id.
//! - **Limits**: filters are bounded in depth and size, vectors must have
//!   the collection's dimensions and finite values: typed errors, never a
//!   crash.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tenant_core::*;
//! use tenant_retrieval::*;
//!
//! // Platform start-up.
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
//! let dir = tempfile::tempdir()?;
//! let retrieval = Retrieval::builder(EdgeBackend::open(dir.path())?)
//!     .authority(issuer.authority())
//!     .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new("data-1")?)))
//!     .collection(CollectionSpec::new("docs", 64)?.sealed(["lang"])?)
//!     .tiers(StaticTiers::new(IsolationTier::Pool))
//!     .build()
//!     .await?;
//!
//! // Per request.
//! let ctx = issuer
//!     .context()
//!     .tenant(TenantId::random())
//!     .principal(PrincipalId::new("alice@example.com")?)
//!     .capabilities(Capabilities::none().with_collections(["docs"])?)
//!     .issue()?;
//! let docs = RetrievalClient::builder()
//!     .backend(&retrieval)
//!     .collection("docs")
//!     .tenant(&ctx)
//!     .build()?;
//!
//! let embed = HashEmbedder::new(64);
//! docs.upsert([
//!     Document::new("a", embed.embed_one("rust vector search"), "rust vector search")
//!         .with_metadata("lang", "en"),
//! ])
//! .await?;
//! let hits = docs
//!     .search(SearchQuery::new(embed.embed_one("vector search in rust")).top_k(3)
//!         .filter(MetadataFilter::eq("lang", "en")))
//!     .await?;
//! assert_eq!(hits[0].id, "a");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod client;
mod collection;
mod document;
mod embedder;
mod error;
mod filter;
mod guard;
mod health;
mod keys;
mod migration;
mod operator;
mod point;
mod quarantine;
mod retrieval;
mod route;
mod seal;
mod tag;

#[cfg(feature = "edge")]
#[cfg_attr(docsrs, doc(cfg(feature = "edge")))]
pub use backend::edge::EdgeBackend;
#[cfg(feature = "server")]
pub use backend::server::{QdrantBackend, QdrantBackendBuilder, QdrantLayout};
pub use backend::RetrievalBackend;
pub use client::{Cursor, Page, RetrievalClient, RetrievalClientBuilder, SearchQuery, MAX_LIMIT};
pub use collection::{CollectionSpec, Distance, Naming, Sealing, MAX_COLLECTION_NAME_LEN};
pub use document::{Document, Record, MAX_DOC_ID_LEN, MAX_METADATA_DEPTH, MAX_METADATA_KEY_LEN};
pub use embedder::{Embedder, HashEmbedder};
pub use error::{Error, LeakReason, Result};
pub use filter::{
    Bounds, FilterValue, MetadataFilter, MAX_FILTER_DEPTH, MAX_FILTER_SIZE, MAX_FILTER_VALUE_LEN,
};
pub use health::CollectionHealth;
pub use operator::{InspectedPoint, LeakDrill, RetrievalOperator};
pub use quarantine::LeakPolicy;
pub use retrieval::{Migration, Retrieval, RetrievalBuilder, WantsAuthority, WantsKeys, WithKeys};

/// Test support only: compiled with the `test-support` feature, which is
/// off by default and must never be enabled in a production build. It
/// exists so this crate's own tests and benchmarks can act behind the
/// SDK's back (plant points in a raw shard, time raw qdrant-edge).
#[cfg(feature = "test-support")]
pub mod testing {
    pub use crate::point::point_id;
    /// The qdrant-edge version the raw shard of
    /// [`EdgeBackend::with_raw_shard`](crate::EdgeBackend::with_raw_shard)
    /// is from.
    pub use qdrant_edge;
}
