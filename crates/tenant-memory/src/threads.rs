//! Threads: a conversation or run, owned by a tenant and a principal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::MemoryStore;

/// Identifies a thread within its tenant. Thread ids are tenant-scoped: the
/// same id names unrelated threads (or nothing) in another tenant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ThreadId(Uuid);

impl ThreadId {
    /// A new random (v4) id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThreadId({})", self.0)
    }
}

impl FromStr for ThreadId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| Error::InvalidName {
                kind: "thread id",
                reason: "not a UUID",
            })
    }
}

/// A thread as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Thread {
    /// Its id.
    pub id: ThreadId,
    /// The memory namespace it lives in: only contexts allowed that
    /// namespace see it, its messages and its checkpoints.
    pub namespace: String,
    /// Private to its owner: other principals of the tenant do not see it.
    pub private: bool,
    /// The principal that created it.
    pub owner: String,
    /// Caller metadata (a JSON object by default).
    pub metadata: Value,
    /// How many messages it holds (the last message's sequence number).
    pub message_count: i64,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last change (metadata or a new message), Unix milliseconds.
    pub updated_at_ms: i64,
}

impl Thread {
    pub(crate) fn from_row(row: &PgRow) -> Result<Self> {
        Ok(Self {
            id: ThreadId(row.try_get("id")?),
            namespace: row.try_get("namespace")?,
            private: !row.try_get::<&str, _>("audience")?.is_empty(),
            owner: row.try_get("owner_principal")?,
            metadata: row.try_get("metadata")?,
            message_count: row.try_get("last_seq")?,
            created_at_ms: row.try_get("created_ms")?,
            updated_at_ms: row.try_get("updated_ms")?,
        })
    }
}

const UPDATE_SQL: &str = "UPDATE tenant_memory.threads SET metadata = $3, updated_at = now() \
     WHERE tenant_id = $1 AND id = $2 \
     RETURNING id, namespace, audience, owner_principal, metadata, last_seq, \
     (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms, \
     (extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS updated_ms";

// Reads bind the signed context in the same statement: the FROM-less
// subquery `b` runs set_config, and the LATERAL subquery (fenced by
// OFFSET/LIMIT so it is not flattened) depends on `b.bound`, so it can only
// run after the binding. See `tests/binding.rs`.

const CREATE_SQL: &str = "INSERT INTO tenant_memory.threads \
        (tenant_id, id, namespace, audience, owner_principal, metadata) \
     SELECT $2, $3, $4, $5, $6, $7 FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     RETURNING id, namespace, audience, owner_principal, metadata, last_seq, \
     (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms, \
     (extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS updated_ms";

const GET_SQL: &str =
    "SELECT t.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT id, namespace, audience, owner_principal, metadata, last_seq, \
               (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms, \
               (extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS updated_ms \
        FROM tenant_memory.threads \
        WHERE tenant_id = $2 AND id = $3 AND b.bound IS NOT NULL \
        OFFSET 0) AS t";

const LIST_SQL: &str =
    "SELECT t.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT id, namespace, audience, owner_principal, metadata, last_seq, \
               (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms, \
               (extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS updated_ms \
        FROM tenant_memory.threads \
        WHERE tenant_id = $2 AND b.bound IS NOT NULL \
        ORDER BY updated_at DESC, id \
        LIMIT $3) AS t";

/// The most rows any listing returns at once.
pub const MAX_PAGE: i64 = 1000;

pub(crate) fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE)
}

const DELETE_SQL: &str = "SELECT tenant_memory.delete_thread($3, $2) AS deleted \
     FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b";

impl MemoryStore {
    /// Creates a thread in memory `namespace`, shared with every principal
    /// of the tenant whose context allows that namespace, owned by the
    /// context's principal.
    ///
    /// # Errors
    ///
    /// [`Error::NamespaceNotAllowed`] unless the context's capabilities allow
    /// the namespace; [`Error::Context`] for an invalid context.
    pub async fn create_thread(&self, namespace: &str, metadata: Value) -> Result<Thread> {
        let span = memory_span!("memory.create_thread", self, "INSERT");
        self.insert_thread(span, namespace, metadata, false).await
    }

    /// Like [`create_thread`](Self::create_thread), but private to the
    /// context's principal: other principals of the tenant (and their
    /// agents) see neither the thread nor its messages and checkpoints, in
    /// the SDK or through SQL.
    ///
    /// # Errors
    ///
    /// As [`create_thread`](Self::create_thread).
    pub async fn create_private_thread(&self, namespace: &str, metadata: Value) -> Result<Thread> {
        let span = memory_span!("memory.create_private_thread", self, "INSERT");
        self.insert_thread(span, namespace, metadata, true).await
    }

    async fn insert_thread(
        &self,
        span: tracing::Span,
        namespace: &str,
        metadata: Value,
        private: bool,
    ) -> Result<Thread> {
        self.run(span, async {
            self.allow_namespace("memory.create_thread", namespace)?;
            let principal = self.ctx.principal().as_str();
            let mut ex = self.exec_write().await?;
            let row = sqlx::query(CREATE_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(Uuid::new_v4())
                .bind(namespace)
                .bind(if private { principal } else { "" })
                .bind(principal)
                .bind(metadata)
                .fetch_one(&mut *ex)
                .await?;
            ex.finish().await?;
            Thread::from_row(&row)
        })
        .await
    }

    /// The thread with this id, if the context can see one: the tenant's,
    /// in an allowed namespace, shared or the principal's own.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context, database errors otherwise.
    pub async fn thread(&self, id: ThreadId) -> Result<Option<Thread>> {
        self.run(memory_span!("memory.thread", self, "SELECT"), async {
            let mut ex = self.exec().await?;
            let row = sqlx::query(GET_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(id.0)
                .fetch_optional(&mut *ex)
                .await?;
            ex.finish().await?;
            row.as_ref().map(Thread::from_row).transpose()
        })
        .await
    }

    /// The most recently updated threads the context can see (its
    /// namespaces; shared or its principal's own), newest first (at most
    /// [`MAX_PAGE`]).
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context, database errors otherwise.
    pub async fn list_threads(&self, limit: usize) -> Result<Vec<Thread>> {
        self.run(memory_span!("memory.list_threads", self, "SELECT"), async {
            let mut ex = self.exec().await?;
            let rows = sqlx::query(LIST_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(page_limit(limit))
                .fetch_all(&mut *ex)
                .await?;
            ex.finish().await?;
            rows.iter().map(Thread::from_row).collect()
        })
        .await
    }

    /// Replaces a thread's metadata.
    ///
    /// # Errors
    ///
    /// [`Error::ThreadNotFound`] if the handle's tenant has no such thread.
    pub async fn set_thread_metadata(&self, id: ThreadId, metadata: Value) -> Result<Thread> {
        self.run(
            memory_span!("memory.set_thread_metadata", self, "UPDATE"),
            async {
                let mut tx = self.begin_bound().await?;
                let row = sqlx::query(UPDATE_SQL)
                    .persistent(self.prepared())
                    .bind(self.ctx.tenant().as_uuid())
                    .bind(id.0)
                    .bind(metadata)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(Error::ThreadNotFound)?;
                let thread = Thread::from_row(&row)?;
                tx.commit().await?;
                Ok(thread)
            },
        )
        .await
    }

    /// Deletes a thread with its messages and checkpoints, in one
    /// statement. Nothing cascades beyond what the context can see.
    ///
    /// # Errors
    ///
    /// [`Error::ThreadNotFound`] if the context sees no such thread;
    /// [`Error::ThreadHasUnreachableData`] (nothing deleted) while
    /// checkpoints in namespaces the context may not touch belong to it.
    pub async fn delete_thread(&self, id: ThreadId) -> Result<()> {
        self.run(
            memory_span!("memory.delete_thread", self, "DELETE"),
            async {
                let mut ex = self.exec_write().await?;
                let deleted: bool = sqlx::query_scalar(DELETE_SQL)
                    .persistent(self.prepared())
                    .bind(self.bound())
                    .bind(id.0)
                    .bind(self.ctx.tenant().as_uuid())
                    .fetch_one(&mut *ex)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                            Error::ThreadHasUnreachableData
                        }
                        _ => e.into(),
                    })?;
                ex.finish().await?;
                if !deleted {
                    return Err(Error::ThreadNotFound);
                }
                self.ctx
                    .audit_allowed("memory.delete_thread", &id.to_string());
                Ok(())
            },
        )
        .await
    }
}
