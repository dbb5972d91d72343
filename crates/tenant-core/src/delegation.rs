//! Delegation to sub-agents: a child context that can only narrow.

use std::time::Duration;

use crate::capabilities::{Capabilities, Scope, ScopeKind};
use crate::context::{now_ms, Claims, TenantContext};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ContextId};

impl TenantContext {
    /// Starts a delegated context for sub-agent `agent`.
    ///
    /// The child starts with the parent's capabilities (one delegation
    /// level fewer) and expiry; each builder call narrows it. Asking for
    /// anything the parent does not hold is an error at
    /// [`issue`](DelegationBuilder::issue), never a silent clamp.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tenant_core::*;
    /// # let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
    /// let parent = issuer.context().tenant(TenantId::random())
    ///     .principal(PrincipalId::new("alice")?)
    ///     .capabilities(Capabilities::none().with_tools(["search", "shell"])?.with_max_delegation_depth(2))
    ///     .issue()?;
    /// let child = parent.delegate(AgentId::new("researcher")?)
    ///     .tools(["search"])
    ///     .ttl(Duration::from_secs(60))
    ///     .issue()?;
    /// assert!(!child.capabilities().tools().allows("shell"));
    /// assert_eq!(child.lineage().len(), 2);
    ///
    /// let widened = parent.delegate(AgentId::new("rogue")?).tools(["search", "email"]).issue();
    /// assert!(matches!(widened, Err(Error::Widening { capability: "tools" })));
    /// # Ok::<(), tenant_core::Error>(())
    /// ```
    pub fn delegate(&self, agent: AgentId) -> DelegationBuilder<'_> {
        let parent_caps = self.capabilities();
        DelegationBuilder {
            parent: self,
            agent,
            capabilities: parent_caps
                .clone()
                .with_max_delegation_depth(parent_caps.max_delegation_depth().saturating_sub(1)),
            ttl: None,
            pending_error: None,
        }
    }
}

/// Builds a delegated context; made only by [`TenantContext::delegate`].
#[must_use = "a builder does nothing until issue() is called"]
pub struct DelegationBuilder<'p> {
    parent: &'p TenantContext,
    agent: AgentId,
    capabilities: Capabilities,
    ttl: Option<Duration>,
    pending_error: Option<Error>,
}

impl DelegationBuilder<'_> {
    fn set_scope<I, S>(mut self, kind: ScopeKind, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        match Scope::only(names) {
            Ok(scope) => self.capabilities = self.capabilities.with_scope(kind, scope),
            Err(e) => {
                self.pending_error.get_or_insert(e);
            }
        }
        self
    }

    /// Restricts the tools to these.
    pub fn tools<I: IntoIterator<Item = S>, S: AsRef<str>>(self, names: I) -> Self {
        self.set_scope(ScopeKind::Tools, names)
    }

    /// Restricts the retrieval collections to these.
    pub fn collections<I: IntoIterator<Item = S>, S: AsRef<str>>(self, names: I) -> Self {
        self.set_scope(ScopeKind::Collections, names)
    }

    /// Restricts the memory namespaces to these.
    pub fn memory_namespaces<I: IntoIterator<Item = S>, S: AsRef<str>>(self, names: I) -> Self {
        self.set_scope(ScopeKind::MemoryNamespaces, names)
    }

    /// Restricts the models to these.
    pub fn models<I: IntoIterator<Item = S>, S: AsRef<str>>(self, names: I) -> Self {
        self.set_scope(ScopeKind::Models, names)
    }

    /// Sets the child's token budget (at most the parent's).
    pub fn token_budget(mut self, tokens: u64) -> Self {
        self.capabilities = self.capabilities.with_token_budget(tokens);
        self
    }

    /// Sets how many further levels the child may delegate (less than the
    /// parent's).
    pub fn max_delegation_depth(mut self, depth: u8) -> Self {
        self.capabilities = self.capabilities.with_max_delegation_depth(depth);
        self
    }

    /// Replaces all capabilities at once (still checked against the parent).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Lifetime from now; must not reach past the parent's expiry.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Checks the parent, the narrowing, the depth and the expiry, then
    /// signs the child.
    pub fn issue(self) -> Result<TenantContext> {
        if let Some(e) = self.pending_error {
            return Err(e);
        }
        let parent = self.parent;
        parent.check_fresh()?;
        let parent_caps = parent.capabilities();
        let parent_depth = parent_caps.max_delegation_depth();
        if parent_depth == 0 {
            return Err(Error::DelegationDepthExceeded { allowed: 0 });
        }
        if self.capabilities.max_delegation_depth() >= parent_depth {
            return Err(Error::DelegationDepthExceeded {
                allowed: parent_depth - 1,
            });
        }
        self.capabilities.check_narrows(parent_caps)?;

        let now = now_ms();
        let parent_claims = parent.raw_claims();
        let expires_at_ms = match self.ttl {
            None => parent_claims.expires_at_ms,
            Some(ttl) => {
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                if ms == 0 {
                    return Err(Error::InvalidTtl("must be positive"));
                }
                let at = now.saturating_add(ms);
                if at > parent_claims.expires_at_ms {
                    return Err(Error::OutlivesParent);
                }
                at
            }
        };

        let mut lineage = Vec::with_capacity(parent_claims.lineage.len() + 1);
        lineage.extend_from_slice(&parent_claims.lineage);
        lineage.push(self.agent);
        let mut ancestors = Vec::with_capacity(parent_claims.ancestors.len() + 1);
        ancestors.extend_from_slice(&parent_claims.ancestors);
        ancestors.push(parent_claims.id);

        let claims = Claims {
            id: ContextId::random(),
            tenant: parent_claims.tenant,
            principal: parent_claims.principal.clone(),
            lineage,
            ancestors,
            tier: parent_claims.tier,
            capabilities: self.capabilities,
            issued_at_ms: now,
            expires_at_ms,
            origin: parent_claims.origin,
        };
        Ok(TenantContext::sign(claims, parent.authority().clone()))
    }
}
