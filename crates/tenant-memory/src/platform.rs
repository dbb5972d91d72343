//! [`MemoryPlatform`]: the platform-wide half of a memory handle.

use std::fmt;
use std::sync::Arc;

use sqlx::{PgPool, Row};
use tenant_core::{PlatformAuthority, Subkey};

use crate::binding::PostgresKey;
use crate::error::{Error, Result};
use crate::names;

/// What every [`MemoryStore`](crate::MemoryStore) of a platform shares: the
/// application-role pool, the PostgreSQL subkey that signs the context
/// bound to each transaction, the [`PlatformAuthority`] whose contexts it
/// admits, and the tables the agents' SQL tool may read. Configure it once;
/// make a store per request with
/// [`MemoryStore::builder`](crate::MemoryStore::builder).
///
/// The pool must connect as the application role (not the owner, not a
/// superuser, no `BYPASSRLS`); call [`verify`](MemoryPlatform::verify) at
/// start-up, and run [`doctor`](crate::doctor) in CI.
#[derive(Clone)]
pub struct MemoryPlatform {
    pub(crate) pool: PgPool,
    pub(crate) key: PostgresKey,
    pub(crate) authority: PlatformAuthority,
    pub(crate) sql_tables: Arc<[(String, String)]>,
    pub(crate) pooled: bool,
    pub(crate) distributed: bool,
}

/// The memory tables, which the SQL tool may always read.
pub(crate) const MEMORY_TABLES: [(&str, &str); 4] = [
    ("tenant_memory", "threads"),
    ("tenant_memory", "messages"),
    ("tenant_memory", "kv"),
    ("tenant_memory", "checkpoints"),
];

impl MemoryPlatform {
    /// The pool, `issuer.subkey(Purpose::Postgres)` and `issuer.authority()`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKeyPurpose`] for a subkey of another purpose;
    /// [`Error::KeyNotFromAuthority`] when the subkey's key id is not the
    /// authority's.
    pub fn new(pool: &PgPool, key: &Subkey, authority: &PlatformAuthority) -> Result<Self> {
        let key = PostgresKey::from_subkey(key)?;
        check_key_authority(&key, authority)?;
        Ok(Self {
            pool: pool.clone(),
            key,
            authority: authority.clone(),
            sql_tables: Arc::from(Vec::new()),
            pooled: false,
            distributed: false,
        })
    }

    /// For a database on Citus whose memory tables
    /// [`MemoryAdmin::distribute`](crate::MemoryAdmin::distribute) has
    /// distributed: every transaction binds the signed context on the worker
    /// holding the tenant's shards as well (as a bind parameter, in a router
    /// statement), and single-statement writes run in such a transaction.
    /// Single-statement reads keep their in-statement binding, which Citus
    /// pushes down to the worker with the query.
    pub fn on_citus(mut self) -> Self {
        self.distributed = true;
        self
    }

    /// For a pool that connects through a pooler in transaction mode
    /// (PgBouncer `pool_mode = transaction`, which hands each transaction to
    /// any server connection): every operation runs in an explicit
    /// transaction with unnamed statements (PgBouncer before 1.21 cannot
    /// carry named prepared statements between server connections), and
    /// connections that ran caller SQL are reset inside their transaction.
    /// Costs a `BEGIN` and a `COMMIT` per single-statement operation.
    pub fn behind_transaction_pooler(mut self) -> Self {
        self.pooled = true;
        self
    }

    /// Lets the agents' SQL tool read `schema.table` too (beside the memory
    /// tables). Register only tables under row-level security keyed on the
    /// signed context ([`protect_table_in_schema`](crate::protect_table_in_schema)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty, over-long or control-character name.
    pub fn with_sql_table(mut self, schema: &str, table: &str) -> Result<Self> {
        names::validate("schema", schema)?;
        names::validate("table", table)?;
        let mut tables = self.sql_tables.to_vec();
        tables.push((schema.to_owned(), table.to_owned()));
        self.sql_tables = Arc::from(tables);
        Ok(self)
    }

    /// The application-role pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The authority whose contexts this platform admits.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.authority
    }

    /// Whether the SQL tool may read `schema.table`.
    pub(crate) fn sql_table_allowed(&self, schema: &str, table: &str) -> bool {
        MEMORY_TABLES
            .iter()
            .any(|(s, t)| *s == schema && *t == table)
            || self
                .sql_tables
                .iter()
                .any(|(s, t)| s == schema && t == table)
    }

    /// Refuses a pool that would defeat row-level security: connected as a
    /// superuser, a role with `BYPASSRLS`, the owner of (or a member of the
    /// owner of) the memory tables, or a role that can read the context
    /// keys. Call it at start-up.
    ///
    /// # Errors
    ///
    /// [`Error::UnsafeAppRole`] naming the reason; database errors.
    pub async fn verify(&self) -> Result<()> {
        // In a transaction: sqlx sends an unnamed statement's parse and
        // its execution in separate round trips, and a transaction pooler
        // may hand each to another server connection outside one.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(VERIFY_SQL)
            .persistent(false)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let role: String = row.try_get("role")?;
        let unsafe_role = |reason| Error::UnsafeAppRole {
            role: role.clone(),
            reason,
        };
        if row.try_get::<bool, _>("rolsuper")? {
            return Err(unsafe_role(
                "it is a superuser, which bypasses row-level security",
            ));
        }
        if row.try_get::<bool, _>("rolbypassrls")? {
            return Err(unsafe_role("it has BYPASSRLS"));
        }
        if row.try_get::<Option<bool>, _>("owner")? != Some(false) {
            return Err(unsafe_role(
                "it owns the memory tables (or they are missing): connect as the application role",
            ));
        }
        if row.try_get::<Option<bool>, _>("keys")? != Some(false) {
            return Err(unsafe_role("it can read the context verification keys"));
        }
        Ok(())
    }
}

const VERIFY_SQL: &str = "SELECT current_user::text AS role, r.rolsuper, r.rolbypassrls, \
        (SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c \
          WHERE c.oid = to_regclass('tenant_memory.threads')) AS owner, \
        CASE WHEN to_regclass('tenant_sdk.context_keys') IS NULL THEN NULL \
             ELSE has_table_privilege('tenant_sdk.context_keys', 'SELECT') \
               OR has_table_privilege('tenant_sdk.context_keys', 'UPDATE') \
               OR pg_has_role(current_user, (SELECT c.relowner FROM pg_class c \
                    WHERE c.oid = to_regclass('tenant_sdk.context_keys')), 'USAGE') END AS keys \
     FROM pg_roles r WHERE r.rolname = current_user";

/// A subkey and an authority configured together must come from the same
/// issuer's key.
pub(crate) fn check_key_authority(key: &PostgresKey, authority: &PlatformAuthority) -> Result<()> {
    if key.key_id() == authority.key_id().as_str() {
        Ok(())
    } else {
        Err(Error::KeyNotFromAuthority {
            key_id: key.key_id().to_owned(),
            authority_key_id: authority.key_id().as_str().to_owned(),
        })
    }
}

impl fmt::Debug for MemoryPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPlatform")
            .field("key", &self.key)
            .field("authority", &self.authority)
            .field("sql_tables", &self.sql_tables)
            .finish_non_exhaustive()
    }
}
