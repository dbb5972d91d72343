//! Spans and metrics, by one convention across every crate of the SDK.
//!
//! **Spans.** Every handle operation runs in its own `tracing` span named
//! after it (`memory.append_message`, `tool.call`, `quota.reserve`,
//! `context.verify_jwt`, ...; target [`SPAN_TARGET`]) made with
//! [`operation_span!`](crate::operation_span). Attribute names follow the
//! OpenTelemetry semantic conventions where one exists:
//!
//! | attribute | value |
//! |---|---|
//! | `tenant.id` | the context's tenant |
//! | `tenant.context_id` | the context's id |
//! | `gen_ai.agent.name` | the context's agent |
//! | `enduser.id` | the principal, **only** when the platform opts in ([`Telemetry::record_principal`]) |
//! | `error.type` | on failure: the error's [`kind`](crate::Classify::kind) |
//! | `otel.status_code` | `ERROR` on failure (read by `tracing-opentelemetry`) |
//! | `db.system`, `db.operation.name` | memory operations (`postgresql`, `SELECT`/`INSERT`/...) |
//! | `gen_ai.tool.name`, `gen_ai.request.model` | tool calls, quota reservations |
//!
//! The principal is often an e-mail address: it is left out of spans
//! unless [`Telemetry::record_principal`] is set on the issuer. Audit events
//! (target [`AUDIT_TARGET`](crate::AUDIT_TARGET)) keep it: they are the
//! security record and are meant to be routed to durable storage.
//!
//! **Metrics** go through the [`metrics`] facade, so any recorder
//! (Prometheus, OpenTelemetry, StatsD) collects them; without a recorder
//! they cost nothing. Names are in [`metric`]. A `tenant` label is added
//! only when the platform opts in ([`Telemetry::tenant_labels`]): use it
//! when the number of tenants is bounded, since every label value is a
//! time series.

use std::future::Future;

use tracing::Instrument;

use crate::classify::Classify;
use crate::context::TenantContext;

/// The `tracing` target of every operation span.
pub const SPAN_TARGET: &str = "tenant_sdk";

/// Metric names (and their labels), shared by every crate.
pub mod metric {
    /// Counter: security decisions that refused something. Labels: `action`
    /// (the operation, e.g. `tool.call`), `reason` (the error's
    /// [`kind`](crate::Classify::kind), or `unclassified`), and `tenant`
    /// when opted in.
    pub const DENIALS: &str = "tenant_sdk_denials_total";
    /// Counter: foreign data caught before it reached a caller (a retrieval
    /// hit whose tenant tag or seal did not verify). Labels: `source`,
    /// `tenant` when opted in.
    pub const LEAKS_DETECTED: &str = "tenant_sdk_leaks_detected_total";
    /// Counter: calls a quota refused before they ran. Labels: `level`
    /// (`platform`, `tenant`, `agent`, `context`), `resource` (`tokens`,
    /// `cost`, `requests`), `tenant` when opted in.
    pub const QUOTA_REFUSALS: &str = "tenant_sdk_quota_refusals_total";
    /// Histogram, seconds: one quota-ledger operation. Labels: `ledger`
    /// (`in_process`, `redis`), `operation` (`reserve`, `settle`,
    /// `release`, `usage`), `outcome` (`ok`, `refused`, `error`).
    pub const LEDGER_LATENCY: &str = "tenant_sdk_ledger_latency_seconds";
    /// Histogram, seconds: from spawning a sandboxed process to its exit
    /// being collected. Labels: `outcome` (`ok`, `error`).
    pub const SANDBOX_SPAWN: &str = "tenant_sdk_sandbox_spawn_seconds";
}

/// What the SDK's spans and metrics may reveal. Set once on the issuer
/// ([`ContextIssuerBuilder::telemetry`](crate::ContextIssuerBuilder::telemetry));
/// every context it issues (and every delegated one) carries it.
///
/// ```
/// use tenant_core::*;
/// let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k1")?))
///     .telemetry(Telemetry::new().tenant_labels(true))
///     .build()?;
/// let ctx = issuer.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice@example.com")?).issue()?;
/// assert!(ctx.telemetry().has_tenant_labels());
/// assert!(!ctx.telemetry().records_principal());
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    principal: bool,
    tenant_labels: bool,
}

impl Telemetry {
    /// The defaults: no principal in spans, no tenant label on metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the principal as `enduser.id` on every operation span (and
    /// `principal` on [`TenantContext::span`]). Off by default: principals
    /// are often personal data (e-mail addresses).
    pub fn record_principal(mut self, on: bool) -> Self {
        self.principal = on;
        self
    }

    /// Adds a `tenant` label to the SDK's counters. Off by default: turn it
    /// on only when the number of tenants is bounded (each tenant becomes a
    /// time series per counter and label combination).
    pub fn tenant_labels(mut self, on: bool) -> Self {
        self.tenant_labels = on;
        self
    }

    /// Whether spans carry the principal.
    pub fn records_principal(&self) -> bool {
        self.principal
    }

    /// Whether counters carry a `tenant` label.
    pub fn has_tenant_labels(&self) -> bool {
        self.tenant_labels
    }
}

/// Makes the span of one handle operation: named after the operation, with
/// the context's tenant, context id and agent (and the principal when the
/// platform opted in), and empty `error.type`/`otel.status_code` fields
/// that [`traced`] and [`record_outcome`] fill. Extra fields follow the
/// context, in `tracing`'s field syntax.
///
/// ```
/// use tenant_core::*;
/// # let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// # let ctx = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("a")?).issue()?;
/// let span = tenant_core::operation_span!("docs.summarise", &ctx, gen_ai.tool.name = "summarise");
/// let _entered = span.enter();
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[macro_export]
macro_rules! operation_span {
    ($name:literal, $ctx:expr $(, $($fields:tt)+)?) => {{
        let ctx: &$crate::TenantContext = $ctx;
        let span = $crate::__private::tracing::info_span!(
            target: "tenant_sdk",
            $name,
            tenant.id = %ctx.tenant(),
            tenant.context_id = %ctx.id(),
            gen_ai.agent.name = %ctx.agent(),
            enduser.id = $crate::__private::tracing::field::Empty,
            error.type = $crate::__private::tracing::field::Empty,
            otel.status_code = $crate::__private::tracing::field::Empty,
            $($($fields)+)?
        );
        $crate::telemetry::annotate(&span, ctx);
        span
    }};
}

/// Adds what the platform opted into (the principal) to an operation span.
/// Called by [`operation_span!`](crate::operation_span).
#[doc(hidden)]
pub fn annotate(span: &tracing::Span, ctx: &TenantContext) {
    if ctx.telemetry().records_principal() {
        span.record("enduser.id", ctx.principal().as_str());
    }
}

/// Records a failed operation on its span: `error.type` (the error's
/// [`kind`](Classify::kind)) and `otel.status_code = "ERROR"`.
pub fn record_error(span: &tracing::Span, error: &(impl Classify + ?Sized)) {
    span.record("error.type", error.kind());
    span.record("otel.status_code", "ERROR");
}

/// Records the outcome of an operation on its span (nothing on success).
pub fn record_outcome<T, E: Classify>(span: &tracing::Span, result: &Result<T, E>) {
    if let Err(e) = result {
        record_error(span, e);
    }
}

/// Runs `operation` inside `span` and records its outcome there.
pub async fn traced<T, E, F>(span: tracing::Span, operation: F) -> Result<T, E>
where
    E: Classify,
    F: Future<Output = Result<T, E>>,
{
    let result = operation.instrument(span.clone()).await;
    record_outcome(&span, &result);
    result
}

/// Counts a denial ([`metric::DENIALS`]) for `ctx`.
pub(crate) fn count_denial(ctx: Option<&TenantContext>, action: &str, reason: &'static str) {
    match ctx {
        Some(ctx) if ctx.telemetry().has_tenant_labels() => metrics::counter!(
            metric::DENIALS,
            "action" => action.to_owned(),
            "reason" => reason,
            "tenant" => ctx.tenant().to_string(),
        )
        .increment(1),
        _ => metrics::counter!(
            metric::DENIALS,
            "action" => action.to_owned(),
            "reason" => reason,
        )
        .increment(1),
    }
}

/// Counts foreign data caught before it reached `ctx`'s caller
/// ([`metric::LEAKS_DETECTED`]); `source` names the layer (`retrieval`,
/// ...). Emits no audit event: the caller does, with the details.
pub fn count_leak(ctx: &TenantContext, source: &'static str) {
    if ctx.telemetry().has_tenant_labels() {
        metrics::counter!(metric::LEAKS_DETECTED, "source" => source,
            "tenant" => ctx.tenant().to_string())
        .increment(1);
    } else {
        metrics::counter!(metric::LEAKS_DETECTED, "source" => source).increment(1);
    }
}
