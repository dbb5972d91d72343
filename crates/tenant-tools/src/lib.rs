//! # tenant-tools
//!
//! Scoped tool execution for multi-tenant agent platforms. Tools have real
//! side effects and ambient authority, so every path a tool can take is
//! bound to the calling [`TenantContext`](tenant_core::TenantContext):
//!
//! - [`ToolExecutor`] — the handle, built only from a context: lists and
//!   calls only tools that both the tenant's [`ToolPolicy`] and the
//!   context's capabilities allow, validates input against the tool's
//!   schema ([`InputSchema`]), runs inside the context's span and audits
//!   every decision (target `tenant_audit`).
//! - [`Vault`] ([`MemoryVault`], [`FileVault`]) — secrets per (tenant,
//!   integration), reaching a tool only through [`Credentials`] at call
//!   time, or injected by the egress proxy so a sandboxed process never
//!   holds them; output, errors and files read back are scrubbed of every
//!   secret the run handed out ([`Redactor`]).
//! - [`Workspace`] — a per-run directory (a quota-limited tmpfs with
//!   [`WorkspaceQuota`]) whose file API resolves every path with
//!   `openat2(RESOLVE_BENEATH)` and opens regular files only.
//! - [`EgressClient`] and [`EgressProxy`] — HTTP to allowlisted
//!   `host[:port]` pairs only, with resolved addresses and every redirect
//!   re-checked; the proxy is a sandboxed run's only way out.
//! - [`Sandbox`] — subprocesses in their own namespaces and minimal root,
//!   without privileges, under Landlock, seccomp, rlimits and per-sandbox
//!   cgroups, with a wall-clock timeout that kills the whole tree;
//!   [`WarmPool`] keeps some pre-started.
//!
//! **Platforms.** The workspace jail and the sandbox use Linux kernel
//! interfaces (`openat2`, namespaces, Landlock, seccomp, cgroups) and exist
//! on Linux only (`cfg(target_os = "linux")`): elsewhere, the registry,
//! executor, policies, vaults, schema validation and the egress client and
//! proxy build and work, and `Workspace`, `WorkspaceRoot`, `Sandbox`,
//! `WarmPool` and `CommandTool` are absent, so code that needs them fails
//! to compile rather than run unconfined.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use tenant_core::*;
//! use tenant_tools::*;
//! use tenant_tools::Error;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Platform set-up, once.
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
//! let registry = ToolRegistry::new(&issuer.authority());
//! registry.register(FnTool::new(
//!     "add",
//!     "Adds two integers",
//!     json!({"type": "object",
//!            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
//!            "required": ["a", "b"], "additionalProperties": false}),
//!     |_call, input| async move {
//!         Ok(json!(input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0)))
//!     },
//! ))?;
//! let vault = Arc::new(MemoryVault::new());
//! let policies = ToolPolicies::new();
//!
//! // Per tenant and request.
//! let tenant = TenantId::random();
//! policies.set(tenant, ToolPolicy::deny_all().allow_tools(["add"]));
//! let ctx = issuer
//!     .context()
//!     .tenant(tenant)
//!     .principal(PrincipalId::new("alice")?)
//!     .capabilities(Capabilities::none().with_tools(["add"])?)
//!     .issue()?;
//! let tools = ToolExecutor::builder()
//!     .registry(&registry)
//!     .vault(&vault)
//!     .policies(&policies)
//!     .tenant(&ctx)
//!     .build()?;
//!
//! assert_eq!(tools.list()?.len(), 1);
//! assert_eq!(tools.call("add", json!({"a": 2, "b": 3})).await?, json!(5));
//! assert!(matches!(
//!     tools.call("shell", json!({})).await,
//!     Err(Error::ToolNotAllowed { .. })
//! ));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Parts of the egress proxy and credentials serve only the Linux sandbox.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

#[cfg(target_os = "linux")]
mod command_tool;
mod credentials;
mod egress;
mod error;
mod executor;
mod policy;
mod redaction;
mod registry;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub mod sandbox;
mod schema;
mod tool;
mod vault;
#[cfg(target_os = "linux")]
mod workspace;

#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use command_tool::CommandTool;
pub use credentials::Credentials;
pub use egress::{
    is_internal_address, CredentialInjection, EgressClient, EgressPolicy, EgressProxy,
    EgressResponse, ProxyGuard, DEFAULT_MAX_BODY, MAX_REDIRECTS,
};
pub use error::{Error, Result};
pub use executor::{ToolExecutor, ToolExecutorBuilder};
pub use policy::{ToolPolicies, ToolPolicy};
pub use redaction::{RedactingStream, Redactor, REDACTED};
pub use registry::ToolRegistry;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use sandbox::{
    RunOptions, Sandbox, SandboxCommand, SandboxConfig, SandboxLimits, SandboxOutput,
    SandboxSupport, WarmPool, WarmSandbox,
};
pub use schema::{
    InputSchema, SchemaViolation, MAX_INPUT_DEPTH, MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH,
};
pub use tool::{FnTool, Tool, ToolCall, ToolInfo, MAX_TOOL_NAME_LEN};
pub use vault::{FileVault, MemoryVault, SyncVault, Vault};
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use workspace::{Workspace, WorkspaceQuota, WorkspaceRoot};
