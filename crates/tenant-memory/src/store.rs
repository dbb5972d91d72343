//! [`MemoryStore`]: a tenant's agent memory, and its typestate builder.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tenant_core::telemetry::traced;
use tenant_core::{PlatformAuthority, Scoped, Subkey, TenantContext, WantsTenant};

use crate::binding::{BoundContext, PostgresKey, Reach};
use crate::error::{Error, Result};
use crate::names;
use crate::platform::{check_key_authority, MemoryPlatform};

/// Binds the signed context for the rest of the current transaction.
pub(crate) const BIND_SQL: &str = "SELECT set_config('tenant_sdk.ctx', $1, true)";

/// On Citus, binds the signed context on the worker holding the tenant's
/// shards too: a router statement on the tenant's shard group carries the
/// binding as a bind parameter to that worker, where it stays for the rest
/// of the distributed transaction (which keeps one connection per worker).
/// `set_config` on the coordinator alone never reaches the workers.
pub(crate) const WORKER_BIND_SQL: &str = "SELECT 1 \
     FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound, \
                  set_config('citus.max_adaptive_executor_pool_size', '1', true) AS one OFFSET 0) AS b \
     CROSS JOIN LATERAL (SELECT 1 FROM tenant_memory.threads \
                          WHERE tenant_id = $2 AND b.bound IS NOT NULL AND b.one IS NOT NULL LIMIT 1) AS t";

/// Builds a [`MemoryStore`]. The steps:
///
/// 1. the platform resources, in any order and in any state: either
///    [`platform`](MemoryStoreBuilder::platform), or
///    [`pool`](MemoryStoreBuilder::pool) (application role),
///    [`key`](MemoryStoreBuilder::key) (`issuer.subkey(Purpose::Postgres)`)
///    and [`authority`](MemoryStoreBuilder::authority) (`issuer.authority()`);
/// 2. [`tenant`](MemoryStoreBuilder::tenant) with a `&TenantContext`
///    (required: without it there is no `build()`);
/// 3. [`build`](MemoryStoreBuilder::build), which admits the context only if
///    the platform's authority issued it and it is valid now.
///
/// ```compile_fail
/// # fn f(pool: &sqlx::PgPool, key: &tenant_core::Subkey) {
/// // No tenant, no build():
/// let store = tenant_memory::MemoryStore::builder().pool(pool).key(key).build();
/// # }
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct MemoryStoreBuilder<State> {
    state: State,
    pool: Option<PgPool>,
    key: Option<Result<PostgresKey>>,
    authority: Option<PlatformAuthority>,
    sql_tables: Option<Arc<[(String, String)]>>,
    pooled: bool,
    distributed: bool,
}

impl<S> MemoryStoreBuilder<S> {
    /// The application-role pool.
    pub fn pool(mut self, pool: &PgPool) -> Self {
        self.pool = Some(pool.clone());
        self
    }

    /// The PostgreSQL subkey (`issuer.subkey(Purpose::Postgres)`); a key of
    /// another purpose makes `build()` fail.
    pub fn key(mut self, key: &Subkey) -> Self {
        self.key = Some(PostgresKey::from_subkey(key));
        self
    }

    /// The authority whose contexts the store admits (`issuer.authority()`).
    pub fn authority(mut self, authority: &PlatformAuthority) -> Self {
        self.authority = Some(authority.clone());
        self
    }

    /// Pool, key, authority and SQL-tool tables from a shared
    /// [`MemoryPlatform`].
    pub fn platform(mut self, platform: &MemoryPlatform) -> Self {
        self.pool = Some(platform.pool.clone());
        self.key = Some(Ok(platform.key.clone()));
        self.authority = Some(platform.authority.clone());
        self.sql_tables = Some(platform.sql_tables.clone());
        self.pooled = platform.pooled;
        self.distributed = platform.distributed;
        self
    }
}

impl MemoryStoreBuilder<WantsTenant> {
    /// The tenant context the store acts for.
    pub fn tenant(self, ctx: &TenantContext) -> MemoryStoreBuilder<Scoped> {
        MemoryStoreBuilder {
            state: Scoped::new(ctx),
            pool: self.pool,
            key: self.key,
            authority: self.authority,
            sql_tables: self.sql_tables,
            pooled: self.pooled,
            distributed: self.distributed,
        }
    }
}

impl MemoryStoreBuilder<Scoped> {
    /// Admits the context and returns the store.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] with `ForeignAuthority` for a context another
    /// issuer made (even one with the same key id), or if the context is
    /// invalid, expired or revoked; [`Error::MissingConfiguration`] without a
    /// pool, key or authority; [`Error::WrongKeyPurpose`] for a key that is
    /// not the PostgreSQL subkey; [`Error::KeyNotFromAuthority`].
    pub fn build(self) -> Result<MemoryStore> {
        let pool = self.pool.ok_or(Error::MissingConfiguration("pool"))?;
        let key = self.key.ok_or(Error::MissingConfiguration("key"))??;
        let authority = self
            .authority
            .ok_or(Error::MissingConfiguration("authority"))?;
        check_key_authority(&key, &authority)?;
        let ctx = self.state.into_admitted_context(&authority)?;
        let platform = MemoryPlatform {
            pool,
            key,
            authority,
            sql_tables: self.sql_tables.unwrap_or_else(|| Arc::from(Vec::new())),
            pooled: self.pooled,
            distributed: self.distributed,
        };
        Ok(MemoryStore::new(platform, ctx))
    }
}

/// One tenant's agent memory: threads, messages, key-value state,
/// checkpoints, scoped transactions and a read-only SQL tool, all in
/// PostgreSQL under row-level security keyed on a signed context.
///
/// Made only by [`MemoryStore::builder`] from a `&TenantContext`; no method
/// takes a tenant id. Every operation verifies the context
/// ([`TenantContext::check`]), runs inside its span, and binds the signed
/// context to its own transaction only, so a pooled connection never
/// carries a tenant into its next use. Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    pub(crate) platform: MemoryPlatform,
    pub(crate) ctx: TenantContext,
    pub(crate) bound: BoundContext,
}

impl MemoryStore {
    /// Starts a builder (see [`MemoryStoreBuilder`] for the steps).
    pub fn builder() -> MemoryStoreBuilder<WantsTenant> {
        MemoryStoreBuilder {
            state: WantsTenant,
            pool: None,
            key: None,
            authority: None,
            sql_tables: None,
            pooled: false,
            distributed: false,
        }
    }

    fn new(platform: MemoryPlatform, ctx: TenantContext) -> Self {
        let bound = platform.key.sign_context(&ctx, Reach::Context(&ctx));
        Self {
            platform,
            ctx,
            bound,
        }
    }

    /// Refuses a pool that would defeat row-level security (see
    /// [`MemoryPlatform::verify`]): superuser, `BYPASSRLS`, table owner, or
    /// able to read the context keys. Call it at start-up.
    ///
    /// # Errors
    ///
    /// [`Error::UnsafeAppRole`]; database errors.
    pub async fn verify(&self) -> Result<()> {
        self.platform.verify().await
    }

    /// The context this store acts for.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// A store for a sub-agent: `child` must be issued under the platform's
    /// authority and descend from this store's context
    /// ([`TenantContext::check_descendant`]); the new store sees the same
    /// tenant's data, limited (by the database too) to the child's memory
    /// namespaces.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] with `ForeignAuthority`, `NotDescendant`, or the
    /// child's own verification error.
    pub fn delegate(&self, child: &TenantContext) -> Result<MemoryStore> {
        let span = tenant_core::operation_span!("memory.delegate", &self.ctx);
        let _entered = span.enter();
        self.platform.authority.admit(&self.ctx)?;
        let admitted = self
            .platform
            .authority
            .admit(child)
            .and_then(|()| self.ctx.check_descendant(child));
        if let Err(e) = admitted {
            self.ctx.deny("memory.delegate", child.agent().as_str(), &e);
            return Err(e.into());
        }
        self.ctx
            .audit_allowed("memory.delegate", child.agent().as_str());
        Ok(MemoryStore::new(self.platform.clone(), child.clone()))
    }

    /// Runs one operation in its span (made with [`memory_span!`]), after
    /// admitting the context again (authority, proof, expiry, revocation);
    /// records the outcome on the span.
    pub(crate) async fn run<T, F>(&self, span: tracing::Span, op: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        traced(span, async {
            self.platform.authority.admit(&self.ctx)?;
            op.await
        })
        .await
    }

    /// The signed value bound by every statement of this store.
    pub(crate) fn bound(&self) -> &str {
        self.bound.as_str()
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.platform.pool
    }

    /// Whether statements may be named and cached (not behind a
    /// transaction pooler).
    pub(crate) fn prepared(&self) -> bool {
        !self.platform.pooled
    }

    /// An executor for one single-statement operation: a pooled connection,
    /// or, behind a transaction pooler, an explicit transaction (so the
    /// unnamed statement's parse and execute reach the same server
    /// connection). Call [`Exec::finish`] after the statement.
    pub(crate) async fn exec(&self) -> Result<Exec> {
        if self.platform.pooled {
            Ok(Exec::Transaction(self.pool().begin().await?))
        } else {
            Ok(Exec::Connection(self.pool().acquire().await?))
        }
    }

    /// An executor for one single-statement write: like [`exec`](Self::exec),
    /// but on Citus a transaction bound on the worker too (an `INSERT`'s
    /// in-statement binding is evaluated on the coordinator only).
    pub(crate) async fn exec_write(&self) -> Result<Exec> {
        if self.platform.distributed {
            Ok(Exec::Transaction(self.begin_bound().await?))
        } else {
            self.exec().await
        }
    }

    /// A transaction with the signed context bound to it.
    pub(crate) async fn begin_bound(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool().begin().await?;
        self.bind_on(&mut tx).await?;
        Ok(tx)
    }

    /// Binds the signed context for the rest of the transaction open on
    /// `conn` (on Citus, on the worker too).
    pub(crate) async fn bind_on(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query(BIND_SQL)
            .persistent(self.prepared())
            .bind(self.bound())
            .execute(&mut *conn)
            .await?;
        if self.platform.distributed {
            sqlx::query(WORKER_BIND_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Checks a namespace is well formed and allowed by the capabilities.
    pub(crate) fn allow_namespace(&self, action: &str, namespace: &str) -> Result<()> {
        names::validate("namespace", namespace)?;
        if self
            .ctx
            .capabilities()
            .memory_namespaces()
            .allows(namespace)
        {
            Ok(())
        } else {
            let error = Error::NamespaceNotAllowed {
                namespace: namespace.to_owned(),
            };
            self.ctx.deny(action, namespace, &error);
            Err(error)
        }
    }
}

/// See [`MemoryStore::exec`].
pub(crate) enum Exec {
    Connection(PoolConnection<Postgres>),
    Transaction(Transaction<'static, Postgres>),
}

impl Exec {
    pub(crate) async fn finish(self) -> Result<()> {
        match self {
            Exec::Connection(_) => Ok(()),
            Exec::Transaction(tx) => Ok(tx.commit().await?),
        }
    }
}

impl std::ops::Deref for Exec {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Exec::Connection(conn) => conn,
            Exec::Transaction(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for Exec {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Exec::Connection(conn) => conn,
            Exec::Transaction(tx) => tx,
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// What [`memory_span!`] reads the context from.
pub(crate) trait HasContext {
    fn context_ref(&self) -> &TenantContext;
}

impl HasContext for MemoryStore {
    fn context_ref(&self) -> &TenantContext {
        &self.ctx
    }
}

impl HasContext for TenantContext {
    fn context_ref(&self) -> &TenantContext {
        self
    }
}

impl<T: HasContext + ?Sized> HasContext for &T {
    fn context_ref(&self) -> &TenantContext {
        (**self).context_ref()
    }
}

pub(crate) fn context_of(holder: &impl HasContext) -> &TenantContext {
    holder.context_ref()
}
