//! [`TenantTools`]: a [`ToolExecutor`]'s allowed tools as rig tools.

use std::fmt;
use std::sync::Arc;

use rig_core::completion::ToolDefinition;
use rig_core::message::ToolName;
use rig_core::tool::{DynamicTool, ToolOutput};
use serde_json::Value;
use tenant_core::TenantContext;
use tenant_tools::{ToolExecutor, ToolInfo};

use crate::error::{Error, Result};

/// The tools a [`ToolExecutor`] allows, as rig [`DynamicTool`]s.
///
/// [`TenantTools::rig_tools`] lists exactly what the executor's tenant
/// policy and context capabilities allow, so an agent built with them is
/// never even told about another tool (a model asking for one ends rig's
/// run with `PromptError::UnknownToolCall`). Every call still goes through
/// [`ToolExecutor::call`], which checks the context and the policy again
/// at call time: a tool revoked after the agent was built fails with the
/// executor's [`ToolNotAllowed`](tenant_tools::Error::ToolNotAllowed),
/// downcastable from rig's
/// [`ToolExecutionError`](rig_core::tool::ToolExecutionError).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tenant_core::*;
/// use tenant_tools::{FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry};
/// use tenant_rig::TenantTools;
///
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let registry = ToolRegistry::new(&issuer.authority());
/// for name in ["echo", "shell"] {
///     registry.register(FnTool::new(name, "demo", json!({"type": "object"}),
///         |_call, input| async move { Ok(input) }))?;
/// }
/// let policies = ToolPolicies::new();
/// let tenant = TenantId::random();
/// policies.set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
/// let ctx = issuer.context().tenant(tenant).principal(PrincipalId::new("bot")?)
///     .capabilities(Capabilities::none().with_tools(["echo", "shell"])?).issue()?;
/// let tools = TenantTools::new(ToolExecutor::builder()
///     .registry(&registry).vault(&Arc::new(MemoryVault::new())).policies(&policies)
///     .tenant(&ctx).build()?);
///
/// // What a rig agent gets: `AgentBuilder::dynamic_tools(tools.rig_tools()?)`.
/// let rig_tools = tools.rig_tools()?;
/// assert_eq!(rig_tools.len(), 1);
/// let out = rig_tools[0].execute(json!({"hi": 1})).await?;
/// assert_eq!(out.as_json(), Some(&json!({"hi": 1})));
///
/// assert!(matches!(
///     tools.rig_tool("shell"),
///     Err(tenant_rig::Error::Tools(tenant_tools::Error::ToolNotAllowed { .. }))
/// ));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantTools {
    executor: Arc<ToolExecutor>,
}

impl fmt::Debug for TenantTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTools")
            .field("executor", &self.executor)
            .finish()
    }
}

impl From<ToolExecutor> for TenantTools {
    fn from(executor: ToolExecutor) -> Self {
        Self::new(executor)
    }
}

impl TenantTools {
    /// Adapts `executor` (built from a verified context).
    pub fn new(executor: ToolExecutor) -> Self {
        Self::shared(Arc::new(executor))
    }

    /// Adapts an executor shared with other code.
    pub fn shared(executor: Arc<ToolExecutor>) -> Self {
        Self { executor }
    }

    /// The executor every call goes through.
    pub fn executor(&self) -> &ToolExecutor {
        &self.executor
    }

    /// The context the tools act for.
    pub fn context(&self) -> &TenantContext {
        self.executor.context()
    }

    /// Tools for a sub-agent: `child` must descend from this context; the
    /// child sees only what its own capabilities allow.
    pub fn delegate(&self, child: &TenantContext) -> Result<TenantTools> {
        Ok(Self::new(self.executor.delegate(child)?))
    }

    /// The definitions rig sends the model: one per allowed tool.
    pub fn definitions(&self) -> Result<Vec<ToolDefinition>> {
        self.executor.list()?.into_iter().map(definition).collect()
    }

    /// One rig tool per allowed tool, for
    /// `AgentBuilder::dynamic_tools(tenant_tools.rig_tools()?)`.
    pub fn rig_tools(&self) -> Result<Vec<DynamicTool>> {
        self.executor
            .list()?
            .into_iter()
            .map(|info| self.dynamic(info))
            .collect()
    }

    /// The rig tool named `name`, if the executor allows it; otherwise the
    /// executor's [`ToolNotAllowed`](tenant_tools::Error::ToolNotAllowed)
    /// (also for unknown names, as the executor does).
    pub fn rig_tool(&self, name: &str) -> Result<DynamicTool> {
        match self.executor.list()?.into_iter().find(|t| t.name == name) {
            Some(info) => self.dynamic(info),
            None => {
                let err = tenant_tools::Error::ToolNotAllowed {
                    tool: name.to_owned(),
                };
                self.context().audit_denied("rig.tool", name, &err);
                Err(err.into())
            }
        }
    }

    /// Calls `name` through the executor (what every rig tool made here
    /// does).
    pub async fn call(&self, name: &str, args: Value) -> Result<Value> {
        Ok(self.executor.call(name, args).await?)
    }

    fn dynamic(&self, info: ToolInfo) -> Result<DynamicTool> {
        let def = definition(info)?;
        let executor = self.executor.clone();
        let name: Arc<str> = Arc::from(def.name.as_str());
        Ok(DynamicTool::new(
            def.name,
            def.description,
            def.parameters,
            move |args: Value| {
                let executor = executor.clone();
                let name = name.clone();
                Box::pin(async move {
                    executor
                        .call(&name, args)
                        .await
                        .map(ToolOutput::json)
                        .map_err(Error::tool_execution)
                })
            },
        ))
    }
}

fn definition(info: ToolInfo) -> Result<ToolDefinition> {
    let name = ToolName::new(info.name.clone())
        .map_err(|e| Error::InvalidToolName(info.name, e.to_string()))?;
    Ok(ToolDefinition {
        name,
        description: info.description,
        parameters: info.input_schema,
    })
}
