//! What tenant scoping costs an MCP tool call over loopback HTTP:
//!
//! - `guarded`: `tools/call` on an open session of an `McpServer` (bearer
//!   EdDSA token verified into a context, audience re-read, session owner
//!   and tool view checked, body re-serialised, executor built per
//!   request), against `plain`: the same call on an rmcp server whose
//!   handler calls a prebuilt executor with no guard at all;
//! - `remote`: the same tool imported as a remote tool and called through
//!   the executor (token minted per call, a fresh session per call),
//!   against `guarded` (one call on an already open session).
//!
//! `cargo bench -p tenant-mcp --bench mcp`

#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use fixture::*;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    InitializeResult, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleClient, RoleServer, ServerHandler};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tenant_core::*;
use tenant_mcp::{McpClient, McpRemotes, McpServer, RemoteServer, ResourceUrl, TokenMinter};
use tenant_testkit::bench_ratio::interleaved_p50s;
use tenant_tools::ToolExecutor;
use tokio::runtime::Runtime;

const ROUNDS: usize = 200;

/// An unguarded rmcp handler calling one prebuilt executor.
#[derive(Clone)]
struct Plain {
    executor: Arc<ToolExecutor>,
}

impl ServerHandler for Plain {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let input = Value::Object(request.arguments.unwrap_or_default());
        let out = self
            .executor
            .call(&request.name, input)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(CallToolResult::success(vec![ContentBlock::text(out.to_string())]).into())
    }
}

struct Setup {
    guarded: RunningService<RoleClient, ()>,
    plain: RunningService<RoleClient, ()>,
    remote: ToolExecutor,
    _served: Served,
}

async fn setup() -> Setup {
    let p = Platform::new("bench");
    let tenant = TenantId::random();
    p.allow(tenant, &["add", "mcp__self__add"]);
    let minter = TokenMinter::from_issuer(&p.issuer, "https://agents.bench")
        .unwrap()
        .with_ttl(tenant_mcp::MAX_TOKEN_TTL)
        .unwrap();
    let verifier = ClaimVerifier::builder()
        .eddsa_pem(minter.public_key_pem().as_bytes())
        .issuer(minter.issuer())
        .capabilities(Capabilities::unrestricted());
    let served = serve(
        "/mcp",
        McpServer::builder()
            .registry(&p.registry)
            .policies(&p.policies)
            .vault(&p.vault)
            .issuer(&p.issuer)
            .verifier(verifier),
    )
    .await;
    let ctx = p.ctx(tenant, "alice");
    let token = minter
        .mint(&ctx, &ResourceUrl::parse(&served.resource).unwrap())
        .unwrap();
    let guarded = mcp_client(&served.resource, token.expose_secret())
        .await
        .unwrap();

    let executor = Arc::new(
        ToolExecutor::builder()
            .registry(&p.registry)
            .policies(&p.policies)
            .vault(&p.vault)
            .tenant(&ctx)
            .build()
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let handler = Plain { executor };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().route_service("/mcp", service);
    tokio::spawn(async move { axum::serve(nodelay(listener), router).await });
    let plain = mcp_client(&plain_url, "unused").await.unwrap();

    let remotes = McpRemotes::builder()
        .registry(&p.registry)
        .minter(&minter)
        .build()
        .unwrap();
    McpClient::builder()
        .remotes(&remotes)
        .tenant(&ctx)
        .build()
        .unwrap()
        .register(
            RemoteServer::new("self", &served.resource)
                .unwrap()
                .import(["add"])
                .allow_internal(),
        )
        .await
        .unwrap();
    let remote = ToolExecutor::builder()
        .registry(&p.registry)
        .policies(&p.policies)
        .vault(&p.vault)
        .tenant(&ctx)
        .build()
        .unwrap();
    Setup {
        guarded,
        plain,
        remote,
        _served: served,
    }
}

fn add() -> CallToolRequestParams {
    CallToolRequestParams::new("add").with_arguments(args(json!({"a": 2, "b": 3})))
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let s = rt.block_on(setup());
    let mut group = c.benchmark_group("mcp");
    group.sample_size(30);
    group.bench_function("plain tools/call", |b| {
        b.iter(|| rt.block_on(s.plain.call_tool(add())).unwrap())
    });
    group.bench_function("guarded tools/call", |b| {
        b.iter(|| rt.block_on(s.guarded.call_tool(add())).unwrap())
    });
    group.bench_function("remote tool call (minted token, own session)", |b| {
        b.iter(|| {
            rt.block_on(s.remote.call("mcp__self__add", json!({"a": 2, "b": 3})))
                .unwrap()
        })
    });
    group.finish();

    let p50 = interleaved_p50s(
        ROUNDS,
        &mut [
            &mut |_| {
                rt.block_on(s.plain.call_tool(add())).unwrap();
            },
            &mut |_| {
                rt.block_on(s.guarded.call_tool(add())).unwrap();
            },
            &mut |_| {
                rt.block_on(s.remote.call("mcp__self__add", json!({"a": 2, "b": 3})))
                    .unwrap();
            },
        ],
    );
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    println!(
        "INTERLEAVED p50: plain {:.0} µs, guarded {:.0} µs, remote {:.0} µs",
        us(p50[0]),
        us(p50[1]),
        us(p50[2])
    );
    println!(
        "RATIO guarded/plain tools/call: {:.2}x",
        us(p50[1]) / us(p50[0])
    );
    println!(
        "RATIO remote call (own session)/guarded call on an open session: {:.2}x",
        us(p50[2]) / us(p50[1])
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
