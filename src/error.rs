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
            SdkError::Retrieval(e) => retrieval::status(e),
            #[cfg(feature = "tools")]
            SdkError::Tools(e) => e.status(),
            #[cfg(feature = "governance")]
            SdkError::Governance(e) => e.status(),
            SdkError::NotConfigured(_) => ErrorStatus::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            SdkError::Core(e) => e.kind(),
            #[cfg(feature = "memory")]
            SdkError::Memory(e) => e.kind(),
            #[cfg(feature = "retrieval")]
            SdkError::Retrieval(e) => retrieval::kind(e),
            #[cfg(feature = "tools")]
            SdkError::Tools(e) => e.kind(),
            #[cfg(feature = "governance")]
            SdkError::Governance(e) => e.kind(),
            SdkError::NotConfigured(_) => "not_configured",
        }
    }
}

/// Classification of retrieval errors, until `tenant-retrieval` implements
/// [`Classify`] itself.
#[cfg(feature = "retrieval")]
mod retrieval {
    use tenant_core::{Classify, ErrorStatus};
    use tenant_retrieval::Error;

    pub(super) fn status(e: &Error) -> ErrorStatus {
        match e {
            Error::Context(e) => e.status(),
            Error::CollectionNotAllowed(_) => ErrorStatus::PermissionDenied,
            Error::UnknownCollection(_) => ErrorStatus::NotFound,
            Error::InvalidInput { .. }
            | Error::ReservedMetadataKey(_)
            | Error::DimensionMismatch { .. }
            | Error::FilterOnSealedField(_) => ErrorStatus::InvalidInput,
            Error::Backend { .. } | Error::Io { .. } => {
                ErrorStatus::Unavailable { retry_after: None }
            }
            _ => ErrorStatus::Internal,
        }
    }

    pub(super) fn kind(e: &Error) -> &'static str {
        match e {
            Error::Context(e) => e.kind(),
            Error::CollectionNotAllowed(_) => "collection_not_allowed",
            Error::UnknownCollection(_) => "unknown_collection",
            Error::InvalidInput { .. } => "invalid_input",
            Error::ReservedMetadataKey(_) => "reserved_metadata_key",
            Error::DimensionMismatch { .. } => "dimension_mismatch",
            Error::FilterOnSealedField(_) => "filter_on_sealed_field",
            Error::LeakDetected { .. } => "leak_detected",
            Error::Sealing(_) => "sealing",
            Error::Migration { .. } => "migration",
            Error::Backend { .. } => "backend",
            Error::Io { .. } => "io",
            _ => "retrieval",
        }
    }
}
