//! Shared fixture: one PostgreSQL per test binary, one migrated database
//! per binary (fresh tenants per test), or a fresh database when a test
//! changes database-wide state.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tenant_core::{
    Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId, Purpose, Subkey, TenantContext,
    TenantId,
};
use tenant_memory::{
    Expected, MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewCheckpoint, NewMessage,
    TenantExport,
};
use tenant_testkit::{TestCitus, TestDatabase, TestPgBouncer, TestPostgres, APP_ROLE};

/// The master key all tests share, so one installed key serves them all.
const MASTER: [u8; 32] = [42; 32];

pub fn issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::from_bytes(
        KeyId::new("test-k1").unwrap(),
        MASTER,
    ))
}

/// Where the application's statements go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// Straight to one PostgreSQL.
    Single,
    /// Through PgBouncer in transaction pooling mode.
    PgBouncer,
    /// To the coordinator of a Citus cluster.
    Citus,
}

pub struct Fixture {
    pub deployment: Deployment,
    pub db: TestDatabase,
    pub issuer: ContextIssuer,
    pub key: Subkey,
    pub owner: PgPool,
    pub app: PgPool,
    pub admin: MemoryAdmin,
    pub platform: MemoryPlatform,
}

static SHARED_DB: OnceLock<TestDatabase> = OnceLock::new();

/// Creates a database and migrates it, on a helper thread with its own
/// runtime (pools must not outlive the runtime that made them).
fn migrated_database() -> TestDatabase {
    let db = TestPostgres::shared()
        .fresh_database()
        .expect("fresh database");
    let url = db.owner_url().to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let owner = PgPool::connect(&url).await.unwrap();
            let issuer = issuer();
            let admin = MemoryAdmin::new(
                &owner,
                &issuer.subkey(Purpose::Postgres),
                &issuer.authority(),
            )
            .unwrap();
            admin.migrate(APP_ROLE).await.unwrap();
            admin.install_key().await.unwrap();
            owner.close().await;
        })
    })
    .join()
    .unwrap();
    db
}

/// The test kit's shared PgBouncer; `None`, announced once, without a
/// `pgbouncer` executable.
pub async fn bouncer() -> Option<&'static TestPgBouncer> {
    match tokio::task::spawn_blocking(|| TestPgBouncer::try_shared().map_err(|e| e.to_string()))
        .await
        .unwrap()
    {
        Ok(bouncer) => Some(bouncer),
        Err(e) => {
            announce_once(&format!(
                "tenant-memory PgBouncer suite SKIPPED: no PgBouncer ({e})"
            ));
            None
        }
    }
}

static CITUS_DB: OnceLock<Result<TestDatabase, String>> = OnceLock::new();

/// Creates a database on the test kit's Citus cluster, migrates it (twice:
/// migrations are idempotent on a cluster), installs the key and
/// distributes the schema.
fn distributed_database() -> Result<TestDatabase, String> {
    let db = TestCitus::try_shared()
        .map_err(|e| e.to_string())
        .and_then(|c| c.fresh_database().map_err(|e| e.to_string()))?;
    let (superuser, owner) = (db.superuser_url().to_owned(), db.owner_url().to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let superuser = PgPool::connect(&superuser).await.unwrap();
            citus_knows_the_roles(&superuser).await;
            superuser.close().await;
            let owner = PgPool::connect(&owner).await.unwrap();
            let issuer = issuer();
            let admin = MemoryAdmin::new(
                &owner,
                &issuer.subkey(Purpose::Postgres),
                &issuer.authority(),
            )
            .unwrap();
            for _ in 0..2 {
                admin.migrate(APP_ROLE).await.unwrap();
                admin.install_key().await.unwrap();
                admin.distribute().await.unwrap();
            }
            owner.close().await;
        })
    })
    .join()
    .unwrap();
    announce("tenant-memory Citus suite RUNNING on a coordinator and its workers");
    Ok(db)
}

/// The test kit creates the roles on every node before joining them, so
/// Citus does not know them as cluster-wide objects and would try to
/// re-create the owner on the workers (superuser only) when the owner's
/// migrations create its first function. Once, as the superuser, make a
/// role-owned object so Citus records the roles. (In a deployment, roles
/// are created on the coordinator, which does this.)
pub async fn citus_knows_the_roles(superuser: &PgPool) {
    sqlx::raw_sql(
        "BEGIN; \
         CREATE FUNCTION public.tenant_sdk_role_probe() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
         ALTER FUNCTION public.tenant_sdk_role_probe() OWNER TO tenant_owner; \
         COMMIT; \
         DROP FUNCTION public.tenant_sdk_role_probe();",
    )
    .execute(superuser)
    .await
    .unwrap();
}

impl Fixture {
    /// Pools on the binary's shared, migrated database.
    pub async fn shared() -> Fixture {
        let db = SHARED_DB.get_or_init(migrated_database).clone();
        Self::on(db, 4).await
    }

    /// Pools on a database of its own (for tests that retire keys or add
    /// tables).
    pub async fn isolated() -> Fixture {
        let db = tokio::task::spawn_blocking(migrated_database)
            .await
            .unwrap();
        Self::on(db, 4).await
    }

    /// Like [`Fixture::shared`] with an application pool of one connection,
    /// so the next acquire gets the connection the last operation used.
    pub async fn single_connection() -> Fixture {
        let db = SHARED_DB.get_or_init(migrated_database).clone();
        Self::on(db, 1).await
    }

    /// Like [`Fixture::shared`] with the application pool (8 clients)
    /// through PgBouncer in transaction pooling mode (2 server
    /// connections); `None`, announced, without a `pgbouncer` executable.
    pub async fn through_pgbouncer() -> Option<Fixture> {
        let bouncer = bouncer().await?;
        let db = SHARED_DB.get_or_init(migrated_database).clone();
        let through = bouncer.database(&db);
        let fx = Self::assemble(db, through.app_url(), 8, Deployment::PgBouncer).await;
        fx.platform.verify().await.unwrap();
        Some(fx)
    }

    /// Pools on the binary's shared database on the test kit's Citus
    /// cluster (migrated twice, key installed, distributed); `None`,
    /// announced, without the Citus extension.
    pub async fn on_citus() -> Option<Fixture> {
        let db = match tokio::task::spawn_blocking(|| {
            CITUS_DB.get_or_init(distributed_database).clone()
        })
        .await
        .unwrap()
        {
            Ok(db) => db,
            Err(e) => {
                announce_once(&format!(
                    "tenant-memory Citus suite SKIPPED: no Citus cluster ({e})"
                ));
                return None;
            }
        };
        let app_url = db.app_url().to_owned();
        let fx = Self::assemble(db, &app_url, 4, Deployment::Citus).await;
        fx.platform.verify().await.unwrap();
        Some(fx)
    }

    async fn on(db: TestDatabase, app_connections: u32) -> Fixture {
        let app_url = db.app_url().to_owned();
        Self::assemble(db, &app_url, app_connections, Deployment::Single).await
    }

    async fn assemble(
        db: TestDatabase,
        app_url: &str,
        app_connections: u32,
        deployment: Deployment,
    ) -> Fixture {
        let issuer = issuer();
        let key = issuer.subkey(Purpose::Postgres);
        let owner = PgPoolOptions::new()
            .max_connections(2)
            .connect(db.owner_url())
            .await
            .unwrap();
        let app = PgPoolOptions::new()
            .max_connections(app_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(app_url)
            .await
            .unwrap();
        let authority = issuer.authority();
        let admin = MemoryAdmin::new(&owner, &key, &authority).unwrap();
        let platform = MemoryPlatform::new(&app, &key, &authority).unwrap();
        let platform = match deployment {
            Deployment::Single => platform,
            Deployment::PgBouncer => platform.behind_transaction_pooler(),
            Deployment::Citus => platform.on_citus(),
        };
        Fixture {
            deployment,
            db,
            issuer,
            key,
            owner,
            app,
            admin,
            platform,
        }
    }

    /// A root context for a new random tenant with every namespace.
    pub fn tenant(&self) -> TenantContext {
        self.tenant_with(Capabilities::unrestricted())
    }

    pub fn tenant_with(&self, capabilities: Capabilities) -> TenantContext {
        self.issuer
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("alice@example.com").unwrap())
            .capabilities(capabilities)
            .issue()
            .unwrap()
    }

    /// A context of the same tenant as `ctx` for another principal.
    pub fn principal_of(&self, ctx: &TenantContext, principal: &str) -> TenantContext {
        self.issuer
            .context()
            .tenant(ctx.tenant())
            .principal(PrincipalId::new(principal).unwrap())
            .capabilities(Capabilities::unrestricted())
            .issue()
            .unwrap()
    }

    pub fn store(&self, ctx: &TenantContext) -> MemoryStore {
        MemoryStore::builder()
            .platform(&self.platform)
            .tenant(ctx)
            .build()
            .unwrap()
    }

    /// Everything `ctx`'s tenant has, read by the owner (for "nothing
    /// changed" assertions).
    pub async fn snapshot(&self, ctx: &TenantContext) -> TenantExport {
        self.admin.export_tenant(ctx).await.unwrap()
    }

    /// A connection straight from the application pool, no SDK involved.
    pub async fn raw_app(&self) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
        self.app.acquire().await.unwrap()
    }
}

/// The signed value `tenant_sdk.ctx` takes for `tenant` with `grants`,
/// computed independently of the crate (HMAC-SHA256 over the documented
/// message).
pub fn sign_with(key: &Subkey, tenant: TenantId, expires_at_ms: u64, grants: &[String]) -> String {
    use hmac::{Hmac, Mac};
    let key_id = key.key_id().as_str();
    let mut body = format!("v2 {tenant} {expires_at_ms:015} {key_id}");
    for grant in grants {
        body.push(' ');
        body.push_str(grant);
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.expose_bytes()).unwrap();
    mac.update(format!("tenant_sdk/pg-ctx/v2|{body}").as_bytes());
    format!("{} {body}", hex::encode(mac.finalize().into_bytes()))
}

/// Like [`sign_with`], granting every namespace's shared rows.
pub fn sign(key: &Subkey, tenant: TenantId, expires_at_ms: u64) -> String {
    sign_with(
        key,
        tenant,
        expires_at_ms,
        &[format!("{tenant}\u{1f}\u{1f}")],
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Written to the real stderr, past the test harness's capture, so CI logs
/// show whether a suite ran.
pub fn announce(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("\n*** {line} ***\n").as_bytes());
}

/// [`announce`], once per test binary and line.
pub fn announce_once(line: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|l| l == line) {
        said.push(line.to_owned());
        announce(line);
    }
}

/// Every API of one store, repeatedly, asserting it sees only rows tagged
/// `tag` (its tenant's): threads, messages, kv, checkpoints, the SQL tool
/// and a scoped transaction.
pub async fn exercise(store: MemoryStore, tag: String) {
    let thread = store
        .create_thread("chat", json!({ "tag": tag }))
        .await
        .unwrap();
    for i in 0..6 {
        store
            .append_message(
                thread.id,
                NewMessage::new(MessageRole::User, json!([tag, i])),
            )
            .await
            .unwrap();
        store
            .kv_put("prefs", &format!("k{i}"), json!(tag), Expected::Any)
            .await
            .unwrap();
        store
            .put_checkpoint(
                thread.id,
                "graph",
                NewCheckpoint::new(format!("c{i}"), json!(tag)),
            )
            .await
            .unwrap();
        let last = store.last_messages(thread.id, 100).await.unwrap();
        assert_eq!(last.len(), i + 1);
        assert!(last.iter().all(|m| m.content[0] == json!(tag)));
        let threads = store.list_threads(100).await.unwrap();
        assert_eq!(threads.len(), 1);
        assert_eq!(threads[0].metadata["tag"], json!(tag));
        let kv = store.kv_list("prefs", "", None, 100).await.unwrap();
        assert!(kv.iter().all(|e| e.value == json!(tag)));
        let counts = &store
            .read_only_sql(
                "SELECT (SELECT count(DISTINCT tenant_id) FROM tenant_memory.messages) AS tenants, \
                        (SELECT count(*) FROM tenant_memory.messages) AS messages",
            )
            .await
            .unwrap()[0];
        assert_eq!(counts["tenants"], json!(1));
        assert_eq!(counts["messages"], json!(i + 1));
        let mut tx = store.begin().await.unwrap();
        let foreign: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenant_memory.kv WHERE value <> to_jsonb($1::text)",
        )
        .persistent(false)
        .bind(&tag)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(foreign, 0);
        tx.commit().await.unwrap();
    }
}

/// A root context for a new random tenant (principal `alice`, every
/// capability) from `issuer`.
pub fn new_tenant(issuer: &ContextIssuer) -> TenantContext {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("alice").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap()
}

/// A store for `ctx` on `platform`.
pub fn store_on(platform: &MemoryPlatform, ctx: &TenantContext) -> MemoryStore {
    MemoryStore::builder()
        .platform(platform)
        .tenant(ctx)
        .build()
        .unwrap()
}
