//! The crate's one error type.

use std::fmt;

/// Why a hit was refused as a possible cross-tenant leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeakReason {
    /// The stored `tenant_id` field is missing or names another tenant.
    ForeignTenantField,
    /// The keyed leak tag is missing or does not verify under this
    /// tenant's key: the point was written without the key (planted,
    /// copied from another tenant, moved, or edited behind the SDK's back).
    TagMismatch,
    /// The point id is not the one derived from this tenant and the
    /// document id (the point was written behind the SDK's back or moved).
    PointIdMismatch,
    /// The sealed payload is missing or does not open under this tenant's
    /// key with this tenant, collection and point id as associated data.
    SealOpenFailed,
    /// A clear (filterable) metadata field disagrees with the sealed copy.
    ClearFieldTampered,
    /// The stored payload does not have the SDK's layout.
    MalformedPayload,
}

impl fmt::Display for LeakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeakReason::ForeignTenantField => "tenant field missing or foreign",
            LeakReason::TagMismatch => "leak tag missing or not made with this tenant's key",
            LeakReason::PointIdMismatch => "point id not derived from this tenant and document",
            LeakReason::SealOpenFailed => "sealed payload does not open under this tenant's key",
            LeakReason::ClearFieldTampered => "clear metadata disagrees with the sealed copy",
            LeakReason::MalformedPayload => "payload does not have the SDK layout",
        })
    }
}

/// Everything that can go wrong in tenant-scoped retrieval.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant context was rejected (bad proof, expired, revoked, not a
    /// descendant, ...).
    #[error("tenant context rejected: {0}")]
    Context(#[from] tenant_core::Error),
    /// The context's capabilities do not include this collection.
    #[error("collection `{0}` is not allowed for this context")]
    CollectionNotAllowed(String),
    /// No collection of that name was registered with the platform.
    #[error("collection `{0}` is not registered")]
    UnknownCollection(String),
    /// A collection name, document id, metadata key or filter key is not
    /// acceptable.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The caller tried to set an SDK-owned payload field (`tenant_id`).
    #[error("metadata key `{0}` is reserved by the SDK")]
    ReservedMetadataKey(String),
    /// A vector, score threshold or range bound is NaN or infinite.
    #[error("{what} is not a finite number")]
    NonFinite {
        /// What was not finite (`vector`, `query vector`, `score threshold`,
        /// `range bound`).
        what: &'static str,
    },
    /// A metadata filter nests deeper than the limit.
    #[error("filter nests deeper than {max} levels")]
    FilterTooDeep {
        /// The limit ([`MAX_FILTER_DEPTH`](crate::MAX_FILTER_DEPTH)).
        max: usize,
    },
    /// A metadata filter has more conditions and values than the limit.
    #[error("filter has more than {max} conditions and values")]
    FilterTooLarge {
        /// The limit ([`MAX_FILTER_SIZE`](crate::MAX_FILTER_SIZE)).
        max: usize,
    },
    /// A vector has the wrong number of dimensions.
    #[error("vector has {actual} dimensions, collection `{collection}` expects {expected}")]
    DimensionMismatch {
        /// Logical collection.
        collection: String,
        /// Dimensions the collection was created with.
        expected: usize,
        /// Dimensions given.
        actual: usize,
    },
    /// A filter names a metadata field that is sealed (not stored in the
    /// clear), so the store cannot evaluate it.
    #[error("metadata field `{0}` is sealed and cannot be filtered on; mark it filterable")]
    FilterOnSealedField(String),
    /// A stored point failed the per-hit check and the platform runs in
    /// strict mode ([`LeakPolicy::Strict`](crate::LeakPolicy::Strict));
    /// nothing was returned. (By default such a point is quarantined
    /// instead: dropped, counted and alarmed.)
    #[error("possible cross-tenant leak in collection `{collection}` refused: {reason}")]
    LeakDetected {
        /// Logical collection.
        collection: String,
        /// What the check found.
        reason: LeakReason,
    },
    /// Deriving a tenant's keys, sealing or tagging failed.
    #[error("sealing: {0}")]
    Sealing(String),
    /// Moving a tenant between tiers failed; routing was left unchanged.
    #[error("migration of collection `{collection}` failed: {reason}")]
    Migration {
        /// Logical collection.
        collection: String,
        /// Why.
        reason: String,
    },
    /// A write waited for another process's migration of this tenant and
    /// collection longer than allowed; nothing was written. Retry later
    /// (or re-run the interrupted promotion/demotion).
    #[error("tenant is being migrated in collection `{collection}`; retry later")]
    TenantMigrating {
        /// Logical collection.
        collection: String,
    },
    /// The tenant's route kept changing under the operation (repeated
    /// migrations by other processes); nothing was returned.
    #[error("route of collection `{collection}` kept changing; retry")]
    RouteUnsettled {
        /// Logical collection.
        collection: String,
    },
    /// An operator handle was refused for this context.
    #[error("not an operator context: {0}")]
    NotAnOperator(&'static str),
    /// Another process (or another `EdgeBackend` in this process) has the
    /// embedded backend's root open. qdrant-edge shards cannot be shared:
    /// one process serves a root at a time.
    #[error("backend root {} is in use by another process", path.display())]
    BackendInUse {
        /// The root directory.
        path: std::path::PathBuf,
    },
    /// The storage backend failed.
    #[error("{backend} backend: {message}")]
    Backend {
        /// Which backend (`edge`, `qdrant`).
        backend: &'static str,
        /// The backend's message.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// Local file I/O failed (edge backend, routing table).
    #[error("I/O on {path}: {source}")]
    Io {
        /// The path involved.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what,
            reason: reason.into(),
        }
    }

    /// A failure of `backend` described by `message`, with no error of its
    /// own behind it.
    pub(crate) fn backend(backend: &'static str, message: impl fmt::Display) -> Self {
        Error::Backend {
            backend,
            message: message.to_string(),
            source: None,
        }
    }

    /// A failure of `backend` caused by `source` (kept as the source).
    pub(crate) fn backend_source(
        backend: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            backend,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    #[cfg(feature = "edge")]
    pub(crate) fn edge(message: impl fmt::Display) -> Self {
        Error::backend("edge", message)
    }

    #[cfg(feature = "edge")]
    pub(crate) fn edge_source(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::backend_source("edge", source)
    }
}

impl tenant_core::Classify for Error {
    fn status(&self) -> tenant_core::ErrorStatus {
        use tenant_core::ErrorStatus as S;
        match self {
            Error::Context(e) => e.status(),
            Error::CollectionNotAllowed(_) | Error::NotAnOperator(_) => S::PermissionDenied,
            Error::UnknownCollection(_) => S::NotFound,
            Error::InvalidInput { .. }
            | Error::ReservedMetadataKey(_)
            | Error::NonFinite { .. }
            | Error::FilterTooDeep { .. }
            | Error::FilterTooLarge { .. }
            | Error::DimensionMismatch { .. }
            | Error::FilterOnSealedField(_) => S::InvalidInput,
            Error::TenantMigrating { .. }
            | Error::RouteUnsettled { .. }
            | Error::Backend { .. }
            | Error::Io { .. } => S::Unavailable { retry_after: None },
            Error::LeakDetected { .. }
            | Error::Sealing(_)
            | Error::Migration { .. }
            | Error::BackendInUse { .. } => S::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Context(e) => e.kind(),
            Error::CollectionNotAllowed(_) => "collection_not_allowed",
            Error::UnknownCollection(_) => "unknown_collection",
            Error::InvalidInput { .. } => "invalid_input",
            Error::ReservedMetadataKey(_) => "reserved_metadata_key",
            Error::NonFinite { .. } => "non_finite",
            Error::FilterTooDeep { .. } => "filter_too_deep",
            Error::FilterTooLarge { .. } => "filter_too_large",
            Error::DimensionMismatch { .. } => "dimension_mismatch",
            Error::FilterOnSealedField(_) => "filter_on_sealed_field",
            Error::LeakDetected { .. } => "leak_detected",
            Error::Sealing(_) => "sealing",
            Error::Migration { .. } => "migration",
            Error::TenantMigrating { .. } => "tenant_migrating",
            Error::RouteUnsettled { .. } => "route_unsettled",
            Error::NotAnOperator(_) => "not_an_operator",
            Error::BackendInUse { .. } => "backend_in_use",
            Error::Backend { .. } => "backend",
            Error::Io { .. } => "io",
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_keeps_the_backends_own_error_as_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::backend_source("qdrant", io);
        assert_eq!(e.to_string(), "qdrant backend: refused");
        let source = std::error::Error::source(&e).expect("source kept");
        assert_eq!(source.to_string(), "refused");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        let described = Error::backend("qdrant", "route entry is not an object");
        assert!(std::error::Error::source(&described).is_none());
    }
}
