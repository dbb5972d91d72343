//! [`MemoryAdmin`]: the owner side: migrations, key installation and
//! rotation, per-tenant erasure and export.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgPool, Postgres, Row, Transaction};
use tenant_core::telemetry::traced;
use tenant_core::{KeyId, PlatformAuthority, Subkey, TenantContext, TenantId};

use crate::binding::{PostgresKey, Reach};
use crate::error::{Error, Result};
use crate::platform::check_key_authority;
use crate::store::{MemoryStore, BIND_SQL, WORKER_BIND_SQL};

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
/// (or will own) the memory tables — never the application pool — and the
/// platform's authority: erasure and export act only for contexts it
/// admits.
#[derive(Clone)]
pub struct MemoryAdmin {
    pool: PgPool,
    key: PostgresKey,
    authority: PlatformAuthority,
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

/// See [`MemoryAdmin::distribute`]. The verifier functions read the key
/// reference table from inside shard queries on the workers, which Citus
/// allows only with nested execution on (the table has a local copy on
/// every node, so the nested read is local).
const DISTRIBUTE_SQL: &str = r#"
ALTER FUNCTION tenant_sdk.current_tenant() SET citus.allow_nested_distributed_execution = on;
ALTER FUNCTION tenant_sdk.current_grants() SET citus.allow_nested_distributed_execution = on;
DO $distribute$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'tenant_sdk.context_keys'::regclass) THEN
        PERFORM create_reference_table('tenant_sdk.context_keys');
    END IF;
    FOREACH t IN ARRAY ARRAY['threads', 'messages', 'kv', 'checkpoints'] LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON tenant_memory.%I '
            'USING (tenant_id = tenant_sdk.current_tenant() '
            'AND scope_keys OPERATOR(pg_catalog.&&) tenant_sdk.current_grants()) '
            'WITH CHECK (scope_keys OPERATOR(pg_catalog.&&) tenant_sdk.current_grants())', t);
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                        WHERE logicalrelid = format('tenant_memory.%I', t)::regclass) THEN
            IF t = 'threads' THEN
                PERFORM create_distributed_table('tenant_memory.threads', 'tenant_id');
            ELSE
                PERFORM create_distributed_table(format('tenant_memory.%I', t), 'tenant_id',
                                                 colocate_with => 'tenant_memory.threads');
            END IF;
        END IF;
    END LOOP;
END
$distribute$;
"#;

/// The path migrations run under: every name in a view, default or check
/// constraint binds to a built-in at creation, whatever the owner's own
/// `search_path` holds (functions pin their own path).
const PINNED_PATH_SQL: &str = "SET search_path = pg_catalog, pg_temp";

async fn migrate(owner_pool: &PgPool, app_role: &str) -> Result<()> {
    let row = sqlx::query(
        "SELECT r.rolsuper, r.rolbypassrls, r.rolname = current_user AS is_self \
         FROM pg_roles r WHERE r.rolname = $1",
    )
    .persistent(false)
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
    let mut conn = owner_pool.acquire().await?;
    // The session's path is pinned for the migrations; the connection is
    // closed afterwards rather than returned with that setting.
    conn.close_on_drop();
    sqlx::raw_sql(PINNED_PATH_SQL).execute(&mut *conn).await?;
    migrator().run(&mut *conn).await?;
    sqlx::query("SELECT tenant_sdk.grant_app_role($1)")
        .persistent(false)
        .bind(app_role)
        .execute(&mut *conn)
        .await?;
    conn.detach().close().await?;
    tracing::info!(target: tenant_core::AUDIT_TARGET, action = "memory.migrate", app_role, "migrated");
    Ok(())
}

impl MemoryAdmin {
    /// The owner pool, the PostgreSQL subkey
    /// (`issuer.subkey(Purpose::Postgres)`) and the platform authority
    /// (`issuer.authority()`).
    ///
    /// # Errors
    ///
    /// [`Error::WrongKeyPurpose`] for a subkey of another purpose;
    /// [`Error::KeyNotFromAuthority`].
    pub fn new(owner_pool: &PgPool, key: &Subkey, authority: &PlatformAuthority) -> Result<Self> {
        let key = PostgresKey::from_subkey(key)?;
        check_key_authority(&key, authority)?;
        Ok(Self {
            pool: owner_pool.clone(),
            key,
            authority: authority.clone(),
        })
    }

    /// Runs the embedded migrations (`migrations/*.sql`, recorded in
    /// [`MIGRATIONS_TABLE`]) with `search_path` pinned to `pg_catalog`, and
    /// grants `app_role` its privileges (revoking `TEMPORARY` on the
    /// database). Refuses an `app_role` that is the owner itself, a
    /// superuser or `BYPASSRLS`. Idempotent.
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
        let (inner_prefix, outer_pad) = self.key.pads();
        let same: bool = sqlx::query_scalar(
            "WITH ins AS ( \
                INSERT INTO tenant_sdk.context_keys (key_id, inner_prefix, outer_pad) \
                VALUES ($1, $2, $3) \
                ON CONFLICT (key_id) DO NOTHING RETURNING inner_prefix, outer_pad) \
             SELECT coalesce((SELECT inner_prefix = $2 AND outer_pad = $3 FROM ins), \
                             (SELECT inner_prefix = $2 AND outer_pad = $3 \
                                FROM tenant_sdk.context_keys WHERE key_id = $1))",
        )
        .persistent(false)
        .bind(self.key.key_id())
        .bind(&inner_prefix[..])
        .bind(&outer_pad[..])
        .fetch_one(&self.pool)
        .await?;
        if !same {
            return Err(Error::KeyIdConflict(self.key.key_id().to_owned()));
        }
        sqlx::query("UPDATE tenant_sdk.context_keys SET retired_at = NULL WHERE key_id = $1")
            .persistent(false)
            .bind(self.key.key_id())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Distributes the memory tables on Citus (run on the coordinator, after
    /// [`migrate`](Self::migrate); idempotent): the key table becomes a
    /// reference table (a copy on every node, so workers verify locally);
    /// the policies switch to calling `tenant_sdk.current_tenant()` and
    /// `tenant_sdk.current_grants()` (Citus distributes no policy with a
    /// subquery; the functions reach the workers with the policies); and
    /// threads, messages, kv and checkpoints are distributed by `tenant_id`,
    /// co-located. Use the application pool with
    /// [`MemoryPlatform::on_citus`](crate::MemoryPlatform::on_citus).
    ///
    /// # Errors
    ///
    /// Database errors (e.g. the database is not a Citus coordinator).
    pub async fn distribute(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        sqlx::raw_sql(PINNED_PATH_SQL).execute(&mut *conn).await?;
        sqlx::raw_sql(DISTRIBUTE_SQL).execute(&mut *conn).await?;
        conn.detach().close().await?;
        tracing::info!(target: tenant_core::AUDIT_TARGET, action = "memory.distribute", "distributed");
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
        .persistent(false)
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
        self.authority.admit(ctx)?;
        let mut tx = self.pool.begin_with(begin).await?;
        let bound = self.key.sign_context(ctx, Reach::WholeTenant);
        sqlx::query(BIND_SQL)
            .persistent(false)
            .bind(bound.as_str())
            .execute(&mut *tx)
            .await?;
        // On Citus the binding must reach the worker of the tenant's shards
        // too; on a single node this is one more cheap statement.
        sqlx::query(WORKER_BIND_SQL)
            .persistent(false)
            .bind(bound.as_str())
            .bind(ctx.tenant().as_uuid())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Deletes every row of `ctx`'s tenant from the memory tables (every
    /// namespace, every principal's private threads), in one transaction,
    /// then verifies (after commit, in a new transaction) that none remain.
    /// The tenant comes from a context the platform's authority admits,
    /// never a raw id.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for a context the authority does not admit;
    /// [`Error::ErasureIncomplete`] if rows remain.
    pub async fn erase_tenant(&self, ctx: &TenantContext) -> Result<ErasureReport> {
        let span = memory_span!("memory.erase_tenant", ctx, "DELETE");
        traced(span, async {
            let tenant = ctx.tenant();
            let mut tx = self.begin_for(ctx, "BEGIN").await?;
            let mut deleted = BTreeMap::new();
            for table in TABLES {
                let sql = format!("DELETE FROM {table} WHERE tenant_id = $1");
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(false)
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
        })
        .await
    }

    /// Every row of `ctx`'s tenant in the memory tables (every namespace,
    /// every principal), in one consistent snapshot (`REPEATABLE READ READ
    /// ONLY`), without the `tenant_id` and `scope_keys` columns.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for a context the authority does not admit;
    /// database errors.
    pub async fn export_tenant(&self, ctx: &TenantContext) -> Result<TenantExport> {
        let span = memory_span!("memory.export_tenant", ctx, "SELECT");
        traced(span, async {
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
                    "SELECT to_jsonb(t) - 'tenant_id' - 'scope_keys' AS row FROM {table} t \
                     WHERE tenant_id = $1 ORDER BY to_jsonb(t)::text"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(false)
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
        })
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
            .persistent(false)
            .bind(tenant.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
        counts.insert(table.to_owned(), n);
    }
    Ok(counts)
}
