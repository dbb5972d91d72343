//! # tenant-rig
//!
//! [rig](https://crates.io/crates/rig-core) (0.44) adapters that let a rig
//! agent see exactly one tenant:
//!
//! - [`TenantIndex`] — a [`RetrievalClient`](tenant_retrieval::RetrievalClient)
//!   plus an [`Embedder`](tenant_retrieval::Embedder) as a rig
//!   [`VectorStoreIndex`](rig_core::vector_store::VectorStoreIndex). The
//!   tenant comes from the client (built from a
//!   [`TenantContext`](tenant_core::TenantContext) issued under the
//!   platform's authority, re-admitted on every search); a request's filter is
//!   translated ([`metadata_filter`]) and nested *beneath* the tenant
//!   condition, so no filter — including one a model writes when rig's
//!   blanket impl exposes the index as the `search_vector_store` tool — can
//!   widen the search. Filters naming `tenant_id`, or shapes the store
//!   cannot express, are typed errors.
//! - [`TenantTools`] — the tools a
//!   [`ToolExecutor`](tenant_tools::ToolExecutor) allows, as rig
//!   [`DynamicTool`](rig_core::tool::DynamicTool)s; every call goes back
//!   through the executor, which re-checks context and policy.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! use rig_core::vector_store::{request::SearchFilter, VectorSearchRequest, VectorStoreIndex};
//! use serde_json::json;
//! use tenant_core::*;
//! use tenant_retrieval::*;
//! use tenant_rig::{RigFilter, TenantDocument, TenantIndex};
//!
//! // Platform start-up.
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
//! let dir = tempfile::tempdir()?;
//! let retrieval = Retrieval::builder(EdgeBackend::open(dir.path())?)
//!     .authority(issuer.authority())
//!     .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new("data-1")?)))
//!     .collection(CollectionSpec::new("docs", 64)?)
//!     .tiers(StaticTiers::new(IsolationTier::Pool))
//!     .build()
//!     .await?;
//!
//! // Per request: a verified context, a scoped client, a rig index.
//! let ctx = issuer
//!     .context()
//!     .tenant(TenantId::random())
//!     .principal(PrincipalId::new("alice@example.com")?)
//!     .capabilities(Capabilities::none().with_collections(["docs"])?)
//!     .issue()?;
//! let client = RetrievalClient::builder()
//!     .backend(&retrieval)
//!     .collection("docs")
//!     .tenant(&ctx)
//!     .build()?;
//! let embed = HashEmbedder::new(64);
//! client
//!     .upsert([Document::new("a", embed.embed_one("rust agents"), "rust agents")
//!         .with_metadata("lang", "en")])
//!     .await?;
//! let index = TenantIndex::new(client, embed);
//!
//! // What rig (or a model, through the blanket tool impl) sends.
//! let req = VectorSearchRequest::builder()
//!     .query("agents in rust")
//!     .samples(3)
//!     .filter(RigFilter::eq("lang", json!("en")))
//!     .build();
//! let hits = index.top_n::<TenantDocument>(req).await?;
//! assert_eq!(hits[0].id, "a");
//!
//! // A filter may narrow, never widen: naming the tenant field is refused.
//! let widen = VectorSearchRequest::builder()
//!     .query("agents")
//!     .samples(3)
//!     .filter(RigFilter::eq("tenant_id", json!("other")).or(RigFilter::eq("lang", json!("en"))))
//!     .build();
//! let err = index.top_n::<TenantDocument>(widen).await.unwrap_err();
//! assert!(matches!(
//!     tenant_rig::Error::from_vector_store(&err),
//!     Some(tenant_rig::Error::TenantFieldInFilter(_))
//! ));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod filter;
mod index;
mod tools;

pub use error::{Error, Result};
pub use filter::{metadata_filter, RigFilter, MAX_FILTER_DEPTH};
pub use index::{TenantDocument, TenantIndex};
pub use tools::TenantTools;

/// Re-exported so callers name the same rig version.
pub use rig_core;
