//! Checkpoints: durable execution state per thread and namespace, in the
//! style of LangGraph (`put`, `get`, `get latest`, `list`, with parents).
//!
//! A checkpoint namespace is a memory namespace: the context's
//! capabilities must allow it, so a sub-agent cannot read or write another
//! namespace's checkpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::names;
use crate::store::MemoryStore;
use crate::threads::{page_limit, ThreadId};

/// A checkpoint to store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewCheckpoint {
    /// Its id, unique within (thread, namespace).
    pub id: String,
    /// The checkpoint it follows, if any.
    pub parent_id: Option<String>,
    /// The serialised execution state.
    pub state: Value,
    /// Caller metadata.
    pub metadata: Value,
}

impl NewCheckpoint {
    /// A checkpoint with empty metadata and no parent.
    pub fn new(id: impl Into<String>, state: Value) -> Self {
        Self {
            id: id.into(),
            parent_id: None,
            state,
            metadata: Value::Object(Default::default()),
        }
    }

    /// Sets the parent checkpoint.
    pub fn with_parent(mut self, parent_id: impl Into<String>) -> Self {
        self.parent_id = Some(parent_id.into());
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The thread it belongs to.
    pub thread: ThreadId,
    /// Its namespace.
    pub namespace: String,
    /// Its id.
    pub id: String,
    /// The checkpoint it follows.
    pub parent_id: Option<String>,
    /// The execution state.
    pub state: Value,
    /// Caller metadata.
    pub metadata: Value,
    /// When it was first stored, Unix milliseconds.
    pub created_at_ms: i64,
}

impl Checkpoint {
    fn from_row(thread: ThreadId, row: &PgRow) -> Result<Self> {
        Ok(Self {
            thread,
            namespace: row.try_get("namespace")?,
            id: row.try_get("checkpoint_id")?,
            parent_id: row.try_get("parent_id")?,
            state: row.try_get("state")?,
            metadata: row.try_get("metadata")?,
            created_at_ms: row.try_get("created_ms")?,
        })
    }
}

/// Takes the thread's next checkpoint number (per thread: no counter is
/// shared between tenants) and its namespace and audience.
const BUMP_SQL: &str = "UPDATE tenant_memory.threads SET last_checkpoint = last_checkpoint + 1 \
     WHERE tenant_id = $1 AND id = $2 RETURNING last_checkpoint, namespace, audience";

const PUT_SQL: &str = "INSERT INTO tenant_memory.checkpoints \
        (tenant_id, thread_id, namespace, checkpoint_id, parent_id, state, metadata, \
         seq, thread_namespace, audience) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (tenant_id, thread_id, namespace, checkpoint_id) \
     DO UPDATE SET parent_id = EXCLUDED.parent_id, state = EXCLUDED.state, metadata = EXCLUDED.metadata \
     RETURNING namespace, checkpoint_id, parent_id, state, metadata, \
        (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms";

const GET_SQL: &str =
    "SELECT c.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT namespace, checkpoint_id, parent_id, state, metadata, \
               (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM tenant_memory.checkpoints \
        WHERE tenant_id = $2 AND thread_id = $3 AND namespace = $4 AND checkpoint_id = $5 \
          AND b.bound IS NOT NULL \
        OFFSET 0) AS c";

const LIST_SQL: &str =
    "SELECT c.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT namespace, checkpoint_id, parent_id, state, metadata, \
               (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM tenant_memory.checkpoints \
        WHERE tenant_id = $2 AND thread_id = $3 AND namespace = $4 AND b.bound IS NOT NULL \
        ORDER BY seq DESC \
        LIMIT $5) AS c";

impl MemoryStore {
    /// Stores a checkpoint (replacing one with the same id).
    ///
    /// # Errors
    ///
    /// [`Error::ThreadNotFound`] if the context sees no such thread;
    /// [`Error::NamespaceNotAllowed`] for a namespace the context lacks.
    pub async fn put_checkpoint(
        &self,
        thread: ThreadId,
        namespace: &str,
        checkpoint: NewCheckpoint,
    ) -> Result<Checkpoint> {
        self.run(
            memory_span!("memory.put_checkpoint", self, "INSERT"),
            async {
                self.allow_namespace("memory.put_checkpoint", namespace)?;
                names::validate("checkpoint id", &checkpoint.id)?;
                if let Some(parent) = &checkpoint.parent_id {
                    names::validate("parent checkpoint id", parent)?;
                }
                let tenant = self.ctx.tenant();
                let mut tx = self.begin_bound().await?;
                let (seq, thread_namespace, audience): (i64, String, String) =
                    sqlx::query_as(BUMP_SQL)
                        .persistent(self.prepared())
                        .bind(tenant.as_uuid())
                        .bind(thread.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or(Error::ThreadNotFound)?;
                let row = sqlx::query(PUT_SQL)
                    .persistent(self.prepared())
                    .bind(tenant.as_uuid())
                    .bind(thread.as_uuid())
                    .bind(namespace)
                    .bind(&checkpoint.id)
                    .bind(&checkpoint.parent_id)
                    .bind(checkpoint.state)
                    .bind(checkpoint.metadata)
                    .bind(seq)
                    .bind(thread_namespace)
                    .bind(audience)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Checkpoint::from_row(thread, &row)
            },
        )
        .await
    }

    /// The checkpoint `id` of a thread and namespace.
    ///
    /// # Errors
    ///
    /// [`Error::NamespaceNotAllowed`] for a namespace the context lacks.
    pub async fn checkpoint(
        &self,
        thread: ThreadId,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Checkpoint>> {
        self.run(memory_span!("memory.checkpoint", self, "SELECT"), async {
            self.allow_namespace("memory.checkpoint", namespace)?;
            names::validate("checkpoint id", id)?;
            let mut ex = self.exec().await?;
            let row = sqlx::query(GET_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(thread.as_uuid())
                .bind(namespace)
                .bind(id)
                .fetch_optional(&mut *ex)
                .await?;
            ex.finish().await?;
            row.as_ref()
                .map(|r| Checkpoint::from_row(thread, r))
                .transpose()
        })
        .await
    }

    /// The most recently stored checkpoint of a thread and namespace.
    ///
    /// # Errors
    ///
    /// [`Error::NamespaceNotAllowed`] for a namespace the context lacks.
    pub async fn latest_checkpoint(
        &self,
        thread: ThreadId,
        namespace: &str,
    ) -> Result<Option<Checkpoint>> {
        Ok(self
            .list_checkpoints(thread, namespace, 1)
            .await?
            .into_iter()
            .next())
    }

    /// A thread's checkpoints in a namespace, newest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::NamespaceNotAllowed`] for a namespace the context lacks.
    pub async fn list_checkpoints(
        &self,
        thread: ThreadId,
        namespace: &str,
        limit: usize,
    ) -> Result<Vec<Checkpoint>> {
        self.run(
            memory_span!("memory.list_checkpoints", self, "SELECT"),
            async {
                self.allow_namespace("memory.list_checkpoints", namespace)?;
                let mut ex = self.exec().await?;
                let rows = sqlx::query(LIST_SQL)
                    .persistent(self.prepared())
                    .bind(self.bound())
                    .bind(self.ctx.tenant().as_uuid())
                    .bind(thread.as_uuid())
                    .bind(namespace)
                    .bind(page_limit(limit))
                    .fetch_all(&mut *ex)
                    .await?;
                ex.finish().await?;
                rows.iter()
                    .map(|r| Checkpoint::from_row(thread, r))
                    .collect()
            },
        )
        .await
    }
}
