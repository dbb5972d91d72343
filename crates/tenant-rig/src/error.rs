//! The crate's one error type.

use rig_core::tool::{ToolErrorKind, ToolExecutionError};
use rig_core::vector_store::VectorStoreError;

/// Everything that can go wrong between a rig agent and the tenant-scoped
/// stores.
///
/// Through rig's own traits this error travels boxed:
/// [`VectorStoreError::DatastoreError`] for an index, the source of a
/// [`ToolExecutionError`] for a tool. [`Error::from_vector_store`] gets it
/// back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant context was rejected (bad proof, expired, revoked, not a
    /// descendant, ...).
    #[error("tenant context rejected: {0}")]
    Context(#[from] tenant_core::Error),
    /// A search filter names the SDK-owned tenant field. The tenant is fixed
    /// by the index; a filter can only narrow within it, so naming the
    /// field is refused rather than silently dropped.
    #[error("filter names `{0}`, which the SDK sets; the tenant is fixed by the index")]
    TenantFieldInFilter(String),
    /// A search filter has a shape or value the tenant-scoped store cannot
    /// express (it is refused, never ignored).
    #[error("unsupported filter: {0}")]
    UnsupportedFilter(String),
    /// The tenant-scoped retrieval client failed.
    #[error(transparent)]
    Retrieval(#[from] tenant_retrieval::Error),
    /// The tenant-scoped tool executor refused or failed a call (including
    /// [`tenant_tools::Error::ToolNotAllowed`]).
    #[error(transparent)]
    Tools(#[from] tenant_tools::Error),
    /// A tool name the executor listed is not acceptable to rig.
    #[error("tool name `{0}` is not acceptable to rig: {1}")]
    InvalidToolName(String, String),
}

impl Error {
    /// This crate's error inside a [`VectorStoreError`] returned by
    /// [`TenantIndex`](crate::TenantIndex), if it carries one.
    pub fn from_vector_store(err: &VectorStoreError) -> Option<&Error> {
        match err {
            VectorStoreError::DatastoreError(inner) => inner.downcast_ref::<Error>(),
            _ => None,
        }
    }

    /// This crate's error as rig's vector-store error.
    pub fn into_vector_store(self) -> VectorStoreError {
        VectorStoreError::DatastoreError(Box::new(self))
    }

    /// The executor's error as the result of a rig tool call: the kind is
    /// normalised for rig (refusals are `PermissionDenied`, schema
    /// violations `InvalidArgs`), the model sees a message that names the
    /// tool but no secret, and the [`tenant_tools::Error`] stays
    /// downcastable with [`ToolExecutionError::downcast_ref`].
    pub(crate) fn tool_execution(err: tenant_tools::Error) -> ToolExecutionError {
        use tenant_tools::Error as E;
        let (kind, feedback) = match &err {
            E::ToolNotAllowed { .. } => (ToolErrorKind::PermissionDenied, err.to_string()),
            E::InvalidInput { .. } => (ToolErrorKind::InvalidArgs, err.to_string()),
            E::Context(_) => (
                ToolErrorKind::PermissionDenied,
                "the agent's authority is no longer valid".to_owned(),
            ),
            _ => return ToolExecutionError::from_error(err),
        };
        ToolExecutionError::new(kind, err.to_string())
            .with_model_feedback(feedback)
            .with_source(err)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl tenant_core::Classify for Error {
    fn status(&self) -> tenant_core::ErrorStatus {
        match self {
            Error::Context(e) => e.status(),
            Error::Retrieval(e) => e.status(),
            Error::Tools(e) => e.status(),
            Error::TenantFieldInFilter(_) | Error::UnsupportedFilter(_) => {
                tenant_core::ErrorStatus::InvalidInput
            }
            Error::InvalidToolName(..) => tenant_core::ErrorStatus::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Context(e) => e.kind(),
            Error::Retrieval(e) => e.kind(),
            Error::Tools(e) => e.kind(),
            Error::TenantFieldInFilter(_) => "tenant_field_in_filter",
            Error::UnsupportedFilter(_) => "unsupported_filter",
            Error::InvalidToolName(..) => "invalid_tool_name",
        }
    }
}
