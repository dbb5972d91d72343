//! A real Citus cluster: a coordinator and two workers.
//!
//! Without the Citus extension every test prints that it was skipped.

use sqlx::{Connection, PgConnection};
use tenant_testkit::{TestCitus, TestkitError, APP_ROLE, OWNER_ROLE};

fn cluster() -> Option<&'static TestCitus> {
    match TestCitus::try_shared() {
        Ok(cluster) => Some(cluster),
        Err(TestkitError::CitusNotFound { missing, .. }) => {
            eprintln!("Citus not installed (missing {missing:?}): Citus test skipped");
            None
        }
        Err(e) => panic!("starting Citus: {e}"),
    }
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

#[tokio::test]
async fn distributed_table_answers_a_router_query_and_reference_tables_reach_workers() {
    let Some(citus) = cluster() else {
        return;
    };
    assert_eq!(citus.workers().len(), 2);
    let db = citus.fresh_database().expect("fresh database");

    // Both workers are active nodes of this database.
    let mut admin = connect(db.superuser_url()).await;
    let workers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND isactive AND nodeport <> $1",
    )
    .bind(i32::from(citus.coordinator().port()))
    .fetch_one(&mut admin)
    .await
    .expect("pg_dist_node");
    assert_eq!(workers, 2);

    // The owner distributes by tenant_id and grants the app role.
    let mut owner = connect(db.owner_url()).await;
    sqlx::raw_sql(
        "CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint NOT NULL, body text, PRIMARY KEY (tenant_id, id));
         SELECT create_distributed_table('notes', 'tenant_id');
         CREATE TABLE plans (name text PRIMARY KEY, quota int NOT NULL);
         SELECT create_reference_table('plans');
         INSERT INTO plans VALUES ('pool', 10), ('silo', 100);
         GRANT SELECT, INSERT ON notes, plans TO tenant_app;",
    )
    .execute(&mut owner)
    .await
    .expect("distribute");

    let mut app = connect(db.app_url()).await;
    let tenants: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    for (i, tenant) in tenants.iter().enumerate() {
        for id in 0..3 {
            sqlx::query("INSERT INTO notes VALUES ($1, $2, $3)")
                .bind(tenant)
                .bind(id)
                .bind(format!("note {i}/{id}"))
                .execute(&mut app)
                .await
                .expect("insert");
        }
    }
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT body FROM notes WHERE tenant_id = $1 ORDER BY id")
            .bind(tenants[2])
            .fetch_all(&mut app)
            .await
            .expect("router query");
    assert_eq!(rows, ["note 2/0", "note 2/1", "note 2/2"]);
    // It is a router query: one task on the shard's node.
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN SELECT body FROM notes WHERE tenant_id = '{}'",
        tenants[2]
    )))
    .fetch_all(&mut app)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(
        plan.contains("Custom Scan (Citus Adaptive)") && plan.contains("Task Count: 1"),
        "{plan}"
    );

    // The shards live on the workers, the reference table on every worker.
    let mut total = 0;
    for index in 0..2 {
        let on_worker = citus.worker_database(index, &db).expect("worker");
        let mut worker = connect(on_worker.superuser_url()).await;
        // Citus hides shards from pg_class unless asked.
        sqlx::raw_sql("SET citus.override_table_visibility = off")
            .execute(&mut worker)
            .await
            .expect("show shards");
        let shards: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'notes\\_%' AND relkind = 'r'",
        )
        .fetch_one(&mut worker)
        .await
        .expect("shards");
        assert!(shards > 0, "worker {index} holds notes shards");
        let plans: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'plans\\_%' AND relkind = 'r'",
        )
        .fetch_one(&mut worker)
        .await
        .expect("reference shard");
        assert_eq!(plans, 1, "worker {index} holds the reference table");
        total += shards;
        // The testkit roles exist on the worker.
        let roles: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
                .bind(vec![OWNER_ROLE, APP_ROLE])
                .fetch_one(&mut worker)
                .await
                .expect("roles");
        assert_eq!(roles, 2);
    }
    assert!(total >= 2);

    // A role created on the coordinator reaches every worker.
    let role = format!("probe_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} NOLOGIN")))
        .execute(&mut admin)
        .await
        .expect("create role");
    for index in 0..2 {
        let on_worker = citus.worker_database(index, &db).expect("worker");
        let mut worker = connect(on_worker.superuser_url()).await;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&role)
                .fetch_one(&mut worker)
                .await
                .expect("role lookup");
        assert!(exists, "role propagated to worker {index}");
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut admin)
        .await
        .expect("drop role");
    citus.drop_database(db.name()).expect("drop");
}

#[test]
fn databases_are_isolated_and_dropped_everywhere() {
    let Some(citus) = cluster() else {
        return;
    };
    let a = citus.fresh_database().expect("a");
    let b = citus.fresh_database().expect("b");
    assert_ne!(a.name(), b.name());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let mut owner = connect(a.owner_url()).await;
        sqlx::raw_sql("CREATE TABLE only_in_a (tenant_id uuid); SELECT create_distributed_table('only_in_a', 'tenant_id')")
            .execute(&mut owner)
            .await
            .expect("distribute in a");
        let mut other = connect(b.owner_url()).await;
        let seen: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
            .fetch_one(&mut other)
            .await
            .expect("lookup");
        assert_eq!(seen, None);
    });
    citus.drop_database(a.name()).expect("drop a");
    let on_worker = citus.worker_database(1, &a).expect("worker");
    let gone = runtime.block_on(PgConnection::connect(on_worker.superuser_url()));
    assert!(gone.is_err(), "database dropped on the workers too");
    assert!(matches!(
        citus.worker_database(2, &a),
        Err(TestkitError::NoSuchNode { index: 2, nodes: 2 })
    ));
}
