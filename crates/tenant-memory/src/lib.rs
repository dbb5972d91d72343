//! # tenant-memory
//!
//! Agent memory for multi-tenant platforms in PostgreSQL, under row-level
//! security that the application role cannot switch off or redirect:
//! threads, append-only messages, versioned key-value state per namespace,
//! LangGraph-style checkpoints, transactions for the application's own
//! tables ([`ScopedTx`], [`protect_table`]), a read-only SQL tool for
//! agents ([`SqlQueryTool`]), a configuration checker ([`doctor`]), and
//! per-tenant erasure and export ([`MemoryAdmin`]).
//!
//! ## How isolation works
//!
//! * Migrations run as an **owner** role ([`MemoryAdmin::migrate`], with
//!   `search_path` pinned); the application connects as a separate role that
//!   owns nothing, is not a superuser, has no `BYPASSRLS` and may not create
//!   temporary tables ([`MemoryPlatform::verify`] checks at start-up,
//!   [`doctor`] in CI). Every table has `tenant_id` leading each key,
//!   `ENABLE` + `FORCE ROW LEVEL SECURITY`, and a policy with `USING` and
//!   `WITH CHECK`.
//! * Each transaction binds a **signed** value (`tenant_sdk.ctx`) carrying
//!   the tenant, the expiry and the context's grants: its memory namespaces,
//!   for rows shared tenant-wide and for its principal's private threads.
//!   The policies verify the HMAC inside each statement's plan (the
//!   `tenant_sdk.verified_context` view, reading a key the application role
//!   cannot read) and admit only rows whose scope keys the grants cover, so
//!   namespaces and private threads hold in the database too. Missing
//!   context: no rows, and writes fail. Forged or expired: an error. Never a
//!   default tenant.
//! * The binding is **transaction-local**, in the same statement as the
//!   query where possible; a connection that ran caller SQL ([`ScopedTx`],
//!   the SQL tool) is reset with `DISCARD ALL` before it returns to the
//!   pool, or closed (also when the call is cancelled).
//! * Agent SQL ([`SqlQueryTool`]) is parsed by the PostgreSQL parser and may
//!   name only allowlisted tables, pure built-in functions and plain types.
//! * A [`MemoryStore`] exists only through its typestate builder from a
//!   `&TenantContext` that the platform's [`PlatformAuthority`](tenant_core::PlatformAuthority)
//!   admits; no method takes a tenant id; every operation admits the context
//!   again and runs in its tracing span.
//!
//! ## Example
//!
//! ```no_run
//! use serde_json::json;
//! use sqlx::PgPool;
//! use tenant_core::*;
//! use tenant_memory::{Expected, MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewMessage};
//!
//! # async fn demo(owner_pool: PgPool, app_pool: PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
//! let pg_key = issuer.subkey(Purpose::Postgres);
//!
//! // Once, as the owner: schema, policies, grants, verification key.
//! let admin = MemoryAdmin::new(&owner_pool, &pg_key, &issuer.authority())?;
//! admin.migrate("tenant_app").await?;
//! admin.install_key().await?;
//!
//! // Once per process, for the application role.
//! let platform = MemoryPlatform::new(&app_pool, &pg_key, &issuer.authority())?;
//! platform.verify().await?;
//!
//! // Per request.
//! let ctx = issuer
//!     .context()
//!     .tenant(TenantId::random())
//!     .principal(PrincipalId::new("alice@example.com")?)
//!     .capabilities(
//!         Capabilities::none()
//!             .with_memory_namespaces(["chat", "prefs"])?
//!             .with_tools([tenant_memory::SQL_TOOL_CAPABILITY])?,
//!     )
//!     .issue()?;
//! let memory = MemoryStore::builder().platform(&platform).tenant(&ctx).build()?;
//!
//! let thread = memory.create_thread("chat", json!({"title": "trip"})).await?;
//! memory
//!     .append_message(thread.id, NewMessage::new(MessageRole::User, json!("Lisbon?")))
//!     .await?;
//! let recent = memory.last_messages(thread.id, 20).await?;
//! assert_eq!(recent.len(), 1);
//!
//! let v1 = memory.kv_put("prefs", "units", json!("metric"), Expected::Absent).await?;
//! memory.kv_put("prefs", "units", json!("imperial"), Expected::Version(v1)).await?;
//!
//! // An agent's text-to-SQL: allowlisted, read-only, capped, this context's rows only.
//! let rows = memory.read_only_sql("SELECT count(*) AS n FROM tenant_memory.messages").await?;
//! assert_eq!(rows[0]["n"], 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The span of one memory operation: [`tenant_core::operation_span!`] with
/// `db.system` and `db.operation.name`. `$ctx_holder` is anything with a
/// `ctx: TenantContext` field, or a `&TenantContext`.
macro_rules! memory_span {
    ($name:literal, $holder:expr, $op:literal) => {
        tenant_core::operation_span!(
            $name,
            $crate::store::context_of(&$holder),
            db.system = "postgresql",
            db.operation.name = $op,
        )
    };
}

mod admin;
mod binding;
mod checkpoints;
mod doctor;
mod error;
mod kv;
mod messages;
mod names;
mod platform;
mod predicate;
mod protect;
mod scoped_tx;
mod session_reset;
mod sql_allowlist;
mod sql_tool;
mod store;
mod threads;

pub use admin::{ErasureReport, MemoryAdmin, TenantExport, MIGRATIONS_TABLE, TABLES};
pub use binding::SETTING;
pub use checkpoints::{Checkpoint, NewCheckpoint};
pub use doctor::{
    doctor, doctor_with_column, DoctorReport, Finding, PolicyReport, Problem, RoleReport, Severity,
    TableReport, ViewReport, DEFAULT_TENANT_COLUMN,
};
pub use error::{ContextRejection, Error, Result, SqlObjectKind};
pub use kv::{Expected, KvEntry};
pub use messages::{Message, MessageCursor, MessagePage, MessageRole, NewMessage};
pub use names::MAX_NAME_BYTES;
pub use platform::MemoryPlatform;
pub use protect::{protect_table, protect_table_in_schema, quote_ident, POLICY_NAME};
pub use scoped_tx::ScopedTx;
pub use sql_tool::{
    SqlQueryTool, SqlRows, DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_STATEMENT_TIMEOUT,
    FUNCTIONS, MAX_SQL_BYTES, SQL_TOOL_CAPABILITY, TYPES,
};
pub use store::{MemoryStore, MemoryStoreBuilder};
pub use threads::{Thread, ThreadId, MAX_PAGE};
