//! The binding scheme: transaction-local only, so a connection (pooled by
//! sqlx, or a PgBouncer server connection in transaction mode) never
//! carries a tenant into its next use.

mod support;

use serde_json::json;
use sqlx::Row;
use support::Fixture;
use tenant_memory::{Expected, MessageRole, NewMessage};

/// What a raw application-role connection sees: the setting, the verified
/// tenant, and how many memory rows are visible.
async fn what_a_raw_connection_sees(
    fx: &Fixture,
) -> (i32, Option<String>, Option<uuid::Uuid>, i64) {
    let mut conn = fx.raw_app().await;
    let row = sqlx::query(
        "SELECT pg_backend_pid() AS pid, current_setting('tenant_sdk.ctx', true) AS setting, \
                tenant_sdk.current_tenant() AS tenant, \
                (SELECT count(*) FROM tenant_memory.threads) \
              + (SELECT count(*) FROM tenant_memory.messages) \
              + (SELECT count(*) FROM tenant_memory.kv) \
              + (SELECT count(*) FROM tenant_memory.checkpoints) AS visible",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (
        row.get("pid"),
        row.get("setting"),
        row.get("tenant"),
        row.get("visible"),
    )
}

fn no_tenant(seen: &(i32, Option<String>, Option<uuid::Uuid>, i64)) -> bool {
    matches!(seen.1.as_deref(), None | Some("")) && seen.2.is_none() && seen.3 == 0
}

#[tokio::test]
async fn a_pooled_connection_carries_no_tenant_after_scoped_operations() {
    // One connection: every acquire below gets the one the SDK just used.
    let fx = Fixture::single_connection().await;
    let store = fx.store(&fx.tenant());
    let (pid, ..) = what_a_raw_connection_sees(&fx).await;

    // A single-statement write and read.
    let thread = store.create_thread("chat", json!({})).await.unwrap();
    store.last_messages(thread.id, 20).await.unwrap();
    let seen = what_a_raw_connection_sees(&fx).await;
    assert_eq!(seen.0, pid, "same physical connection");
    assert!(no_tenant(&seen), "{seen:?}");

    // A multi-statement transaction.
    store
        .append_message(thread.id, NewMessage::new(MessageRole::User, json!("hi")))
        .await
        .unwrap();
    store
        .kv_put("ns", "k", json!(1), Expected::Absent)
        .await
        .unwrap();
    assert!(no_tenant(&what_a_raw_connection_sees(&fx).await));

    // A ScopedTx committed after a session-level SET of its own context,
    // and one dropped without commit.
    let mut tx = store.begin().await.unwrap();
    let own: String = sqlx::query_scalar("SELECT current_setting('tenant_sdk.ctx')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('tenant_sdk.ctx', $1, false)")
        .bind(&own)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(no_tenant(&what_a_raw_connection_sees(&fx).await));
    let tx = store.begin().await.unwrap();
    drop(tx);
    let seen = what_a_raw_connection_sees(&fx).await;
    assert_ne!(seen.0, pid, "a dropped transaction's connection is closed");
    assert!(no_tenant(&seen), "{seen:?}");
    let pid = seen.0;

    // The SQL tool.
    store
        .read_only_sql("SELECT count(*) AS n FROM tenant_memory.threads")
        .await
        .unwrap();
    let seen = what_a_raw_connection_sees(&fx).await;
    assert_eq!(seen.0, pid);
    assert!(no_tenant(&seen), "{seen:?}");
}

#[tokio::test]
async fn tenants_interleaving_transactions_on_one_connection_stay_isolated() {
    // PgBouncer in transaction mode hands one server connection to many
    // clients, one transaction at a time. A one-connection pool shared by
    // concurrent tenants does exactly that.
    let fx = Fixture::single_connection().await;
    let tenants: Vec<_> = (0..3).map(|_| fx.tenant()).collect();
    let tasks: Vec<_> = tenants
        .iter()
        .map(|ctx| {
            let store = fx.store(ctx);
            let tenant = ctx.tenant().to_string();
            tokio::spawn(async move {
                let thread = store
                    .create_thread("chat", json!({ "tenant": tenant }))
                    .await
                    .unwrap();
                for i in 0..15 {
                    store
                        .append_message(
                            thread.id,
                            NewMessage::new(MessageRole::User, json!([tenant, i])),
                        )
                        .await
                        .unwrap();
                    let last = store.last_messages(thread.id, 100).await.unwrap();
                    assert_eq!(last.len(), i + 1);
                    assert!(last.iter().all(|m| m.content[0] == json!(tenant)));
                    let threads = store.list_threads(100).await.unwrap();
                    assert_eq!(threads.len(), 1);
                    assert_eq!(threads[0].metadata["tenant"], json!(tenant));
                    let n: i64 = store
                        .read_only_sql("SELECT count(*) AS n FROM tenant_memory.messages")
                        .await
                        .unwrap()[0]["n"]
                        .as_i64()
                        .unwrap();
                    assert_eq!(n, i as i64 + 1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(no_tenant(&what_a_raw_connection_sees(&fx).await));
}

#[tokio::test]
async fn without_a_bound_context_the_application_role_sees_nothing_and_cannot_write() {
    let fx = Fixture::shared().await;
    let ctx = fx.tenant();
    fx.store(&ctx)
        .create_thread("chat", json!({}))
        .await
        .unwrap();
    let before = fx.snapshot(&ctx).await;

    let seen = what_a_raw_connection_sees(&fx).await;
    assert!(no_tenant(&seen), "{seen:?}");
    let mut conn = fx.raw_app().await;
    let err = sqlx::query(
        "INSERT INTO tenant_memory.threads (tenant_id, id, owner_principal) VALUES ($1, gen_random_uuid(), 'x')",
    )
    .bind(ctx.tenant().as_uuid())
    .execute(&mut *conn)
    .await
    .map_err(tenant_memory::Error::from)
    .unwrap_err();
    assert!(
        matches!(err, tenant_memory::Error::RowSecurityViolation { .. }),
        "{err:?}"
    );
    assert_eq!(fx.snapshot(&ctx).await, before);
}
