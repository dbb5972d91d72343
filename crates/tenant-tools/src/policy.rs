//! Per-tenant tool policy: which tools and integrations a tenant may use and
//! where its tools may connect.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tenant_core::TenantId;

use crate::egress::EgressPolicy;

/// What one tenant's agents may do with tools.
///
/// The effective permission of a call is the intersection of this policy
/// and the calling context's capabilities: the platform operator decides
/// what a tenant may have, the context says what this agent holds now.
/// The default policy allows nothing.
///
/// ```
/// use tenant_tools::{EgressPolicy, ToolPolicy};
/// let policy = ToolPolicy::deny_all()
///     .allow_tools(["search", "python"])
///     .allow_integrations(["github"])
///     .egress(EgressPolicy::deny_all().allow("api.github.com:443")?);
/// assert!(policy.allows_tool("search"));
/// assert!(!policy.allows_tool("shell"));
/// # Ok::<(), tenant_tools::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ToolPolicy {
    tools: BTreeSet<String>,
    integrations: BTreeSet<String>,
    egress: EgressPolicy,
}

impl ToolPolicy {
    /// A policy that allows no tool, no integration and no egress.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Adds tools to the allowlist.
    pub fn allow_tools<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools.extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds integrations (vault entries) the tenant's tools may use.
    pub fn allow_integrations<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.integrations.extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets the egress policy of the tenant's HTTP client.
    pub fn egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
    }

    /// Whether the tool is on the tenant's allowlist.
    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools.contains(name)
    }

    /// Whether the integration is granted to the tenant.
    pub fn allows_integration(&self, name: &str) -> bool {
        self.integrations.contains(name)
    }

    /// The egress policy.
    pub fn egress_policy(&self) -> &EgressPolicy {
        &self.egress
    }
}

/// The platform's policies, one per tenant. A tenant without a policy gets
/// [`ToolPolicy::deny_all`]. Cheap to clone; updates are seen by every
/// executor on its next call.
#[derive(Clone, Debug, Default)]
pub struct ToolPolicies {
    inner: Arc<RwLock<HashMap<TenantId, Arc<ToolPolicy>>>>,
}

impl ToolPolicies {
    /// No policies: every tenant is denied everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (replaces) a tenant's policy. Platform administration, not a
    /// tenant-scoped operation.
    pub fn set(&self, tenant: TenantId, policy: ToolPolicy) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(tenant, Arc::new(policy));
    }

    /// Removes a tenant's policy (it is denied everything afterwards).
    pub fn remove(&self, tenant: TenantId) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&tenant);
    }

    pub(crate) fn get(&self, tenant: TenantId) -> Arc<ToolPolicy> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(&tenant)
            .cloned()
            .unwrap_or_else(|| Arc::new(ToolPolicy::deny_all()))
    }
}
