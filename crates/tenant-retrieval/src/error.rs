//! The crate's one error type.

use std::fmt;

/// Why a hit was refused as a possible cross-tenant leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeakReason {
    /// The stored `tenant_id` field is missing or names another tenant.
    ForeignTenantField,
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
    /// A stored point failed the per-hit check; nothing was returned.
    #[error("possible cross-tenant leak in collection `{collection}` refused: {reason}")]
    LeakDetected {
        /// Logical collection.
        collection: String,
        /// What the check found.
        reason: LeakReason,
    },
    /// Sealing was configured but no key provider was given, or sealing
    /// failed.
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
    /// The storage backend failed.
    #[error("{backend} backend: {message}")]
    Backend {
        /// Which backend (`edge`, `qdrant`).
        backend: &'static str,
        /// The backend's message.
        message: String,
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

    pub(crate) fn edge(message: impl fmt::Display) -> Self {
        Error::Backend {
            backend: "edge",
            message: message.to_string(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
