//! [`SdkError`]: any error of the SDK's crates, classified for callers.

use tenant_core::{Classify, ErrorStatus};

/// Any error of the SDK's crates (each behind its feature), so one `?`
/// works across handles, and one mapping turns it into a response (with
/// feature `axum`, `SdkError` is an `IntoResponse`).
///
/// [`Classify`] tells how a caller must react ([`ErrorStatus`]) and gives a
/// low-cardinality [`kind`](Classify::kind) for logs and metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// From `tenant-core` (contexts, tokens, keys, configuration).
    #[error(transparent)]
    Core(#[from] tenant_core::Error),
    /// From `tenant-memory`.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    #[error(transparent)]
    Memory(#[from] tenant_memory::Error),
    /// From `tenant-retrieval`.
    #[cfg(feature = "retrieval")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retrieval")))]
    #[error(transparent)]
    Retrieval(#[from] tenant_retrieval::Error),
    /// From `tenant-tools`.
    #[cfg(feature = "tools")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
    #[error(transparent)]
    Tools(#[from] tenant_tools::Error),
    /// From `tenant-governance`.
    #[cfg(feature = "governance")]
    #[cfg_attr(docsrs, doc(cfg(feature = "governance")))]
    #[error(transparent)]
    Governance(#[from] tenant_governance::Error),
    /// From `tenant-rig`.
    #[cfg(feature = "rig")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rig")))]
    #[error(transparent)]
    Rig(#[from] tenant_rig::Error),
    /// From `tenant-mcp`.
    #[cfg(feature = "mcp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
    #[error(transparent)]
    Mcp(#[from] tenant_mcp::Error),
    /// A handle was asked of a [`Platform`](crate::Platform) that was not
    /// configured with its platform-wide resource.
    #[error("{0} is not configured on this platform")]
    NotConfigured(&'static str),
}

impl Classify for SdkError {
    fn status(&self) -> ErrorStatus {
        match self {
            SdkError::Core(e) => e.status(),
            #[cfg(feature = "memory")]
            SdkError::Memory(e) => e.status(),
            #[cfg(feature = "retrieval")]
            SdkError::Retrieval(e) => e.status(),
            #[cfg(feature = "tools")]
            SdkError::Tools(e) => e.status(),
            #[cfg(feature = "governance")]
            SdkError::Governance(e) => e.status(),
            #[cfg(feature = "rig")]
            SdkError::Rig(e) => e.status(),
            #[cfg(feature = "mcp")]
            SdkError::Mcp(e) => tenant_core::Classify::status(e),
            SdkError::NotConfigured(_) => ErrorStatus::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            SdkError::Core(e) => e.kind(),
            #[cfg(feature = "memory")]
            SdkError::Memory(e) => e.kind(),
            #[cfg(feature = "retrieval")]
            SdkError::Retrieval(e) => e.kind(),
            #[cfg(feature = "tools")]
            SdkError::Tools(e) => e.kind(),
            #[cfg(feature = "governance")]
            SdkError::Governance(e) => e.kind(),
            #[cfg(feature = "rig")]
            SdkError::Rig(e) => e.kind(),
            #[cfg(feature = "mcp")]
            SdkError::Mcp(e) => e.kind(),
            SdkError::NotConfigured(_) => "not_configured",
        }
    }
}
