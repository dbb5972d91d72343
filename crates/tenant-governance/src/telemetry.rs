//! The governance crate's metrics (names from
//! [`tenant_core::telemetry::metric`]): quota refusals and ledger latency.

use std::future::Future;
use std::time::Instant;

use tenant_core::telemetry::metric;
use tenant_core::TenantContext;

use crate::error::{Error, Result};
use crate::ledger::{QuotaLevel, Resource};

fn level_label(level: QuotaLevel) -> &'static str {
    match level {
        QuotaLevel::Platform => "platform",
        QuotaLevel::Tenant => "tenant",
        QuotaLevel::Agent => "agent",
        QuotaLevel::Context => "context",
    }
}

fn resource_label(resource: Resource) -> &'static str {
    match resource {
        Resource::Tokens => "tokens",
        Resource::Cost => "cost",
        Resource::Requests => "requests",
    }
}

/// Counts `error` as a quota refusal when it is one.
pub(crate) fn count_refusal(ctx: &TenantContext, error: &Error) {
    let Error::QuotaExceeded {
        level, resource, ..
    } = error
    else {
        return;
    };
    let (level, resource) = (level_label(*level), resource_label(*resource));
    if ctx.telemetry().has_tenant_labels() {
        metrics::counter!(metric::QUOTA_REFUSALS, "level" => level, "resource" => resource,
            "tenant" => ctx.tenant().to_string())
        .increment(1);
    } else {
        metrics::counter!(metric::QUOTA_REFUSALS, "level" => level, "resource" => resource)
            .increment(1);
    }
}

/// Runs one ledger operation and records its latency.
pub(crate) async fn timed<T>(
    ledger: &'static str,
    operation: &'static str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Error::QuotaExceeded { .. } | Error::AncestorNotRegistered) => "refused",
        Err(_) => "error",
    };
    metrics::histogram!(metric::LEDGER_LATENCY, "ledger" => ledger,
        "operation" => operation, "outcome" => outcome)
    .record(started.elapsed().as_secs_f64());
    result
}
