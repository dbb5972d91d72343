use tenant_tools::{ToolExecutor, ToolRegistry};

fn main() {
    let registry = ToolRegistry::new();
    // No `.tenant(&ctx)`: `build()` does not exist in this state.
    let _tools = ToolExecutor::builder().registry(&registry).build();
}
