//! [`ScopedTx`]: a transaction bound to the signed tenant context, for the
//! application's own tables.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};
use tenant_core::TenantContext;
use tracing::Instrument;

use crate::error::Result;
use crate::store::MemoryStore;

/// Clears the setting at session level too, so nothing survives COMMIT.
const RESET_SQL: &str = "RESET tenant_sdk.ctx";

/// A PostgreSQL transaction with the store's signed context bound to it
/// (transaction-locally). Use it as a sqlx executor — `&mut *tx` — for the
/// application's own tables protected with
/// [`protect_table`](crate::protect_table): every row it reads or writes
/// belongs to the context's tenant, whatever the SQL says.
///
/// Dropping it without [`commit`](ScopedTx::commit) rolls back. Either way
/// the binding ends with the transaction, so the pooled connection carries
/// no tenant into its next use.
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
    tx: Transaction<'static, Postgres>,
    ctx: TenantContext,
}

impl ScopedTx {
    /// The context bound to this transaction.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The connection, as a sqlx executor (same as `&mut *tx`).
    pub fn executor(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits. A session-level `SET tenant_sdk.ctx` made inside the
    /// transaction would outlive it on commit, so the setting is reset first.
    ///
    /// # Errors
    ///
    /// The database's error (e.g. a deferred constraint).
    pub async fn commit(mut self) -> Result<()> {
        let span = self.ctx.span();
        async {
            sqlx::query(RESET_SQL).execute(&mut *self.tx).await?;
            self.tx.commit().await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Rolls back.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn rollback(self) -> Result<()> {
        let span = self.ctx.span();
        self.tx.rollback().instrument(span).await?;
        Ok(())
    }
}

impl Deref for ScopedTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for ScopedTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
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
    /// [`Error::Context`](crate::Error::Context) for an invalid context;
    /// database errors otherwise.
    pub async fn begin(&self) -> Result<ScopedTx> {
        self.run(async {
            let tx = self.begin_bound().await?;
            Ok(ScopedTx {
                tx,
                ctx: self.ctx.clone(),
            })
        })
        .await
    }
}
