//! The memory store through PgBouncer in transaction pooling mode: more
//! clients than server connections, three tenants interleaved, so every
//! server connection serves every tenant in turn. Zero cross-tenant rows,
//! and nothing one client leaves on a server connection reaches the next.
//!
//! Without a `pgbouncer` executable the suite says it was skipped.

mod support;

use support::{announce, exercise};

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tenant_core::{Purpose, TenantContext};
use tenant_memory::{Error, MemoryAdmin, MemoryPlatform, MemoryStore};
use tenant_testkit::{TestPostgres, APP_ROLE};

struct Pooled {
    issuer: tenant_core::ContextIssuer,
    platform: MemoryPlatform,
    admin: MemoryAdmin,
    /// Plain clients of the bouncer (simple protocol only).
    raw: PgPool,
}

async fn pooled() -> Option<Pooled> {
    let bouncer = support::bouncer().await?;
    let db = tokio::task::spawn_blocking(|| TestPostgres::shared().fresh_database().unwrap())
        .await
        .unwrap();
    let issuer = support::issuer();
    let key = issuer.subkey(Purpose::Postgres);
    // Migrations run directly against PostgreSQL, as the owner.
    let owner = PgPool::connect(db.owner_url()).await.unwrap();
    let admin = MemoryAdmin::new(&owner, &key, &issuer.authority()).unwrap();
    admin.migrate(APP_ROLE).await.unwrap();
    admin.install_key().await.unwrap();
    // The application goes through the bouncer: 8 clients, 2 server
    // connections.
    let through = bouncer.database(&db);
    let app = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect(through.app_url())
        .await
        .unwrap();
    let raw = PgPoolOptions::new()
        .max_connections(4)
        .connect(through.app_url())
        .await
        .unwrap();
    let platform = MemoryPlatform::new(&app, &key, &issuer.authority())
        .unwrap()
        .behind_transaction_pooler();
    platform.verify().await.unwrap();
    announce(&format!(
        "tenant-memory PgBouncer suite RUNNING through PgBouncer {} (pool_mode = {:?}, {} server connections, 8 clients)",
        bouncer.version(),
        bouncer.options().pool_mode_value(),
        bouncer.options().pool_size_value()
    ));
    Some(Pooled {
        issuer,
        platform,
        admin,
        raw,
    })
}

impl Pooled {
    fn tenant(&self) -> TenantContext {
        support::new_tenant(&self.issuer)
    }

    fn store(&self, ctx: &TenantContext) -> MemoryStore {
        support::store_on(&self.platform, ctx)
    }

    /// What plain clients of the bouncer see, over enough queries to visit
    /// every server connection: backend pids, visible memory rows, a bound
    /// context, and session state.
    async fn what_clients_see(&self) -> Vec<(i32, i64, String, i64)> {
        let mut seen = Vec::new();
        for _ in 0..12 {
            let row = sqlx::raw_sql(
                "SELECT pg_backend_pid() AS pid, \
                   (SELECT count(*) FROM tenant_memory.threads) + (SELECT count(*) FROM tenant_memory.messages) \
                 + (SELECT count(*) FROM tenant_memory.kv) + (SELECT count(*) FROM tenant_memory.checkpoints) AS visible, \
                   coalesce(current_setting('tenant_sdk.ctx', true), '') \
                     || current_setting('application_name') AS settings, \
                   (SELECT count(*) FROM pg_cursors WHERE is_holdable) \
                 + (SELECT count(*) FROM pg_prepared_statements WHERE name = 'peek') \
                 + (SELECT count(*) FROM pg_listening_channels()) \
                 + (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS state",
            )
            .fetch_one(&self.raw)
            .await
            .unwrap();
            seen.push((
                row.get("pid"),
                row.get("visible"),
                row.get("settings"),
                row.get("state"),
            ));
        }
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_interleaved_through_pgbouncer_see_only_their_own_rows() {
    let Some(p) = pooled().await else { return };
    let tenants: Vec<_> = (0..3).map(|_| p.tenant()).collect();
    let tasks: Vec<_> = tenants
        .iter()
        .map(|ctx| tokio::spawn(exercise(p.store(ctx), ctx.tenant().to_string())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for ctx in &tenants {
        let export = p.admin.export_tenant(ctx).await.unwrap();
        assert_eq!(export.counts()["tenant_memory.messages"], 6);
        let tag = json!(ctx.tenant().to_string());
        assert!(export.tables["tenant_memory.kv"]
            .iter()
            .all(|row| row["value"] == tag));
    }
    let seen = p.what_clients_see().await;
    assert!(
        seen.iter()
            .all(|(_, visible, settings, state)| *visible == 0
                && settings.is_empty()
                && *state == 0),
        "{seen:?}"
    );
    announce("tenant-memory PgBouncer suite: interleaved tenants PASSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_leaves_on_a_server_connection_reaches_the_next() {
    let Some(p) = pooled().await else { return };
    let ctx = p.tenant();
    let store = p.store(&ctx);
    store.create_thread("chat", json!({})).await.unwrap();
    let before = p.admin.export_tenant(&ctx).await.unwrap();

    // Committed, rolled back, failed, dropped and cancelled transactions
    // that leave every kind of session state behind.
    for ending in ["commit", "rollback", "error", "drop", "cancel"] {
        let call = async {
            let mut tx = store.begin().await.unwrap();
            sqlx::raw_sql(
                "DECLARE held CURSOR WITH HOLD FOR SELECT * FROM tenant_memory.threads; \
                 PREPARE peek AS SELECT * FROM tenant_memory.kv; \
                 LISTEN tenant_events; \
                 SELECT pg_advisory_lock(4242); \
                 SET application_name = 'tenant-a-was-here'; \
                 SELECT set_config('tenant_sdk.ctx', current_setting('tenant_sdk.ctx'), false)",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            match ending {
                "commit" => tx.commit().await.unwrap(),
                "rollback" => tx.rollback().await.unwrap(),
                "error" => {
                    let err = sqlx::raw_sql("SELECT 1/0").execute(&mut *tx).await;
                    assert!(err.is_err());
                    tx.commit().await.unwrap();
                }
                "drop" => drop(tx),
                _ => {
                    sqlx::raw_sql("SELECT pg_sleep(30)")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
            }
        };
        if ending == "cancel" {
            assert!(tokio::time::timeout(Duration::from_millis(500), call)
                .await
                .is_err());
        } else {
            call.await;
        }
        // Give the bouncer and the server a moment to drop a closed client's
        // server connection.
        let mut seen = p.what_clients_see().await;
        for _ in 0..50 {
            if seen.iter().all(|(_, visible, settings, state)| {
                *visible == 0 && settings.is_empty() && *state == 0
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = p.what_clients_see().await;
        }
        assert!(
            seen.iter()
                .all(|(_, visible, settings, state)| *visible == 0
                    && settings.is_empty()
                    && *state == 0),
            "{ending}: {seen:?}"
        );
    }

    // A forged binding through the bouncer is refused as directly.
    let forged = support::sign_with(
        &tenant_core::MasterKey::from_bytes(tenant_core::KeyId::new("test-k1").unwrap(), [1; 32])
            .subkey(Purpose::Postgres),
        ctx.tenant(),
        support::now_ms() + 60_000,
        &[ctx.tenant().to_string()],
    );
    let mut tx = p.raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, true)")
        .persistent(false)
        .bind(&forged)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::raw_sql("SELECT * FROM tenant_memory.threads")
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::from)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BoundContextRejected(tenant_memory::ContextRejection::BadSignature)
        ),
        "{err:?}"
    );
    drop(tx);
    assert_eq!(p.admin.export_tenant(&ctx).await.unwrap(), before);
    announce("tenant-memory PgBouncer suite: pooled-connection attacks PASSED");
}

/// The attack suite of `attacks.rs`, verbatim, with the application pool
/// through PgBouncer.
mod attacks {
    async fn fixture() -> Option<crate::support::Fixture> {
        crate::support::Fixture::through_pgbouncer().await
    }

    include!("suites/attacks.rs");
}

/// The randomized isolation suite of `isolation.rs`, verbatim, with the
/// application pool through PgBouncer.
mod isolation {
    const ISOLATION_CASES: u32 = 8;

    async fn fixture() -> Option<crate::support::Fixture> {
        crate::support::Fixture::through_pgbouncer().await
    }

    include!("suites/isolation.rs");
}
