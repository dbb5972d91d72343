//! [`ScopedTx`]: a transaction bound to the signed tenant context, for the
//! application's own tables.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::PgConnection;
use tenant_core::telemetry::traced;
use tenant_core::TenantContext;

use crate::error::Result;
use crate::session_reset::CallerConnection;
use crate::store::MemoryStore;

/// A PostgreSQL transaction with the store's signed context bound to it
/// (transaction-locally). Use it as a sqlx executor — `&mut *tx` — for the
/// application's own tables protected with
/// [`protect_table`](crate::protect_table): every row it reads or writes
/// belongs to the context's tenant and namespaces, whatever the SQL says.
///
/// Its connection is handed to caller SQL, so it goes back to the pool only
/// after a reset that removes every kind of session state (`DISCARD ALL`:
/// cursors, temporary tables, prepared statements, `LISTEN`, advisory locks,
/// settings), on [`commit`](ScopedTx::commit) and
/// [`rollback`](ScopedTx::rollback). Dropped without either (an early return,
/// a cancelled future), the transaction is rolled back by closing the
/// connection.
///
/// ```no_run
/// # async fn demo(store: &tenant_memory::MemoryStore) -> tenant_memory::Result<()> {
/// let mut tx = store.begin().await?;
/// let rows: Vec<(String,)> = sqlx::query_as("SELECT title FROM app_notes")
///     .fetch_all(&mut *tx)
///     .await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct ScopedTx {
    conn: CallerConnection,
    ctx: TenantContext,
}

impl ScopedTx {
    /// The context bound to this transaction.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The connection, as a sqlx executor (same as `&mut *tx`).
    pub fn executor(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Commits, then resets the connection.
    ///
    /// # Errors
    ///
    /// The database's error (e.g. a deferred constraint); the connection is
    /// then closed.
    pub async fn commit(self) -> Result<()> {
        let span = memory_span!("memory.commit", self, "COMMIT");
        traced(span, self.conn.release(true)).await
    }

    /// Rolls back, then resets the connection.
    ///
    /// # Errors
    ///
    /// The database's error; the connection is then closed.
    pub async fn rollback(self) -> Result<()> {
        let span = memory_span!("memory.rollback", self, "ROLLBACK");
        traced(span, self.conn.release(false)).await
    }
}

impl Deref for ScopedTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for ScopedTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl fmt::Debug for ScopedTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedTx")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// Begins a transaction with the signed context bound to it.
    ///
    /// # Errors
    ///
    /// [`Error::Context`](crate::Error::Context) for a context the platform's
    /// authority does not admit; database errors otherwise.
    pub async fn begin(&self) -> Result<ScopedTx> {
        self.run(memory_span!("memory.begin", self, "BEGIN"), async {
            let mut conn = CallerConnection::acquire(self.pool(), self.platform.pooled).await?;
            conn.begin("BEGIN").await?;
            self.bind_on(&mut conn).await?;
            Ok(ScopedTx {
                conn,
                ctx: self.ctx.clone(),
            })
        })
        .await
    }
}

impl crate::store::HasContext for ScopedTx {
    fn context_ref(&self) -> &TenantContext {
        &self.ctx
    }
}
