//! [`MemoryAdmin`]: the owner side: migrations, key installation and
//! rotation, per-tenant erasure and export.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tenant_core::{KeyId, Subkey, TenantContext, TenantId};
use tracing::Instrument;

use crate::binding::PostgresKey;
use crate::error::{Error, Result};
use crate::store::{MemoryStore, BIND_SQL};

/// Where sqlx records the applied migrations of this crate (its own table,
/// so other crates' migrations in the same database do not collide).
pub const MIGRATIONS_TABLE: &str = "public._tenant_memory_migrations";

/// The memory tables, children before parents (the order erasure uses).
pub const TABLES: [&str; 4] = [
    "tenant_memory.checkpoints",
    "tenant_memory.kv",
    "tenant_memory.messages",
    "tenant_memory.threads",
];

fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Owner-side operations. Takes a pool that connects as the role that owns
/// (or will own) the memory tables — never the application pool.
#[derive(Clone)]
pub struct MemoryAdmin {
    pool: PgPool,
    key: PostgresKey,
}

impl fmt::Debug for MemoryAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAdmin")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Rows deleted per table by [`MemoryAdmin::erase_tenant`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ErasureReport {
    /// The tenant erased.
    pub tenant: TenantId,
    /// Rows deleted, per table.
    pub deleted: BTreeMap<String, u64>,
    /// Rows remaining afterwards, per table (verified: all zero).
    pub remaining: BTreeMap<String, i64>,
}

/// Every row of one tenant, per table, as JSON objects (without the
/// `tenant_id` column), read in one consistent snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TenantExport {
    /// The tenant exported.
    pub tenant: TenantId,
    /// Rows per table.
    pub tables: BTreeMap<String, Vec<Value>>,
}

impl TenantExport {
    /// Row counts per table.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.tables
            .iter()
            .map(|(table, rows)| (table.clone(), rows.len()))
            .collect()
    }
}

impl MemoryStore {
    /// Runs the embedded migrations on the owner pool and grants
    /// `app_role` exactly what the store needs (see
    /// [`MemoryAdmin::migrate`]).
    ///
    /// # Errors
    ///
    /// As [`MemoryAdmin::migrate`].
    pub async fn migrate(owner_pool: &PgPool, app_role: &str) -> Result<()> {
        migrate(owner_pool, app_role).await
    }
}

async fn migrate(owner_pool: &PgPool, app_role: &str) -> Result<()> {
    let row = sqlx::query(
        "SELECT r.rolsuper, r.rolbypassrls, r.rolname = current_user AS is_self \
         FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(app_role)
    .fetch_optional(owner_pool)
    .await?;
    let unsafe_role = |reason| Error::UnsafeAppRole {
        role: app_role.to_owned(),
        reason,
    };
    let Some(row) = row else {
        return Err(unsafe_role("the role does not exist"));
    };
    if row.try_get::<bool, _>("is_self")? {
        return Err(unsafe_role(
            "it is the role running the migrations (the owner)",
        ));
    }
    if row.try_get::<bool, _>("rolsuper")? {
        return Err(unsafe_role(
            "it is a superuser, which bypasses row-level security",
        ));
    }
    if row.try_get::<bool, _>("rolbypassrls")? {
        return Err(unsafe_role("it has BYPASSRLS"));
    }
    migrator().run(owner_pool).await?;
    sqlx::query("SELECT tenant_sdk.grant_app_role($1)")
        .bind(app_role)
        .execute(owner_pool)
        .await?;
    tracing::info!(target: tenant_core::AUDIT_TARGET, action = "memory.migrate", app_role, "migrated");
    Ok(())
}

impl MemoryAdmin {
    /// The owner pool and the PostgreSQL subkey
    /// (`issuer.subkey(Purpose::Postgres)`).
    ///
    /// # Errors
    ///
    /// [`Error::WrongKeyPurpose`] for a subkey of another purpose.
    pub fn new(owner_pool: &PgPool, key: &Subkey) -> Result<Self> {
        Ok(Self {
            pool: owner_pool.clone(),
            key: PostgresKey::from_subkey(key)?,
        })
    }

    /// Runs the embedded migrations (`migrations/*.sql`, recorded in
    /// [`MIGRATIONS_TABLE`]) and grants `app_role` its privileges. Refuses
    /// an `app_role` that is the owner itself, a superuser or `BYPASSRLS`.
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::UnsafeAppRole`], [`Error::Migration`], database errors.
    pub async fn migrate(&self, app_role: &str) -> Result<()> {
        migrate(&self.pool, app_role).await
    }

    /// Installs this admin's key so the database accepts contexts signed
    /// with it. Installing the same key again is a no-op; a rotated master
    /// key has a new id, and both stay valid until the old one is retired.
    ///
    /// # Errors
    ///
    /// [`Error::KeyIdConflict`] if different key material is installed
    /// under the same id.
    pub async fn install_key(&self) -> Result<()> {
        let same: bool = sqlx::query_scalar(
            "WITH ins AS ( \
                INSERT INTO tenant_sdk.context_keys (key_id, secret) VALUES ($1, $2) \
                ON CONFLICT (key_id) DO NOTHING RETURNING secret) \
             SELECT coalesce((SELECT secret = $2 FROM ins), \
                             (SELECT secret = $2 FROM tenant_sdk.context_keys WHERE key_id = $1))",
        )
        .bind(self.key.key_id())
        .bind(&self.key.secret()[..])
        .fetch_one(&self.pool)
        .await?;
        if !same {
            return Err(Error::KeyIdConflict(self.key.key_id().to_owned()));
        }
        sqlx::query("UPDATE tenant_sdk.context_keys SET retired_at = NULL WHERE key_id = $1")
            .bind(self.key.key_id())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Retires a key: contexts signed with it stop verifying at once.
    /// Returns whether the key was installed and active.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn retire_key(&self, key_id: &KeyId) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tenant_sdk.context_keys SET retired_at = now() \
             WHERE key_id = $1 AND retired_at IS NULL",
        )
        .bind(key_id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn begin_for(
        &self,
        ctx: &TenantContext,
        begin: &'static str,
    ) -> Result<Transaction<'static, Postgres>> {
        ctx.check()?;
        let mut tx = self.pool.begin_with(begin).await?;
        sqlx::query(BIND_SQL)
            .bind(self.key.sign_context(ctx).as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Deletes every row of `ctx`'s tenant from the memory tables, in one
    /// transaction, then verifies (after commit, in a new transaction) that
    /// none remain. The tenant comes from a verified context, never a raw id.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context; [`Error::ErasureIncomplete`]
    /// if rows remain.
    pub async fn erase_tenant(&self, ctx: &TenantContext) -> Result<ErasureReport> {
        async {
            let tenant = ctx.tenant();
            let mut tx = self.begin_for(ctx, "BEGIN").await?;
            let mut deleted = BTreeMap::new();
            for table in TABLES {
                let sql = format!("DELETE FROM {table} WHERE tenant_id = $1");
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                deleted.insert(table.to_owned(), done.rows_affected());
            }
            tx.commit().await?;

            let mut tx = self.begin_for(ctx, "BEGIN READ ONLY").await?;
            let remaining = count_rows(&mut tx, tenant).await?;
            tx.rollback().await?;
            if let Some((table, n)) = remaining.iter().find(|(_, n)| **n != 0) {
                let table = TABLES.iter().find(|t| *t == table).copied().unwrap_or("?");
                return Err(Error::ErasureIncomplete {
                    table,
                    remaining: *n,
                });
            }
            ctx.audit_allowed("memory.erase_tenant", "tenant_memory");
            Ok(ErasureReport {
                tenant,
                deleted,
                remaining,
            })
        }
        .instrument(ctx.span())
        .await
    }

    /// Every row of `ctx`'s tenant in the memory tables, in one consistent
    /// snapshot (`REPEATABLE READ READ ONLY`).
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context; database errors.
    pub async fn export_tenant(&self, ctx: &TenantContext) -> Result<TenantExport> {
        async {
            let tenant = ctx.tenant();
            let mut tx = self
                .begin_for(
                    ctx,
                    "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
                )
                .await?;
            let mut tables = BTreeMap::new();
            for table in TABLES {
                let sql = format!(
                    "SELECT to_jsonb(t) - 'tenant_id' AS row FROM {table} t \
                     WHERE tenant_id = $1 ORDER BY to_jsonb(t)::text"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_uuid())
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<Value, _>("row"))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                tables.insert(table.to_owned(), rows);
            }
            tx.rollback().await?;
            ctx.audit_allowed("memory.export_tenant", "tenant_memory");
            Ok(TenantExport { tenant, tables })
        }
        .instrument(ctx.span())
        .await
    }
}

async fn count_rows(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
        counts.insert(table.to_owned(), n);
    }
    Ok(counts)
}
