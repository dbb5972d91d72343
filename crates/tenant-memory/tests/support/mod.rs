//! Shared fixture: one PostgreSQL per test binary, one migrated database
//! per binary (fresh tenants per test), or a fresh database when a test
//! changes database-wide state.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tenant_core::{
    Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId, Purpose, Subkey, TenantContext,
    TenantId,
};
use tenant_memory::{MemoryAdmin, MemoryPlatform, MemoryStore, TenantExport};
use tenant_testkit::{TestDatabase, TestPostgres, APP_ROLE};

/// The master key all tests share, so one installed key serves them all.
const MASTER: [u8; 32] = [42; 32];

pub fn issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::from_bytes(
        KeyId::new("test-k1").unwrap(),
        MASTER,
    ))
}

pub struct Fixture {
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

    async fn on(db: TestDatabase, app_connections: u32) -> Fixture {
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
            .connect(db.app_url())
            .await
            .unwrap();
        let authority = issuer.authority();
        let admin = MemoryAdmin::new(&owner, &key, &authority).unwrap();
        let platform = MemoryPlatform::new(&app, &key, &authority).unwrap();
        Fixture {
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
