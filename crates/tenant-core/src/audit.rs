//! Audit events and the context's tracing span.
//!
//! Security-relevant decisions (allowed and denied) are `tracing` events
//! with target [`AUDIT_TARGET`] so operators can route them to durable
//! storage. Events carry ids, never payloads or key material. Every denial
//! is also counted ([`metric::DENIALS`](crate::telemetry::metric::DENIALS)).

use std::fmt::Display;

use crate::classify::Classify;
use crate::context::TenantContext;
use crate::telemetry::count_denial;

/// The `tracing` target of every audit event.
pub const AUDIT_TARGET: &str = "tenant_audit";

impl TenantContext {
    /// A span named `tenant` carrying `tenant_id`, `agent`, `context_id`
    /// and, when the platform opted in ([`Telemetry::record_principal`](crate::Telemetry::record_principal)),
    /// `principal`: for the application's own work on behalf of the
    /// context. The SDK's handle operations have their own spans (see
    /// [`telemetry`](crate::telemetry)).
    ///
    /// ```
    /// # use tenant_core::*;
    /// # let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
    /// # let ctx = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("a")?).issue()?;
    /// let _entered = ctx.span().entered();
    /// tracing::info!("runs with the tenant attached");
    /// # Ok::<(), tenant_core::Error>(())
    /// ```
    pub fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "tenant",
            tenant_id = %self.tenant(),
            principal = tracing::field::Empty,
            agent = %self.agent(),
            context_id = %self.id(),
        );
        if self.telemetry().records_principal() {
            span.record("principal", self.principal().as_str());
        }
        span
    }

    /// Records an allowed security decision.
    pub fn audit_allowed(&self, action: &str, resource: &str) {
        tracing::info!(
            target: AUDIT_TARGET,
            decision = "allowed",
            action,
            resource,
            tenant_id = %self.tenant(),
            principal = %self.principal(),
            agent = %self.agent(),
            context_id = %self.id(),
        );
    }

    /// Records a denied security decision with its reason, and counts it
    /// (label `reason = "unclassified"`; prefer [`deny`](Self::deny) with a
    /// classified error).
    pub fn audit_denied(&self, action: &str, resource: &str, reason: &dyn Display) {
        count_denial(Some(self), action, "unclassified");
        self.audit_denial_event(action, resource, reason, "unclassified");
    }

    /// Records a denied security decision caused by `error`: a `tenant_audit`
    /// event with the error's message and [`kind`](Classify::kind), and the
    /// denial counter with `reason = kind`.
    pub fn deny(&self, action: &str, resource: &str, error: &(impl Classify + ?Sized)) {
        count_denial(Some(self), action, error.kind());
        self.audit_denial_event(action, resource, &error, error.kind());
    }

    fn audit_denial_event(
        &self,
        action: &str,
        resource: &str,
        reason: &dyn Display,
        reason_code: &'static str,
    ) {
        tracing::warn!(
            target: AUDIT_TARGET,
            decision = "denied",
            action,
            resource,
            reason = %reason,
            reason_code,
            tenant_id = %self.tenant(),
            principal = %self.principal(),
            agent = %self.agent(),
            context_id = %self.id(),
        );
    }
}

/// Records (and counts) a denial that happened before any context existed
/// (a rejected JWT or context token).
pub fn rejected(action: &str, reason: &(impl Classify + ?Sized)) {
    count_denial(None, action, reason.kind());
    tracing::warn!(
        target: AUDIT_TARGET,
        decision = "denied",
        action,
        reason = %reason,
        reason_code = reason.kind(),
    );
}
