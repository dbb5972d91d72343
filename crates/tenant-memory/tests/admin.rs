//! Owner side and configuration: migrations and roles, keys and rotation,
//! erasure and export, doctor, and protecting the application's own tables.

mod support;

use serde_json::json;
use sqlx::Row;
use support::Fixture;
use tenant_core::{ContextIssuer, KeyId, MasterKey, PrincipalId, Purpose};
use tenant_memory::{
    doctor, protect_table, ContextRejection, Error, Expected, MemoryAdmin, MemoryStore,
    MessageRole, NewCheckpoint, NewMessage, Problem,
};

#[tokio::test]
async fn migrate_is_idempotent_and_refuses_unsafe_application_roles() {
    let fx = Fixture::shared().await;
    fx.admin.migrate(tenant_testkit::APP_ROLE).await.unwrap();
    for (role, reason) in [
        (tenant_testkit::OWNER_ROLE, "owner"),
        (tenant_testkit::SUPERUSER, "superuser"),
        ("no_such_role", "does not exist"),
    ] {
        let err = fx.admin.migrate(role).await.unwrap_err();
        assert!(
            matches!(&err, Error::UnsafeAppRole { reason: r, .. } if r.contains(reason)),
            "{role}: {err:?}"
        );
    }
}

#[tokio::test]
async fn keys_rotate_and_retired_keys_stop_verifying_at_once() {
    let fx = Fixture::isolated().await;
    let ctx = fx.tenant();
    let old = fx.store(&ctx);
    old.kv_put("ns", "k", json!(1), Expected::Absent)
        .await
        .unwrap();

    // Rotate: a new master key, its PostgreSQL subkey installed beside the old.
    let new_master = MasterKey::from_bytes(KeyId::new("test-k2").unwrap(), [43; 32]);
    let new_issuer = ContextIssuer::new(new_master);
    let new_key = new_issuer.subkey(Purpose::Postgres);
    MemoryAdmin::new(&fx.owner, &new_key, &new_issuer.authority())
        .unwrap()
        .install_key()
        .await
        .unwrap();
    let new_ctx = new_issuer
        .context()
        .tenant(ctx.tenant())
        .principal(PrincipalId::new("alice@example.com").unwrap())
        .capabilities(tenant_core::Capabilities::unrestricted())
        .issue()
        .unwrap();
    let new = MemoryStore::builder()
        .pool(&fx.app)
        .key(&new_key)
        .authority(&new_issuer.authority())
        .tenant(&new_ctx)
        .build()
        .unwrap();
    assert_eq!(
        new.kv_get("ns", "k").await.unwrap().unwrap().value,
        json!(1)
    );
    assert!(
        old.kv_get("ns", "k").await.unwrap().is_some(),
        "both keys valid during rotation"
    );

    assert!(fx
        .admin
        .retire_key(&KeyId::new("test-k1").unwrap())
        .await
        .unwrap());
    let err = old.kv_get("ns", "k").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BoundContextRejected(ContextRejection::UnknownKey)
        ),
        "{err:?}"
    );
    assert_eq!(new.kv_get("ns", "k").await.unwrap().unwrap().version, 1);

    // Same id, different material: refused.
    let impostor = ContextIssuer::new(MasterKey::from_bytes(
        KeyId::new("test-k2").unwrap(),
        [0; 32],
    ));
    let err = MemoryAdmin::new(
        &fx.owner,
        &impostor.subkey(Purpose::Postgres),
        &impostor.authority(),
    )
    .unwrap()
    .install_key()
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::KeyIdConflict(ref id) if id == "test-k2"),
        "{err:?}"
    );
}

#[tokio::test]
async fn erase_tenant_deletes_everything_of_that_tenant_only_and_verifies() {
    let fx = Fixture::shared().await;
    let (a, b) = (fx.tenant(), fx.tenant());
    for ctx in [&a, &b] {
        let store = fx.store(ctx);
        let thread = store.create_thread("chat", json!({})).await.unwrap();
        store
            .append_messages(
                thread.id,
                vec![NewMessage::new(MessageRole::User, json!("x")); 3],
            )
            .await
            .unwrap();
        store
            .kv_put("ns", "k", json!(1), Expected::Absent)
            .await
            .unwrap();
        store
            .put_checkpoint(thread.id, "g", NewCheckpoint::new("c", json!(1)))
            .await
            .unwrap();
    }
    let b_before = fx.snapshot(&b).await;

    let export = fx.admin.export_tenant(&a).await.unwrap();
    let counts: Vec<_> = export.counts().into_values().collect();
    assert_eq!(counts, [1, 1, 3, 1], "checkpoints, kv, messages, threads");
    assert!(export.tables["tenant_memory.messages"]
        .iter()
        .all(|row| row.get("tenant_id").is_none()));

    let report = fx.admin.erase_tenant(&a).await.unwrap();
    assert_eq!(
        report.deleted.values().copied().collect::<Vec<_>>(),
        [1, 1, 3, 1]
    );
    assert!(report.remaining.values().all(|n| *n == 0));
    assert!(fx
        .admin
        .export_tenant(&a)
        .await
        .unwrap()
        .counts()
        .values()
        .all(|n| *n == 0));
    assert_eq!(
        fx.snapshot(&b).await,
        b_before,
        "the other tenant is untouched"
    );
}

#[tokio::test]
async fn doctor_reports_the_memory_schema_healthy_for_the_application_role() {
    let fx = Fixture::isolated().await;
    let report = doctor(&fx.app).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.is_healthy(), "{report}");
    assert!(report.findings.is_empty(), "{report}");
    assert_eq!(report.role.name, tenant_testkit::APP_ROLE);
    assert_eq!(report.role.can_read_context_keys, Some(false));
    let names: Vec<_> = report
        .tables
        .iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    assert_eq!(
        names,
        [
            "tenant_memory.checkpoints",
            "tenant_memory.kv",
            "tenant_memory.messages",
            "tenant_memory.threads"
        ]
    );

    // Run as the owner, doctor says so.
    let owner_report = doctor(&fx.owner).await.unwrap();
    assert!(owner_report.has(
        &format!("role {}", tenant_testkit::OWNER_ROLE),
        Problem::RoleOwnsTenantTables
    ));
    assert!(owner_report.has(
        &format!("role {}", tenant_testkit::OWNER_ROLE),
        Problem::ContextKeysReadable
    ));
}

#[tokio::test]
async fn doctor_finds_unprotected_tables_and_unsafe_views() {
    let fx = Fixture::isolated().await;
    sqlx::raw_sql(
        "CREATE TABLE public.open_notes (tenant_id uuid, body text);
         CREATE TABLE public.unforced (tenant_id uuid);
         ALTER TABLE public.unforced ENABLE ROW LEVEL SECURITY;
         CREATE POLICY p ON public.unforced USING (tenant_id = current_setting('app.tenant_id')::uuid);
         CREATE VIEW public.all_notes AS SELECT * FROM public.open_notes;
         CREATE VIEW public.safe_notes WITH (security_invoker = true) AS SELECT * FROM public.open_notes;",
    )
    .execute(&fx.owner)
    .await
    .unwrap();
    let report = doctor(&fx.app).await.unwrap();
    assert!(!report.is_healthy());
    assert!(report.has("public.open_notes", Problem::RlsNotEnabled));
    assert!(report.has("public.unforced", Problem::RlsNotForced));
    assert!(report.has("public.unforced", Problem::PolicyNotKeyedOnSignedContext));
    assert!(report.has("public.all_notes", Problem::ViewWithoutSecurityInvoker));
    assert!(!report
        .findings
        .iter()
        .any(|f| f.object == "public.safe_notes"));

    // protect_table fixes both tables.
    for table in ["open_notes", "unforced"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(protect_table(table, "tenant_id")))
            .execute(&fx.owner)
            .await
            .unwrap();
    }
    sqlx::raw_sql("DROP POLICY p ON public.unforced")
        .execute(&fx.owner)
        .await
        .unwrap();
    let report = doctor(&fx.app).await.unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.object.starts_with("public.open_notes") || f.object == "public.unforced"),
        "{report}"
    );
}

#[tokio::test]
async fn protect_table_isolates_the_applications_own_tables_through_scoped_tx() {
    let fx = Fixture::isolated().await;
    // A name that needs quoting, to exercise protect_table's quoting.
    sqlx::raw_sql(
        r#"CREATE TABLE public."App Notes" (tenant_id uuid NOT NULL, body text NOT NULL);
           GRANT SELECT, INSERT, UPDATE, DELETE ON public."App Notes" TO tenant_app;"#,
    )
    .execute(&fx.owner)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(protect_table("App Notes", "tenant_id")))
        .execute(&fx.owner)
        .await
        .unwrap();

    let (a, b) = (fx.tenant(), fx.tenant());
    for (ctx, body) in [(&a, "a's note"), (&b, "b's note")] {
        let mut tx = fx.store(ctx).begin().await.unwrap();
        sqlx::query(r#"INSERT INTO "App Notes" (tenant_id, body) VALUES ($1, $2)"#)
            .bind(tx.context().tenant().as_uuid())
            .bind(body)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let mut tx = fx.store(&b).begin().await.unwrap();
    let bodies: Vec<String> = sqlx::query(r#"SELECT body FROM "App Notes""#)
        .fetch_all(tx.executor())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("body"))
        .collect();
    assert_eq!(bodies, ["b's note"]);
    let deleted = sqlx::query(r#"DELETE FROM "App Notes""#)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1, "only b's own row");
    tx.rollback().await.unwrap();

    let mut tx = fx.store(&b).begin().await.unwrap();
    let err = sqlx::query(r#"INSERT INTO "App Notes" (tenant_id, body) VALUES ($1, 'forged')"#)
        .bind(a.tenant().as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(Error::from)
        .unwrap_err();
    assert!(matches!(err, Error::RowSecurityViolation { .. }), "{err:?}");
    drop(tx);

    let total: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "App Notes""#)
        .fetch_one(&fx.app)
        .await
        .unwrap();
    assert_eq!(total, 0, "no context bound: nothing visible");
    assert!(doctor(&fx.app).await.unwrap().is_healthy());
}
