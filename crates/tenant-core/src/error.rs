//! The one error type of `tenant-core`.

use crate::keys::KeyId;

/// Why a JSON Web Token was rejected by [`ClaimVerifier`](crate::ClaimVerifier).
///
/// Every variant is a distinct, actionable reason; none of them carries the
/// token itself, so logging a rejection never logs a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimRejection {
    /// The token is not a well-formed JWT (shape, base64 or JSON).
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm this verifier is not configured for
    /// (this includes `alg: none`).
    #[error("token algorithm is not allowed by this verifier")]
    AlgorithmNotAllowed,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` lies in the past (beyond the configured leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` lies in the future (beyond the configured leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks required claim `{0}`")]
    MissingClaim(String),
    /// The tenant claim is present but is not a well-formed tenant id.
    #[error("token tenant claim is not a valid tenant id")]
    InvalidTenant,
    /// The `sub` claim is not a valid principal id.
    #[error("token subject is not a valid principal id")]
    InvalidPrincipal,
    /// A claim has the wrong type or an invalid value (this includes dates
    /// that are negative, not numbers, or after the year 9999).
    #[error("token claim `{0}` is invalid")]
    InvalidClaim(String),
    /// A member name appears twice in the header or payload (at any
    /// depth): parsers disagree on which one wins, so neither does.
    #[error("token has duplicate claim `{0}`")]
    DuplicateClaim(String),
    /// `iat` lies in the future (beyond the configured leeway).
    #[error("token is issued in the future")]
    IssuedInFuture,
    /// The header lists critical extensions (`crit`); none is supported.
    #[error("token requires an unsupported critical header extension")]
    UnsupportedCriticalHeader,
    /// The header names a `kid` the configured key set does not hold.
    #[error("token key id is not in the key set")]
    UnknownKeyId,
    /// The token is longer than the verifier accepts.
    #[error("token is too long")]
    Oversized,
    /// The token, its session or its subject has been revoked.
    #[error("token has been revoked")]
    Revoked,
}

/// Errors of `tenant-core`.
///
/// Every failure is closed: an operation that returns one of these did not
/// act for any tenant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier did not parse.
    #[error("invalid {kind}: {reason}")]
    InvalidId {
        /// Which identifier (`tenant id`, `principal id`, ...).
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The context's expiry time has passed.
    #[error("tenant context has expired")]
    ContextExpired,
    /// The context, or one of its ancestors, has been revoked (or the token,
    /// session or principal it was minted for).
    #[error("tenant context has been revoked")]
    ContextRevoked,
    /// This process's view of the shared revocation store is older than its
    /// staleness bound, so no context can be admitted until it catches up.
    #[error("revocation view is stale: the revocation store has not been reached within the staleness bound")]
    RevocationsStale,
    /// A revocation entry read from a store could not be parsed.
    #[error("malformed revocation entry: {0}")]
    MalformedRevocation(&'static str),
    /// A revocation store could not be reached or answered an error.
    #[error("revocation store error: {reason}")]
    RevocationStore {
        /// What went wrong.
        reason: String,
        /// The store client's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The context's proof does not verify: it was forged or tampered with.
    #[error("tenant context proof does not verify")]
    BadProof,
    /// The context was signed with a key this verifier does not accept.
    #[error("tenant context is signed with unknown key `{0}`")]
    UnknownKey(KeyId),
    /// A serialized context token could not be decoded.
    #[error("malformed context token: {0}")]
    MalformedToken(&'static str),
    /// A delegation asked for more than its parent holds.
    #[error("delegation would widen `{capability}` beyond the parent context")]
    Widening {
        /// The capability that would have been widened.
        capability: &'static str,
    },
    /// A delegation asked to outlive its parent context.
    #[error("delegated context would outlive its parent")]
    OutlivesParent,
    /// The parent context may not delegate any further.
    #[error("delegation depth exceeded: the parent allows {allowed} more level(s)")]
    DelegationDepthExceeded {
        /// How many further levels the parent allowed.
        allowed: u8,
    },
    /// The context was not issued under the platform authority the handle
    /// was configured with (it was minted by another issuer).
    #[error("tenant context was not issued by this platform's authority")]
    ForeignAuthority,
    /// A handle was asked to act for a context that does not descend from
    /// the handle's own context.
    #[error("context does not descend from the handle's context")]
    NotDescendant,
    /// A time-to-live of zero, or one that overflows the clock.
    #[error("invalid time to live: {0}")]
    InvalidTtl(&'static str),
    /// A builder or verifier was configured inconsistently.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),
    /// A JWT was rejected.
    #[error("claims rejected: {0}")]
    ClaimRejected(#[from] ClaimRejection),
    /// A key could not be loaded, created or parsed.
    #[error("key error: {0}")]
    Key(String),
    /// A key service (KMS, HSM, secrets manager) behind an
    /// [`AsyncKeyProvider`](crate::AsyncKeyProvider) failed, or a
    /// [`KeyCache`](crate::KeyCache) was asked synchronously for a key it
    /// does not hold yet.
    #[error("key unavailable for tenant {tenant}: {reason}")]
    KeyUnavailable {
        /// The tenant whose key was asked for.
        tenant: crate::TenantId,
        /// What went wrong.
        reason: String,
        /// The key service's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A tier source behind an [`AsyncTierResolver`](crate::AsyncTierResolver)
    /// failed.
    #[error("tier unavailable for tenant {tenant}: {reason}")]
    TierUnavailable {
        /// The tenant whose tier was asked for.
        tenant: crate::TenantId,
        /// What went wrong.
        reason: String,
        /// The tier source's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A configuration file (TOML, JSON) did not parse or failed
    /// validation; `field` is the path of the offending value
    /// (`tenants.6f1c…`, `default`, ...).
    #[error("invalid configuration at `{field}`: {reason}")]
    Config {
        /// Path of the offending field (`.` separated; `""` for the root).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a key file failed.
    #[error("key store I/O error at {path}: {source}")]
    KeyStoreIo {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A boxed error from a store client, key service or other plug point.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for `tenant-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A revocation-store error keeping the client's error as its source.
    pub fn revocation_store(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::RevocationStore {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

impl crate::Classify for ClaimRejection {
    fn status(&self) -> crate::ErrorStatus {
        crate::ErrorStatus::Unauthenticated
    }

    fn kind(&self) -> &'static str {
        match self {
            ClaimRejection::Malformed => "malformed",
            ClaimRejection::AlgorithmNotAllowed => "algorithm_not_allowed",
            ClaimRejection::BadSignature => "bad_signature",
            ClaimRejection::Expired => "expired",
            ClaimRejection::NotYetValid => "not_yet_valid",
            ClaimRejection::WrongIssuer => "wrong_issuer",
            ClaimRejection::WrongAudience => "wrong_audience",
            ClaimRejection::MissingClaim(_) => "missing_claim",
            ClaimRejection::InvalidTenant => "invalid_tenant",
            ClaimRejection::InvalidPrincipal => "invalid_principal",
            ClaimRejection::InvalidClaim(_) => "invalid_claim",
            ClaimRejection::DuplicateClaim(_) => "duplicate_claim",
            ClaimRejection::IssuedInFuture => "issued_in_future",
            ClaimRejection::UnsupportedCriticalHeader => "unsupported_critical_header",
            ClaimRejection::UnknownKeyId => "unknown_key_id",
            ClaimRejection::Oversized => "oversized",
            ClaimRejection::Revoked => "revoked",
        }
    }
}

impl crate::Classify for Error {
    fn status(&self) -> crate::ErrorStatus {
        use crate::ErrorStatus as S;
        match self {
            Error::InvalidId { .. } | Error::InvalidTtl(_) => S::InvalidInput,
            Error::ContextExpired
            | Error::ContextRevoked
            | Error::BadProof
            | Error::UnknownKey(_)
            | Error::MalformedToken(_)
            | Error::ForeignAuthority
            | Error::ClaimRejected(_) => S::Unauthenticated,
            Error::Widening { .. }
            | Error::OutlivesParent
            | Error::DelegationDepthExceeded { .. }
            | Error::NotDescendant => S::PermissionDenied,
            Error::RevocationsStale
            | Error::RevocationStore { .. }
            | Error::KeyUnavailable { .. }
            | Error::TierUnavailable { .. }
            | Error::KeyStoreIo { .. } => S::Unavailable { retry_after: None },
            Error::MalformedRevocation(_)
            | Error::InvalidConfiguration(_)
            | Error::Config { .. }
            | Error::Key(_) => S::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::InvalidId { .. } => "invalid_id",
            Error::ContextExpired => "context_expired",
            Error::ContextRevoked => "context_revoked",
            Error::RevocationsStale => "revocations_stale",
            Error::MalformedRevocation(_) => "malformed_revocation",
            Error::RevocationStore { .. } => "revocation_store",
            Error::BadProof => "bad_proof",
            Error::UnknownKey(_) => "unknown_key",
            Error::MalformedToken(_) => "malformed_token",
            Error::Widening { .. } => "widening",
            Error::OutlivesParent => "outlives_parent",
            Error::DelegationDepthExceeded { .. } => "delegation_depth_exceeded",
            Error::ForeignAuthority => "foreign_authority",
            Error::NotDescendant => "not_descendant",
            Error::InvalidTtl(_) => "invalid_ttl",
            Error::InvalidConfiguration(_) => "invalid_configuration",
            Error::Config { .. } => "config",
            Error::ClaimRejected(r) => r.kind(),
            Error::Key(_) => "key",
            Error::KeyUnavailable { .. } => "key_unavailable",
            Error::TierUnavailable { .. } => "tier_unavailable",
            Error::KeyStoreIo { .. } => "key_store_io",
        }
    }
}
