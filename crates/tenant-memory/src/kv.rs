//! Key-value state per memory namespace, with optimistic versioning.
//!
//! Every entry carries a version that starts at 1 and grows by one on each
//! write. Writes state what they expect ([`Expected`]); a mismatch is
//! [`Error::VersionConflict`], never a lost update.

use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::names;
use crate::store::MemoryStore;
use crate::threads::page_limit;

/// What a write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// No entry (create only).
    Absent,
    /// The entry at exactly this version (compare-and-swap).
    Version(i64),
    /// Anything: last writer wins.
    Any,
}

impl Expected {
    fn as_option(self) -> Option<i64> {
        match self {
            Expected::Version(v) => Some(v),
            Expected::Absent | Expected::Any => None,
        }
    }
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct KvEntry {
    /// Its memory namespace.
    pub namespace: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// Its version (1 after creation).
    pub version: i64,
    /// Last write, Unix milliseconds.
    pub updated_at_ms: i64,
}

impl KvEntry {
    fn from_row(row: &PgRow) -> Result<Self> {
        Ok(Self {
            namespace: row.try_get("namespace")?,
            key: row.try_get("key")?,
            value: row.try_get("value")?,
            version: row.try_get("version")?,
            updated_at_ms: row.try_get("updated_ms")?,
        })
    }
}

const GET_SQL: &str = "SELECT e.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT namespace, key, value, version, (extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS updated_ms \
        FROM tenant_memory.kv \
        WHERE tenant_id = $2 AND namespace = $3 AND key = $4 AND b.bound IS NOT NULL \
        OFFSET 0) AS e";

const LIST_SQL: &str = "SELECT e.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT namespace, key, value, version, (extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS updated_ms \
        FROM tenant_memory.kv \
        WHERE tenant_id = $2 AND namespace = $3 AND key > $4 AND starts_with(key, $5) \
          AND b.bound IS NOT NULL \
        ORDER BY key \
        LIMIT $6) AS e";

const CREATE_SQL: &str = "INSERT INTO tenant_memory.kv (tenant_id, namespace, key, value, version) \
     SELECT $2, $3, $4, $5, 1 FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     ON CONFLICT (tenant_id, namespace, key) DO NOTHING \
     RETURNING version";

const UPSERT_SQL: &str = "INSERT INTO tenant_memory.kv (tenant_id, namespace, key, value, version) \
     SELECT $2, $3, $4, $5, 1 FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     ON CONFLICT (tenant_id, namespace, key) \
     DO UPDATE SET value = EXCLUDED.value, version = kv.version + 1, updated_at = EXCLUDED.updated_at \
     RETURNING version";

const SWAP_SQL: &str =
    "UPDATE tenant_memory.kv SET value = $5, version = version + 1, updated_at = now() \
     WHERE tenant_id = $1 AND namespace = $2 AND key = $3 AND version = $4 \
     RETURNING version";

const DELETE_SQL: &str = "DELETE FROM tenant_memory.kv \
     WHERE tenant_id = $1 AND namespace = $2 AND key = $3 AND ($4::int8 IS NULL OR version = $4)";

const VERSION_SQL: &str =
    "SELECT version FROM tenant_memory.kv WHERE tenant_id = $1 AND namespace = $2 AND key = $3";

impl MemoryStore {
    /// The entry under `key` in `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::NamespaceNotAllowed`] unless the context's capabilities
    /// allow the namespace.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<KvEntry>> {
        self.run(memory_span!("memory.kv_get", self, "SELECT"), async {
            self.allow_namespace("memory.kv_get", namespace)?;
            names::validate("key", key)?;
            let mut ex = self.exec().await?;
            let row = sqlx::query(GET_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(namespace)
                .bind(key)
                .fetch_optional(&mut *ex)
                .await?;
            ex.finish().await?;
            row.as_ref().map(KvEntry::from_row).transpose()
        })
        .await
    }

    /// Writes `value` under `key` if the stored version is what `expected`
    /// says; returns the new version.
    ///
    /// # Errors
    ///
    /// [`Error::VersionConflict`] (with the version found) on a mismatch;
    /// [`Error::NamespaceNotAllowed`] for a namespace the context lacks.
    pub async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Expected,
    ) -> Result<i64> {
        self.run(memory_span!("memory.kv_put", self, "INSERT"), async {
            self.allow_namespace("memory.kv_put", namespace)?;
            names::validate("key", key)?;
            let tenant = self.ctx.tenant();
            match expected {
                Expected::Absent | Expected::Any => {
                    let sql = if expected == Expected::Absent {
                        CREATE_SQL
                    } else {
                        UPSERT_SQL
                    };
                    let mut ex = self.exec_write().await?;
                    let version: Option<i64> = sqlx::query_scalar(sql)
                        .persistent(self.prepared())
                        .bind(self.bound())
                        .bind(tenant.as_uuid())
                        .bind(namespace)
                        .bind(key)
                        .bind(value)
                        .fetch_optional(&mut *ex)
                        .await?;
                    ex.finish().await?;
                    match version {
                        Some(v) => Ok(v),
                        None => Err(Error::VersionConflict {
                            expected: None,
                            actual: self.kv_version(namespace, key).await?,
                        }),
                    }
                }
                Expected::Version(v) => {
                    let mut tx = self.begin_bound().await?;
                    let version: Option<i64> = sqlx::query_scalar(SWAP_SQL)
                        .persistent(self.prepared())
                        .bind(tenant.as_uuid())
                        .bind(namespace)
                        .bind(key)
                        .bind(v)
                        .bind(value)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match version {
                        Some(new) => {
                            tx.commit().await?;
                            Ok(new)
                        }
                        None => {
                            let actual = self.version_in(&mut tx, namespace, key).await?;
                            Err(Error::VersionConflict {
                                expected: Some(v),
                                actual,
                            })
                        }
                    }
                }
            }
        })
        .await
    }

    /// Deletes `key` if the stored version is what `expected` says. Returns
    /// whether an entry was deleted (`false`: there was none).
    ///
    /// # Errors
    ///
    /// [`Error::VersionConflict`] when `expected` is a version and the entry
    /// has another one.
    pub async fn kv_delete(&self, namespace: &str, key: &str, expected: Expected) -> Result<bool> {
        self.run(memory_span!("memory.kv_delete", self, "DELETE"), async {
            self.allow_namespace("memory.kv_delete", namespace)?;
            names::validate("key", key)?;
            let mut tx = self.begin_bound().await?;
            let done = sqlx::query(DELETE_SQL)
                .persistent(self.prepared())
                .bind(self.ctx.tenant().as_uuid())
                .bind(namespace)
                .bind(key)
                .bind(expected.as_option())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                tx.commit().await?;
                return Ok(true);
            }
            let actual = self.version_in(&mut tx, namespace, key).await?;
            match (expected, actual) {
                (Expected::Version(v), Some(_)) => Err(Error::VersionConflict {
                    expected: Some(v),
                    actual,
                }),
                _ => Ok(false),
            }
        })
        .await
    }

    /// Entries of `namespace` whose key starts with `prefix`, in key order,
    /// after key `after` (from the first when `None`), at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::NamespaceNotAllowed`] for a namespace the context lacks.
    pub async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>> {
        self.run(memory_span!("memory.kv_list", self, "SELECT"), async {
            self.allow_namespace("memory.kv_list", namespace)?;
            names::validate_prefix("key prefix", prefix)?;
            let mut ex = self.exec().await?;
            let rows = sqlx::query(LIST_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(namespace)
                .bind(after.unwrap_or(""))
                .bind(prefix)
                .bind(page_limit(limit))
                .fetch_all(&mut *ex)
                .await?;
            ex.finish().await?;
            rows.iter().map(KvEntry::from_row).collect()
        })
        .await
    }

    async fn kv_version(&self, namespace: &str, key: &str) -> Result<Option<i64>> {
        let mut tx = self.begin_bound().await?;
        self.version_in(&mut tx, namespace, key).await
    }

    async fn version_in(
        &self,
        conn: &mut sqlx::PgConnection,
        namespace: &str,
        key: &str,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(VERSION_SQL)
            .persistent(self.prepared())
            .bind(self.ctx.tenant().as_uuid())
            .bind(namespace)
            .bind(key)
            .fetch_optional(conn)
            .await?)
    }
}
