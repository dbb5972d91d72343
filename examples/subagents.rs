//! An orchestrator delegating to a researcher and a coder sub-agent with
//! narrowed capabilities and budgets, then revoking the coder mid-run.
//!
//! Run with `cargo run --example subagents`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenant_sdk::governance::{Estimate, Limits, Policy, Quotas, TenantPolicy, TenantQuota, Usage};
use tenant_sdk::tools::{
    FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry,
};
use tenant_sdk::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // ---- platform set-up (once per process) ---------------------------------
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
    let registry = ToolRegistry::new(&issuer.authority());
    let object = json!({"type": "object", "properties": {"q": {"type": "string"}},
                        "required": ["q"], "additionalProperties": false});
    registry.register(FnTool::new(
        "web_search",
        "Searches the web",
        object.clone(),
        |call, input| async move {
            Ok(json!(format!(
                "results for {} (agent {})",
                input["q"],
                call.context().agent()
            )))
        },
    ))?;
    registry.register(FnTool::new(
        "run_python",
        "Runs a snippet",
        object.clone(),
        |_call, input| async move { Ok(json!(format!("ran {}", input["q"]))) },
    ))?;
    registry.register(FnTool::new(
        "send_email",
        "Sends an email",
        object,
        |_call, _input| async move { Ok(json!("sent")) },
    ))?;
    let vault = Arc::new(MemoryVault::new());
    let policies = ToolPolicies::new();
    let quotas = Quotas::builder(&issuer.authority())
        .policy(Policy::new(TenantPolicy::new().tenant_limits(
            Limits::unlimited().tokens_per(1_000_000, Duration::from_secs(3600)),
        )))
        .build()?;

    // ---- one tenant's run ---------------------------------------------------
    let tenant = TenantId::random();
    policies.set(
        tenant,
        ToolPolicy::deny_all().allow_tools(["web_search", "run_python", "send_email"]),
    );
    let orchestrator = issuer
        .context()
        .tenant(tenant)
        .principal(PrincipalId::new("alice@acme.example")?)
        .agent(AgentId::new("orchestrator")?)
        .capabilities(
            Capabilities::none()
                .with_tools(["web_search", "run_python", "send_email"])?
                .with_token_budget(30_000)
                .with_max_delegation_depth(1),
        )
        .ttl(Duration::from_secs(600))
        .issue()?;
    let tools = ToolExecutor::builder()
        .registry(&registry)
        .vault(&vault)
        .policies(&policies)
        .tenant(&orchestrator)
        .build()?;
    let budget = TenantQuota::builder()
        .quotas(&quotas)
        .tenant(&orchestrator)
        .build()?;

    let researcher = orchestrator
        .delegate(AgentId::new("researcher")?)
        .tools(["web_search"])
        .token_budget(10_000)
        .issue()?;
    let coder = orchestrator
        .delegate(AgentId::new("coder")?)
        .tools(["run_python"])
        .token_budget(8_000)
        .ttl(Duration::from_secs(120))
        .issue()?;
    let researcher_tools = tools.delegate(&researcher)?;
    let coder_tools = tools.delegate(&coder)?;
    let researcher_budget = budget.delegate(&researcher).await?;
    let coder_budget = budget.delegate(&coder).await?;

    println!("== sub-agents see only their own tools");
    for (name, exec) in [("researcher", &researcher_tools), ("coder", &coder_tools)] {
        let names: Vec<String> = exec
            .list()?
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        println!("{name:<10} tools: {names:?}");
    }

    println!("\n== work");
    let out = researcher_tools
        .call("web_search", json!({"q": "tenant isolation"}))
        .await?;
    println!("researcher web_search -> {out}");
    let out = coder_tools
        .call("run_python", json!({"q": "print(42)"}))
        .await?;
    println!("coder      run_python -> {out}");
    let r = researcher_budget
        .reserve(&Estimate::new("small", 6_000, 2_000))
        .await?;
    r.settle(Usage::new(6_000, 1_500)).await?;
    println!("researcher spent 7,500 of its 10,000 tokens");

    println!("\n== blocked (each fails closed with a typed error)");
    match researcher_tools
        .call("send_email", json!({"q": "exfiltrate"}))
        .await
    {
        Err(e) => println!("researcher send_email            -> {e}"),
        Ok(v) => panic!("UNEXPECTEDLY ALLOWED: {v}"),
    }
    match researcher_budget
        .reserve(&Estimate::new("small", 3_000, 1_000))
        .await
    {
        Err(e) => println!("researcher over its token budget -> {e}"),
        Ok(_) => panic!("UNEXPECTEDLY ALLOWED over budget"),
    }
    match coder.delegate(AgentId::new("sub-coder")?).issue() {
        Err(e) => println!("coder delegating further          -> {e}"),
        Ok(_) => panic!("UNEXPECTEDLY ALLOWED"),
    }

    println!("\n== the orchestrator revokes the coder mid-run");
    issuer.revocations().revoke(&coder);
    match coder_tools
        .call("run_python", json!({"q": "rm -rf /"}))
        .await
    {
        Err(e) => println!("coder run_python after revocation -> {e}"),
        Ok(v) => panic!("UNEXPECTEDLY ALLOWED: {v}"),
    }
    match coder_budget.reserve(&Estimate::new("small", 10, 10)).await {
        Err(e) => println!("coder reserve after revocation    -> {e}"),
        Ok(_) => panic!("UNEXPECTEDLY ALLOWED"),
    }
    let out = researcher_tools
        .call("web_search", json!({"q": "still working"}))
        .await?;
    println!("researcher keeps working          -> {out}");
    Ok(())
}
