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
//! * Migrations run as an **owner** role ([`MemoryStore::migrate`]); the
//!   application connects as a separate role that owns nothing, is not a
//!   superuser and has no `BYPASSRLS`. Every table has `tenant_id` leading
//!   each key, `ENABLE` + `FORCE ROW LEVEL SECURITY`, and a policy with
//!   `USING` and `WITH CHECK`.
//! * The policies compare `tenant_id` with the tenant of
//!   `tenant_sdk.verified_context`, a view with its owner's rights that
//!   verifies the **signed** context bound to the transaction (tenant,
//!   expiry, HMAC with tenant-core's PostgreSQL subkey, checked with
//!   pgcrypto against a key table the application role cannot read) inside
//!   the statement's own plan; failures go through the `SECURITY DEFINER`
//!   function `tenant_sdk.current_tenant()`, which raises the precise error. Missing context: no rows, and writes fail. Forged or
//!   expired: an error. Never a default tenant.
//! * The context is bound **transaction-locally** (`set_config(.., true)`),
//!   in the same statement as the query for single-statement operations, so
//!   binding costs no extra round trip, and a pooled connection (or a
//!   PgBouncer server connection in transaction mode) never carries a
//!   tenant into its next use.
//! * A [`MemoryStore`] exists only through its typestate builder from a
//!   `&TenantContext`; no method takes a tenant id; every operation verifies
//!   the context and runs in its tracing span.
//!
//! ## Example
//!
//! ```no_run
//! use serde_json::json;
//! use sqlx::PgPool;
//! use tenant_core::*;
//! use tenant_memory::{Expected, MemoryAdmin, MemoryStore, MessageRole, NewMessage};
//!
//! # async fn demo(owner_pool: PgPool, app_pool: PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
//! let pg_key = issuer.subkey(Purpose::Postgres);
//!
//! // Once, as the owner: schema, policies, grants, verification key.
//! let admin = MemoryAdmin::new(&owner_pool, &pg_key)?;
//! admin.migrate("tenant_app").await?;
//! admin.install_key().await?;
//!
//! // Per request, as the application role.
//! let ctx = issuer
//!     .context()
//!     .tenant(TenantId::random())
//!     .principal(PrincipalId::new("alice@example.com")?)
//!     .capabilities(Capabilities::none().with_memory_namespaces(["prefs"])?)
//!     .issue()?;
//! let memory = MemoryStore::builder().pool(&app_pool).key(&pg_key).tenant(&ctx).build()?;
//!
//! let thread = memory.create_thread(json!({"title": "trip"})).await?;
//! memory
//!     .append_message(thread.id, NewMessage::new(MessageRole::User, json!("Lisbon?")))
//!     .await?;
//! let recent = memory.last_messages(thread.id, 20).await?;
//! assert_eq!(recent.len(), 1);
//!
//! let v1 = memory.kv_put("prefs", "units", json!("metric"), Expected::Absent).await?;
//! memory.kv_put("prefs", "units", json!("imperial"), Expected::Version(v1)).await?;
//!
//! // An agent's text-to-SQL: read-only, capped, this tenant's rows only.
//! let rows = memory.read_only_sql("SELECT count(*) AS n FROM tenant_memory.messages").await?;
//! assert_eq!(rows[0]["n"], 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

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
