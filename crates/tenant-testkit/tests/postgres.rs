//! Starts real PostgreSQL clusters and checks the role setup.

use sqlx::{Connection, PgConnection};
use tenant_testkit::{TestPostgres, TestkitError, APP_ROLE, DEFAULT_DATABASE, OWNER_ROLE};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

async fn role_flags(conn: &mut PgConnection) -> (String, bool, bool) {
    sqlx::query_as(
        "select current_user::text, rolbypassrls, rolsuper from pg_roles where rolname = current_user",
    )
    .fetch_one(conn)
    .await
    .expect("role flags")
}

async fn owned_relations(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_class c join pg_roles r on r.oid = c.relowner \
         where r.rolname = current_user",
    )
    .fetch_one(conn)
    .await
    .expect("owned relations")
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn roles_are_least_privileged_and_owner_can_migrate() {
    // Called from inside a runtime on purpose: start() must not panic here.
    let pg = TestPostgres::start().expect("start postgres");
    assert!(pg.app_url().ends_with(&format!(
        ":{}/{DEFAULT_DATABASE}?sslmode=disable",
        pg.port()
    )));
    assert!(pg.data_dir().join("PG_VERSION").exists());

    let mut app = connect(pg.app_url()).await;
    let (name, bypass_rls, superuser) = role_flags(&mut app).await;
    assert_eq!(name, APP_ROLE);
    assert!(!bypass_rls, "app role must not bypass RLS");
    assert!(!superuser, "app role must not be superuser");
    assert_eq!(owned_relations(&mut app).await, 0);

    let mut owner = connect(pg.owner_url()).await;
    let (name, bypass_rls, superuser) = role_flags(&mut owner).await;
    assert_eq!(name, OWNER_ROLE);
    assert!(!bypass_rls && !superuser);

    // The owner runs migrations: extension (pre-created), table, grants.
    sqlx::raw_sql(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         CREATE TABLE notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), body text NOT NULL);
         CREATE TABLE secrets (id int PRIMARY KEY);",
    )
    .execute(&mut owner)
    .await
    .expect("owner can create tables");

    // No default privileges: the app sees nothing until granted.
    let denied = sqlx::raw_sql("select * from notes")
        .execute(&mut app)
        .await
        .expect_err("no implicit access");
    assert_eq!(sql_state(&denied).as_deref(), Some("42501"), "{denied}");

    sqlx::raw_sql("GRANT SELECT, INSERT ON notes TO tenant_app")
        .execute(&mut owner)
        .await
        .expect("grant");
    sqlx::raw_sql("INSERT INTO notes (body) VALUES ('hello')")
        .execute(&mut app)
        .await
        .expect("granted insert");
    let digest: String =
        sqlx::query_scalar("select encode(digest(body, 'sha256'), 'hex') from notes")
            .fetch_one(&mut app)
            .await
            .expect("pgcrypto usable by the app");
    assert_eq!(digest.len(), 64);

    // The app may not create objects, and still owns nothing.
    let denied = sqlx::raw_sql("CREATE TABLE app_table (id int)")
        .execute(&mut app)
        .await
        .expect_err("app cannot create tables");
    assert_eq!(sql_state(&denied).as_deref(), Some("42501"), "{denied}");
    assert_eq!(owned_relations(&mut app).await, 0);
    assert!(owned_relations(&mut owner).await >= 2);

    let attrs: (bool, bool, bool) = sqlx::query_as(
        "select rolcreaterole, rolcreatedb, \
         exists(select 1 from pg_database d where d.datdba = r.oid) \
         from pg_roles r where rolname = 'tenant_app'",
    )
    .fetch_one(&mut owner)
    .await
    .expect("app role attributes");
    assert_eq!(attrs, (false, false, false));

    app.close().await.expect("close");
    owner.close().await.expect("close");

    let data_dir = pg.data_dir().to_path_buf();
    let pid = pg.pid();
    drop(pg);
    assert!(!data_dir.exists(), "data dir removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster gone after drop"
    );
}

#[test]
fn databases_are_isolated() {
    let pg = TestPostgres::shared();
    let first = pg.fresh_database().expect("first db");
    let second = pg.create_database("isolation_second").expect("second db");
    assert_ne!(first.name(), second.name());
    assert!(first
        .app_url()
        .ends_with(&format!("/{}?sslmode=disable", first.name())));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut owner1 = connect(first.owner_url()).await;
        sqlx::raw_sql("CREATE TABLE only_here (id int)")
            .execute(&mut owner1)
            .await
            .expect("create in first");
        let mut owner2 = connect(second.owner_url()).await;
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_class where relname = 'only_here')")
                .fetch_one(&mut owner2)
                .await
                .expect("query second");
        assert!(!exists, "databases must not share tables");

        let mut app2 = connect(second.app_url()).await;
        let (name, bypass_rls, superuser) = role_flags(&mut app2).await;
        assert_eq!(
            (name.as_str(), bypass_rls, superuser),
            (APP_ROLE, false, false)
        );
    });

    match pg.create_database("isolation_second") {
        Err(TestkitError::Sql { .. }) => {}
        other => panic!("duplicate database must fail: {other:?}"),
    }
    match pg.create_database("Bad-Name") {
        Err(TestkitError::InvalidDatabaseName { name }) => assert_eq!(name, "Bad-Name"),
        other => panic!("invalid name must fail: {other:?}"),
    }
    pg.drop_database(second.name()).expect("drop");
    pg.create_database("isolation_second")
        .expect("re-create after drop");
}
