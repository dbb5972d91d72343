//! The memory store on a Citus cluster (a coordinator and two workers):
//! tables distributed by `tenant_id` and co-located, the key table a
//! reference table, the signed binding verified on the workers. Three
//! tenants interleaved through every API and agent SQL, attacks, erasure
//! and export, and a tenant isolated to its own shard.
//!
//! Without the Citus extension the suite says it was skipped.

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use support::{announce, exercise};
use tenant_core::{Purpose, TenantContext};
use tenant_memory::{
    ContextRejection, Error, MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewMessage,
};
use tenant_testkit::{TestCitus, APP_ROLE};

struct Cluster {
    issuer: tenant_core::ContextIssuer,
    key: tenant_core::Subkey,
    platform: MemoryPlatform,
    admin: MemoryAdmin,
    superuser: PgPool,
    app: PgPool,
}

async fn cluster() -> Option<Cluster> {
    let db = match tokio::task::spawn_blocking(|| {
        TestCitus::try_shared()
            .map_err(|e| e.to_string())
            .and_then(|c| c.fresh_database().map_err(|e| e.to_string()))
    })
    .await
    .unwrap()
    {
        Ok(db) => db,
        Err(e) => {
            announce(&format!(
                "tenant-memory Citus suite SKIPPED: no Citus cluster ({e})"
            ));
            return None;
        }
    };
    let superuser = PgPool::connect(db.superuser_url()).await.unwrap();
    support::citus_knows_the_roles(&superuser).await;
    let issuer = support::issuer();
    let key = issuer.subkey(Purpose::Postgres);
    let owner = PgPool::connect(db.owner_url()).await.unwrap();
    let admin = MemoryAdmin::new(&owner, &key, &issuer.authority()).unwrap();
    // Idempotent on a cluster: twice each.
    for _ in 0..2 {
        admin.migrate(APP_ROLE).await.unwrap();
        admin.install_key().await.unwrap();
        admin.distribute().await.unwrap();
    }
    let app = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(60))
        .connect(db.app_url())
        .await
        .unwrap();
    let platform = MemoryPlatform::new(&app, &key, &issuer.authority())
        .unwrap()
        .on_citus();
    platform.verify().await.unwrap();
    let shards: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT nodeport) FROM pg_dist_shard_placement p \
         JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = 'tenant_memory.messages'::regclass",
    )
    .fetch_one(&superuser)
    .await
    .unwrap();
    announce(&format!(
        "tenant-memory Citus suite RUNNING on a coordinator and {shards} worker(s) holding the memory shards"
    ));
    Some(Cluster {
        issuer,
        key,
        platform,
        admin,
        superuser,
        app,
    })
}

impl Cluster {
    fn tenant(&self) -> TenantContext {
        support::new_tenant(&self.issuer)
    }

    fn store(&self, ctx: &TenantContext) -> MemoryStore {
        support::store_on(&self.platform, ctx)
    }

    async fn check_isolation(&self, tenants: &[TenantContext]) {
        for ctx in tenants {
            let tag = json!(ctx.tenant().to_string());
            let export = self.admin.export_tenant(ctx).await.unwrap();
            assert_eq!(export.counts()["tenant_memory.messages"], 6);
            assert!(export.tables["tenant_memory.kv"]
                .iter()
                .all(|row| row["value"] == tag));
            // A router read returns the tenant's rows, not silently nothing.
            let store = self.store(ctx);
            let threads = store.list_threads(10).await.unwrap();
            assert_eq!(threads.len(), 1);
            assert_eq!(threads[0].metadata["tag"], tag);
            let last = store.last_messages(threads[0].id, 100).await.unwrap();
            assert_eq!(last.len(), 6);
            assert!(last.iter().all(|m| m.content[0] == tag));
            let counts = &store
                .read_only_sql(
                    "SELECT (SELECT count(*) FROM tenant_memory.messages) AS messages, \
                            (SELECT count(DISTINCT tenant_id) FROM tenant_memory.kv) AS tenants",
                )
                .await
                .unwrap()[0];
            assert_eq!(counts["messages"], json!(6));
            assert_eq!(counts["tenants"], json!(1));
            // Another tenant's thread by id: nothing.
            for other in tenants.iter().filter(|o| o.tenant() != ctx.tenant()) {
                let theirs = self.store(other).list_threads(1).await.unwrap()[0].id;
                assert_eq!(store.thread(theirs).await.unwrap(), None);
                assert!(store.last_messages(theirs, 10).await.unwrap().is_empty());
                assert!(matches!(
                    store
                        .append_message(theirs, NewMessage::new(MessageRole::User, json!("x")))
                        .await,
                    Err(Error::ThreadNotFound)
                ));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_isolates_tenants_on_a_citus_cluster() {
    let Some(c) = cluster().await else { return };
    let tenants: Vec<_> = (0..3).map(|_| c.tenant()).collect();
    let tasks: Vec<_> = tenants
        .iter()
        .map(|ctx| tokio::spawn(exercise(c.store(ctx), ctx.tenant().to_string())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    c.check_isolation(&tenants).await;
    let before: Vec<_> = {
        let mut all = Vec::new();
        for ctx in &tenants {
            all.push(c.admin.export_tenant(ctx).await.unwrap());
        }
        all
    };

    // Without a binding, the application role sees nothing on any shard.
    let visible: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM tenant_memory.threads) + (SELECT count(*) FROM tenant_memory.messages)",
    )
    .fetch_one(&c.app)
    .await
    .unwrap();
    assert_eq!(visible, 0);

    // A forged binding is refused on the worker that holds the shard.
    let victim = &tenants[0];
    let forged = support::sign_with(
        &tenant_core::MasterKey::from_bytes(tenant_core::KeyId::new("test-k1").unwrap(), [1; 32])
            .subkey(Purpose::Postgres),
        victim.tenant(),
        support::now_ms() + 60_000,
        &[victim.tenant().to_string()],
    );
    let err = sqlx::query(
        "SELECT t.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS b OFFSET 0) AS s \
         CROSS JOIN LATERAL (SELECT * FROM tenant_memory.threads WHERE tenant_id = $2 AND s.b IS NOT NULL OFFSET 0) AS t",
    )
    .bind(&forged)
    .bind(victim.tenant().as_uuid())
    .fetch_all(&c.app)
    .await
    .map_err(Error::from)
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BoundContextRejected(ContextRejection::BadSignature)
        ),
        "{err:?}"
    );
    // A genuine binding of one tenant reads nothing of another's shard.
    let genuine = support::sign_with(
        &c.key,
        tenants[1].tenant(),
        support::now_ms() + 60_000,
        &[tenants[1].tenant().to_string()],
    );
    let rows = sqlx::query(
        "SELECT t.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS b OFFSET 0) AS s \
         CROSS JOIN LATERAL (SELECT * FROM tenant_memory.messages WHERE tenant_id = $2 AND s.b IS NOT NULL OFFSET 0) AS t",
    )
    .bind(&genuine)
    .bind(victim.tenant().as_uuid())
    .fetch_all(&c.app)
    .await
    .unwrap();
    assert!(rows.is_empty());
    // Agent SQL cannot reach Citus' cluster-wide views either.
    let err = c
        .store(victim)
        .read_only_sql("SELECT * FROM citus_stat_activity")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SqlObjectNotAllowed { .. }), "{err:?}");
    for (ctx, export) in tenants.iter().zip(&before) {
        assert_eq!(&c.admin.export_tenant(ctx).await.unwrap(), export);
    }

    // A Silo tenant on a shard of its own: everything still holds.
    let shard: i64 = sqlx::query_scalar(
        "SELECT isolate_tenant_to_new_shard('tenant_memory.threads', $1::uuid, cascade_option => 'CASCADE', shard_transfer_mode => 'block_writes')",
    )
    .bind(victim.tenant().as_uuid())
    .fetch_one(&c.superuser)
    .await
    .unwrap();
    assert!(shard > 0);
    c.check_isolation(&tenants).await;

    // Erasure removes one tenant, on its own shard, and nothing else.
    let report = c.admin.erase_tenant(victim).await.unwrap();
    assert_eq!(report.deleted["tenant_memory.messages"], 6);
    assert!(report.remaining.values().all(|n| *n == 0));
    for (ctx, export) in tenants.iter().zip(&before).skip(1) {
        assert_eq!(&c.admin.export_tenant(ctx).await.unwrap(), export);
    }
    // A thread deleted by its own tenant: gone with its messages, routed to
    // the tenant's shard; the third tenant keeps everything.
    let owner = c.store(&tenants[1]);
    let thread = owner.list_threads(1).await.unwrap()[0].id;
    owner.delete_thread(thread).await.unwrap();
    assert_eq!(owner.thread(thread).await.unwrap(), None);
    assert!(owner.last_messages(thread, 10).await.unwrap().is_empty());
    assert_eq!(
        &c.admin.export_tenant(&tenants[2]).await.unwrap(),
        &before[2]
    );
    announce("tenant-memory Citus suite: isolation, attacks, Silo shard, erase/export PASSED");
}

/// The attack suite of `attacks.rs`, verbatim, on the cluster.
mod attacks {
    async fn fixture() -> Option<crate::support::Fixture> {
        crate::support::Fixture::on_citus().await
    }

    include!("suites/attacks.rs");
}

/// The randomized isolation suite of `isolation.rs`, verbatim, on the
/// cluster.
mod isolation {
    const ISOLATION_CASES: u32 = 6;

    async fn fixture() -> Option<crate::support::Fixture> {
        crate::support::Fixture::on_citus().await
    }

    include!("suites/isolation.rs");
}
