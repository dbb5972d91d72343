//! # tenant-core
//!
//! The one way into tenant data. Every tenant-scoped handle of the SDK
//! (retrieval, memory, tools, governance) is built from a [`TenantContext`],
//! and a `TenantContext` can only be made here: by a [`ContextIssuer`] that
//! holds the platform master key, from a JWT checked by a [`ClaimVerifier`],
//! or by [`TenantContext::delegate`], which can only narrow.
//!
//! A context carries the tenant, the principal, the agent lineage, the
//! isolation tier, [`Capabilities`], issue and expiry times, its root's
//! origin, and an HMAC-SHA256 proof over all of them under a key that never
//! leaves the issuer. Handles admit only contexts of the platform's issuer
//! ([`PlatformAuthority`]); other layers bind contexts with
//! purpose-separated subkeys ([`ContextIssuer::subkey`]), so a bug in one
//! layer is caught by the next. Contexts cross processes as Ed25519-signed
//! [`ContextToken`]s that a downstream process verifies with public keys
//! only ([`TokenVerifier`]). Revocations ([`Revocations`], [`Revocation`])
//! cover context trees, JWTs, sessions and principals, and are shared
//! across replicas through a [`RevocationStore`] (Redis behind the `redis`
//! feature).
//!
//! ```
//! use std::time::Duration;
//! use tenant_core::*;
//!
//! // Once, at platform start-up.
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
//!
//! // Per request: a root context for the tenant's orchestrator agent.
//! let ctx = issuer
//!     .context()
//!     .tenant(TenantId::random())
//!     .principal(PrincipalId::new("alice@example.com")?)
//!     .capabilities(
//!         Capabilities::none()
//!             .with_tools(["search", "python"])?
//!             .with_collections(["docs"])?
//!             .with_token_budget(100_000)
//!             .with_max_delegation_depth(2),
//!     )
//!     .issue()?;
//!
//! // A sub-agent gets strictly less.
//! let researcher = ctx
//!     .delegate(AgentId::new("researcher")?)
//!     .tools(["search"])
//!     .token_budget(20_000)
//!     .ttl(Duration::from_secs(120))
//!     .issue()?;
//! assert!(!researcher.capabilities().tools().allows("python"));
//!
//! // Widening is an error, not a silent clamp.
//! let err = ctx.delegate(AgentId::new("rogue")?).tools(["shell"]).issue().unwrap_err();
//! assert!(matches!(err, Error::Widening { capability: "tools" }));
//! # Ok::<(), tenant_core::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
mod authority;
mod capabilities;
mod classify;
pub mod config;
mod context;
mod delegation;
mod encoding;
mod error;
mod ids;
mod issuer;
mod jwt;
mod key_provider;
mod keys;
mod origin;
mod proof;
mod revocation;
mod scope;
pub mod telemetry;
mod tier;
mod token;
mod token_keys;

pub use audit::AUDIT_TARGET;
pub use authority::PlatformAuthority;
pub use capabilities::{Capabilities, Scope, ScopeKind, MAX_NAME_LEN, MAX_SCOPE_NAMES};
pub use classify::{Classify, ErrorStatus};
pub use context::TenantContext;
pub use delegation::DelegationBuilder;
pub use error::{BoxError, ClaimRejection, Error, Result};
pub use ids::{AgentId, ContextId, PrincipalId, TenantId};
pub use issuer::{
    ContextBuilder, ContextIssuer, ContextIssuerBuilder, ReadyToIssue, WantsPrincipal, WantsTenant,
    DEFAULT_MAX_TTL, DEFAULT_TTL, MAX_TTL_CEILING,
};
pub use jwt::{
    ClaimVerifier, ClaimVerifierBuilder, JwkKeys, JwksLoader, DEFAULT_TENANT_CLAIM, MAX_JWT_LEN,
    MAX_LEEWAY, MAX_NUMERIC_DATE,
};
pub use key_provider::{
    AsyncKeyProvider, DataKey, DerivedKeyProvider, FileKeyProvider, KeyCache, KeyProvider,
    DEFAULT_KEY_CACHE_CAPACITY, DEFAULT_KEY_CACHE_TTL,
};
pub use keys::{KeyId, MasterKey, Purpose, Subkey};
#[cfg(feature = "redis")]
pub use revocation::{RedisRevocationStore, RevocationFollower, STREAM_RETENTION};
pub use revocation::{Revocation, RevocationStore, Revocations};
pub use scope::Scoped;
pub use telemetry::Telemetry;
pub use tier::{
    AsyncTierResolver, IsolationTier, StaticTiers, TierCache, TierResolver, TiersConfig,
    DEFAULT_TIER_CACHE_TTL,
};
pub use token::ContextToken;
pub use token_keys::TokenVerifier;

/// Re-exported so users name the same `secrecy` types the SDK uses.
pub use secrecy;

/// What the SDK's macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use tracing;
}
