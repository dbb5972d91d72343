//! Connections that ran caller SQL go back to the pool clean, or not at all.
//!
//! Whatever a transaction leaves on its connection outlives it: held
//! cursors, temporary tables, prepared statements, `LISTEN` channels,
//! session advisory locks, session-level settings. A [`CallerConnection`]
//! is released only through [`CallerConnection::release`], which ends any
//! transaction and runs `DISCARD ALL` (which closes cursors, drops temporary
//! tables, deallocates prepared statements, unlistens, releases advisory
//! locks and resets every setting); if that fails, or if the value is
//! dropped before it completes (an error path, or a cancelled future), the
//! connection is closed instead of being returned to the pool.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use crate::error::Result;

/// A pooled connection handed to caller SQL.
pub(crate) struct CallerConnection {
    conn: PoolConnection<Postgres>,
    clean: bool,
}

/// Opens a transaction on a caller connection. A closed connection stops
/// a running statement only when the server notices the client is gone:
/// the transaction checks every 250 ms, so a cancelled call's statement
/// (and any lock it holds) ends promptly instead of running to its end.
const BEGIN_SQL: &str = "SELECT set_config('client_connection_check_interval', '250ms', true)";

impl CallerConnection {
    pub(crate) async fn acquire(pool: &PgPool) -> Result<Self> {
        Ok(Self {
            conn: pool.acquire().await?,
            clean: false,
        })
    }

    /// Begins a transaction (`begin` is the `BEGIN ...` statement).
    pub(crate) async fn begin(&mut self, begin: &'static str) -> Result<()> {
        sqlx::raw_sql(begin).execute(&mut *self.conn).await?;
        sqlx::query(BEGIN_SQL).execute(&mut *self.conn).await?;
        Ok(())
    }

    /// Resets the session and returns the connection to the pool.
    ///
    /// # Errors
    ///
    /// The database's error; the connection is then closed.
    pub(crate) async fn release(mut self) -> Result<()> {
        sqlx::raw_sql("ROLLBACK").execute(&mut *self.conn).await?;
        sqlx::raw_sql("DISCARD ALL")
            .execute(&mut *self.conn)
            .await?;
        // DISCARD ALL deallocated sqlx's prepared statements too.
        self.conn.clear_cached_statements().await?;
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
