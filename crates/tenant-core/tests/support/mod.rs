//! Shared set-up for tenant-core's tests.
#![allow(dead_code)]

use std::time::Duration;

use tenant_core::*;

pub fn issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::generate(KeyId::new("test-key").unwrap()))
}

pub fn principal() -> PrincipalId {
    PrincipalId::new("alice@example.com").unwrap()
}

pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub fn root_caps() -> Capabilities {
    Capabilities::none()
        .with_tools(["search", "python", "email"])
        .unwrap()
        .with_collections(["docs", "tickets"])
        .unwrap()
        .with_memory_namespaces(["chat", "scratch"])
        .unwrap()
        .with_models(["small", "large"])
        .unwrap()
        .with_token_budget(100_000)
        .with_max_delegation_depth(3)
}

pub fn root(issuer: &ContextIssuer) -> TenantContext {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .capabilities(root_caps())
        .ttl(Duration::from_secs(600))
        .issue()
        .unwrap()
}
