//! [`RemoteTool`]: one imported remote tool, an ordinary tool of the
//! registry that only its owning tenant can call.

use std::sync::{Arc, RwLock};

use rmcp::model::CallToolResult;
use serde_json::Value;
use tenant_core::TenantId;
use tenant_tools::{Tool, ToolCall};

use super::{Registration, RemoteAuth};
use crate::error::Error;
use crate::token::TokenMinter;

/// What a registry entry points at: the registration currently serving
/// it, or none once the tenant removed the server. The entry itself stays
/// (registry entries are never removed), bound to its owner for good.
#[derive(Default)]
pub(crate) struct Slot {
    current: RwLock<Option<Arc<Registration>>>,
}

impl Slot {
    pub(crate) fn set(&self, registration: Option<Arc<Registration>>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = registration;
    }

    fn get(&self) -> Option<Arc<Registration>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the registry holds of a tool and can never change: description,
/// input schema, declared integrations.
pub(crate) type Definition = (String, Value, Vec<String>);

/// An imported remote tool.
pub(crate) struct RemoteTool {
    pub(crate) name: String,
    pub(crate) remote_name: String,
    pub(crate) description: String,
    pub(crate) schema: Value,
    pub(crate) integrations: Vec<String>,
    pub(crate) owner: TenantId,
    pub(crate) slot: Arc<Slot>,
    pub(crate) minter: Option<TokenMinter>,
}

#[async_trait::async_trait]
impl Tool for RemoteTool {
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

    async fn call(&self, call: ToolCall, input: Value) -> tenant_tools::Result<Value> {
        let ctx = call.context();
        let not_allowed = || tenant_tools::Error::ToolNotAllowed {
            tool: self.name.clone(),
        };
        // Another tenant's registration is never reachable, whatever its
        // policy lists; a removed one no longer is.
        if ctx.tenant() != self.owner {
            ctx.audit_denied("mcp.remote_call", &self.name, &"tool of another tenant");
            return Err(not_allowed());
        }
        let Some(registration) = self.slot.get() else {
            ctx.audit_denied("mcp.remote_call", &self.name, &"server removed");
            return Err(not_allowed());
        };
        let bearer = match &registration.auth {
            RemoteAuth::MintedToken => {
                let minter = self
                    .minter
                    .as_ref()
                    .ok_or(tenant_tools::Error::MissingConfiguration("token minter"))?;
                let token = minter
                    .mint_for_remote(
                        ctx,
                        &registration.endpoint.resource,
                        vec![self.remote_name.clone()],
                    )
                    .map_err(|e| self.failed(e))?;
                call.redactor().remember(&token);
                token
            }
            RemoteAuth::VaultBearer { integration } => call.credentials().get(integration).await?,
        };
        let input = match input {
            Value::Object(map) => map,
            _ => {
                return Err(tenant_tools::Error::InvalidInput {
                    tool: self.name.clone(),
                    path: String::new(),
                    reason: "expected an object".into(),
                })
            }
        };
        ctx.audit_allowed("mcp.remote_call", &self.name);
        let result = registration
            .endpoint
            .call(&bearer, &self.remote_name, input)
            .await
            .map_err(|e| self.failed(e))?;
        self.output(result)
    }
}

impl RemoteTool {
    pub(crate) fn definition(&self) -> Definition {
        (
            self.description.clone(),
            self.schema.clone(),
            self.integrations.clone(),
        )
    }

    fn failed(&self, e: Error) -> tenant_tools::Error {
        match e {
            Error::Tools(e) => e,
            Error::Context(e) => tenant_tools::Error::Context(e),
            other => tenant_tools::Error::ToolFailed {
                tool: self.name.clone(),
                message: other.to_string(),
            },
        }
    }

    /// The remote result as the tool's output: the structured content, or
    /// the text, or the content blocks as JSON. An error result is the
    /// tool's failure.
    fn output(&self, result: CallToolResult) -> tenant_tools::Result<Value> {
        let text = || {
            result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if result.is_error == Some(true) {
            return Err(tenant_tools::Error::ToolFailed {
                tool: self.name.clone(),
                message: text().chars().take(2048).collect(),
            });
        }
        if let Some(structured) = result.structured_content.clone() {
            return Ok(structured);
        }
        if result.content.iter().all(|c| c.as_text().is_some()) {
            return Ok(Value::String(text()));
        }
        serde_json::to_value(&result.content).map_err(|e| tenant_tools::Error::ToolFailed {
            tool: self.name.clone(),
            message: format!("unreadable result: {e}"),
        })
    }
}
