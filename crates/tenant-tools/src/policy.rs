//! Per-tenant tool policy: which tools and integrations a tenant may use and
//! where its tools may connect.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use serde::Deserialize;
use tenant_core::config::invalid_field;
use tenant_core::TenantId;

use crate::egress::{CredentialInjection, EgressClient, EgressPolicy};
use crate::error::Result;

/// What one tenant's agents may do with tools.
///
/// The effective permission of a call is the intersection of this policy
/// and the calling context's capabilities: the platform operator decides
/// what a tenant may have, the context says what this agent holds now.
/// The default policy allows nothing.
///
/// Loadable from configuration (`tenant_core::config::from_toml_str` or
/// `from_json_str`; every name and host is checked and a mistake names its
/// field, e.g. `egress.allow[1]`):
///
/// ```toml
/// tools = ["search", "python"]
/// integrations = ["github"]
///
/// [egress]
/// allow = ["api.github.com:443", "pypi.org"]
/// allow_internal = ["10.0.0.7:8080"]
/// inject = [{ host = "api.github.com:443", integration = "github", how = "bearer" }]
/// ```
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
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "ToolPolicyConfig")]
pub struct ToolPolicy {
    tools: BTreeSet<String>,
    integrations: BTreeSet<String>,
    egress: EgressPolicy,
    /// The HTTP client of this egress policy, made on first use and shared
    /// by every call under this policy (connections reused).
    client: OnceLock<EgressClient>,
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
        self.client = OnceLock::new();
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

    /// The HTTP client enforcing the egress policy: one per policy, made on
    /// first use.
    pub(crate) fn http_client(&self) -> Result<EgressClient> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let client = EgressClient::new(self.egress.clone())?;
        Ok(self.client.get_or_init(|| client).clone())
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

/// [`ToolPolicy`] as written in a configuration file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolPolicyConfig {
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    integrations: Vec<String>,
    #[serde(default)]
    egress: EgressConfig,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressConfig {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_internal: Vec<String>,
    #[serde(default)]
    inject: Vec<InjectionConfig>,
    /// PEM certificates of private CAs to trust.
    #[serde(default)]
    trust_pem: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectionConfig {
    host: String,
    integration: String,
    how: CredentialInjection,
}

impl TryFrom<ToolPolicyConfig> for ToolPolicy {
    type Error = String;

    fn try_from(c: ToolPolicyConfig) -> std::result::Result<Self, String> {
        let at = |field: String| move |e: crate::Error| invalid_field(&field, e);
        for (i, name) in c.tools.iter().enumerate() {
            crate::tool::validate_name("tool name", name).map_err(at(format!("tools[{i}]")))?;
        }
        for (i, name) in c.integrations.iter().enumerate() {
            crate::tool::validate_name("integration", name)
                .map_err(at(format!("integrations[{i}]")))?;
        }
        let mut egress = EgressPolicy::deny_all();
        for (i, entry) in c.egress.allow.iter().enumerate() {
            egress = egress
                .allow(entry)
                .map_err(at(format!("egress.allow[{i}]")))?;
        }
        for (i, entry) in c.egress.allow_internal.iter().enumerate() {
            egress = egress
                .allow_internal(entry)
                .map_err(at(format!("egress.allow_internal[{i}]")))?;
        }
        for (i, inj) in c.egress.inject.into_iter().enumerate() {
            egress = egress
                .inject(&inj.host, &inj.integration, inj.how)
                .map_err(at(format!("egress.inject[{i}]")))?;
        }
        for (i, pem) in c.egress.trust_pem.iter().enumerate() {
            egress = egress
                .trust_pem(pem.as_bytes())
                .map_err(at(format!("egress.trust_pem[{i}]")))?;
        }
        Ok(ToolPolicy::deny_all()
            .allow_tools(c.tools)
            .allow_integrations(c.integrations)
            .egress(egress))
    }
}

/// [`ToolPolicies`] as written in a configuration file:
/// `{"tenants": {"<tenant id>": <ToolPolicy>, ...}}`.
impl<'de> Deserialize<'de> for ToolPolicies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Config {
            #[serde(default)]
            tenants: HashMap<TenantId, ToolPolicy>,
        }
        let config = Config::deserialize(d)?;
        let policies = ToolPolicies::new();
        for (tenant, policy) in config.tenants {
            policies.set(tenant, policy);
        }
        Ok(policies)
    }
}
