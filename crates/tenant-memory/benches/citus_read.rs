//! Scoped read on Citus: the last 20 messages of a thread through
//! `MemoryStore::last_messages` on distributed, policy-protected tables
//! (the signed binding verified on the worker) versus the same query
//! through raw sqlx on a distributed copy of the table without row-level
//! security, 8 concurrent clients, same run, ratio of p50s over interleaved
//! rounds. Skipped (with a message) without the Citus extension.
//!
//! `cargo bench -p tenant-memory --bench citus_read`

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tenant_core::{Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId, Purpose, TenantId};
use tenant_memory::{MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewMessage, ThreadId};

const CLIENTS: usize = 8;
const ROUNDS: usize = 400;

const RAW_SQL: &str = "SELECT m.* FROM ( \
        SELECT seq, role, content, \
               (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM public.plain_messages WHERE tenant_id = $1 AND thread_id = $2 \
        ORDER BY seq DESC LIMIT $3) AS m \
     ORDER BY m.seq";

struct Setup {
    store: MemoryStore,
    raw: PgPool,
    tenant: TenantId,
    thread: ThreadId,
}

async fn setup(db: tenant_testkit::TestDatabase) -> Setup {
    let superuser = PgPool::connect(db.superuser_url()).await.unwrap();
    // Let Citus record the test kit's per-node roles (see tests/citus.rs).
    sqlx::raw_sql(
        "BEGIN; \
         CREATE FUNCTION public.tenant_sdk_role_probe() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
         ALTER FUNCTION public.tenant_sdk_role_probe() OWNER TO tenant_owner; \
         COMMIT; DROP FUNCTION public.tenant_sdk_role_probe();",
    )
    .execute(&superuser)
    .await
    .unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let key = issuer.subkey(Purpose::Postgres);
    let owner = PgPool::connect(db.owner_url()).await.unwrap();
    let admin = MemoryAdmin::new(&owner, &key, &issuer.authority()).unwrap();
    admin.migrate(tenant_testkit::APP_ROLE).await.unwrap();
    admin.install_key().await.unwrap();
    admin.distribute().await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.plain_messages (LIKE tenant_memory.messages INCLUDING ALL EXCLUDING GENERATED);
         ALTER TABLE public.plain_messages DROP COLUMN scope_keys;
         SELECT create_distributed_table('public.plain_messages', 'tenant_id');
         GRANT SELECT ON public.plain_messages TO tenant_app;",
    )
    .execute(&owner)
    .await
    .unwrap();
    let app = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(db.app_url())
        .await
        .unwrap();
    let raw = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(db.app_url())
        .await
        .unwrap();
    let platform = MemoryPlatform::new(&app, &key, &issuer.authority())
        .unwrap()
        .on_citus();
    let mut measured = None;
    for t in 0..10 {
        let ctx = issuer
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("bench").unwrap())
            .capabilities(Capabilities::unrestricted())
            .issue()
            .unwrap();
        let store = MemoryStore::builder()
            .platform(&platform)
            .tenant(&ctx)
            .build()
            .unwrap();
        let thread = store.create_thread("chat", json!({})).await.unwrap();
        let batch = (0..100)
            .map(|i| NewMessage::new(MessageRole::User, json!({ "text": format!("message {i}") })))
            .collect();
        store.append_messages(thread.id, batch).await.unwrap();
        if t == 0 {
            measured = Some((store, ctx.tenant(), thread.id));
        }
    }
    sqlx::raw_sql(
        "INSERT INTO public.plain_messages (tenant_id, thread_id, seq, namespace, audience, role, content, created_at) \
         SELECT tenant_id, thread_id, seq, namespace, audience, role, content, created_at FROM tenant_memory.messages",
    )
    .execute(&superuser)
    .await
    .unwrap();
    let (store, tenant, thread) = measured.unwrap();
    Setup {
        store,
        raw,
        tenant,
        thread,
    }
}

async fn reads(s: Arc<Setup>, scoped: bool) {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                if scoped {
                    s.store.last_messages(s.thread, 20).await.unwrap().len()
                } else {
                    sqlx::query(RAW_SQL)
                        .bind(s.tenant.as_uuid())
                        .bind(s.thread.as_uuid())
                        .bind(20_i64)
                        .fetch_all(&s.raw)
                        .await
                        .unwrap()
                        .len()
                }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 20);
    }
}

fn main() {
    let citus = match tenant_testkit::TestCitus::try_shared() {
        Ok(citus) => citus,
        Err(e) => {
            println!("citus_read SKIPPED: no Citus cluster ({e})");
            return;
        }
    };
    let db = citus.fresh_database().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Arc::new(rt.block_on(setup(db)));
    for _ in 0..20 {
        rt.block_on(reads(s.clone(), true));
        rt.block_on(reads(s.clone(), false));
    }
    let p50 = tenant_testkit::bench_ratio::interleaved_p50s(
        ROUNDS,
        &mut [&mut |_| rt.block_on(reads(s.clone(), true)), &mut |_| {
            rt.block_on(reads(s.clone(), false))
        }],
    );
    let (scoped, raw): (Duration, Duration) = (p50[0], p50[1]);
    println!(
        "RATIO memory scoped read on Citus vs raw sqlx on a distributed table (8 clients), p50 of {ROUNDS} interleaved rounds: \
         {:.3}x (subject {scoped:?}, baseline {raw:?})",
        raw.as_secs_f64() / scoped.as_secs_f64()
    );
}
