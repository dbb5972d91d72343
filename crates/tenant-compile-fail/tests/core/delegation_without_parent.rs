use tenant_core::{AgentId, DelegationBuilder};

fn main() {
    let _child = DelegationBuilder::new(AgentId::new("orphan").unwrap()).issue();
}
