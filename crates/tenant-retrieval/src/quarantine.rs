//! What happens to a hit that fails the per-hit check.
//!
//! By default ([`LeakPolicy::Quarantine`]) it is dropped from the result,
//! counted (also in the `tenant_sdk_leaks_detected_total` metric, label
//! `source = "retrieval"`), and reported as a `tenant_audit` alarm (an `ERROR` event with
//! `alarm = "leak"`, naming the collection, point id and reason, never the
//! payload); the tenant's own hits are returned and a promotion copies the
//! tenant's own points. A planted or foreign point therefore can neither
//! reach the tenant nor deny it service. [`LeakPolicy::Strict`] refuses
//! the whole operation with [`Error::LeakDetected`] instead.

use std::sync::atomic::{AtomicU64, Ordering};

use tenant_core::{TenantContext, AUDIT_TARGET};
use uuid::Uuid;

use crate::error::{Error, LeakReason};

/// What to do with a stored point that fails the per-hit check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeakPolicy {
    /// Drop it, count it, raise a `tenant_audit` alarm; serve the rest.
    #[default]
    Quarantine,
    /// Refuse the whole operation with [`Error::LeakDetected`] (and raise
    /// the same alarm).
    Strict,
}

/// Counts quarantined points since the platform started.
#[derive(Debug, Default)]
pub(crate) struct LeakCounter(AtomicU64);

impl LeakCounter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One failed point: alarm, count, and (in strict mode) the error to
/// return.
pub(crate) fn report(
    policy: LeakPolicy,
    counter: &LeakCounter,
    ctx: &TenantContext,
    action: &str,
    collection: &str,
    point: Uuid,
    reason: LeakReason,
) -> Option<Error> {
    counter.0.fetch_add(1, Ordering::Relaxed);
    tenant_core::telemetry::count_leak(ctx, "retrieval");
    tracing::error!(
        target: AUDIT_TARGET,
        decision = match policy {
            LeakPolicy::Quarantine => "quarantined",
            _ => "denied",
        },
        alarm = "leak",
        action,
        collection,
        point_id = %point,
        reason = %reason,
        tenant_id = %ctx.tenant(),
        principal = %ctx.principal(),
        agent = %ctx.agent(),
        context_id = %ctx.id(),
        "possible cross-tenant leak: stored point failed the per-hit check"
    );
    match policy {
        LeakPolicy::Quarantine => None,
        _ => Some(Error::LeakDetected {
            collection: collection.to_owned(),
            reason,
        }),
    }
}
