// The attack suite, included by each test binary that runs it on one
// deployment: the including module defines
// `async fn fixture() -> Option<Fixture>` (`None`: the deployment is absent
// and the suite is skipped).

use std::time::Duration;

use crate::support::{now_ms, sign, Deployment, Fixture};
use serde_json::json;
use sqlx::Row;
use tenant_core::{KeyId, MasterKey, PrincipalId, Purpose, TenantContext};
use tenant_memory::{
    ContextRejection, Error, Expected, MemoryStore, NewCheckpoint, SqlObjectKind, ThreadId,
};

/// Two tenants with a thread, messages, a key and a checkpoint each.
struct Victims {
    fx: Fixture,
    a: TenantContext,
    b: TenantContext,
    a_thread: ThreadId,
    b_thread: ThreadId,
}

impl Victims {
    async fn new() -> Option<Victims> {
        let fx = fixture().await?;
        let (a, b) = (fx.tenant(), fx.tenant());
        let mut threads = Vec::new();
        for ctx in [&a, &b] {
            let store = fx.store(ctx);
            let thread = store
                .create_thread("chat", json!({"who": ctx.tenant().to_string()}))
                .await
                .unwrap();
            store
                .append_message(
                    thread.id,
                    tenant_memory::NewMessage::new(
                        tenant_memory::MessageRole::User,
                        json!("secret"),
                    ),
                )
                .await
                .unwrap();
            store
                .kv_put("prefs", "k", json!("v"), Expected::Absent)
                .await
                .unwrap();
            store
                .put_checkpoint(
                    thread.id,
                    "graph",
                    NewCheckpoint::new("c1", json!({"s": 1})),
                )
                .await
                .unwrap();
            threads.push(thread.id);
        }
        Some(Victims {
            fx,
            a,
            b,
            a_thread: threads[0],
            b_thread: threads[1],
        })
    }

    fn store_a(&self) -> MemoryStore {
        self.fx.store(&self.a)
    }

    fn store_b(&self) -> MemoryStore {
        self.fx.store(&self.b)
    }

    /// Both tenants' data, for "nothing changed".
    async fn snapshot(&self) -> (tenant_memory::TenantExport, tenant_memory::TenantExport) {
        (
            self.fx.snapshot(&self.a).await,
            self.fx.snapshot(&self.b).await,
        )
    }

    /// Tenant B's data, for "nothing changed" where tenant A's own rows may
    /// legitimately change.
    async fn snapshot_b(&self) -> tenant_memory::TenantExport {
        self.fx.snapshot(&self.b).await
    }

    /// A well-formed value for tenant B whose MAC is made with a key the
    /// database does not trust, under the trusted key id.
    fn forged_for_b(&self) -> String {
        let attacker = MasterKey::from_bytes(KeyId::new("test-k1").unwrap(), [1; 32]);
        sign(
            &attacker.subkey(Purpose::Postgres),
            self.b.tenant(),
            now_ms() + 60_000,
        )
    }
}

fn rejected(err: &Error, reason: ContextRejection) -> bool {
    matches!(err, Error::BoundContextRejected(r) if *r == reason)
}

async fn exec(tx: &mut sqlx::PgConnection, sql: &str) -> Result<Vec<sqlx::postgres::PgRow>, Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .persistent(false)
        .fetch_all(tx)
        .await
        .map_err(Error::from)
}

#[tokio::test]
async fn set_config_to_another_tenant_inside_scoped_tx_is_rejected() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;
    let forged = v.forged_for_b();

    // Reading after switching: the forged value fails verification.
    let mut tx = v.store_a().begin().await.unwrap();
    sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, true)")
        .persistent(false)
        .bind(&forged)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = exec(&mut tx, "SELECT * FROM tenant_memory.threads")
        .await
        .unwrap_err();
    assert!(rejected(&err, ContextRejection::BadSignature), "{err:?}");
    drop(tx);

    // Writing after switching (in one statement): same.
    let mut tx = v.store_a().begin().await.unwrap();
    let written = sqlx::query(
        "UPDATE tenant_memory.kv SET value = '\"pwned\"' \
         FROM (SELECT set_config('tenant_sdk.ctx', $1, true)) AS s WHERE true",
    )
    .persistent(false)
    .bind(&forged)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if v.fx.deployment == Deployment::Citus {
        // On a cluster the setting changes on the coordinator only: the
        // worker keeps the transaction's own binding (tenant A), so the
        // statement writes A's rows or is refused, and never B's.
        match written {
            Ok(done) => assert!(done.rows_affected() <= 1),
            Err(err) => assert!(rejected(&err, ContextRejection::BadSignature), "{err:?}"),
        }
        drop(tx);
        assert_eq!(v.snapshot_b().await, before.1);
        return;
    }
    let err = written.unwrap_err();
    assert!(rejected(&err, ContextRejection::BadSignature), "{err:?}");
    drop(tx);

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn set_config_to_another_tenant_inside_the_sql_tool_is_rejected_or_sees_nothing_foreign() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;
    let tool = v.store_a().sql_tool();
    let forged = v.forged_for_b();

    // The tool refuses the settings functions before the database sees
    // them, however they are spelled.
    for sql in [
        format!(
            "SELECT t.* FROM (SELECT set_config('tenant_sdk.ctx', '{forged}', true) AS c OFFSET 0) AS b \
             CROSS JOIN LATERAL (SELECT * FROM tenant_memory.threads WHERE b.c IS NOT NULL OFFSET 0) AS t"
        ),
        format!("SELECT pg_catalog.set_config('tenant_sdk.ctx', '{forged}', true), tenant_id FROM tenant_memory.threads"),
        "SELECT current_setting('tenant_sdk.ctx') AS c".to_owned(),
    ] {
        let err = tool.query(&sql).await.unwrap_err();
        assert!(
            matches!(&err, Error::SqlObjectNotAllowed { kind: SqlObjectKind::Function, .. }),
            "{sql}: {err:?}"
        );
    }

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn reset_inside_scoped_tx_leaves_no_tenant_zero_rows_and_failing_writes() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;

    let mut tx = v.store_a().begin().await.unwrap();
    exec(&mut tx, "RESET tenant_sdk.ctx").await.unwrap();
    let rows = exec(&mut tx, "SELECT count(*) AS n FROM tenant_memory.threads")
        .await
        .unwrap();
    if v.fx.deployment == Deployment::Citus {
        // On a cluster RESET reaches the coordinator only: the worker keeps
        // the transaction's own binding, so A still sees exactly its own
        // thread, and nothing of B.
        assert_eq!(rows[0].get::<i64, _>("n"), 1);
        let foreign = exec(
            &mut tx,
            &format!(
                "SELECT count(*) AS n FROM tenant_memory.threads WHERE tenant_id = '{}'",
                v.b.tenant()
            ),
        )
        .await
        .unwrap();
        assert_eq!(foreign[0].get::<i64, _>("n"), 0);
        drop(tx);
        assert_eq!(v.snapshot().await, before);
        return;
    }
    assert_eq!(rows[0].get::<i64, _>("n"), 0);
    let err = sqlx::query(
        "INSERT INTO tenant_memory.threads (tenant_id, id, owner_principal) VALUES ($1, gen_random_uuid(), 'x')",
    )
    .persistent(false)
    .bind(v.a.tenant().as_uuid())
    .execute(&mut *tx)
    .await
    .map_err(Error::from)
    .unwrap_err();
    assert!(matches!(err, Error::RowSecurityViolation { .. }), "{err:?}");
    drop(tx);

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn set_role_and_set_session_authorization_are_refused() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;

    for attack in [
        "SET ROLE tenant_owner",
        "SET LOCAL ROLE tenant_owner",
        "SET SESSION AUTHORIZATION postgres",
        "SET SESSION AUTHORIZATION tenant_owner",
    ] {
        let mut tx = v.store_a().begin().await.unwrap();
        let err = exec(&mut tx, attack).await.unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { .. }),
            "{attack}: {err:?}"
        );
    }
    // RESET ROLE is allowed but changes nothing: still the app role, still A.
    let mut tx = v.store_a().begin().await.unwrap();
    exec(&mut tx, "RESET ROLE").await.unwrap();
    let rows = exec(
        &mut tx,
        "SELECT current_user::text AS u, count(*) AS n FROM tenant_memory.threads",
    )
    .await
    .unwrap();
    assert_eq!(rows[0].get::<String, _>("u"), tenant_testkit::APP_ROLE);
    assert_eq!(rows[0].get::<i64, _>("n"), 1);
    drop(tx);

    // The SQL tool refuses them before they reach the database.
    let tool = v.store_a().sql_tool();
    for attack in [
        "SET ROLE tenant_owner",
        "RESET tenant_sdk.ctx",
        "SET SESSION AUTHORIZATION postgres",
    ] {
        assert!(
            matches!(tool.query(attack).await, Err(Error::SqlNotAllowed(_))),
            "{attack}"
        );
    }

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn forged_unknown_key_and_malformed_contexts_are_rejected_by_the_database() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;
    let rogue_key =
        MasterKey::from_bytes(KeyId::new("rogue").unwrap(), [9; 32]).subkey(Purpose::Postgres);
    let cases = [
        (v.forged_for_b(), ContextRejection::BadSignature),
        (
            sign(&rogue_key, v.b.tenant(), now_ms() + 60_000),
            ContextRejection::UnknownKey,
        ),
        (v.b.tenant().to_string(), ContextRejection::Malformed),
        // Tenant and expiry fields out of shape.
        (
            {
                let genuine = sign(&v.fx.key, v.b.tenant(), now_ms() + 60_000);
                format!("{} v2 not-a-uuid{}", &genuine[..64], &genuine[104..])
            },
            ContextRejection::Malformed,
        ),
        (
            {
                let genuine = sign(&v.fx.key, v.b.tenant(), now_ms() + 60_000);
                format!("{}9{}", &genuine[..105], &genuine[106..])
            },
            ContextRejection::BadSignature,
        ),
        // A grant widened after signing (every namespace of B, or B as a
        // whole): the MAC covers the grants.
        (
            format!(
                "{} {}",
                sign(&v.fx.key, v.b.tenant(), now_ms() + 60_000),
                v.b.tenant()
            ),
            ContextRejection::BadSignature,
        ),
    ];
    for (value, reason) in cases {
        // Straight from the application pool: no SDK in the way.
        let mut conn = v.fx.raw_app().await;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, true)")
            .persistent(false)
            .bind(&value)
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = exec(&mut tx, "SELECT * FROM tenant_memory.messages")
            .await
            .unwrap_err();
        assert!(rejected(&err, reason), "{value}: {err:?}");
    }
    // Even a genuine value with its tenant swapped fails (the MAC covers it).
    let genuine = sign(&v.fx.key, v.a.tenant(), now_ms() + 60_000);
    let swapped = genuine.replace(&v.a.tenant().to_string(), &v.b.tenant().to_string());
    let mut conn = v.fx.raw_app().await;
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, true)")
        .persistent(false)
        .bind(&swapped)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = exec(&mut tx, "DELETE FROM tenant_memory.kv")
        .await
        .unwrap_err();
    assert!(rejected(&err, ContextRejection::BadSignature), "{err:?}");
    drop(tx);

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn an_expired_context_is_refused_by_the_store_and_by_the_database() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;

    let short =
        v.fx.issuer
            .context()
            .tenant(v.a.tenant())
            .principal(PrincipalId::new("alice@example.com").unwrap())
            .ttl(Duration::from_millis(300))
            .issue()
            .unwrap();
    let store = v.fx.store(&short);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = store.create_thread("chat", json!({})).await.unwrap_err();
    assert!(
        matches!(err, Error::Context(tenant_core::Error::ContextExpired)),
        "{err:?}"
    );
    let err = store.begin().await.unwrap_err();
    assert!(
        matches!(err, Error::Context(tenant_core::Error::ContextExpired)),
        "{err:?}"
    );

    // A correctly signed but expired value, bound by hand.
    let expired = sign(&v.fx.key, v.a.tenant(), now_ms() - 1);
    let mut conn = v.fx.raw_app().await;
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, true)")
        .persistent(false)
        .bind(&expired)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = exec(&mut tx, "SELECT * FROM tenant_memory.threads")
        .await
        .unwrap_err();
    assert!(rejected(&err, ContextRejection::Expired), "{err:?}");
    drop(tx);

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn tenant_b_cannot_reach_tenant_a_thread_or_checkpoint_by_id() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;
    let b = v.store_b();
    let a_thread = v.a_thread;

    assert_eq!(b.thread(a_thread).await.unwrap(), None);
    assert!(b.last_messages(a_thread, 20).await.unwrap().is_empty());
    assert!(b
        .messages(a_thread, None, 20)
        .await
        .unwrap()
        .messages
        .is_empty());
    assert_eq!(b.checkpoint(a_thread, "graph", "c1").await.unwrap(), None);
    assert_eq!(b.latest_checkpoint(a_thread, "graph").await.unwrap(), None);
    assert!(b
        .list_checkpoints(a_thread, "graph", 10)
        .await
        .unwrap()
        .is_empty());

    let msg = tenant_memory::NewMessage::new(tenant_memory::MessageRole::User, json!("injected"));
    assert!(matches!(
        b.append_message(a_thread, msg).await,
        Err(Error::ThreadNotFound)
    ));
    assert!(matches!(
        b.set_thread_metadata(a_thread, json!({})).await,
        Err(Error::ThreadNotFound)
    ));
    let deleted = b.delete_thread(a_thread).await;
    assert!(matches!(deleted, Err(Error::ThreadNotFound)), "{deleted:?}");
    let cp = NewCheckpoint::new("c1", json!({"s": "overwritten"}));
    assert!(matches!(
        b.put_checkpoint(a_thread, "graph", cp).await,
        Err(Error::ThreadNotFound)
    ));

    // The deletion function called directly from B's transaction, naming
    // A as the tenant: row-level security still admits only B's rows.
    let mut tx = b.begin().await.unwrap();
    let deleted: bool = sqlx::query_scalar("SELECT tenant_memory.delete_thread($1, $2)")
        .persistent(false)
        .bind(v.a.tenant().as_uuid())
        .bind(a_thread.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(!deleted);
    tx.commit().await.unwrap();

    // B's own thread is untouched by A's id being the same shape.
    assert!(b.thread(v.b_thread).await.unwrap().is_some());
    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn insert_or_update_with_a_foreign_tenant_id_is_refused() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;

    let mut tx = v.store_b().begin().await.unwrap();
    let err = sqlx::query(
        "INSERT INTO tenant_memory.threads (tenant_id, id, owner_principal) VALUES ($1, gen_random_uuid(), 'mallory')",
    )
    .persistent(false)
    .bind(v.a.tenant().as_uuid())
    .execute(&mut *tx)
    .await
    .map_err(Error::from)
    .unwrap_err();
    assert!(matches!(err, Error::RowSecurityViolation { .. }), "{err:?}");
    drop(tx);

    // Moving one's own row into another tenant fails WITH CHECK too.
    let mut tx = v.store_b().begin().await.unwrap();
    let err = sqlx::query("UPDATE tenant_memory.kv SET tenant_id = $1")
        .persistent(false)
        .bind(v.a.tenant().as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(Error::from)
        .unwrap_err();
    // Citus refuses to change a distribution column before privileges are
    // checked.
    let partition_value = |err: &Error| {
        v.fx.deployment == Deployment::Citus
            && matches!(err, Error::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("0A000"))
    };
    assert!(
        matches!(err, Error::PermissionDenied { .. }) || partition_value(&err),
        "{err:?}"
    );
    drop(tx);

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn the_read_only_sql_tool_refuses_to_delete() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;
    let tool = v.store_a().sql_tool();

    for sql in [
        "DELETE FROM tenant_memory.kv",
        "delete from tenant_memory.kv;",
        "TRUNCATE tenant_memory.kv",
        // Smuggling a second statement.
        "SELECT 1) AS x; DELETE FROM tenant_memory.kv; SELECT (1",
        "SELECT 1; DELETE FROM tenant_memory.kv",
    ] {
        let err = tool.query(sql).await.unwrap_err();
        assert!(matches!(err, Error::SqlNotAllowed(_)), "{sql}: {err:?}");
    }
    for sql in [
        "WITH d AS (DELETE FROM tenant_memory.kv RETURNING *) SELECT * FROM d",
        "SELECT * FROM tenant_memory.kv FOR UPDATE",
        "SELECT * INTO public.stash FROM tenant_memory.kv",
    ] {
        let err = tool.query(sql).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::SqlObjectNotAllowed {
                    kind: SqlObjectKind::Construct,
                    ..
                }
            ),
            "{sql}: {err:?}"
        );
    }

    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn the_application_role_cannot_read_keys_edit_history_or_create_objects() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;

    let err = v
        .store_a()
        .read_only_sql("SELECT * FROM tenant_sdk.context_keys")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SqlObjectNotAllowed { kind: SqlObjectKind::Relation, name } if name == "tenant_sdk.context_keys"),
        "{err:?}"
    );
    let mut tx = v.store_a().begin().await.unwrap();
    let err = exec(&mut tx, "SELECT * FROM tenant_sdk.context_keys")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    drop(tx);
    for attack in [
        "UPDATE tenant_memory.messages SET content = '\"rewritten\"'",
        "DELETE FROM tenant_memory.messages",
        "SELECT tenant_sdk.grant_app_role('tenant_app')",
        "CREATE TABLE public.stash (x int)",
        "CREATE FUNCTION public.hmac(bytea, bytea, text) RETURNS bytea LANGUAGE sql AS 'SELECT $1'",
        "ALTER TABLE tenant_memory.kv DISABLE ROW LEVEL SECURITY",
        // The verifier view reads the keys with its owner's rights: it must
        // not be replaceable, weakened or wrapped by the application role.
        "CREATE OR REPLACE VIEW tenant_sdk.verified_context AS \
         SELECT '00000000-0000-4000-8000-000000000001'::uuid AS tenant",
        "ALTER VIEW tenant_sdk.verified_context RESET (security_barrier)",
        "DROP VIEW tenant_sdk.verified_context",
        "CREATE VIEW public.peek AS SELECT * FROM tenant_sdk.verified_context",
    ] {
        let mut tx = v.store_a().begin().await.unwrap();
        let err = exec(&mut tx, attack).await.unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { .. })
                || err.to_string().contains("must be owner"),
            "{attack}: {err:?}"
        );
    }
    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn the_verifier_view_shows_only_the_bound_tenant_never_a_key() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let before = v.snapshot().await;
    let mut tx = v.store_a().begin().await.unwrap();
    let verified = if v.fx.deployment == Deployment::Citus {
        // The views read the key table, a reference table whose shards the
        // application role may not read on a cluster; the policies there
        // call the verifier functions instead.
        "SELECT tenant_sdk.current_tenant() AS tenant"
    } else {
        "SELECT tenant FROM tenant_sdk.verified_context"
    };
    let rows = exec(&mut tx, verified).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].get::<uuid::Uuid, _>("tenant"),
        *v.a.tenant().as_uuid()
    );
    drop(tx);
    // The key columns are out of reach: the view shows the verified tenant
    // and grants only, and the key table is denied.
    let mut tx = v.store_a().begin().await.unwrap();
    let err = exec(&mut tx, "SELECT secret FROM tenant_sdk.verified_context")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Database(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("42703")),
        "undefined column expected: {err:?}"
    );
    drop(tx);
    assert_eq!(v.snapshot().await, before);
}

#[tokio::test]
async fn the_sql_tool_times_out_caps_rows_and_returns_json() {
    let Some(v) = Victims::new().await else {
        return;
    };
    let store = v.store_a();
    let err = store
        .sql_tool()
        .with_statement_timeout(Duration::from_millis(100))
        .query("SELECT count(*) AS n FROM generate_series(1, 1000000000) AS g")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StatementTimeout), "{err:?}");

    let capped = store
        .sql_tool()
        .with_max_rows(3)
        .query("SELECT g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    assert_eq!(
        capped.rows,
        vec![json!({"g": 1}), json!({"g": 2}), json!({"g": 3})]
    );
    assert!(capped.truncated);

    let rows = store
        .read_only_sql("SELECT m.seq, m.role, m.content FROM tenant_memory.messages m")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![json!({"seq": 1, "role": "user", "content": "secret"})]
    );
}
