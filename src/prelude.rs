//! Everything a service needs to start: `use tenant_sdk::prelude::*;`.
//!
//! The issuer and verifier, the context and its ids and capabilities, the
//! [`Platform`] bundle and [`SdkError`],
//! and the handle types (and their platform-wide resources) of every
//! enabled store. Errors keep their crate names (`tenant_sdk::memory::Error`,
//! ...) and are not in the prelude; [`SdkError`] wraps them
//! all.

pub use crate::{Handles, Platform, SdkError};
pub use tenant_core::{
    AgentId, AsyncKeyProvider, AsyncTierResolver, Capabilities, ClaimVerifier, Classify,
    ContextIssuer, DerivedKeyProvider, ErrorStatus, FileKeyProvider, IsolationTier, KeyCache,
    KeyId, KeyProvider, MasterKey, PlatformAuthority, PrincipalId, Purpose, Revocations,
    StaticTiers, Telemetry, TenantContext, TenantId, TierCache, TierResolver,
};

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use tenant_memory::{
    Expected, MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewMessage, ThreadId,
};

#[cfg(feature = "retrieval")]
#[cfg_attr(docsrs, doc(cfg(feature = "retrieval")))]
pub use tenant_retrieval::{
    CollectionSpec, Document, Embedder, HashEmbedder, MetadataFilter, Retrieval, RetrievalClient,
    SearchQuery,
};

#[cfg(feature = "edge")]
#[cfg_attr(docsrs, doc(cfg(feature = "edge")))]
pub use tenant_retrieval::EdgeBackend;

#[cfg(feature = "tools")]
#[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
pub use tenant_tools::{
    EgressPolicy, FileVault, FnTool, MemoryVault, SyncVault, Tool, ToolCall, ToolExecutor,
    ToolPolicies, ToolPolicy, ToolRegistry, Vault,
};

#[cfg(all(feature = "tools", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tools", target_os = "linux"))))]
pub use tenant_tools::{Sandbox, SandboxConfig, WorkspaceRoot};

#[cfg(feature = "governance")]
#[cfg_attr(docsrs, doc(cfg(feature = "governance")))]
pub use tenant_governance::{
    Estimate, FairScheduler, Lane, Limits, ModelGate, ModelRates, ModelRequest, Policy, Quotas,
    TenantPolicy, TenantQuota, Usage,
};
