//! Configuration attacks: a hostile search_path at migration time, and each
//! misconfiguration doctor and `verify()` must refuse.

mod support;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use support::Fixture;
use tenant_memory::{doctor, Error, MemoryAdmin, Problem};
use tenant_testkit::{TestPostgres, APP_ROLE, OWNER_ROLE};

/// Same-named functions and operators, planted where the owner's path looks
/// first, that would make every binding verify and every row match.
const PLANT: &str = r#"
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE FUNCTION evil.split_part(text, text, integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'test-k1' $$;
CREATE FUNCTION evil.substr(text, integer, integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '' $$;
CREATE FUNCTION evil.substr(text, integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '' $$;
CREATE FUNCTION evil.encode(bytea, text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '' $$;
CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$ SELECT ''::bytea $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'forged' $$;
CREATE FUNCTION evil.string_to_array(text, text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY['*'] $$;
CREATE FUNCTION evil.always(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT true $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always);
CREATE FUNCTION evil.overlaps_all(text[], text[]) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT true $$;
CREATE OPERATOR evil.&& (LEFTARG = text[], RIGHTARG = text[], FUNCTION = evil.overlaps_all);
CREATE FUNCTION evil.uuid_eq_all(uuid, uuid) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT true $$;
CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_eq_all);
"#;

#[tokio::test]
async fn a_hostile_search_path_at_migration_binds_nothing_to_planted_objects() {
    let db = tokio::task::spawn_blocking(|| TestPostgres::shared().fresh_database().unwrap())
        .await
        .unwrap();
    let su = PgPool::connect(db.superuser_url()).await.unwrap();
    sqlx::raw_sql(PLANT).execute(&su).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {OWNER_ROLE} IN DATABASE {} SET search_path = evil, pg_catalog, public",
        db.name()
    )))
    .execute(&su)
    .await
    .unwrap();

    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.owner_url())
        .await
        .unwrap();
    let path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert!(
        path.starts_with("evil"),
        "the owner's path is hostile: {path}"
    );
    let issuer = support::issuer();
    let key = issuer.subkey(tenant_core::Purpose::Postgres);
    let admin = MemoryAdmin::new(&owner, &key, &issuer.authority()).unwrap();
    admin.migrate(APP_ROLE).await.unwrap();
    admin.install_key().await.unwrap();

    // No view, policy, default, constraint or generated column depends on
    // anything in the planted schema.
    let bound: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_depend d \
         WHERE d.classid <> 'pg_operator'::regclass AND ((d.refclassid = 'pg_proc'::regclass \
                AND d.refobjid IN (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'evil'::regnamespace)) \
            OR (d.refclassid = 'pg_operator'::regclass \
                AND d.refobjid IN (SELECT o.oid FROM pg_operator o WHERE o.oprnamespace = 'evil'::regnamespace)))",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(bound, 0);

    // And the verifier still refuses a forged binding and isolates tenants.
    let fx_app = PgPool::connect(db.app_url()).await.unwrap();
    let platform = tenant_memory::MemoryPlatform::new(&fx_app, &key, &issuer.authority()).unwrap();
    let ctx = issuer
        .context()
        .tenant(tenant_core::TenantId::random())
        .principal(tenant_core::PrincipalId::new("a").unwrap())
        .capabilities(tenant_core::Capabilities::unrestricted())
        .issue()
        .unwrap();
    let store = tenant_memory::MemoryStore::builder()
        .platform(&platform)
        .tenant(&ctx)
        .build()
        .unwrap();
    store
        .create_thread("chat", serde_json::json!({}))
        .await
        .unwrap();
    let mut conn = fx_app.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, true)")
        .bind(format!(
            "{} v2 {}",
            "0".repeat(64),
            &support::sign(&key, ctx.tenant(), support::now_ms() + 60_000)[68..]
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("SELECT * FROM tenant_memory.threads")
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
    assert!(doctor(&fx_app).await.unwrap().is_healthy());
}

#[tokio::test]
async fn doctor_and_verify_refuse_each_configuration_that_defeats_isolation() {
    let fx = Fixture::isolated().await;
    assert!(fx.platform.verify().await.is_ok());
    assert!(doctor(&fx.app).await.unwrap().is_healthy());

    // The owner's pool as the application pool.
    let owner_platform =
        tenant_memory::MemoryPlatform::new(&fx.owner, &fx.key, &fx.issuer.authority()).unwrap();
    let err = owner_platform.verify().await.unwrap_err();
    assert!(matches!(err, Error::UnsafeAppRole { .. }), "{err:?}");
    let report = doctor(&fx.owner).await.unwrap();
    assert!(!report.is_healthy());
    let owner = format!("role {OWNER_ROLE}");
    assert!(report.has(&owner, Problem::RoleOwnsTenantTables));
    assert!(report.has(&owner, Problem::ContextKeysReadable));

    let cases: [(&str, &str, Problem); 8] = [
        (
            "GRANT SELECT ON tenant_sdk.context_keys TO tenant_app",
            "role tenant_app",
            Problem::ContextKeysReadable,
        ),
        (
            "CREATE TABLE public.or_escape (tenant_id uuid NOT NULL);
             ALTER TABLE public.or_escape ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY p ON public.or_escape USING (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context) OR true);",
            "public.or_escape",
            Problem::PolicyNotKeyedOnSignedContext,
        ),
        (
            "CREATE FUNCTION public.my_tenant() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT NULL::uuid $$;
             CREATE TABLE public.own_fn (tenant_id uuid NOT NULL);
             ALTER TABLE public.own_fn ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY p ON public.own_fn USING (tenant_id = public.my_tenant());",
            "public.own_fn",
            Problem::PolicyNotKeyedOnSignedContext,
        ),
        (
            "CREATE TABLE public.users (tenant_id uuid NOT NULL, email text UNIQUE);",
            "public.users (users_email_key)",
            Problem::ConstraintNotLedByTenant,
        ),
        (
            "GRANT TRUNCATE ON tenant_memory.kv TO tenant_app",
            "tenant_memory.kv",
            Problem::TruncateAllowed,
        ),
        (
            "GRANT TEMPORARY ON DATABASE {db} TO tenant_app",
            "role tenant_app",
            Problem::TempAllowed,
        ),
        (
            "GRANT CREATE ON SCHEMA public TO tenant_app",
            "schema public",
            Problem::CreateAllowed,
        ),
        (
            "ALTER ROLE tenant_app IN DATABASE {db} SET tenant_sdk.ctx = 'x'",
            "role tenant_app",
            Problem::ContextSettingDefault,
        ),
    ];
    let su = PgPool::connect(fx.db.superuser_url()).await.unwrap();
    for (sql, object, problem) in cases {
        let sql = sql.replace("{db}", fx.db.name());
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&su)
            .await
            .unwrap();
        let report = doctor(&fx.app).await.unwrap();
        assert!(!report.is_healthy(), "{sql}");
        assert!(report.has(object, problem), "{sql}: {report}");
        assert!(
            report
                .findings
                .iter()
                .filter(|f| f.object == object && f.problem == problem)
                .all(|f| f.severity == tenant_memory::Severity::Error),
            "{sql}"
        );
    }
    // verify() refuses the key-reading role too.
    let err = fx.platform.verify().await.unwrap_err();
    assert!(matches!(err, Error::UnsafeAppRole { .. }), "{err:?}");
}
