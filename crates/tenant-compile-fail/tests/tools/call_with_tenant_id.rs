use tenant_core::TenantId;
use tenant_tools::ToolExecutor;

async fn misuse(tools: &ToolExecutor) {
    // Handles never take a raw tenant id.
    let _ = tools.call(TenantId::random(), "echo", serde_json::json!({})).await;
    let _ = tools.list_for(TenantId::random());
}

fn main() {}
