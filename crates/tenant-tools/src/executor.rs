//! [`ToolExecutor`]: the tenant-scoped handle through which agents list and
//! call tools.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
#[cfg(target_os = "linux")]
use std::sync::Mutex;

use serde_json::Value;
use tenant_core::telemetry::traced;
use tenant_core::{operation_span, Scoped, TenantContext, WantsTenant};

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::policy::{ToolPolicies, ToolPolicy};
use crate::redaction::Redactor;
use crate::registry::ToolRegistry;
#[cfg(target_os = "linux")]
use crate::sandbox::Sandbox;
use crate::tool::{ToolCall, ToolInfo};
use crate::vault::Vault;
#[cfg(target_os = "linux")]
use crate::workspace::{Workspace, WorkspaceRoot};

/// Platform resources an executor is made from.
#[derive(Clone, Default)]
struct Resources {
    registry: Option<ToolRegistry>,
    vault: Option<Arc<dyn Vault>>,
    policies: Option<ToolPolicies>,
    #[cfg(target_os = "linux")]
    workspace_root: Option<WorkspaceRoot>,
    #[cfg(target_os = "linux")]
    sandbox: Option<Arc<Sandbox>>,
}

/// Builds a [`ToolExecutor`].
///
/// 1. Set the platform-wide resources, in any order: [`registry`](Self::registry)
///    (required; it carries the platform authority), [`policies`](Self::policies),
///    [`vault`](Self::vault), [`workspace_root`](Self::workspace_root),
///    [`sandbox`](Self::sandbox).
/// 2. Scope it with [`tenant`](ToolExecutorBuilder::<WantsTenant>::tenant)`(&ctx)`.
/// 3. [`build`](ToolExecutorBuilder::<Scoped>::build) — only available once scoped;
///    admits only a context issued under the registry's authority.
pub struct ToolExecutorBuilder<State> {
    resources: Resources,
    state: State,
    _marker: PhantomData<State>,
}

impl<S> fmt::Debug for ToolExecutorBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolExecutorBuilder")
            .finish_non_exhaustive()
    }
}

impl<S> ToolExecutorBuilder<S> {
    /// The platform's tool registry.
    pub fn registry(mut self, registry: &ToolRegistry) -> Self {
        self.resources.registry = Some(registry.clone());
        self
    }

    /// The platform's per-tenant policies (without them every tool is
    /// denied).
    pub fn policies(mut self, policies: &ToolPolicies) -> Self {
        self.resources.policies = Some(policies.clone());
        self
    }

    /// The vault credentials are read from.
    pub fn vault<V: Vault>(mut self, vault: &Arc<V>) -> Self {
        let vault: Arc<dyn Vault> = vault.clone();
        self.resources.vault = Some(vault);
        self
    }

    /// Where run workspaces are created (`<root>/<tenant>/<run>`).
    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    pub fn workspace_root(mut self, root: &WorkspaceRoot) -> Self {
        self.resources.workspace_root = Some(root.clone());
        self
    }

    /// The sandbox subprocess tools run in.
    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    pub fn sandbox(mut self, sandbox: &Arc<Sandbox>) -> Self {
        self.resources.sandbox = Some(sandbox.clone());
        self
    }
}

impl ToolExecutorBuilder<WantsTenant> {
    /// Scopes the executor to `ctx`'s tenant, principal and capabilities.
    pub fn tenant(self, ctx: &TenantContext) -> ToolExecutorBuilder<Scoped> {
        ToolExecutorBuilder {
            resources: self.resources,
            state: Scoped::new(ctx),
            _marker: PhantomData,
        }
    }
}

impl ToolExecutorBuilder<Scoped> {
    /// Admits the context and builds the executor.
    ///
    /// Errors: [`Error::Context`] (`ForeignAuthority` for a context of any
    /// other issuer than the registry's authority — also when the
    /// workspace root serves another authority — or the context's own
    /// check), [`Error::MissingConfiguration`], and
    /// [`Error::InvalidSystemPath`] when the sandbox's system paths cover
    /// the workspace root.
    pub fn build(self) -> Result<ToolExecutor> {
        let registry = self
            .resources
            .registry
            .clone()
            .ok_or(Error::MissingConfiguration("registry"))?;
        let ctx = self.state.into_admitted_context(registry.authority())?;
        #[cfg(target_os = "linux")]
        if let Some(root) = &self.resources.workspace_root {
            root.authority().admit(&ctx)?;
            if let Some(sandbox) = &self.resources.sandbox {
                sandbox.check_workspace_root(root.path())?;
            }
        }
        Ok(ToolExecutor {
            ctx,
            registry,
            resources: self.resources,
            #[cfg(target_os = "linux")]
            workspace: Arc::new(Mutex::new(None)),
            redactor: Redactor::new(),
        })
    }
}

/// Lists and calls tools for exactly one tenant context.
///
/// Made only through [`ToolExecutor::builder`] and `.tenant(&ctx)`; no
/// method takes a tenant id. A tool is visible and callable only when both
/// the tenant's [`ToolPolicy`] and the context's tool capabilities allow
/// it; inputs are validated against the tool's schema; every call runs in
/// its own span (`tool.call`, with `gen_ai.tool.name`) and is audited
/// (target `tenant_audit`); outputs and
/// error messages have every secret handed out during the run — by any
/// call of this executor or of one delegated from it — redacted.
pub struct ToolExecutor {
    ctx: TenantContext,
    registry: ToolRegistry,
    resources: Resources,
    /// One workspace per run, shared with delegated executors.
    #[cfg(target_os = "linux")]
    workspace: Arc<Mutex<Option<Arc<Workspace>>>>,
    /// The run's secrets, shared with delegated executors.
    redactor: Redactor,
}

impl fmt::Debug for ToolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolExecutor")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl ToolExecutor {
    /// Starts a builder (see [`ToolExecutorBuilder`]).
    pub fn builder() -> ToolExecutorBuilder<WantsTenant> {
        ToolExecutorBuilder {
            resources: Resources::default(),
            state: WantsTenant,
            _marker: PhantomData,
        }
    }

    /// The executor's context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// An executor for a sub-agent: `child` must be issued under the
    /// registry's authority and descend from this executor's context. It
    /// shares the run's workspace and redactor and sees only what the
    /// child's capabilities allow.
    pub fn delegate(&self, child: &TenantContext) -> Result<ToolExecutor> {
        let authority = self.registry.authority();
        authority.admit(child)?;
        authority.admit(&self.ctx)?;
        self.ctx.check_descendant(child)?;
        Ok(ToolExecutor {
            ctx: child.clone(),
            registry: self.registry.clone(),
            resources: self.resources.clone(),
            #[cfg(target_os = "linux")]
            workspace: self.workspace.clone(),
            redactor: self.redactor.clone(),
        })
    }

    fn policy(&self) -> Arc<ToolPolicy> {
        match &self.resources.policies {
            Some(p) => p.get(self.ctx.tenant()),
            None => Arc::new(ToolPolicy::deny_all()),
        }
    }

    fn allowed(&self, policy: &ToolPolicy, name: &str) -> bool {
        policy.allows_tool(name) && self.ctx.capabilities().tools().allows(name)
    }

    /// The tools this context may call, by name.
    pub fn list(&self) -> Result<Vec<ToolInfo>> {
        let span = operation_span!("tool.list", &self.ctx);
        let _entered = span.enter();
        if let Err(e) = self.registry.authority().admit(&self.ctx) {
            let e = Error::from(e);
            tenant_core::telemetry::record_error(&span, &e);
            return Err(e);
        }
        let policy = self.policy();
        Ok(self
            .registry
            .all()
            .into_iter()
            .filter(|r| self.allowed(&policy, &r.info.name))
            .map(|r| r.info.clone())
            .collect())
    }

    /// Validates `input`, checks the policy and runs the tool.
    ///
    /// Errors: [`Error::ToolNotAllowed`] (also for unknown tools),
    /// [`Error::InvalidInput`], [`Error::Context`], and whatever the tool
    /// returns (with secrets redacted).
    pub async fn call(&self, name: &str, input: Value) -> Result<Value> {
        let shown_name = self.redactor.redact_str(name);
        let span = operation_span!(
            "tool.call",
            &self.ctx,
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %shown_name,
        );
        traced(span, self.call_in_span(name, &shown_name, input)).await
    }

    async fn call_in_span(&self, name: &str, shown_name: &str, input: Value) -> Result<Value> {
        let redactor = &self.redactor;
        let denied = |e: Error| {
            let e = e.redacted(redactor);
            self.ctx.deny("tool.call", shown_name, &e);
            Err(e)
        };
        if let Err(e) = self.registry.authority().admit(&self.ctx) {
            return denied(e.into());
        }
        let policy = self.policy();
        let registered = match self.registry.get(name) {
            Some(r) if self.allowed(&policy, name) => r,
            _ => {
                return denied(Error::ToolNotAllowed {
                    tool: name.to_owned(),
                })
            }
        };
        if let Err(v) = registered.schema.validate(&input) {
            return denied(Error::InvalidInput {
                tool: name.to_owned(),
                path: v.path,
                reason: v.reason,
            });
        }
        #[cfg(target_os = "linux")]
        let workspace = match self.workspace() {
            Ok(ws) => ws,
            Err(e) => return denied(e),
        };
        let tool_name: Arc<str> = Arc::from(name);
        let call = ToolCall {
            ctx: self.ctx.clone(),
            tool: tool_name.clone(),
            credentials: Credentials::new(
                self.ctx.clone(),
                tool_name,
                registered.integrations.clone(),
                policy.clone(),
                self.resources.vault.clone(),
                redactor.clone(),
            ),
            #[cfg(target_os = "linux")]
            workspace,
            egress: policy.egress_policy().clone(),
            policy: policy.clone(),
            #[cfg(target_os = "linux")]
            sandbox: self.resources.sandbox.clone(),
            redactor: redactor.clone(),
        };
        self.ctx.audit_allowed("tool.call", shown_name);
        match registered.tool.call(call, input).await {
            Ok(mut output) => {
                redactor.redact_json(&mut output);
                tracing::debug!(tool = %shown_name, "tool call succeeded");
                Ok(output)
            }
            Err(e) => {
                let e = e.redacted(redactor);
                tracing::debug!(tool = %shown_name, error = %e, "tool call failed");
                Err(e)
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn workspace(&self) -> Result<Option<Arc<Workspace>>> {
        let Some(root) = &self.resources.workspace_root else {
            return Ok(None);
        };
        let mut slot = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ws) = slot.as_ref() {
            return Ok(Some(ws.clone()));
        }
        let ws = Arc::new(root.create(&self.ctx)?);
        *slot = Some(ws.clone());
        Ok(Some(ws))
    }
}
