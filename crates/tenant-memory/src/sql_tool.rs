//! [`SqlQueryTool`]: read-only SQL for agents (text-to-SQL), under the same
//! signed context as everything else.
//!
//! Layers, each enough on its own for a different attack:
//! 1. the statement must start with `SELECT`, `WITH`, `VALUES` or `TABLE`
//!    and is sent alone through the extended protocol (one statement only);
//! 2. it runs as a subquery of `SELECT to_jsonb(q) FROM (...) q LIMIT n`, so
//!    it cannot be `COMMIT`, `SET`, DDL or a data-modifying `WITH`;
//! 3. inside a `READ ONLY` transaction with a local `statement_timeout`;
//! 4. with the signed context bound, so row-level security returns only the
//!    tenant's rows; a `set_config` to another tenant fails verification;
//! 5. the transaction is always rolled back (undoing even session-level
//!    `set_config(.., false)` calls) and session advisory locks released.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, Row};

use crate::error::{Error, Result};
use crate::store::{MemoryStore, BIND_SQL};

/// Default [`SqlQueryTool::with_statement_timeout`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`SqlQueryTool::with_max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 200;
/// The longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 16 * 1024;

/// Rows returned by [`SqlQueryTool::query`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SqlRows {
    /// One JSON object per row (column name → value).
    pub rows: Vec<Value>,
    /// More rows existed than the cap allowed.
    pub truncated: bool,
}

/// Read-only SQL for an agent's text-to-SQL tool. Made from a store
/// ([`MemoryStore::sql_tool`]), so it acts for the store's tenant only.
#[derive(Clone, Debug)]
pub struct SqlQueryTool {
    store: MemoryStore,
    statement_timeout: Duration,
    max_rows: usize,
}

impl SqlQueryTool {
    /// Cancels statements running longer than `timeout` (at least 1 ms).
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Returns at most `max_rows` rows (at least 1).
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows.max(1);
        self
    }

    /// Runs one read-only query and returns its rows as JSON objects.
    ///
    /// # Errors
    ///
    /// [`Error::SqlNotAllowed`] for anything that is not a single query;
    /// [`Error::ReadOnlyTransaction`] for a write that got past that;
    /// [`Error::StatementTimeout`]; [`Error::BoundContextRejected`] if the
    /// SQL tampers with the bound context; [`Error::PermissionDenied`] for
    /// objects the application role may not read.
    pub async fn query(&self, sql: &str) -> Result<SqlRows> {
        let store = &self.store;
        store
            .run(async {
                let body = match screen(sql) {
                    Ok(body) => body,
                    Err(e) => {
                        store.ctx.audit_denied("memory.sql", "sql", &e);
                        return Err(e);
                    }
                };
                let result = self.run_read_only(body).await;
                match &result {
                    Ok(_) => store.ctx.audit_allowed("memory.sql", "sql"),
                    Err(e) => store.ctx.audit_denied("memory.sql", "sql", e),
                }
                result
            })
            .await
    }

    async fn run_read_only(&self, body: &str) -> Result<SqlRows> {
        let mut conn = self.store.pool().acquire().await?;
        let result = async {
            let mut tx = conn
                .begin_with("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            sqlx::query(BIND_SQL)
                .bind(self.store.bound())
                .execute(&mut *tx)
                .await?;
            let timeout_ms = u64::try_from(self.statement_timeout.as_millis()).unwrap_or(u64::MAX);
            sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                .bind(timeout_ms.to_string())
                .execute(&mut *tx)
                .await?;
            let cap = i64::try_from(self.max_rows).unwrap_or(i64::MAX - 1);
            let wrapped = format!(
                "SELECT to_jsonb(q) AS row FROM (\n{body}\n) AS q LIMIT {}",
                cap + 1
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(wrapped))
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            let mut rows = rows
                .iter()
                .map(|r| r.try_get::<Value, _>("row"))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let truncated = rows.len() > self.max_rows;
            rows.truncate(self.max_rows);
            Ok::<_, Error>(SqlRows { rows, truncated })
        }
        .await;
        // Session advisory locks survive ROLLBACK; nothing else the query
        // could do does (the transaction above is rolled back on drop).
        if sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut *conn)
            .await
            .is_err()
        {
            conn.close_on_drop();
        }
        result
    }
}

/// Accepts one query and returns its text without trailing `;`.
fn screen(sql: &str) -> Result<&str> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::SqlNotAllowed("longer than 16 KiB"));
    }
    if sql.contains('\0') {
        return Err(Error::SqlNotAllowed("contains a NUL byte"));
    }
    let body = sql
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let first = first_keyword(body).ok_or(Error::SqlNotAllowed("empty statement"))?;
    if !["select", "with", "values", "table"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
    {
        return Err(Error::SqlNotAllowed(
            "only queries (SELECT, WITH, VALUES, TABLE) are allowed",
        ));
    }
    Ok(body)
}

/// The first word after leading whitespace, comments and parentheses.
fn first_keyword(mut sql: &str) -> Option<&str> {
    loop {
        sql = sql.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = rest.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let end = sql
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(sql.len());
    (end > 0).then(|| &sql[..end])
}

impl MemoryStore {
    /// A read-only SQL tool for this store's tenant, with the default
    /// timeout ([`DEFAULT_STATEMENT_TIMEOUT`]) and row cap
    /// ([`DEFAULT_MAX_ROWS`]).
    pub fn sql_tool(&self) -> SqlQueryTool {
        SqlQueryTool {
            store: self.clone(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            max_rows: DEFAULT_MAX_ROWS,
        }
    }

    /// Runs `sql` through [`MemoryStore::sql_tool`] with the defaults and
    /// returns its rows (at most [`DEFAULT_MAX_ROWS`]).
    ///
    /// # Errors
    ///
    /// As [`SqlQueryTool::query`].
    pub async fn read_only_sql(&self, sql: &str) -> Result<Vec<Value>> {
        Ok(self.sql_tool().query(sql).await?.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queries_pass_the_screen() {
        for ok in [
            "select 1",
            "  SELECT 1;;  ",
            "-- note\nwith x as (select 1) select * from x",
            "/* c */ (select 1)",
            "VALUES (1)",
            "table tenant_memory.threads",
        ] {
            assert!(screen(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ; ",
            "delete from tenant_memory.kv",
            "update x set y = 1",
            "set tenant_sdk.ctx = 'x'",
            "reset tenant_sdk.ctx",
            "commit",
            "-- select\ndelete from x",
            "/* select */ drop table x",
            "selectx 1",
        ] {
            assert!(matches!(screen(bad), Err(Error::SqlNotAllowed(_))), "{bad}");
        }
    }
}
