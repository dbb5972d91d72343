//! The [`Tool`] trait, the per-call [`ToolCall`] context and [`FnTool`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tenant_core::TenantContext;

use crate::credentials::Credentials;
use crate::egress::{EgressClient, EgressPolicy, EgressProxy};
use crate::error::{Error, Result};
use crate::policy::ToolPolicy;
use crate::redaction::Redactor;
#[cfg(target_os = "linux")]
use crate::sandbox::{RunOptions, Sandbox, SandboxCommand, SandboxOutput};
#[cfg(target_os = "linux")]
use crate::workspace::Workspace;

/// The longest tool or integration name accepted.
pub const MAX_TOOL_NAME_LEN: usize = 128;

pub(crate) fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            kind,
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() || name.len() > MAX_TOOL_NAME_LEN {
        return bad("must be 1 to 128 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return bad("only ASCII letters, digits, `_`, `-`, `.` and `:` are allowed");
    }
    Ok(())
}

/// A tool an agent can call.
///
/// Implementations receive validated input and a [`ToolCall`] that is
/// already scoped to the calling tenant: they reach secrets, the workspace,
/// the network and the sandbox only through it.
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Unique name (ASCII letters, digits, `_ - . :`).
    fn name(&self) -> &str;
    /// What the tool does, shown to the model.
    fn description(&self) -> &str;
    /// JSON schema of the input (see [`InputSchema`](crate::InputSchema)
    /// for the supported keywords).
    fn input_schema(&self) -> Value;
    /// Vault integrations the tool may ask [`Credentials`] for.
    fn integrations(&self) -> Vec<String> {
        Vec::new()
    }
    /// Runs the tool.
    async fn call(&self, call: ToolCall, input: Value) -> Result<Value>;
}

/// What a tool sees of the world during one call, scoped to the caller's
/// tenant. Cheap to clone.
#[derive(Clone)]
pub struct ToolCall {
    pub(crate) ctx: TenantContext,
    pub(crate) tool: Arc<str>,
    pub(crate) credentials: Credentials,
    #[cfg(target_os = "linux")]
    pub(crate) workspace: Option<Arc<Workspace>>,
    pub(crate) egress: EgressPolicy,
    pub(crate) policy: Arc<ToolPolicy>,
    #[cfg(target_os = "linux")]
    pub(crate) sandbox: Option<Arc<Sandbox>>,
    pub(crate) redactor: Redactor,
}

impl fmt::Debug for ToolCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCall")
            .field("tool", &self.tool)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl ToolCall {
    /// The calling context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The tool being called.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Secrets for the tool's declared integrations.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The run's redactor. A tool that holds a secret obtained other than
    /// through [`Credentials`] (a bearer token it mints, a session key a
    /// remote service returns) remembers it here, so the executor scrubs
    /// it from the output and errors of this and every later call of the
    /// run.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    /// The run's workspace (`<root>/<tenant>/<run>`).
    pub fn workspace(&self) -> Result<&Arc<Workspace>> {
        self.workspace.as_ref().ok_or(Error::NoWorkspace)
    }

    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    /// Reads a file of the run's workspace, off the async workers, with
    /// every secret the run has handed out redacted.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let bytes = self.workspace()?.read_async(path).await?;
        Ok(self.redactor.redact_bytes(&bytes))
    }

    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    /// Writes a file of the run's workspace, off the async workers.
    pub async fn write_file(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.workspace()?.write_async(path, data).await
    }

    /// An HTTP client bound to the tenant's egress policy: one per policy,
    /// shared by its calls, so connections are reused. On cross-origin
    /// redirects it also drops any header carrying a secret of the run.
    pub fn http(&self) -> Result<EgressClient> {
        Ok(self.policy.http_client()?.with_redactor(&self.redactor))
    }

    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    /// The executor's sandbox for subprocesses.
    pub fn sandbox(&self) -> Result<&Arc<Sandbox>> {
        self.sandbox.as_ref().ok_or_else(|| {
            Error::SandboxUnavailable("no sandbox configured for this executor".into())
        })
    }

    #[cfg(target_os = "linux")]
    #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
    /// Runs `cmd` in the executor's sandbox, in the run's workspace, off
    /// the async workers, its output scrubbed of the run's secrets.
    ///
    /// When the tenant's egress policy allows anything, the run's network
    /// is routed through a per-run [`EgressProxy`] enforcing that policy;
    /// credentials the policy injects are fetched for the integrations
    /// this tool declares (and the tenant is granted) and added by the
    /// proxy — the process never sees them.
    pub async fn run_sandboxed(&self, cmd: SandboxCommand) -> Result<SandboxOutput> {
        let sandbox = self.sandbox()?.clone();
        let workspace = self.workspace()?.clone();
        let mut options = RunOptions::new().redactor(&self.redactor);
        if !self.egress.is_empty() {
            let mut proxy = EgressProxy::new(&self.ctx, &self.egress).redactor(&self.redactor);
            for inj in self.egress.injections() {
                if !self.credentials.declares(&inj.integration) {
                    let resource = format!("{}/{}", self.tool, inj.integration);
                    self.ctx.audit_denied(
                        "egress.credential",
                        &resource,
                        &"the tool does not declare the integration",
                    );
                    continue;
                }
                let secret = self.credentials.get(&inj.integration).await?;
                proxy = proxy.arm(inj, &secret)?;
            }
            options = options.egress(proxy);
        }
        sandbox.run_async(workspace, cmd, options).await
    }
}

/// Metadata of a tool as shown by [`ToolExecutor::list`](crate::ToolExecutor::list).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolInfo {
    /// The tool name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its input schema.
    pub input_schema: Value,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value>> + Send>>;

/// A tool made from an async closure.
///
/// ```
/// use serde_json::json;
/// use tenant_tools::FnTool;
/// let echo = FnTool::new(
///     "echo",
///     "Returns its input",
///     json!({"type": "object", "properties": {"text": {"type": "string"}}}),
///     |_call, input| async move { Ok(input) },
/// );
/// ```
pub struct FnTool {
    name: String,
    description: String,
    schema: Value,
    integrations: Vec<String>,
    f: Box<dyn Fn(ToolCall, Value) -> BoxFuture + Send + Sync>,
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FnTool {
    /// A tool named `name` that runs `f`.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        schema: Value,
        f: F,
    ) -> Self
    where
        F: Fn(ToolCall, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value>> + Send + 'static,
    {
        Self {
            name: name.into(),
            description: description.into(),
            schema,
            integrations: Vec::new(),
            f: Box::new(move |call, input| Box::pin(f(call, input))),
        }
    }

    /// Declares the vault integrations the tool may use.
    pub fn with_integrations<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.integrations = names.into_iter().map(Into::into).collect();
        self
    }
}

#[async_trait::async_trait]
impl Tool for FnTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        self.schema.clone()
    }
    fn integrations(&self) -> Vec<String> {
        self.integrations.clone()
    }
    async fn call(&self, call: ToolCall, input: Value) -> Result<Value> {
        (self.f)(call, input).await
    }
}
