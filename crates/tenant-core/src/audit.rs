//! Audit events and the context's tracing span.
//!
//! Security-relevant decisions (allowed and denied) are `tracing` events
//! with target [`AUDIT_TARGET`] so operators can route them to durable
//! storage. Events carry ids, never payloads or key material.

use std::fmt::Display;

use crate::context::TenantContext;

/// The `tracing` target of every audit event.
pub const AUDIT_TARGET: &str = "tenant_audit";

impl TenantContext {
    /// A span carrying `tenant_id`, `principal`, `agent` and `context_id`;
    /// every handle operation runs inside it.
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
        tracing::info_span!(
            "tenant",
            tenant_id = %self.tenant(),
            principal = %self.principal(),
            agent = %self.agent(),
            context_id = %self.id(),
        )
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

    /// Records a denied security decision with its reason.
    pub fn audit_denied(&self, action: &str, resource: &str, reason: &dyn Display) {
        tracing::warn!(
            target: AUDIT_TARGET,
            decision = "denied",
            action,
            resource,
            reason = %reason,
            tenant_id = %self.tenant(),
            principal = %self.principal(),
            agent = %self.agent(),
            context_id = %self.id(),
        );
    }
}

/// Records a denial that happened before any context existed (a rejected
/// JWT or context token).
pub fn rejected(action: &str, reason: &dyn Display) {
    tracing::warn!(
        target: AUDIT_TARGET,
        decision = "denied",
        action,
        reason = %reason,
    );
}
