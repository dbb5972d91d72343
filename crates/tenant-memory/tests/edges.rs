//! Attacks on the edges of the boundary: agent SQL reaching server-wide
//! objects, session state left on pooled connections, foreign authorities,
//! and namespace and principal narrowing. Each asserts the typed error and
//! that nothing changed.

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use support::Fixture;
use tenant_core::{AgentId, Capabilities, PrincipalId, TenantContext};
use tenant_memory::{
    Error, Expected, MemoryStore, MessageRole, NewCheckpoint, NewMessage, SqlObjectKind,
};

async fn seeded(fx: &Fixture) -> TenantContext {
    let ctx = fx.tenant();
    let store = fx.store(&ctx);
    let thread = store.create_thread("chat", json!({})).await.unwrap();
    store
        .append_message(
            thread.id,
            NewMessage::new(MessageRole::User, json!("secret")),
        )
        .await
        .unwrap();
    store
        .kv_put("prefs", "k", json!("v"), Expected::Absent)
        .await
        .unwrap();
    ctx
}

#[tokio::test]
async fn agent_sql_cannot_reach_server_wide_objects() {
    let fx = Fixture::shared().await;
    let ctx = seeded(&fx).await;
    let before = fx.snapshot(&ctx).await;
    let tool = fx.store(&ctx).sql_tool();
    let cases = [
        (
            "SELECT query FROM pg_stat_activity",
            SqlObjectKind::Relation,
            "pg_stat_activity",
        ),
        (
            "SELECT * FROM pg_catalog.pg_stat_statements",
            SqlObjectKind::Relation,
            "pg_catalog.pg_stat_statements",
        ),
        (
            "SELECT * FROM pg_locks",
            SqlObjectKind::Relation,
            "pg_locks",
        ),
        (
            "SELECT * FROM pg_sequences",
            SqlObjectKind::Relation,
            "pg_sequences",
        ),
        (
            "SELECT * FROM pg_prepared_statements",
            SqlObjectKind::Relation,
            "pg_prepared_statements",
        ),
        (
            "SELECT * FROM pg_cursors",
            SqlObjectKind::Relation,
            "pg_cursors",
        ),
        (
            "SELECT * FROM pg_settings",
            SqlObjectKind::Relation,
            "pg_settings",
        ),
        (
            "SELECT * FROM information_schema.tables",
            SqlObjectKind::Relation,
            "information_schema.tables",
        ),
        (
            "SELECT pg_cancel_backend(pid) FROM tenant_memory.threads",
            SqlObjectKind::Function,
            "pg_cancel_backend",
        ),
        (
            "SELECT pg_terminate_backend(1)",
            SqlObjectKind::Function,
            "pg_terminate_backend",
        ),
        (
            "SELECT pg_reload_conf()",
            SqlObjectKind::Function,
            "pg_reload_conf",
        ),
        (
            "SELECT set_config('statement_timeout', '0', false)",
            SqlObjectKind::Function,
            "set_config",
        ),
        (
            "SELECT current_setting('tenant_sdk.ctx')",
            SqlObjectKind::Function,
            "current_setting",
        ),
        ("SELECT pg_sleep(10)", SqlObjectKind::Function, "pg_sleep"),
        (
            "SELECT pg_sleep_for('1 minute')",
            SqlObjectKind::Function,
            "pg_sleep_for",
        ),
        ("SELECT lo_create(0)", SqlObjectKind::Function, "lo_create"),
        ("SELECT lo_get(1)", SqlObjectKind::Function, "lo_get"),
        (
            "SELECT query_to_xml('select 1', true, true, '')",
            SqlObjectKind::Function,
            "query_to_xml",
        ),
        (
            "SELECT nextval('tenant_memory.s')",
            SqlObjectKind::Function,
            "nextval",
        ),
        (
            "SELECT pg_advisory_lock(42)",
            SqlObjectKind::Function,
            "pg_advisory_lock",
        ),
        (
            "SELECT pg_notify('c', 'x')",
            SqlObjectKind::Function,
            "pg_notify",
        ),
        (
            "SELECT txid_current()",
            SqlObjectKind::Function,
            "txid_current",
        ),
        ("SELECT '<a/>'::xml", SqlObjectKind::Type, "xml"),
        (
            "SELECT 'tenant_sdk.context_keys'::regclass",
            SqlObjectKind::Type,
            "regclass",
        ),
        (
            "SELECT * FROM tenant_memory.kv FOR SHARE",
            SqlObjectKind::Construct,
            "FOR UPDATE/SHARE",
        ),
    ];
    for (sql, kind, name) in cases {
        let err = tool.query(sql).await.unwrap_err();
        assert!(
            matches!(&err, Error::SqlObjectNotAllowed { kind: k, name: n } if *k == kind && n == name),
            "{sql}: {err:?}"
        );
    }
    for sql in [
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM tenant_memory.kv",
        "FETCH ALL FROM c",
        "LISTEN tenant_events",
        "PREPARE p AS SELECT 1",
        "SHOW tenant_sdk.ctx",
        "CREATE TEMP TABLE stash AS SELECT * FROM tenant_memory.kv",
    ] {
        let err = tool.query(sql).await.unwrap_err();
        assert!(matches!(err, Error::SqlNotAllowed(_)), "{sql}: {err:?}");
    }
    assert_eq!(fx.snapshot(&ctx).await, before);
}

#[tokio::test]
async fn the_sql_tool_needs_its_capability_and_caps_bytes() {
    let fx = Fixture::shared().await;
    let ctx = fx.tenant_with(
        Capabilities::none()
            .with_memory_namespaces(["prefs"])
            .unwrap(),
    );
    let err = fx
        .store(&ctx)
        .read_only_sql("SELECT 1 AS one")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::SqlToolNotPermitted("memory.sql")),
        "{err:?}"
    );

    let ctx = seeded(&fx).await;
    let tool = fx.store(&ctx).sql_tool().with_max_bytes(4096);
    let out = tool
        .query("SELECT repeat('x', 1000) AS s FROM generate_series(1, 50)")
        .await
        .unwrap();
    assert!(out.truncated);
    assert_eq!(out.rows.len(), 4, "four rows of 1009 bytes fit in 4 KiB");
    let out = tool.query("SELECT repeat('x', 100000) AS s").await.unwrap();
    assert!(out.truncated && out.rows.is_empty());
}

/// What a raw application-role connection sees of session state.
async fn leftovers(fx: &Fixture) -> (i32, i64, i64, i64, i64, String) {
    let mut conn = fx.raw_app().await;
    let row = sqlx::query(
        "SELECT pg_backend_pid() AS pid, \
            (SELECT count(*) FROM pg_cursors WHERE is_holdable) AS cursors, \
            (SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql IS FALSE AND name NOT LIKE 'sqlx%') AS prepared, \
            (SELECT count(*) FROM pg_listening_channels()) AS channels, \
            (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks, \
            current_setting('application_name') AS app_name",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (
        row.get("pid"),
        row.get("cursors"),
        row.get("prepared"),
        row.get("channels"),
        row.get("locks"),
        row.get("app_name"),
    )
}

async fn leave_session_state(tx: &mut tenant_memory::ScopedTx) {
    for sql in [
        "DECLARE held CURSOR WITH HOLD FOR SELECT * FROM tenant_memory.messages",
        "PREPARE peek AS SELECT * FROM tenant_memory.kv",
        "LISTEN tenant_events",
        "SELECT pg_advisory_lock(4242)",
        "SET application_name = 'tenant-a-was-here'",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[tokio::test]
async fn session_state_never_reaches_the_next_user_of_a_pooled_connection() {
    let fx = Fixture::single_connection().await;
    let ctx = seeded(&fx).await;
    let before = fx.snapshot(&ctx).await;
    let store = fx.store(&ctx);
    let (pid, ..) = leftovers(&fx).await;

    // Committed, then rolled back: the connection is reset each time.
    for commit in [true, false] {
        let mut tx = store.begin().await.unwrap();
        leave_session_state(&mut tx).await;
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let seen = leftovers(&fx).await;
        assert_eq!(seen.0, pid, "the same connection, reset");
        assert_eq!(seen.1..=seen.4, 0..=0, "{seen:?}");
        assert_eq!(seen.5, "", "{seen:?}");
    }

    // Temporary tables: the application role may not create them at all.
    let mut tx = store.begin().await.unwrap();
    let err = sqlx::raw_sql("CREATE TEMP TABLE stash (x int)")
        .execute(&mut *tx)
        .await
        .map_err(Error::from)
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    tx.rollback().await.unwrap();

    // Dropped without commit: closed, not returned.
    let mut tx = store.begin().await.unwrap();
    leave_session_state(&mut tx).await;
    drop(tx);
    let seen = leftovers(&fx).await;
    assert_ne!(seen.0, pid, "a new connection");
    assert_eq!((seen.1, seen.2, seen.3, seen.4), (0, 0, 0, 0), "{seen:?}");
    assert_eq!(fx.snapshot(&ctx).await, before);
}

#[tokio::test]
async fn a_cancelled_call_closes_its_connection() {
    let fx = Fixture::single_connection().await;
    let ctx = seeded(&fx).await;
    let before = fx.snapshot(&ctx).await;
    let store = fx.store(&ctx);
    let (pid, ..) = leftovers(&fx).await;

    // A ScopedTx whose future is dropped mid-statement.
    let call = async {
        let mut tx = store.begin().await.unwrap();
        leave_session_state(&mut tx).await;
        sqlx::raw_sql("SELECT pg_sleep(30)")
            .execute(&mut *tx)
            .await
            .unwrap();
    };
    assert!(tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .is_err());
    let seen = leftovers(&fx).await;
    assert_ne!(seen.0, pid, "the cancelled connection was closed");
    assert_eq!((seen.1, seen.2, seen.3, seen.4), (0, 0, 0, 0), "{seen:?}");
    assert_eq!(seen.5, "");

    // The SQL tool, cancelled mid-query.
    let pid = seen.0;
    let tool = store.sql_tool();
    let slow = tool.query("SELECT count(*) AS n FROM generate_series(1, 2000000000) AS g");
    assert!(tokio::time::timeout(Duration::from_millis(300), slow)
        .await
        .is_err());
    let seen = leftovers(&fx).await;
    assert_ne!(seen.0, pid);
    assert_eq!((seen.1, seen.2, seen.3, seen.4), (0, 0, 0, 0), "{seen:?}");

    // The advisory lock the cancelled transaction took is free again once
    // the server has noticed the closed connection (within seconds).
    let mut owner = fx.owner.acquire().await.unwrap();
    let mut free = false;
    for _ in 0..100 {
        free = sqlx::query_scalar("SELECT pg_try_advisory_lock(4242)")
            .fetch_one(&mut *owner)
            .await
            .unwrap();
        if free {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(free, "the cancelled session still holds its lock");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *owner)
        .await
        .unwrap();
    assert_eq!(fx.snapshot(&ctx).await, before);
}

#[tokio::test]
async fn contexts_of_another_issuer_are_refused_everywhere_even_with_the_same_key() {
    let fx = Fixture::shared().await;
    let ctx = seeded(&fx).await;
    let before = fx.snapshot(&ctx).await;
    // The very same key id and key bytes as the platform's issuer.
    let rogue = support::issuer();
    let forged = rogue
        .context()
        .tenant(ctx.tenant())
        .principal(PrincipalId::new("mallory").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    let foreign = |e: &Error| matches!(e, Error::Context(tenant_core::Error::ForeignAuthority));

    let err = MemoryStore::builder()
        .platform(&fx.platform)
        .tenant(&forged)
        .build()
        .unwrap_err();
    assert!(foreign(&err), "{err:?}");
    let err = MemoryStore::builder()
        .pool(&fx.app)
        .key(&fx.key)
        .authority(&fx.issuer.authority())
        .tenant(&forged)
        .build()
        .unwrap_err();
    assert!(foreign(&err), "{err:?}");
    // A store made for the rogue authority refuses the platform's contexts.
    let err = MemoryStore::builder()
        .pool(&fx.app)
        .key(&rogue.subkey(tenant_core::Purpose::Postgres))
        .authority(&rogue.authority())
        .tenant(&ctx)
        .build()
        .unwrap_err();
    assert!(foreign(&err), "{err:?}");

    let store = fx.store(&ctx);
    let child = forged
        .delegate(AgentId::new("sub").unwrap())
        .issue()
        .unwrap();
    let err = store.delegate(&child).unwrap_err();
    assert!(foreign(&err), "{err:?}");
    let err = fx.admin.erase_tenant(&forged).await.unwrap_err();
    assert!(foreign(&err), "{err:?}");
    let err = fx.admin.export_tenant(&forged).await.unwrap_err();
    assert!(foreign(&err), "{err:?}");
    assert_eq!(fx.snapshot(&ctx).await, before);
}

/// A root context with every namespace, a thread per namespace, kv and
/// checkpoints, and a private thread of its principal.
struct Narrowing {
    fx: Fixture,
    root: TenantContext,
    chat: tenant_memory::ThreadId,
    secret: tenant_memory::ThreadId,
    private: tenant_memory::ThreadId,
}

impl Narrowing {
    async fn new() -> Narrowing {
        let fx = Fixture::shared().await;
        let root = fx.tenant_with(Capabilities::unrestricted().with_max_delegation_depth(3));
        let store = fx.store(&root);
        let chat = store.create_thread("chat", json!({})).await.unwrap().id;
        let secret = store.create_thread("secret", json!({})).await.unwrap().id;
        let private = store
            .create_private_thread("chat", json!({"mine": true}))
            .await
            .unwrap()
            .id;
        for thread in [chat, secret, private] {
            store
                .append_message(thread, NewMessage::new(MessageRole::User, json!("m")))
                .await
                .unwrap();
        }
        store
            .put_checkpoint(chat, "graph", NewCheckpoint::new("c1", json!({})))
            .await
            .unwrap();
        store
            .put_checkpoint(private, "chat", NewCheckpoint::new("c1", json!({})))
            .await
            .unwrap();
        for ns in ["chat", "secret"] {
            store
                .kv_put(ns, "k", json!(ns), Expected::Absent)
                .await
                .unwrap();
        }
        Narrowing {
            fx,
            root,
            chat,
            secret,
            private,
        }
    }

    fn child(&self, namespaces: &[&str]) -> MemoryStore {
        let child = self
            .root
            .delegate(AgentId::new("sub").unwrap())
            .memory_namespaces(namespaces.iter().copied())
            .issue()
            .unwrap();
        self.fx.store(&self.root).delegate(&child).unwrap()
    }

    async fn sql_count(store: &MemoryStore, table: &str) -> i64 {
        let mut tx = store.begin().await.unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM tenant_memory.{table}"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let tool: i64 = store
            .read_only_sql(&format!("SELECT count(*) AS n FROM tenant_memory.{table}"))
            .await
            .unwrap()[0]["n"]
            .as_i64()
            .unwrap();
        assert_eq!(
            n, tool,
            "{table}: the SQL tool and a scoped transaction agree"
        );
        n
    }
}

#[tokio::test]
async fn a_sub_agent_sees_and_touches_only_its_namespaces_in_every_api_and_in_sql() {
    let n = Narrowing::new().await;
    let before = n.fx.snapshot(&n.root).await;
    let sub = n.child(&["chat"]);

    let listed: Vec<_> = sub
        .list_threads(100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        listed.len(),
        2,
        "the shared and the principal's own chat threads"
    );
    assert!(!listed.contains(&n.secret));
    assert_eq!(sub.thread(n.secret).await.unwrap(), None);
    assert!(sub.last_messages(n.secret, 10).await.unwrap().is_empty());
    assert!(matches!(
        sub.kv_get("secret", "k").await,
        Err(Error::NamespaceNotAllowed { .. })
    ));
    assert!(matches!(
        sub.append_message(n.secret, NewMessage::new(MessageRole::User, json!("x")))
            .await,
        Err(Error::ThreadNotFound)
    ));
    assert!(matches!(
        sub.delete_thread(n.secret).await,
        Err(Error::ThreadNotFound)
    ));
    // The chat thread holds a checkpoint in "graph": deleting it would
    // cascade into data the sub-agent may not touch.
    assert!(matches!(
        sub.delete_thread(n.chat).await,
        Err(Error::ThreadHasUnreachableData)
    ));
    assert!(sub
        .checkpoint(n.chat, "chat", "c1")
        .await
        .unwrap()
        .is_none());

    // In SQL the database enforces the same.
    assert_eq!(Narrowing::sql_count(&sub, "threads").await, 2);
    assert_eq!(Narrowing::sql_count(&sub, "messages").await, 2);
    assert_eq!(Narrowing::sql_count(&sub, "kv").await, 1);
    assert_eq!(Narrowing::sql_count(&sub, "checkpoints").await, 1);
    let mut tx = sub.begin().await.unwrap();
    let gone = sqlx::query("DELETE FROM tenant_memory.kv WHERE namespace = 'secret'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(gone.rows_affected(), 0);
    let err = sqlx::query(
        "INSERT INTO tenant_memory.kv (tenant_id, namespace, key, value, version) VALUES ($1, 'secret', 'x', '1', 1)",
    )
    .bind(n.root.tenant().as_uuid())
    .execute(&mut *tx)
    .await
    .map_err(Error::from)
    .unwrap_err();
    assert!(matches!(err, Error::RowSecurityViolation { .. }), "{err:?}");
    drop(tx);

    // Without any namespace: nothing at all.
    let none = n.child(&[]);
    assert!(none.list_threads(100).await.unwrap().is_empty());
    for table in ["threads", "messages", "kv", "checkpoints"] {
        assert_eq!(Narrowing::sql_count(&none, table).await, 0, "{table}");
    }
    assert!(matches!(
        none.delete_thread(n.chat).await,
        Err(Error::ThreadNotFound)
    ));
    assert!(matches!(
        none.create_thread("chat", json!({})).await,
        Err(Error::NamespaceNotAllowed { .. })
    ));

    assert_eq!(n.fx.snapshot(&n.root).await, before);
}

#[tokio::test]
async fn another_principal_never_sees_or_touches_a_private_thread() {
    let n = Narrowing::new().await;
    let before = n.fx.snapshot(&n.root).await;
    let bob = n.fx.store(&n.fx.principal_of(&n.root, "bob@example.com"));

    assert_eq!(bob.thread(n.private).await.unwrap(), None);
    let listed: Vec<_> = bob
        .list_threads(100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert!(!listed.contains(&n.private) && listed.contains(&n.chat));
    assert!(bob.last_messages(n.private, 10).await.unwrap().is_empty());
    assert!(bob
        .list_checkpoints(n.private, "chat", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        bob.append_message(n.private, NewMessage::new(MessageRole::User, json!("x")))
            .await,
        Err(Error::ThreadNotFound)
    ));
    assert!(matches!(
        bob.put_checkpoint(n.private, "chat", NewCheckpoint::new("c2", json!({})))
            .await,
        Err(Error::ThreadNotFound)
    ));
    assert!(matches!(
        bob.delete_thread(n.private).await,
        Err(Error::ThreadNotFound)
    ));
    assert_eq!(Narrowing::sql_count(&bob, "threads").await, 2);
    assert_eq!(Narrowing::sql_count(&bob, "messages").await, 2);
    assert_eq!(Narrowing::sql_count(&bob, "checkpoints").await, 1);

    // Raw SQL cannot attach to it either: as shared rows the foreign key to
    // the private thread fails, as alice's rows the policy does.
    for audience in ["", "alice@example.com"] {
        let mut tx = bob.begin().await.unwrap();
        let err = sqlx::query(
            "INSERT INTO tenant_memory.messages (tenant_id, thread_id, seq, namespace, audience, role, content) \
             VALUES ($1, $2, 99, 'chat', $3, 'user', '\"x\"')",
        )
        .bind(n.root.tenant().as_uuid())
        .bind(n.private.as_uuid())
        .bind(audience)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)
        .unwrap_err();
        assert!(
            matches!(err, Error::RowSecurityViolation { .. } | Error::Database(_)),
            "{audience}: {err:?}"
        );
        drop(tx);
    }

    // Alice still sees it.
    let alice = n.fx.store(&n.root);
    assert!(alice.thread(n.private).await.unwrap().unwrap().private);
    assert_eq!(n.fx.snapshot(&n.root).await, before);
}

#[tokio::test]
async fn ordering_values_are_per_thread_not_global() {
    let fx = Fixture::shared().await;
    let (a, b) = (fx.store(&fx.tenant()), fx.store(&fx.tenant()));
    let ta = a.create_thread("chat", json!({})).await.unwrap().id;
    for i in 0..5 {
        a.put_checkpoint(ta, "g", NewCheckpoint::new(format!("c{i}"), json!(i)))
            .await
            .unwrap();
    }
    let tb = b.create_thread("chat", json!({})).await.unwrap().id;
    b.put_checkpoint(tb, "g", NewCheckpoint::new("c", json!(0)))
        .await
        .unwrap();
    let seq: Vec<i64> = b
        .read_only_sql("SELECT seq FROM tenant_memory.checkpoints")
        .await
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seq, [1], "B's numbering reveals nothing of A's writes");
}
