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
        /// The ledger client's error (Redis), when there is one. Shared:
        /// one failed batch answers every call in it.
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
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
    /// The tenant already has as many ledger operations pending, or keeps
    /// as many ledger entries, as this process allows one tenant. Only that
    /// tenant's calls are refused (never admitted by a fail-open policy);
    /// other tenants proceed.
    #[error("the tenant is over its share of the quota ledger: {reason}")]
    Overloaded {
        /// Which bound was reached.
        reason: String,
    },
    /// An amount (an estimate, a usage, a limit or a counter it would
    /// produce) is beyond what the ledger represents exactly
    /// ([`MAX_AMOUNT`](crate::MAX_AMOUNT)), or not a finite number. Nothing
    /// was reserved or charged.
    #[error("{what} is out of range: {value} (the ledger represents at most {max} exactly)")]
    AmountOutOfRange {
        /// What was out of range.
        what: &'static str,
        /// The value, saturated to `u64` (`u64::MAX` for a non-finite one).
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A delegated context reserved before the context it was delegated from
    /// registered its pool in the ledger, so the ancestor's budget is
    /// unknown. Register the ancestor first ([`TenantQuota::delegate`] does,
    /// as does [`Quotas::register`]). Nothing was reserved.
    ///
    /// [`TenantQuota::delegate`]: crate::TenantQuota::delegate
    /// [`Quotas::register`]: crate::Quotas::register
    #[error("an ancestor context's budget is not registered in the ledger; delegate through TenantQuota::delegate or call Quotas::register on the ancestor first")]
    AncestorNotRegistered,
    /// The model has no price, and a cost budget applies to the call. Give
    /// it a rate ([`ModelRates::with`](crate::ModelRates::with), or an alias
    /// of a priced model), or configure a default rate explicitly
    /// ([`ModelRates::default_rate`](crate::ModelRates::default_rate)).
    #[error("model `{model}` has no price and a cost budget applies; configure its rate")]
    ModelUnpriced {
        /// The model that was asked for.
        model: String,
    },
    /// A hold was handed to a ledger that did not issue it (or the ledger
    /// no longer knows it). Nothing changed.
    #[error("the hold was not issued by this ledger")]
    UnknownHold,
    /// A builder was configured inconsistently.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),
}

impl Error {
    /// An [`Error::LedgerUnavailable`] without a source.
    pub(crate) fn ledger_unavailable(reason: impl Into<String>) -> Self {
        Error::LedgerUnavailable {
            reason: reason.into(),
            source: None,
        }
    }
}

impl tenant_core::Classify for Error {
    fn status(&self) -> tenant_core::ErrorStatus {
        use tenant_core::ErrorStatus as S;
        match self {
            Error::Context(e) => e.status(),
            Error::QuotaExceeded { retry_after, .. } => S::ResourceExhausted {
                retry_after: *retry_after,
            },
            Error::QueueFull { .. } | Error::Overloaded { .. } => S::ResourceExhausted {
                retry_after: Some(Duration::from_secs(1)),
            },
            Error::LedgerUnavailable { .. } => S::Unavailable { retry_after: None },
            Error::ModelNotAllowed { .. } => S::PermissionDenied,
            Error::ContextTooLong { .. } | Error::AmountOutOfRange { .. } => S::InvalidInput,
            Error::AncestorNotRegistered
            | Error::ModelUnpriced { .. }
            | Error::UnknownHold
            | Error::InvalidConfiguration(_) => S::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Context(e) => e.kind(),
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::LedgerUnavailable { .. } => "ledger_unavailable",
            Error::ModelNotAllowed { .. } => "model_not_allowed",
            Error::ContextTooLong { .. } => "context_too_long",
            Error::QueueFull { .. } => "queue_full",
            Error::Overloaded { .. } => "overloaded",
            Error::AmountOutOfRange { .. } => "amount_out_of_range",
            Error::AncestorNotRegistered => "ancestor_not_registered",
            Error::ModelUnpriced { .. } => "model_unpriced",
            Error::UnknownHold => "unknown_hold",
            Error::InvalidConfiguration(_) => "invalid_configuration",
        }
    }
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry after {} ms", d.as_millis()),
        None => "; it does not refill".to_owned(),
    }
}

/// Result alias for `tenant-governance`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
