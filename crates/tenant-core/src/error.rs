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
    #[error("revocation store error: {0}")]
    RevocationStore(String),
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
    /// Reading or writing a key file failed.
    #[error("key store I/O error at {path}: {source}")]
    KeyStoreIo {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias for `tenant-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
