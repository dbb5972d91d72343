//! [`Platform`]: the platform-wide resources of every store, configured
//! once, and [`Handles`]: all of one context's handles, built in one call.

use std::fmt;
use std::sync::Arc;

use tenant_core::{PlatformAuthority, TenantContext};

use crate::error::SdkError;

/// The platform-wide resources of the stores a service uses, configured
/// once per process; [`handles`](Self::handles) builds every handle of one
/// context from them.
///
/// Each resource is optional: a platform without memory simply has no
/// memory handle ([`Handles::memory`] returns
/// [`SdkError::NotConfigured`]). Every resource must serve the same
/// [`PlatformAuthority`] (checked by [`PlatformBuilder::build`]), and every
/// handle admits only contexts issued under it. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tenant_sdk::prelude::*;
/// use serde_json::json;
///
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
/// let registry = ToolRegistry::new(&issuer.authority());
/// registry.register(FnTool::new("echo", "Echoes", json!({"type": "object"}),
///     |_call, input| async move { Ok(input) }))?;
/// let policies = ToolPolicies::new();
/// let platform = Platform::builder(&issuer.authority())
///     .tools(&registry, &policies)
///     .quotas(&Quotas::builder(&issuer.authority()).build()?)
///     .build()?;
///
/// let tenant = TenantId::random();
/// policies.set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
/// let ctx = issuer.context().tenant(tenant).principal(PrincipalId::new("alice")?)
///     .capabilities(Capabilities::unrestricted()).issue()?;
/// let handles = platform.handles(&ctx)?;
/// assert_eq!(handles.tools()?.call("echo", json!({"x": 1})).await?, json!({"x": 1}));
/// assert!(handles.memory().is_err()); // not configured on this platform
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Resources>,
}

#[derive(Clone)]
struct Resources {
    authority: PlatformAuthority,
    #[cfg(feature = "memory")]
    memory: Option<tenant_memory::MemoryPlatform>,
    #[cfg(feature = "retrieval")]
    retrieval: Option<(tenant_retrieval::Retrieval, String)>,
    #[cfg(feature = "tools")]
    tools: Option<ToolResources>,
    #[cfg(feature = "governance")]
    quotas: Option<tenant_governance::Quotas>,
}

#[cfg(feature = "tools")]
#[derive(Clone)]
struct ToolResources {
    registry: tenant_tools::ToolRegistry,
    policies: tenant_tools::ToolPolicies,
    vault: Option<Arc<Arc<dyn tenant_tools::Vault>>>,
    #[cfg(target_os = "linux")]
    workspace_root: Option<tenant_tools::WorkspaceRoot>,
    #[cfg(target_os = "linux")]
    sandbox: Option<Arc<tenant_tools::Sandbox>>,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.inner;
        let mut d = f.debug_struct("Platform");
        d.field("authority", &r.authority);
        #[cfg(feature = "memory")]
        d.field("memory", &r.memory.is_some());
        #[cfg(feature = "retrieval")]
        d.field("retrieval", &r.retrieval.as_ref().map(|(_, c)| c));
        #[cfg(feature = "tools")]
        d.field("tools", &r.tools.is_some());
        #[cfg(feature = "governance")]
        d.field("quotas", &r.quotas.is_some());
        d.finish()
    }
}

/// Configures a [`Platform`]; made by [`Platform::builder`].
#[must_use = "a builder does nothing until build() is called"]
pub struct PlatformBuilder {
    resources: Resources,
    /// A tool setting given before [`tools`](Self::tools), which it needs.
    #[cfg(feature = "tools")]
    without_tools: Option<&'static str>,
}

impl fmt::Debug for PlatformBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformBuilder").finish_non_exhaustive()
    }
}

impl Platform {
    /// Starts a platform serving contexts issued under `authority`
    /// (`issuer.authority()`); add the stores' resources, then
    /// [`build`](PlatformBuilder::build).
    pub fn builder(authority: &PlatformAuthority) -> PlatformBuilder {
        PlatformBuilder {
            resources: Resources {
                authority: authority.clone(),
                #[cfg(feature = "memory")]
                memory: None,
                #[cfg(feature = "retrieval")]
                retrieval: None,
                #[cfg(feature = "tools")]
                tools: None,
                #[cfg(feature = "governance")]
                quotas: None,
            },
            #[cfg(feature = "tools")]
            without_tools: None,
        }
    }

    /// The authority every handle of this platform admits.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.inner.authority
    }

    /// Builds every configured handle for `ctx` (admitting it once per
    /// handle, as each handle's own builder does).
    ///
    /// # Errors
    ///
    /// The first handle's error: [`SdkError::Core`] with
    /// `ForeignAuthority` for a context of another issuer, or the context's
    /// own check (expired, revoked, ...).
    pub fn handles(&self, ctx: &TenantContext) -> Result<Handles, SdkError> {
        let r = &self.inner;
        r.authority.admit(ctx)?;
        Ok(Handles {
            ctx: ctx.clone(),
            #[cfg(feature = "memory")]
            memory: match &r.memory {
                Some(p) => Some(
                    tenant_memory::MemoryStore::builder()
                        .platform(p)
                        .tenant(ctx)
                        .build()?,
                ),
                None => None,
            },
            #[cfg(feature = "retrieval")]
            retrieval: match &r.retrieval {
                Some((backend, collection)) => Some(
                    tenant_retrieval::RetrievalClient::builder()
                        .backend(backend)
                        .collection(collection.as_str())
                        .tenant(ctx)
                        .build()?,
                ),
                None => None,
            },
            #[cfg(feature = "tools")]
            tools: match &r.tools {
                Some(t) => Some(t.executor(ctx)?),
                None => None,
            },
            #[cfg(feature = "governance")]
            quota: match &r.quotas {
                Some(q) => Some(
                    tenant_governance::TenantQuota::builder()
                        .quotas(q)
                        .tenant(ctx)
                        .build()?,
                ),
                None => None,
            },
        })
    }

    /// A retrieval client of `ctx` for another collection than the
    /// platform's default one.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotConfigured`] without retrieval; the client's own
    /// errors (a collection the context may not use, ...).
    #[cfg(feature = "retrieval")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retrieval")))]
    pub fn retrieval_for(
        &self,
        ctx: &TenantContext,
        collection: &str,
    ) -> Result<tenant_retrieval::RetrievalClient, SdkError> {
        let (backend, _) = self
            .inner
            .retrieval
            .as_ref()
            .ok_or(SdkError::NotConfigured("retrieval"))?;
        Ok(tenant_retrieval::RetrievalClient::builder()
            .backend(backend)
            .collection(collection)
            .tenant(ctx)
            .build()?)
    }
}

#[cfg(feature = "tools")]
impl ToolResources {
    fn executor(&self, ctx: &TenantContext) -> Result<tenant_tools::ToolExecutor, SdkError> {
        let mut b = tenant_tools::ToolExecutor::builder()
            .registry(&self.registry)
            .policies(&self.policies);
        if let Some(vault) = &self.vault {
            b = b.vault(vault);
        }
        #[cfg(target_os = "linux")]
        {
            if let Some(root) = &self.workspace_root {
                b = b.workspace_root(root);
            }
            if let Some(sandbox) = &self.sandbox {
                b = b.sandbox(sandbox);
            }
        }
        Ok(b.tenant(ctx).build()?)
    }
}

impl PlatformBuilder {
    /// Memory: the application role's pool, key and authority.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub fn memory(mut self, memory: &tenant_memory::MemoryPlatform) -> Self {
        self.resources.memory = Some(memory.clone());
        self
    }

    /// Retrieval, with the collection [`Handles::retrieval`] uses (others
    /// through [`Platform::retrieval_for`]).
    #[cfg(feature = "retrieval")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retrieval")))]
    pub fn retrieval(
        mut self,
        retrieval: &tenant_retrieval::Retrieval,
        collection: impl Into<String>,
    ) -> Self {
        self.resources.retrieval = Some((retrieval.clone(), collection.into()));
        self
    }

    /// Tools: the registry (which carries the authority) and the tenants'
    /// policies.
    #[cfg(feature = "tools")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
    pub fn tools(
        mut self,
        registry: &tenant_tools::ToolRegistry,
        policies: &tenant_tools::ToolPolicies,
    ) -> Self {
        self.resources.tools = Some(ToolResources {
            registry: registry.clone(),
            policies: policies.clone(),
            vault: None,
            #[cfg(target_os = "linux")]
            workspace_root: None,
            #[cfg(target_os = "linux")]
            sandbox: None,
        });
        self
    }

    /// The vault tools' credentials come from (after
    /// [`tools`](Self::tools)).
    #[cfg(feature = "tools")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
    pub fn vault<V: tenant_tools::Vault>(mut self, vault: &Arc<V>) -> Self {
        match &mut self.resources.tools {
            Some(t) => {
                let vault: Arc<dyn tenant_tools::Vault> = vault.clone();
                t.vault = Some(Arc::new(vault));
            }
            None => self.without_tools = Some("vault"),
        }
        self
    }

    /// Where tool runs get their workspace (after [`tools`](Self::tools)).
    #[cfg(all(feature = "tools", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "tools", target_os = "linux"))))]
    pub fn workspace_root(mut self, root: &tenant_tools::WorkspaceRoot) -> Self {
        match &mut self.resources.tools {
            Some(t) => {
                t.workspace_root = Some(root.clone());
            }
            None => self.without_tools = Some("workspace_root"),
        }
        self
    }

    /// The sandbox subprocess tools run in (after [`tools`](Self::tools)).
    #[cfg(all(feature = "tools", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "tools", target_os = "linux"))))]
    pub fn sandbox(mut self, sandbox: &Arc<tenant_tools::Sandbox>) -> Self {
        match &mut self.resources.tools {
            Some(t) => {
                t.sandbox = Some(sandbox.clone());
            }
            None => self.without_tools = Some("sandbox"),
        }
        self
    }

    /// Quotas.
    #[cfg(feature = "governance")]
    #[cfg_attr(docsrs, doc(cfg(feature = "governance")))]
    pub fn quotas(mut self, quotas: &tenant_governance::Quotas) -> Self {
        self.resources.quotas = Some(quotas.clone());
        self
    }

    /// Checks that every resource serves the platform's authority.
    ///
    /// # Errors
    ///
    /// [`SdkError::Core`] with `InvalidConfiguration` naming a resource
    /// configured with another authority, or a tool setting (vault,
    /// workspace root, sandbox) given without [`tools`](Self::tools).
    pub fn build(self) -> Result<Platform, SdkError> {
        #[cfg(feature = "tools")]
        if let Some(setting) = self.without_tools {
            return Err(SdkError::Core(tenant_core::Error::InvalidConfiguration(
                format!("{setting}() configures tools: call tools() before it"),
            )));
        }
        let r = &self.resources;
        let mismatch = |what: &str| {
            SdkError::Core(tenant_core::Error::InvalidConfiguration(format!(
                "the {what} serves another platform authority than the platform"
            )))
        };
        let same = |other: &PlatformAuthority| *other == r.authority;
        #[cfg(feature = "memory")]
        if let Some(m) = &r.memory {
            if !same(m.authority()) {
                return Err(mismatch("memory platform"));
            }
        }
        #[cfg(feature = "retrieval")]
        if let Some((retrieval, _)) = &r.retrieval {
            if !same(retrieval.authority()) {
                return Err(mismatch("retrieval platform"));
            }
        }
        #[cfg(feature = "tools")]
        if let Some(t) = &r.tools {
            if !same(t.registry.authority()) {
                return Err(mismatch("tool registry"));
            }
        }
        #[cfg(feature = "governance")]
        if let Some(q) = &r.quotas {
            if !same(q.authority()) {
                return Err(mismatch("quota service"));
            }
        }
        #[cfg(not(any(
            feature = "memory",
            feature = "retrieval",
            feature = "tools",
            feature = "governance"
        )))]
        let _ = (same, mismatch);
        Ok(Platform {
            inner: Arc::new(self.resources),
        })
    }
}

/// Every handle of one context, built by [`Platform::handles`]. A handle
/// the platform has no resource for is absent (its accessor returns
/// [`SdkError::NotConfigured`]).
pub struct Handles {
    ctx: TenantContext,
    #[cfg(feature = "memory")]
    memory: Option<tenant_memory::MemoryStore>,
    #[cfg(feature = "retrieval")]
    retrieval: Option<tenant_retrieval::RetrievalClient>,
    #[cfg(feature = "tools")]
    tools: Option<tenant_tools::ToolExecutor>,
    #[cfg(feature = "governance")]
    quota: Option<tenant_governance::TenantQuota>,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handles")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Handles {
    /// The context every handle acts for.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The memory store.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotConfigured`] when the platform has no memory.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub fn memory(&self) -> Result<&tenant_memory::MemoryStore, SdkError> {
        self.memory
            .as_ref()
            .ok_or(SdkError::NotConfigured("memory"))
    }

    /// The retrieval client of the platform's default collection.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotConfigured`] when the platform has no retrieval.
    #[cfg(feature = "retrieval")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retrieval")))]
    pub fn retrieval(&self) -> Result<&tenant_retrieval::RetrievalClient, SdkError> {
        self.retrieval
            .as_ref()
            .ok_or(SdkError::NotConfigured("retrieval"))
    }

    /// The tool executor.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotConfigured`] when the platform has no tools.
    #[cfg(feature = "tools")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
    pub fn tools(&self) -> Result<&tenant_tools::ToolExecutor, SdkError> {
        self.tools.as_ref().ok_or(SdkError::NotConfigured("tools"))
    }

    /// The quota handle.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotConfigured`] when the platform has no quotas.
    #[cfg(feature = "governance")]
    #[cfg_attr(docsrs, doc(cfg(feature = "governance")))]
    pub fn quota(&self) -> Result<&tenant_governance::TenantQuota, SdkError> {
        self.quota.as_ref().ok_or(SdkError::NotConfigured("quotas"))
    }

    /// The handles of a sub-agent: `child` must descend from this context
    /// (each handle's own `delegate` checks). The quota handle registers
    /// this context's pool in the ledger, hence `async`.
    ///
    /// # Errors
    ///
    /// The first handle's error (`NotDescendant`, `ForeignAuthority`, the
    /// child's own check, a ledger error).
    pub async fn delegate(&self, child: &TenantContext) -> Result<Handles, SdkError> {
        Ok(Handles {
            ctx: child.clone(),
            #[cfg(feature = "memory")]
            memory: self
                .memory
                .as_ref()
                .map(|m| m.delegate(child))
                .transpose()?,
            #[cfg(feature = "retrieval")]
            retrieval: self
                .retrieval
                .as_ref()
                .map(|r| r.delegate(child))
                .transpose()?,
            #[cfg(feature = "tools")]
            tools: self.tools.as_ref().map(|t| t.delegate(child)).transpose()?,
            #[cfg(feature = "governance")]
            quota: match &self.quota {
                Some(q) => Some(q.delegate(child).await?),
                None => None,
            },
        })
    }
}
