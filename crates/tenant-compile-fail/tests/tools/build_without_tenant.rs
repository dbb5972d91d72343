use tenant_core::{ContextIssuer, KeyId, MasterKey};
use tenant_tools::{ToolExecutor, ToolRegistry};

fn main() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let registry = ToolRegistry::new(&issuer.authority());
    // No `.tenant(&ctx)`: `build()` does not exist in this state.
    let _tools = ToolExecutor::builder().registry(&registry).build();
}
