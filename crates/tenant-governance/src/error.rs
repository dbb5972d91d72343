//! The one error type of `tenant-governance`.

use std::time::Duration;

use crate::ledger::{QuotaLevel, Resource};
use crate::scheduler::Lane;

/// Errors of `tenant-governance`.
///
/// Every failure is closed: an operation that returns one of these admitted
/// nothing, reserved nothing and charged nothing (a settlement that fails
/// leaves the hold to expire, see [`Reservation`](crate::Reservation)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant context is invalid (bad proof, expired, revoked, not a
    /// descendant of the handle's context, ...).
    #[error(transparent)]
    Context(#[from] tenant_core::Error),
    /// The call would exceed a quota at `level`; it was refused before it
    /// happened and nothing was charged.
    #[error("{resource} quota exceeded at {level} level{}", retry_hint(.retry_after))]
    QuotaExceeded {
        /// Which level of the hierarchy refused.
        level: QuotaLevel,
        /// Which resource ran out.
        resource: Resource,
        /// When the refusing limit refills; `None` when it never does (a
        /// context's lifetime token budget).
        retry_after: Option<Duration>,
    },
    /// The quota ledger could not be reached or answered with an error. With
    /// the default [`FailureMode::Closed`](crate::FailureMode) this refuses
    /// the call.
    #[error("quota ledger unavailable: {reason}")]
    LedgerUnavailable {
        /// What went wrong (no credentials or tenant data).
        reason: String,
    },
    /// The model is outside the tenant's policy or the context's
    /// capabilities.
    #[error("model `{model}` is not allowed for this tenant context")]
    ModelNotAllowed {
        /// The model that was asked for.
        model: String,
    },
    /// Input plus maximum output exceeds the tenant's maximum context.
    #[error("request needs {requested} tokens of context; the tenant allows at most {max}")]
    ContextTooLong {
        /// Input tokens plus maximum output tokens.
        requested: u64,
        /// The tenant's maximum.
        max: u64,
    },
    /// The tenant already has as many requests waiting as its policy allows.
    #[error("the tenant's {lane} queue is full ({max_queued} waiting)")]
    QueueFull {
        /// The lane that was asked for.
        lane: Lane,
        /// The tenant's queue bound.
        max_queued: usize,
    },
    /// A builder was configured inconsistently.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry after {} ms", d.as_millis()),
        None => "; it does not refill".to_owned(),
    }
}

/// Result alias for `tenant-governance`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
