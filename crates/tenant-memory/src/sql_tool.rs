//! [`SqlQueryTool`]: read-only SQL for agents (text-to-SQL), under the same
//! signed context as everything else.
//!
//! Layers, each enough on its own for a different attack:
//! 1. the context must hold the tool capability ([`SQL_TOOL_CAPABILITY`]);
//! 2. the statement is parsed by the PostgreSQL parser (libpg_query) and
//!    must be one plain query naming only allowlisted relations, functions,
//!    types and operators ([`FUNCTIONS`], [`TYPES`]; see `sql_allowlist`);
//! 3. it runs as a subquery of `SELECT to_jsonb(q) FROM (SELECT * FROM (...) LIMIT n) q`,
//!    with an empty `search_path`, inside a `READ ONLY` transaction with a
//!    local `statement_timeout`, and the result is capped in rows and bytes;
//! 4. with the signed context bound, so row-level security returns only the
//!    tenant's rows in the context's namespaces, shared or its principal's;
//! 5. the transaction is rolled back and the connection reset (`DISCARD
//!    ALL`) before it returns to the pool, or closed (also when the call is
//!    cancelled).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::session_reset::CallerConnection;
use crate::sql_allowlist;
pub use crate::sql_allowlist::{FUNCTIONS, TYPES};
use crate::store::MemoryStore;

/// The tool name a context's capabilities must allow
/// (`Capabilities::with_tools([SQL_TOOL_CAPABILITY])`) to use the SQL tool.
pub const SQL_TOOL_CAPABILITY: &str = "memory.sql";
/// Default [`SqlQueryTool::with_statement_timeout`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`SqlQueryTool::with_max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 200;
/// Default [`SqlQueryTool::with_max_bytes`].
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// The longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 16 * 1024;

/// Rows returned by [`SqlQueryTool::query`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SqlRows {
    /// One JSON object per row (column name → value).
    pub rows: Vec<Value>,
    /// More rows existed than the row or byte cap allowed.
    pub truncated: bool,
}

/// Read-only SQL for an agent's text-to-SQL tool. Made from a store
/// ([`MemoryStore::sql_tool`]), so it acts for the store's context only.
#[derive(Clone, Debug)]
pub struct SqlQueryTool {
    store: MemoryStore,
    statement_timeout: Duration,
    max_rows: usize,
    max_bytes: usize,
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

    /// Returns at most `max_bytes` bytes of JSON rows (at least 1 KiB); the
    /// cap is applied in the database, so larger results are never sent.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1024);
        self
    }

    /// Runs one read-only query and returns its rows as JSON objects.
    ///
    /// # Errors
    ///
    /// [`Error::SqlToolNotPermitted`] without the tool capability;
    /// [`Error::SqlObjectNotAllowed`] naming a relation, function, type,
    /// operator or construct outside the allowlist; [`Error::SqlNotAllowed`]
    /// for anything that is not a single query;
    /// [`Error::StatementTimeout`]; [`Error::BoundContextRejected`] if the
    /// bound context does not verify.
    pub async fn query(&self, sql: &str) -> Result<SqlRows> {
        let store = &self.store;
        let span = tenant_core::operation_span!(
            "memory.sql",
            &store.ctx,
            db.system = "postgresql",
            db.operation.name = "SELECT",
            gen_ai.tool.name = crate::SQL_TOOL_CAPABILITY,
        );
        store
            .run(span, async {
                let body = match self.screen(sql) {
                    Ok(body) => body,
                    Err(e) => {
                        store.ctx.deny("memory.sql", "sql", &e);
                        return Err(e);
                    }
                };
                let result = self.run_read_only(body).await;
                match &result {
                    Ok(_) => store.ctx.audit_allowed("memory.sql", "sql"),
                    Err(e) => store.ctx.deny("memory.sql", "sql", e),
                }
                result
            })
            .await
    }

    /// The capability, size and allowlist checks; returns the query text
    /// without trailing `;`.
    fn screen<'s>(&self, sql: &'s str) -> Result<&'s str> {
        if !self
            .store
            .ctx
            .capabilities()
            .tools()
            .allows(SQL_TOOL_CAPABILITY)
        {
            return Err(Error::SqlToolNotPermitted(SQL_TOOL_CAPABILITY));
        }
        if sql.len() > MAX_SQL_BYTES {
            return Err(Error::SqlNotAllowed("longer than 16 KiB"));
        }
        if sql.contains('\0') {
            return Err(Error::SqlNotAllowed("contains a NUL byte"));
        }
        let body = sql
            .trim()
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        let platform = &self.store.platform;
        sql_allowlist::check(body, &|schema, table| {
            platform.sql_table_allowed(schema, table)
        })?;
        Ok(body)
    }

    async fn run_read_only(&self, body: &str) -> Result<SqlRows> {
        let mut conn =
            CallerConnection::acquire(self.store.pool(), self.store.platform.pooled).await?;
        let result = self.run_on(&mut conn, body).await;
        conn.release(false).await?;
        result
    }

    async fn run_on(&self, conn: &mut CallerConnection, body: &str) -> Result<SqlRows> {
        conn.begin("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        self.store.bind_on(conn).await?;
        let timeout_ms = u64::try_from(self.statement_timeout.as_millis()).unwrap_or(u64::MAX);
        sqlx::query(
            "SELECT set_config('statement_timeout', $1, true), set_config('search_path', '', true)",
        )
        .persistent(self.store.prepared())
        .bind(timeout_ms.to_string())
        .execute(&mut **conn)
        .await?;
        let cap = i64::try_from(self.max_rows).unwrap_or(i64::MAX - 1);
        let bytes = i64::try_from(self.max_bytes).unwrap_or(i64::MAX);
        // The running total of the rows' JSON sizes stops the result in the
        // database; rows past either cap are never sent. The row cap sits on
        // an inner subquery so that a cluster plans the agent's query on its
        // own (Citus pushes the limit to the shards) and the whole-row JSON
        // is made where the columns still have their names.
        let wrapped = format!(
            "SELECT CASE WHEN r.total <= {bytes} THEN r.row END AS row, r.produced FROM ( \
                SELECT j.row, count(*) OVER () AS produced, row_number() OVER () AS n, \
                       sum(pg_catalog.octet_length(j.row::pg_catalog.text)) \
                           OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total \
                FROM (SELECT pg_catalog.to_jsonb(q) AS row \
                      FROM (SELECT * FROM (\n{body}\n) AS q0 LIMIT {}) AS q) AS j \
             ) AS r WHERE r.total <= {bytes} OR r.n = 1",
            cap + 1
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(wrapped))
            .persistent(false)
            .fetch_all(&mut **conn)
            .await?;
        let produced = match rows.first() {
            Some(row) => row.try_get::<i64, _>("produced")?,
            None => 0,
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            // NULL: the first row alone is over the byte cap.
            if let Some(value) = row.try_get::<Option<Value>, _>("row")? {
                out.push(value);
            }
        }
        let truncated =
            i64::try_from(out.len()).unwrap_or(i64::MAX) < produced || out.len() > self.max_rows;
        out.truncate(self.max_rows);
        Ok(SqlRows {
            rows: out,
            truncated,
        })
    }
}

impl MemoryStore {
    /// A read-only SQL tool for this store's context, with the default
    /// timeout ([`DEFAULT_STATEMENT_TIMEOUT`]), row cap ([`DEFAULT_MAX_ROWS`])
    /// and byte cap ([`DEFAULT_MAX_BYTES`]). Queries need the
    /// [`SQL_TOOL_CAPABILITY`] in the context's tools.
    pub fn sql_tool(&self) -> SqlQueryTool {
        SqlQueryTool {
            store: self.clone(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            max_rows: DEFAULT_MAX_ROWS,
            max_bytes: DEFAULT_MAX_BYTES,
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
