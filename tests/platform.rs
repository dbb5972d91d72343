//! The `Platform` bundle: one authority for every resource, one call for
//! every handle of a context, nothing for another issuer's context.
#![cfg(all(feature = "edge", feature = "tools", feature = "governance"))]

use std::sync::Arc;

use serde_json::json;
use tenant_sdk::prelude::*;

fn issuer(key_id: &str) -> ContextIssuer {
    // The same key material under two issuers must still not mix.
    ContextIssuer::new(MasterKey::from_bytes(KeyId::new(key_id).unwrap(), [7; 32]))
}

fn context(issuer: &ContextIssuer, tenant: TenantId) -> TenantContext {
    issuer
        .context()
        .tenant(tenant)
        .principal(PrincipalId::new("alice").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap()
}

fn registry(issuer: &ContextIssuer) -> ToolRegistry {
    let registry = ToolRegistry::new(&issuer.authority());
    registry
        .register(FnTool::new(
            "echo",
            "",
            json!({"type": "object"}),
            |_c, i| async move { Ok(i) },
        ))
        .unwrap();
    registry
}

fn kind(error: &SdkError) -> &'static str {
    error.kind()
}

#[tokio::test]
async fn handles_act_for_the_context_and_delegate_to_its_sub_agents_only() {
    let issuer = issuer("k");
    let dir = tempfile::tempdir().unwrap();
    let retrieval = Retrieval::builder(EdgeBackend::open(dir.path()).unwrap())
        .authority(issuer.authority())
        .keys(DerivedKeyProvider::new(MasterKey::generate(
            KeyId::new("data").unwrap(),
        )))
        .collection(CollectionSpec::new("docs", 8).unwrap())
        .build()
        .await
        .unwrap();
    let policies = ToolPolicies::new();
    let platform = Platform::builder(&issuer.authority())
        .retrieval(&retrieval, "docs")
        .tools(&registry(&issuer), &policies)
        .quotas(&Quotas::builder(&issuer.authority()).build().unwrap())
        .build()
        .unwrap();

    let (a, b) = (TenantId::random(), TenantId::random());
    policies.set(a, ToolPolicy::deny_all().allow_tools(["echo"]));
    let (ctx_a, ctx_b) = (context(&issuer, a), context(&issuer, b));
    let handles = platform.handles(&ctx_a).unwrap();
    assert_eq!(handles.context().tenant(), a);
    assert_eq!(handles.tools().unwrap().context().tenant(), a);
    let embed = HashEmbedder::new(8);
    handles
        .retrieval()
        .unwrap()
        .upsert([Document::new("d", embed.embed_one("x"), "a's")])
        .await
        .unwrap();
    assert_eq!(
        handles
            .tools()
            .unwrap()
            .call("echo", json!({"x": 1}))
            .await
            .unwrap(),
        json!({"x": 1})
    );
    assert!(matches!(
        handles.memory(),
        Err(SdkError::NotConfigured("memory"))
    ));

    // A sub-agent's handles: from a descendant only.
    let child = ctx_a
        .delegate(AgentId::new("sub").unwrap())
        .issue()
        .unwrap();
    let sub = handles.delegate(&child).await.unwrap();
    assert_eq!(sub.context().agent(), child.agent());
    let hits = sub
        .retrieval()
        .unwrap()
        .search(SearchQuery::new(embed.embed_one("x")))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    let err = handles.delegate(&ctx_b).await.unwrap_err();
    assert_eq!(kind(&err), "not_descendant", "{err}");

    // Tenant b sees nothing of a's, and may not call a's tool.
    let theirs = platform.handles(&ctx_b).unwrap();
    let hits = theirs
        .retrieval()
        .unwrap()
        .search(SearchQuery::new(embed.embed_one("x")))
        .await
        .unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    let err = SdkError::from(
        theirs
            .tools()
            .unwrap()
            .call("echo", json!({"x": 1}))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.status(), ErrorStatus::PermissionDenied);
}

#[tokio::test]
async fn a_context_of_another_issuer_gets_no_handles_even_with_the_same_key() {
    let (ours, theirs) = (issuer("k"), issuer("k"));
    let policies = ToolPolicies::new();
    let platform = Platform::builder(&ours.authority())
        .tools(&registry(&ours), &policies)
        .build()
        .unwrap();
    let foreign = context(&theirs, TenantId::random());
    let err = platform.handles(&foreign).unwrap_err();
    assert!(
        matches!(err, SdkError::Core(tenant_sdk::Error::ForeignAuthority)),
        "{err:?}"
    );
    assert_eq!(err.status(), ErrorStatus::Unauthenticated);
}

#[tokio::test]
async fn a_platform_refuses_resources_of_another_authority_and_misordered_tool_settings() {
    let (ours, theirs) = (issuer("k"), issuer("k"));
    let policies = ToolPolicies::new();
    let err = Platform::builder(&ours.authority())
        .tools(&registry(&theirs), &policies)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("tool registry"), "{err}");
    let err = Platform::builder(&ours.authority())
        .quotas(&Quotas::builder(&theirs.authority()).build().unwrap())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");

    let vault = Arc::new(MemoryVault::new());
    let err = Platform::builder(&ours.authority())
        .vault(&vault)
        .tools(&registry(&ours), &policies)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("vault()"), "{err}");
    Platform::builder(&ours.authority())
        .tools(&registry(&ours), &policies)
        .vault(&vault)
        .build()
        .unwrap();
}
