//! Connections that ran caller SQL go back to the pool clean, or not at all.
//!
//! Whatever a transaction leaves on its connection outlives it: held
//! cursors, temporary tables, prepared statements, `LISTEN` channels,
//! session advisory locks, session-level settings. A [`CallerConnection`]
//! is released only through [`CallerConnection::release`]; if that fails, or
//! if the value is dropped before it completes (an error path, or a
//! cancelled future), the connection is closed instead of being returned to
//! the pool.
//!
//! Connected directly, `release` ends the transaction and runs `DISCARD
//! ALL` (which closes cursors, drops temporary tables, deallocates prepared
//! statements, unlistens, releases advisory locks and resets every
//! setting). Behind a pooler in transaction mode, the next statement after
//! the transaction may run on another server connection, so the reset runs
//! inside the transaction instead, just before it ends: `CLOSE ALL`,
//! `UNLISTEN *`, `pg_advisory_unlock_all()`, `DEALLOCATE ALL`, `RESET ALL`
//! (after rolling back to a savepoint taken at the start if the caller's SQL
//! failed). Temporary tables need `TEMPORARY`, which the application role
//! does not have.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use crate::error::Result;

/// A pooled connection handed to caller SQL.
pub(crate) struct CallerConnection {
    conn: PoolConnection<Postgres>,
    pooled: bool,
    clean: bool,
}

/// The savepoint a pooled caller transaction starts with.
const SAVEPOINT_SQL: &str = "SAVEPOINT tenant_sdk_caller";
const ROLLBACK_TO_SAVEPOINT_SQL: &str = "ROLLBACK TO SAVEPOINT tenant_sdk_caller";
/// The in-transaction reset behind a transaction pooler.
const IN_TRANSACTION_RESET_SQL: &str =
    "CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DEALLOCATE ALL; RESET ALL";

/// Opens a transaction on a caller connection. A closed connection stops
/// a running statement only when the server notices the client is gone:
/// the transaction checks every 250 ms, so a cancelled call's statement
/// (and any lock it holds) ends promptly instead of running to its end.
const BEGIN_SQL: &str = "SET LOCAL client_connection_check_interval = '250ms'";

impl CallerConnection {
    /// A connection from `pool`; `pooled`: the pool connects through a
    /// pooler in transaction mode.
    pub(crate) async fn acquire(pool: &PgPool, pooled: bool) -> Result<Self> {
        Ok(Self {
            conn: pool.acquire().await?,
            pooled,
            clean: false,
        })
    }

    /// Begins a transaction (`begin` is the `BEGIN ...` statement).
    pub(crate) async fn begin(&mut self, begin: &'static str) -> Result<()> {
        sqlx::raw_sql(begin).execute(&mut *self.conn).await?;
        sqlx::raw_sql(BEGIN_SQL).execute(&mut *self.conn).await?;
        if self.pooled {
            sqlx::raw_sql(SAVEPOINT_SQL)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }

    /// Ends the transaction (committing it when `commit`), resets the
    /// session and returns the connection to the pool.
    ///
    /// # Errors
    ///
    /// The database's error; the connection is then closed.
    pub(crate) async fn release(mut self, commit: bool) -> Result<()> {
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        let conn = &mut *self.conn;
        if self.pooled {
            let reset = if commit {
                sqlx::raw_sql(IN_TRANSACTION_RESET_SQL)
                    .execute(&mut *conn)
                    .await
                    .is_ok()
            } else {
                false
            };
            if !reset {
                sqlx::raw_sql(ROLLBACK_TO_SAVEPOINT_SQL)
                    .execute(&mut *conn)
                    .await?;
                sqlx::raw_sql(IN_TRANSACTION_RESET_SQL)
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::raw_sql(end).execute(&mut *conn).await?;
        } else {
            sqlx::raw_sql(end).execute(&mut *conn).await?;
            // Harmless when the caller's SQL already ended the transaction.
            sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
            sqlx::raw_sql("DISCARD ALL").execute(&mut *conn).await?;
            // DISCARD ALL deallocated sqlx's prepared statements too.
            conn.clear_cached_statements().await?;
        }
        self.clean = true;
        Ok(())
    }
}

impl Deref for CallerConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for CallerConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for CallerConnection {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}
