//! Scoped read throughput: the last 20 messages of a thread through
//! `MemoryStore::last_messages` (signed context bound in the same
//! statement, verified by the RLS policy) versus the same query through raw
//! sqlx on an unscoped copy of the table (no RLS, no binding), 8 concurrent
//! clients each, same run. Target: scoped ≥ 0.9× raw throughput. Reported
//! twice: from criterion's two back-to-back measurements, and as the ratio
//! of p50s over rounds that alternate the arms.
//!
//! `cargo bench -p tenant-memory --bench scoped_read -- --warm-up-time 1 --measurement-time 3`
//! (`MEMBENCH_SPLIT=1` adds the diagnostic `direct_rls` / `direct_plain` runs;
//! `MEMBENCH_FUNCTION=1` measures a policy that calls the `SECURITY DEFINER`
//! function `tenant_sdk.current_tenant()` instead of reading the verifier
//! views.)

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tenant_core::{Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId, Purpose, TenantId};
use tenant_memory::{MemoryAdmin, MemoryStore, MessageRole, NewMessage, ThreadId};

const CLIENTS: usize = 8;
const GROUP: &str = "memory_scoped_read";

const RAW_SQL: &str = "SELECT m.* FROM ( \
        SELECT seq, role, content, (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM public.plain_messages WHERE tenant_id = $1 AND thread_id = $2 \
        ORDER BY seq DESC LIMIT $3) AS m \
     ORDER BY m.seq";

/// What the raw side decodes each row into: the same columns, with the same
/// types, as `tenant_memory::Message` (so both sides do the same client-side
/// work apart from the binding).
struct RawMessage {
    seq: i64,
    role: String,
    content: Value,
    created_at_ms: i64,
}

/// The same query as `MemoryStore::last_messages`, through raw sqlx on the
/// unscoped copy: no RLS, no binding, no context check.
async fn raw_last_messages(s: &Setup) -> Vec<RawMessage> {
    let rows = sqlx::query(RAW_SQL)
        .bind(s.tenant.as_uuid())
        .bind(s.thread.as_uuid())
        .bind(20_i64)
        .fetch_all(&s.raw)
        .await
        .unwrap();
    rows.iter()
        .map(|row| RawMessage {
            seq: row.get("seq"),
            role: row.get("role"),
            content: row.get("content"),
            created_at_ms: row.get("created_ms"),
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Arm {
    /// `MemoryStore::last_messages`.
    Scoped,
    /// `raw_last_messages`.
    RawUnscoped,
}

/// One measured unit: `CLIENTS` concurrent reads of the last 20 messages.
async fn concurrent_reads(s: Arc<Setup>, arm: Arm) {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                match arm {
                    Arm::Scoped => s.store.last_messages(s.thread, 20).await.unwrap().len(),
                    Arm::RawUnscoped => raw_last_messages(&s).await.len(),
                }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 20);
    }
}

struct Setup {
    store: MemoryStore,
    raw: PgPool,
    tenant: TenantId,
    thread: ThreadId,
}

async fn setup() -> Setup {
    let db = tokio::task::spawn_blocking(|| {
        tenant_testkit::TestPostgres::shared()
            .fresh_database()
            .unwrap()
    })
    .await
    .unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let key = issuer.subkey(Purpose::Postgres);
    let owner = PgPool::connect(db.owner_url()).await.unwrap();
    let admin = MemoryAdmin::new(&owner, &key, &issuer.authority()).unwrap();
    admin.migrate(tenant_testkit::APP_ROLE).await.unwrap();
    admin.install_key().await.unwrap();
    if std::env::var("MEMBENCH_FUNCTION").is_ok() {
        // Diagnostic: a policy calling the SECURITY DEFINER function on
        // every statement instead of the views.
        sqlx::raw_sql(
            "ALTER POLICY tenant_isolation ON tenant_memory.messages \
               USING (tenant_id = (SELECT tenant_sdk.current_tenant())) \
               WITH CHECK (tenant_id = (SELECT tenant_sdk.current_tenant()))",
        )
        .execute(&owner)
        .await
        .unwrap();
    }
    sqlx::raw_sql(
        "CREATE TABLE public.plain_messages (LIKE tenant_memory.messages INCLUDING ALL EXCLUDING GENERATED);
         GRANT SELECT, INSERT ON public.plain_messages TO tenant_app;",
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

    // 20 tenants x 5 threads x 100 messages; the measured thread is one of them.
    let mut measured = None;
    for t in 0..20 {
        let ctx = issuer
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("bench").unwrap())
            .capabilities(Capabilities::unrestricted())
            .issue()
            .unwrap();
        let store = MemoryStore::builder()
            .pool(&app)
            .key(&key)
            .authority(&issuer.authority())
            .tenant(&ctx)
            .build()
            .unwrap();
        for th in 0..5 {
            let thread = store.create_thread("chat", json!({})).await.unwrap();
            let batch = (0..100)
                .map(|i| {
                    NewMessage::new(
                        MessageRole::User,
                        json!({"text": format!("message {i} of thread {th}")}),
                    )
                })
                .collect();
            store.append_messages(thread.id, batch).await.unwrap();
            if t == 0 && th == 0 {
                measured = Some((store.clone(), ctx.tenant(), thread.id));
            }
        }
        // The unscoped copy gets exactly the same rows.
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO public.plain_messages SELECT * FROM tenant_memory.messages")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    sqlx::raw_sql("ANALYZE").execute(&owner).await.unwrap();
    let (store, tenant, thread) = measured.unwrap();
    Setup {
        store,
        raw,
        tenant,
        thread,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Arc::new(rt.block_on(setup()));

    // Sanity: both paths return the same 20 messages.
    rt.block_on(async {
        let scoped = s.store.last_messages(s.thread, 20).await.unwrap();
        let raw = raw_last_messages(&s).await;
        assert_eq!(scoped.len(), 20);
        assert_eq!(raw.len(), 20);
        for (scoped, raw) in scoped.iter().zip(&raw) {
            assert_eq!((scoped.seq, &scoped.content), (raw.seq, &raw.content));
            assert_eq!(scoped.role.as_str(), raw.role);
            assert_eq!(scoped.created_at_ms, raw.created_at_ms);
        }
    });

    let mut group = c.benchmark_group(GROUP);
    group.bench_function("scoped_8_clients", |b| {
        b.to_async(&rt)
            .iter(|| concurrent_reads(s.clone(), Arm::Scoped))
    });
    group.bench_function("raw_unscoped_8_clients", |b| {
        b.to_async(&rt)
            .iter(|| concurrent_reads(s.clone(), Arm::RawUnscoped))
    });
    // Diagnostics (MEMBENCH_SPLIT=1): the scoped SQL sent directly through
    // raw sqlx with a pre-signed value, against the RLS table and against the
    // plain copy. scoped vs direct_rls = client-side SDK cost; direct_plain vs
    // raw = cost of the in-statement binding; direct_rls vs direct_plain =
    // row-level security plus the verifier.
    if std::env::var("MEMBENCH_SPLIT").is_ok() {
        let bound: String = rt.block_on(async {
            let mut tx = s.store.begin().await.unwrap();
            let v: String = sqlx::query_scalar("SELECT current_setting('tenant_sdk.ctx')")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            v
        });
        let bound = Arc::new(bound);
        for (name, table) in [
            ("direct_rls", "tenant_memory.messages"),
            ("direct_plain", "public.plain_messages"),
        ] {
            let sql: &'static str = Box::leak(format!("SELECT m.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT seq, role, content, (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM {table} \
        WHERE tenant_id = $2 AND thread_id = $3 AND b.bound IS NOT NULL \
        ORDER BY seq DESC \
        LIMIT $4) AS m \
     ORDER BY m.seq").into_boxed_str());
            group.bench_function(name, |b| {
                b.to_async(&rt).iter(|| {
                    let s = s.clone();
                    let bound = bound.clone();
                    async move {
                        let tasks: Vec<_> = (0..CLIENTS)
                            .map(|_| {
                                let s = s.clone();
                                let bound = bound.clone();
                                tokio::spawn(async move {
                                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                                        .bind(bound.as_str())
                                        .bind(s.tenant.as_uuid())
                                        .bind(s.thread.as_uuid())
                                        .bind(20_i64)
                                        .fetch_all(&s.raw)
                                        .await
                                        .unwrap();
                                    rows.iter()
                                        .map(|row| RawMessage {
                                            seq: row.get("seq"),
                                            role: row.get("role"),
                                            content: row.get("content"),
                                            created_at_ms: row.get("created_ms"),
                                        })
                                        .collect::<Vec<_>>()
                                        .len()
                                })
                            })
                            .collect();
                        for t in tasks {
                            assert_eq!(t.await.unwrap(), 20);
                        }
                    }
                })
            });
        }
    }
    group.finish();

    tenant_testkit::bench_ratio::report(
        "memory scoped read throughput vs raw sqlx (8 clients)",
        (GROUP, "scoped_8_clients"),
        (GROUP, "raw_unscoped_8_clients"),
        ">= 0.9x",
        true,
    );
    interleaved(&rt, &s);
}

/// The same two arms sampled round by round (order alternating), so that
/// the machine's drift between criterion's two back-to-back measurements
/// does not land on one arm only. Prints the ratio of the p50s.
fn interleaved(rt: &tokio::runtime::Runtime, s: &Arc<Setup>) {
    const ROUNDS: usize = 2000;
    let p50 = tenant_testkit::bench_ratio::interleaved_p50s(
        ROUNDS,
        &mut [
            &mut |_| rt.block_on(concurrent_reads(s.clone(), Arm::Scoped)),
            &mut |_| rt.block_on(concurrent_reads(s.clone(), Arm::RawUnscoped)),
        ],
    );
    let (s50, r50) = (p50[0], p50[1]);
    println!(
        "RATIO memory scoped read throughput vs raw sqlx (8 clients), p50 of {ROUNDS} interleaved rounds: \
         {:.3}x (subject {s50:?}, baseline {r50:?}; target >= 0.9x)",
        r50.as_secs_f64() / s50.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
