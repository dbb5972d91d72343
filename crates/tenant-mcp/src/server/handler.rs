//! The MCP handler: `tools/list` and `tools/call` through the executor of
//! the request's own context.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, InitializeResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool as McpTool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Map, Value};
use tenant_tools::{Error as ToolError, ToolExecutor, ToolInfo};

use super::guard::RequestScope;

/// One per MCP session. It keeps nothing of any request: each request's
/// tools come from the executor the guard built from that request's token.
#[derive(Clone)]
pub(crate) struct TenantToolsHandler {
    pub(crate) name: Arc<str>,
}

/// The executor of the request being handled.
fn executor(context: &RequestContext<RoleServer>) -> Result<Arc<ToolExecutor>, ErrorData> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<RequestScope>())
        .map(|scope| scope.executor.clone())
        .ok_or_else(|| ErrorData::internal_error("request was not admitted by the guard", None))
}

fn mcp_tool(info: ToolInfo) -> McpTool {
    let schema = match info.input_schema {
        Value::Object(map) => map,
        _ => {
            let mut map = Map::new();
            map.insert("type".into(), "object".into());
            map
        }
    };
    McpTool::new(info.name, info.description, Arc::new(schema))
}

fn result(output: Value) -> CallToolResult {
    match output {
        Value::Object(_) => CallToolResult::structured(output),
        Value::String(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
    }
}

impl ServerHandler for TenantToolsHandler {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                self.name.to_string(),
                env!("CARGO_PKG_VERSION"),
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let executor = executor(&context)?;
        let tools = executor
            .list()
            .map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        Ok(ListToolsResult::with_all_items(
            tools.into_iter().map(mcp_tool).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let executor = executor(&context)?;
        let input = Value::Object(request.arguments.unwrap_or_default());
        match executor.call(&request.name, input).await {
            Ok(output) => Ok(result(output).into()),
            // Unknown and forbidden tools are one protocol error.
            Err(e @ ToolError::ToolNotAllowed { .. }) => {
                Err(ErrorData::invalid_params(e.to_string(), None))
            }
            Err(e @ ToolError::Context(_)) => Err(ErrorData::invalid_request(e.to_string(), None)),
            // Everything else is the tool's failure, shown to the model
            // (already redacted by the executor).
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into()),
        }
    }
}
