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
//! - A [`RetrievalClient`] is built only from a verified
//!   [`TenantContext`](tenant_core::TenantContext) and only for a
//!   collection its capabilities allow; no method takes a tenant id.
//! - **Pool** tenants share a collection: the SDK writes `tenant_id` into
//!   every payload (callers cannot), indexes it as the tenant key, derives
//!   point ids from (tenant, document id), and puts the tenant condition on
//!   every search, get, scroll, count and delete. A caller's filter is
//!   nested beneath it, never merged.
//! - **Silo** tenants get their own collection; the tenant condition is
//!   still applied. [`Retrieval::promote`] / [`Retrieval::demote`] move a
//!   tenant online (copy, verify, switch atomically, delete the source).
//! - **Sealing** (per collection): text and metadata are sealed with
//!   XChaCha20-Poly1305 under the tenant's key, bound to tenant ‖ collection
//!   ‖ point id. Every point is checked before it is returned; a failure is
//!   [`Error::LeakDetected`] plus a `tenant_audit` event, and nothing is
//!   returned.
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
//!     .collection(CollectionSpec::new("docs", 64)?.sealed(["lang"])?)
//!     .tiers(StaticTiers::new(IsolationTier::Pool))
//!     .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new("data-1")?)))
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

pub mod backend;
mod client;
mod collection;
mod document;
mod embedder;
mod error;
mod filter;
mod guard;
mod migration;
pub mod point;
mod retrieval;
mod seal;

pub use backend::edge::{CollectionHealth, EdgeBackend};
#[cfg(feature = "server")]
pub use backend::server::{QdrantBackend, QdrantBackendBuilder};
pub use backend::{CollectionLayout, RetrievalBackend, RouteEntry};
pub use client::{Cursor, Page, RetrievalClient, RetrievalClientBuilder, SearchQuery, MAX_LIMIT};
pub use collection::{CollectionSpec, Distance, Naming, Sealing, MAX_COLLECTION_NAME_LEN};
pub use document::{Document, Record, MAX_DOC_ID_LEN, MAX_METADATA_KEY_LEN};
pub use embedder::{Embedder, HashEmbedder};
pub use error::{Error, LeakReason, Result};
pub use filter::{Bounds, FilterValue, MetadataFilter, ScopedFilter};
pub use retrieval::{Migration, Retrieval, RetrievalBuilder};

/// Re-exported so raw-shard users name the same qdrant-edge version.
pub use qdrant_edge;
