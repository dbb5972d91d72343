//! # tenant-mcp
//!
//! The Model Context Protocol, tenant-scoped, in both directions:
//!
//! - [`McpServer`] serves the platform's tools over MCP's streamable HTTP
//!   transport (axum, `rmcp`) as an OAuth protected resource. Every
//!   request's bearer token is verified by the SDK's
//!   [`ClaimVerifier`](tenant_core::ClaimVerifier) into a
//!   [`TenantContext`](tenant_core::TenantContext), for this server's
//!   [`ResourceUrl`] only (RFC 8707); `tools/list` and `tools/call` run
//!   through a [`ToolExecutor`](tenant_tools::ToolExecutor) built from that
//!   request's context. Sessions are bound to the tenant and principal
//!   that opened them; protected-resource metadata (RFC 9728) and
//!   `WWW-Authenticate` challenges follow the MCP authorization spec.
//! - [`McpRemotes`] and the tenant-scoped [`McpClient`] register remote MCP
//!   servers per tenant and import their tools (checked for size, depth and
//!   enforceability) into the registry as `mcp__<alias>__<tool>`: ordinary
//!   tools of the tenant's executor, so the tenant's policy, the context's
//!   capabilities, schema validation, redaction, audit and every adapter on
//!   the executor (rig's included) apply. Calls carry a token minted per
//!   call by a [`TokenMinter`] (audience the remote's resource URL, the
//!   caller's tenant and principal, the one tool called, a lifetime of
//!   seconds) or the tenant's vault secret for that server.
//!
//! Everything admits contexts only through the platform authority of the
//! [`ToolRegistry`](tenant_tools::ToolRegistry). See `docs/mcp.md` for the
//! token model.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use serde_json::json;
//! use tenant_core::*;
//! use tenant_mcp::*;
//! use tenant_tools::*;
//!
//! // One platform with one tool, and a tenant allowed to use it.
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
//! let registry = ToolRegistry::new(&issuer.authority());
//! registry.register(FnTool::new("greet", "Greets", json!({"type": "object"}),
//!     |call, _| async move { Ok(json!(format!("hello, {}", call.context().principal()))) }))?;
//! let policies = ToolPolicies::new();
//! let vault = Arc::new(MemoryVault::new());
//! let tenant = TenantId::random();
//! policies.set(tenant, ToolPolicy::deny_all().allow_tools(["greet", "mcp__self__greet"]));
//!
//! // Serve the tools at http://127.0.0.1:<port>/mcp to tokens of the
//! // platform's own minter.
//! let minter = TokenMinter::from_issuer(&issuer, "https://agents.example.com")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}/mcp", listener.local_addr()?);
//! let server = McpServer::builder()
//!     .registry(&registry).policies(&policies).vault(&vault).issuer(&issuer)
//!     .verifier(ClaimVerifier::builder()
//!         .eddsa_pem(minter.public_key_pem().as_bytes())
//!         .issuer(minter.issuer())
//!         .capabilities(Capabilities::unrestricted()))
//!     .resource(&url)?
//!     .build()?;
//! let router = server.router();
//! tokio::spawn(async move { axum::serve(listener, router).await });
//!
//! // The tenant registers that server as a remote: its tools become
//! // `mcp__self__greet` in the tenant's executor.
//! let remotes = McpRemotes::builder().registry(&registry).minter(&minter).build()?;
//! let admin = issuer.context().tenant(tenant).principal(PrincipalId::new("admin")?)
//!     .capabilities(Capabilities::unrestricted()).issue()?;
//! McpClient::builder().remotes(&remotes).tenant(&admin).build()?
//!     .register(RemoteServer::new("self", &url)?.import(["greet"]).allow_internal())
//!     .await?;
//!
//! let alice = issuer.context().tenant(tenant).principal(PrincipalId::new("alice")?)
//!     .capabilities(Capabilities::none().with_tools(["mcp__self__greet"])?).issue()?;
//! let tools = ToolExecutor::builder().registry(&registry).policies(&policies)
//!     .vault(&vault).tenant(&alice).build()?;
//! assert_eq!(tools.call("mcp__self__greet", json!({})).await?, json!("hello, alice"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
mod resource;
mod server;
mod token;

pub use client::{
    McpClient, McpClientBuilder, McpRemotes, McpRemotesBuilder, RemoteAuth, RemoteServer,
    RemoteServerInfo, DEFAULT_REMOTE_TIMEOUT, MAX_ALIAS_LEN, MAX_IMPORTED_TOOLS,
    MAX_REMOTE_DESCRIPTION, MAX_REMOTE_SCHEMA_BYTES, MAX_REMOTE_SCHEMA_DEPTH,
    MAX_REMOTE_SCHEMA_NODES,
};
pub use error::{Error, Result};
pub use resource::{ResourceUrl, METADATA_WELL_KNOWN};
pub use server::{
    McpServer, McpServerBuilder, DEFAULT_MAX_REQUEST_BODY, DEFAULT_SESSIONS_PER_TENANT,
};
pub use token::{TokenMinter, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};
