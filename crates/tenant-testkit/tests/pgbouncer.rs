//! PgBouncer in transaction pooling mode in front of a real PostgreSQL:
//! clients share server connections, and session state leaks between them.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, PgConnection, Row};
use tenant_testkit::pgbouncer::{PgBouncerOptions, TestPgBouncer};
use tenant_testkit::{TestPostgres, APP_ROLE};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// One text value through the simple query protocol.
async fn text(conn: &mut PgConnection, sql: &str) -> Option<String> {
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.try_get::<Option<String>, _>(0).expect("text column")
}

#[tokio::test]
async fn clients_share_one_server_connection_and_its_session_state() {
    let pg = TestPostgres::shared();
    let db = pg.fresh_database().expect("database");
    let bouncer = TestPgBouncer::start_with(pg, &PgBouncerOptions::new().pool_size(1))
        .expect("start pgbouncer");
    let pooled = bouncer.database(&db);
    assert_eq!(pooled.name(), db.name());
    assert!(pooled.app_url().contains(&format!(":{}/", bouncer.port())));

    let mut a = connect(pooled.app_url()).await;
    let mut b = connect(pooled.app_url()).await;
    assert_eq!(
        text(&mut a, "SELECT current_user::text").await.as_deref(),
        Some(APP_ROLE)
    );
    let pid_a = text(&mut a, "SELECT pg_backend_pid()::text").await;
    let pid_b = text(&mut b, "SELECT pg_backend_pid()::text").await;
    assert_eq!(pid_a, pid_b, "two clients, one server connection");

    // Session state left by one client is what the next client finds.
    sqlx::raw_sql("SET app.tenant = 'acme'")
        .execute(&mut a)
        .await
        .expect("set");
    assert_eq!(
        text(&mut b, "SELECT current_setting('app.tenant', true)")
            .await
            .as_deref(),
        Some("acme"),
        "a plain SET leaks to the next client"
    );
    // Transaction-scoped state does not.
    sqlx::raw_sql("BEGIN; SET LOCAL app.scoped = 'acme'; COMMIT")
        .execute(&mut a)
        .await
        .expect("set local");
    let scoped = text(&mut b, "SELECT current_setting('app.scoped', true)").await;
    assert!(
        scoped.as_deref().unwrap_or("").is_empty(),
        "SET LOCAL ended with its transaction: {scoped:?}"
    );

    // The owner's URL works through the bouncer too, and the admin console
    // shows one server connection for the app role.
    let mut owner = connect(pooled.owner_url()).await;
    sqlx::raw_sql("CREATE TABLE t (x int)")
        .execute(&mut owner)
        .await
        .expect("owner DDL");
    let mut admin = connect(&bouncer.admin_url()).await;
    let pools = sqlx::raw_sql("SHOW POOLS")
        .fetch_all(&mut admin)
        .await
        .expect("show pools");
    assert!(!pools.is_empty());
    drop(admin);

    let dir = bouncer.config_path().parent().expect("dir").to_path_buf();
    let pid = bouncer.pid();
    drop(bouncer);
    assert!(!dir.exists(), "temp dir removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "bouncer gone"
    );
}

#[tokio::test]
async fn unnamed_statements_in_transactions_work_for_interleaved_clients() {
    let pg = TestPostgres::shared();
    let db = pg.fresh_database().expect("database");
    let bouncer = TestPgBouncer::start_with(pg, &PgBouncerOptions::new().pool_size(1))
        .expect("start pgbouncer");
    let url = bouncer.database(&db).app_url().to_owned();
    let done = AtomicU32::new(0);
    let client = |id: i32| {
        let url = url.clone();
        let done = &done;
        async move {
            let mut conn = connect(&url).await;
            for round in 0..20 {
                let mut tx = conn.begin().await.expect("begin");
                let value: i32 = sqlx::query_scalar("SELECT $1::int * 1000 + $2::int")
                    .bind(id)
                    .bind(round)
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("unnamed statement in a transaction");
                assert_eq!(value, id * 1000 + round);
                tx.commit().await.expect("commit");
                tokio::task::yield_now().await;
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
    };
    tokio::join!(client(1), client(2), client(3));
    assert_eq!(done.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn named_statements_collide_unless_the_bouncer_tracks_them() {
    let pg = TestPostgres::shared();
    let db = pg.fresh_database().expect("database");
    let bouncer = TestPgBouncer::start_with(pg, &PgBouncerOptions::new().pool_size(1))
        .expect("start pgbouncer");
    let url = bouncer.database(&db).app_url().to_owned();
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    let query = |n: i32| sqlx::query_scalar::<_, i32>("SELECT $1::int").bind(n);
    let mut tx = a.begin().await.expect("begin");
    assert_eq!(
        query(1)
            .fetch_one(&mut *tx)
            .await
            .expect("a prepares sqlx_s_1"),
        1
    );
    tx.commit().await.expect("commit");

    let mut tx = b.begin().await.expect("begin");
    let second = query(2).fetch_one(&mut *tx).await;
    if bouncer.supports_prepared_statements() {
        assert_eq!(second.expect("tracked by the bouncer"), 2);
    } else {
        let error =
            second.expect_err("b's sqlx_s_1 collides with a's on the shared server connection");
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42P05"), "{error}");
    }
}
