//! # tenant-sdk
//!
//! Makes cross-tenant data leaks in multi-tenant AI-agent platforms
//! structurally impossible: every handle that touches tenant data —
//! retrieval, memory, tools, quotas — can only be built from a verified
//! [`TenantContext`], can only ever act for that tenant, and sub-agents get
//! handles that are narrowed, never widened.
//!
//! This facade re-exports [`tenant_core`] at its root and each store crate
//! as a module behind a cargo feature (all on by default):
//!
//! | feature      | module         | crate               |
//! |--------------|----------------|---------------------|
//! | `retrieval`  | [`retrieval`]  | `tenant-retrieval`  |
//! | `edge`       | (embedded Qdrant backend for [`retrieval`]) | `qdrant-edge` |
//! | `memory`     | [`memory`]     | `tenant-memory`     |
//! | `tools`      | [`tools`]      | `tenant-tools`      |
//! | `governance` | [`governance`] | `tenant-governance` |
//!
//! Feature `axum` (off by default) adds `axum_extract`: a tower layer and
//! an extractor that verify a bearer JWT into a [`TenantContext`], and
//! HTTP responses for every SDK error; feature `rig` adds `rig` (a
//! tenant-fixed rig `VectorStoreIndex` and tools); feature `mcp` adds `mcp`
//! (a tenant's tools served over MCP, remote MCP servers per tenant);
//! feature `cli` builds the `tenant-doctor` binary; feature `toml` reads
//! configuration files in TOML ([`config`]).
//!
//! Start with the [`prelude`], which brings in the issuer, the context and
//! every handle type, and a [`Platform`], which builds all handles of one
//! context in one call ([`Platform::handles`]). Errors of every crate
//! convert into [`SdkError`], which tells a caller how to react
//! ([`Classify`]). Spans and metrics follow one convention
//! ([`telemetry`]; the metric names are listed there and in
//! `docs/operations.md`).
//!
//! ```
//! use tenant_sdk::prelude::*;
//!
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
//! let ctx = issuer
//!     .context()
//!     .tenant(TenantId::random())
//!     .principal(PrincipalId::new("alice@example.com")?)
//!     .capabilities(Capabilities::none().with_tools(["search"])?.with_max_delegation_depth(1))
//!     .issue()?;
//! let sub_agent = ctx.delegate(AgentId::new("researcher")?).issue()?;
//! assert_eq!(sub_agent.tenant(), ctx.tenant());
//! # Ok::<(), tenant_sdk::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use tenant_core::*;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum_extract;
mod error;
mod platform;
pub mod prelude;

pub use error::SdkError;
pub use platform::{Handles, Platform, PlatformBuilder};

/// The README's code, compiled and run as doctests so it cannot drift.
#[cfg(all(
    doctest,
    feature = "edge",
    feature = "memory",
    feature = "tools",
    feature = "governance"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The getting-started guide's code, compiled as doctests.
#[cfg(all(
    doctest,
    feature = "edge",
    feature = "memory",
    feature = "tools",
    feature = "governance"
))]
#[doc = include_str!("../docs/getting-started.md")]
pub struct GettingStartedDoctests;

/// rig integration: a tenant-fixed vector index and the tenant's allowed
/// tools as rig tools (`tenant-rig`, feature `rig`).
#[cfg(feature = "rig")]
#[cfg_attr(docsrs, doc(cfg(feature = "rig")))]
pub mod rig {
    pub use tenant_rig::*;
}

/// MCP, tenant-scoped: a tenant's tools served over MCP with tokens bound to
/// tenant and resource, and remote MCP servers per tenant (`tenant-mcp`,
/// feature `mcp`).
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub mod mcp {
    pub use tenant_mcp::*;
}

/// Tenant-scoped vector retrieval (`tenant-retrieval`).
#[cfg(feature = "retrieval")]
#[cfg_attr(docsrs, doc(cfg(feature = "retrieval")))]
pub mod retrieval {
    pub use tenant_retrieval::*;
}

/// Tenant-scoped agent memory in PostgreSQL (`tenant-memory`).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory {
    pub use tenant_memory::*;
}

/// Tenant-scoped tool execution (`tenant-tools`).
#[cfg(feature = "tools")]
#[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
pub mod tools {
    pub use tenant_tools::*;
}

/// Quotas, scheduling and model entitlements (`tenant-governance`).
#[cfg(feature = "governance")]
#[cfg_attr(docsrs, doc(cfg(feature = "governance")))]
pub mod governance {
    pub use tenant_governance::*;
}
