//! [`Classify`]: what an SDK error means to a caller, independent of the
//! transport.
//!
//! Every crate's error implements [`Classify`]. The facade maps
//! [`ErrorStatus`] to HTTP (`401`, `403`, `429` with `Retry-After`, `503`,
//! ...); a gRPC service or a job runner maps it to its own codes. The
//! [`kind`](Classify::kind) is a short, stable, low-cardinality name of the
//! variant: spans record it as `error.type` and the denial counter as its
//! `reason` label.

use std::time::Duration;

/// What went wrong, as a caller must react to it. HTTP-agnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStatus {
    /// The credential (token, context) is missing, forged, expired,
    /// revoked or from another authority: authenticate again.
    Unauthenticated,
    /// The context is valid but may not do this (a tool, model, namespace
    /// or widening it was not granted).
    PermissionDenied,
    /// The thing asked for does not exist for this tenant (indistinguishable
    /// from existing for another tenant).
    NotFound,
    /// The request itself is malformed (an id, a schema violation, an
    /// amount out of range).
    InvalidInput,
    /// The request conflicts with the current state (a version check, a
    /// duplicate name).
    Conflict,
    /// A quota or rate limit refused the call before it ran.
    ResourceExhausted {
        /// When the refusing limit refills; `None` when it never does.
        retry_after: Option<Duration>,
    },
    /// A dependency is unreachable or this process's view is stale (the
    /// quota ledger, the revocation store, a key service): retry later.
    Unavailable {
        /// A hint of when to retry, if one is known.
        retry_after: Option<Duration>,
    },
    /// A configuration or invariant failure on the platform's side (a
    /// detected leak, a corrupt entry, a misconfigured handle). Never the
    /// caller's fault; never shown in detail to the caller.
    Internal,
}

impl ErrorStatus {
    /// Whether retrying the same call later can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ErrorStatus::ResourceExhausted { retry_after } => retry_after.is_some(),
            ErrorStatus::Unavailable { .. } => true,
            _ => false,
        }
    }

    /// When to retry, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ErrorStatus::ResourceExhausted { retry_after }
            | ErrorStatus::Unavailable { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A short snake_case name (`unauthenticated`, `resource_exhausted`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorStatus::Unauthenticated => "unauthenticated",
            ErrorStatus::PermissionDenied => "permission_denied",
            ErrorStatus::NotFound => "not_found",
            ErrorStatus::InvalidInput => "invalid_input",
            ErrorStatus::Conflict => "conflict",
            ErrorStatus::ResourceExhausted { .. } => "resource_exhausted",
            ErrorStatus::Unavailable { .. } => "unavailable",
            ErrorStatus::Internal => "internal",
        }
    }
}

/// An error that knows what it means to a caller.
///
/// ```
/// use tenant_core::{Classify, Error, ErrorStatus};
/// let e = Error::ContextExpired;
/// assert_eq!(e.status(), ErrorStatus::Unauthenticated);
/// assert_eq!(e.kind(), "context_expired");
/// assert!(!e.retryable());
/// assert!(Error::RevocationsStale.retryable());
/// ```
pub trait Classify: std::error::Error {
    /// How a caller must react.
    fn status(&self) -> ErrorStatus;

    /// The variant as a short, stable snake_case name (`tool_not_allowed`,
    /// `quota_exceeded`, ...): low-cardinality, safe as a metric label and
    /// as the `error.type` span attribute. Never contains input.
    fn kind(&self) -> &'static str;

    /// Whether retrying the same call later can succeed.
    fn retryable(&self) -> bool {
        self.status().retryable()
    }
}
