//! Serves a tenant's tools over MCP (streamable HTTP, axum) with every
//! request's bearer token verified into a tenant context for this server's
//! resource URL, then checks itself as an MCP client would:
//!
//! 1. tenant `acme` registers the server as a remote MCP server; its tools
//!    become `mcp__orders__*` tools of acme's executor, called with a token
//!    minted per call for (acme, this resource);
//! 2. tenant `globex` is not allowed the same tools, so its registration
//!    finds nothing to import;
//! 3. a sub-agent of acme sees fewer tools and servers;
//! 4. a credential the server does not accept is refused with 401 and a
//!    `WWW-Authenticate` challenge naming the protected-resource metadata.
//!
//! Run with `cargo run --example mcp_server --features mcp`; it exits after
//! the self-check. With `-- --serve` it keeps serving on
//! `127.0.0.1:8787` and prints a token for an MCP client (stop it with
//! Ctrl-C).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenant_sdk::mcp::{
    Error as McpError, McpClient, McpRemotes, McpServer, RemoteAuth, RemoteServer, ResourceUrl,
    TokenMinter,
};
use tenant_sdk::secrecy::{ExposeSecret, SecretString};
use tenant_sdk::tools::{
    FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry, Vault,
};
use tenant_sdk::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let serve_forever = std::env::args().any(|a| a == "--serve");

    // ---- platform set-up (once per process) ---------------------------------
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
    let registry = ToolRegistry::new(&issuer.authority());
    registry.register(FnTool::new(
        "lookup_order",
        "Looks up an order of the caller's tenant",
        json!({"type": "object", "properties": {"order": {"type": "string", "maxLength": 32}},
               "required": ["order"], "additionalProperties": false}),
        |call, input| async move {
            Ok(json!({
                "order": input["order"],
                "tenant": call.context().tenant().to_string(),
                "status": "shipped",
            }))
        },
    ))?;
    registry.register(FnTool::new(
        "refund",
        "Refunds an order",
        json!({"type": "object", "properties": {"order": {"type": "string"}}}),
        |_call, input| async move { Ok(json!({"refunded": input["order"]})) },
    ))?;
    let policies = ToolPolicies::new();
    let vault = Arc::new(MemoryVault::new());
    let (acme, globex) = (TenantId::random(), TenantId::random());
    let local = ["lookup_order", "refund"];
    let imported = ["mcp__orders__lookup_order", "mcp__orders__refund"];
    policies.set(
        acme,
        ToolPolicy::deny_all()
            .allow_tools(local.iter().chain(imported.iter()).copied())
            .allow_integrations(["orders"]),
    );
    policies.set(globex, ToolPolicy::deny_all().allow_tools(["refund"]));

    // Agents authenticate to MCP servers with tokens the platform mints;
    // this server trusts that minter's public key, for its own URL only.
    let minter = TokenMinter::from_issuer(&issuer, "https://agents.example.com")?;
    let addr = if serve_forever {
        "127.0.0.1:8787"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    let server = McpServer::builder()
        .registry(&registry)
        .policies(&policies)
        .vault(&vault)
        .issuer(&issuer)
        .verifier(
            ClaimVerifier::builder()
                .eddsa_pem(minter.public_key_pem().as_bytes())
                .issuer(minter.issuer())
                .capabilities(Capabilities::unrestricted()),
        )
        .resource(&url)?
        .name("orders")
        .build()?;
    let router = server.router();
    let serving = tokio::spawn(async move { axum::serve(listener, router).await });
    println!("serving MCP at {url}");
    println!("protected-resource metadata: {}", server.metadata());

    let remotes = McpRemotes::builder()
        .registry(&registry)
        .minter(&minter)
        .vault(&vault)
        .timeout(Duration::from_secs(10))
        .build()?;
    let root = |tenant: TenantId, who: &str| -> Result<TenantContext> {
        issuer
            .context()
            .tenant(tenant)
            .principal(PrincipalId::new(who)?)
            .capabilities(Capabilities::unrestricted().with_max_delegation_depth(1))
            .issue()
    };

    // ---- 1. acme imports the server's tools and calls one -------------------
    let acme_admin = root(acme, "admin@acme")?;
    let acme_mcp = McpClient::builder()
        .remotes(&remotes)
        .tenant(&acme_admin)
        .build()?;
    let tools = acme_mcp
        .register(
            RemoteServer::new("orders", &url)?
                .import(local)
                .allow_internal(),
        )
        .await?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    println!("acme imported {names:?}");
    let alice = root(acme, "alice@acme")?;
    let executor = ToolExecutor::builder()
        .registry(&registry)
        .policies(&policies)
        .vault(&vault)
        .tenant(&alice)
        .build()?;
    let order = executor
        .call("mcp__orders__lookup_order", json!({"order": "A-1001"}))
        .await?;
    println!("acme's agent called over MCP: {order}");
    assert_eq!(order["tenant"], acme.to_string());

    // ---- 2. globex may not use lookup_order, so nothing of it is offered ----
    let globex_mcp = McpClient::builder()
        .remotes(&remotes)
        .tenant(&root(globex, "admin@globex")?)
        .build()?;
    let refused = globex_mcp
        .register(
            RemoteServer::new("globex-orders", &url)?
                .import(["lookup_order"])
                .allow_internal(),
        )
        .await;
    println!("globex importing lookup_order: {}", describe(&refused));
    assert!(matches!(refused, Err(McpError::RemoteToolRefused { .. })));

    // ---- 3. a sub-agent sees fewer tools and servers ------------------------
    let researcher = alice
        .delegate(AgentId::new("researcher")?)
        .tools(["mcp__orders__lookup_order"])
        .issue()?;
    let alice_mcp = McpClient::builder()
        .remotes(&remotes)
        .tenant(&alice)
        .build()?;
    println!("alice sees {:?}", alice_mcp.servers()?);
    let view = alice_mcp.delegate(&researcher)?;
    println!("the researcher sees {:?}", view.servers()?);
    let denied = executor
        .delegate(&researcher)?
        .call("mcp__orders__refund", json!({"order": "A-1001"}))
        .await;
    println!("the researcher calling refund: {}", describe(&denied));

    // ---- 4. a credential the server does not accept -------------------------
    vault
        .put(acme, "orders", SecretString::from("not-a-token".to_owned()))
        .await?;
    let rejected = acme_mcp
        .register(
            RemoteServer::new("orders-key", &url)?
                .import(["refund"])
                .auth(RemoteAuth::VaultBearer {
                    integration: "orders".into(),
                })
                .allow_internal(),
        )
        .await;
    match &rejected {
        Err(McpError::RemoteUnauthorized { challenge }) => {
            println!("an API key instead of a token: 401, {challenge}")
        }
        other => return Err(format!("expected a 401, got {}", describe(other)).into()),
    }

    if serve_forever {
        let token = minter
            .with_ttl(tenant_sdk::mcp::MAX_TOKEN_TTL)?
            .mint(&alice, &ResourceUrl::parse(&url)?)?;
        println!("\nA token for acme's alice (5 minutes), for any MCP client:");
        println!("  Authorization: Bearer {}", token.expose_secret());
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    server.shutdown();
    serving.abort();
    println!("self-check passed");
    Ok(())
}

fn describe<T, E: std::fmt::Display>(r: &std::result::Result<T, E>) -> String {
    match r {
        Ok(_) => "allowed".into(),
        Err(e) => format!("refused: {e}"),
    }
}
