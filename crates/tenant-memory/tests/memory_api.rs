//! The memory API, one tenant at a time: what each operation promises.

mod support;

use serde_json::json;
use support::Fixture;
use tenant_core::{AgentId, Capabilities};
use tenant_memory::{Error, Expected, MessageRole, NewCheckpoint, NewMessage};

fn user(text: &str) -> NewMessage {
    NewMessage::new(MessageRole::User, json!(text))
}

#[tokio::test]
async fn threads_are_created_listed_updated_and_deleted() {
    let fx = Fixture::shared().await;
    let ctx = fx.tenant();
    let store = fx.store(&ctx);

    let a = store
        .create_thread("chat", json!({"title": "a"}))
        .await
        .unwrap();
    let b = store
        .create_thread("chat", json!({"title": "b"}))
        .await
        .unwrap();
    assert_eq!(a.owner, "alice@example.com");
    assert_eq!(a.message_count, 0);
    assert_eq!(store.thread(a.id).await.unwrap(), Some(a.clone()));

    let updated = store
        .set_thread_metadata(a.id, json!({"title": "a2"}))
        .await
        .unwrap();
    assert_eq!(updated.metadata, json!({"title": "a2"}));
    let listed: Vec<_> = store
        .list_threads(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![a.id, b.id], "most recently updated first");

    store.delete_thread(b.id).await.unwrap();
    assert_eq!(store.thread(b.id).await.unwrap(), None);
    assert!(matches!(
        store.delete_thread(b.id).await,
        Err(Error::ThreadNotFound)
    ));
}

#[tokio::test]
async fn messages_append_in_order_and_page_by_cursor() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    let thread = store.create_thread("chat", json!({})).await.unwrap();

    let first = store.append_message(thread.id, user("m1")).await.unwrap();
    assert_eq!(first.seq, 1);
    let batch: Vec<_> = (2..=7).map(|i| user(&format!("m{i}"))).collect();
    let appended = store.append_messages(thread.id, batch).await.unwrap();
    assert_eq!(
        appended.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        store
            .thread(thread.id)
            .await
            .unwrap()
            .unwrap()
            .message_count,
        7
    );

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.messages(thread.id, cursor, 3).await.unwrap();
        assert!(page.messages.len() <= 3);
        seen.extend(page.messages.iter().map(|m| m.content.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<_> = (1..=7).map(|i| json!(format!("m{i}"))).collect();
    assert_eq!(seen, expected);

    let last = store.last_messages(thread.id, 2).await.unwrap();
    assert_eq!(
        last.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![6, 7],
        "oldest first"
    );
}

#[tokio::test]
async fn concurrent_appends_get_distinct_gapless_sequence_numbers() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    let thread = store.create_thread("chat", json!({})).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append_message(thread.id, user(&i.to_string())).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let all = store.messages(thread.id, None, 100).await.unwrap().messages;
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn appending_to_a_missing_thread_is_thread_not_found() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    let err = store
        .append_message(tenant_memory::ThreadId::random(), user("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ThreadNotFound), "{err:?}");
}

#[tokio::test]
async fn kv_compare_and_swap_detects_lost_updates() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());

    let v1 = store
        .kv_put("prefs", "units", json!("metric"), Expected::Absent)
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let again = store
        .kv_put("prefs", "units", json!("x"), Expected::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            Error::VersionConflict {
                expected: None,
                actual: Some(1)
            }
        ),
        "{again:?}"
    );

    let v2 = store
        .kv_put("prefs", "units", json!("imperial"), Expected::Version(v1))
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let stale = store
        .kv_put("prefs", "units", json!("stale"), Expected::Version(v1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::VersionConflict {
                expected: Some(1),
                actual: Some(2)
            }
        ),
        "{stale:?}"
    );
    let entry = store.kv_get("prefs", "units").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.version), (json!("imperial"), 2));

    assert_eq!(
        store
            .kv_put("prefs", "units", json!(3), Expected::Any)
            .await
            .unwrap(),
        3
    );
    let missing = store
        .kv_put("prefs", "nope", json!(1), Expected::Version(1))
        .await
        .unwrap_err();
    assert!(matches!(
        missing,
        Error::VersionConflict {
            expected: Some(1),
            actual: None
        }
    ));

    let wrong = store
        .kv_delete("prefs", "units", Expected::Version(1))
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::VersionConflict { .. }));
    assert!(store
        .kv_delete("prefs", "units", Expected::Version(3))
        .await
        .unwrap());
    assert!(!store
        .kv_delete("prefs", "units", Expected::Any)
        .await
        .unwrap());
    assert_eq!(store.kv_get("prefs", "units").await.unwrap(), None);
}

#[tokio::test]
async fn kv_lists_by_prefix_in_key_order_with_paging() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    for key in ["user:2", "user:1", "team:1", "user:3", "user_x"] {
        store
            .kv_put("ns", key, json!(key), Expected::Absent)
            .await
            .unwrap();
    }
    let keys = |v: Vec<tenant_memory::KvEntry>| v.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.kv_list("ns", "user:", None, 10).await.unwrap()),
        ["user:1", "user:2", "user:3"]
    );
    assert_eq!(
        keys(
            store
                .kv_list("ns", "user:", Some("user:1"), 1)
                .await
                .unwrap()
        ),
        ["user:2"]
    );
    assert_eq!(store.kv_list("ns", "", None, 10).await.unwrap().len(), 5);
    // LIKE metacharacters are literal.
    assert_eq!(
        keys(store.kv_list("ns", "user_", None, 10).await.unwrap()),
        ["user_x"]
    );
}

#[tokio::test]
async fn checkpoints_put_get_latest_and_list_with_parents() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    let thread = store.create_thread("chat", json!({})).await.unwrap();

    store
        .put_checkpoint(
            thread.id,
            "graph",
            NewCheckpoint::new("c1", json!({"step": 1})),
        )
        .await
        .unwrap();
    let c2 = store
        .put_checkpoint(
            thread.id,
            "graph",
            NewCheckpoint::new("c2", json!({"step": 2}))
                .with_parent("c1")
                .with_metadata(json!({"n": 2})),
        )
        .await
        .unwrap();
    assert_eq!(c2.parent_id.as_deref(), Some("c1"));
    assert_eq!(
        store.latest_checkpoint(thread.id, "graph").await.unwrap(),
        Some(c2.clone())
    );
    assert_eq!(
        store
            .checkpoint(thread.id, "graph", "c1")
            .await
            .unwrap()
            .unwrap()
            .state,
        json!({"step": 1})
    );
    let ids: Vec<_> = store
        .list_checkpoints(thread.id, "graph", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c2", "c1"]);
    assert_eq!(
        store.latest_checkpoint(thread.id, "other").await.unwrap(),
        None
    );

    let orphan = store
        .put_checkpoint(
            tenant_memory::ThreadId::random(),
            "graph",
            NewCheckpoint::new("c", json!(1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(orphan, Error::ThreadNotFound), "{orphan:?}");
}

#[tokio::test]
async fn namespaces_outside_the_capabilities_are_refused() {
    let fx = Fixture::shared().await;
    let ctx = fx.tenant_with(
        Capabilities::none()
            .with_memory_namespaces(["prefs"])
            .unwrap()
            .with_max_delegation_depth(1),
    );
    let store = fx.store(&ctx);
    store
        .kv_put("prefs", "k", json!(1), Expected::Absent)
        .await
        .unwrap();
    let err = store.kv_get("secrets", "k").await.unwrap_err();
    assert!(matches!(err, Error::NamespaceNotAllowed { ref namespace } if namespace == "secrets"));
    let err = store.create_thread("chat", json!({})).await.unwrap_err();
    assert!(matches!(err, Error::NamespaceNotAllowed { ref namespace } if namespace == "chat"));
    let thread = store.create_thread("prefs", json!({})).await.unwrap();
    let err = store
        .put_checkpoint(thread.id, "graph", NewCheckpoint::new("c", json!(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NamespaceNotAllowed { .. }));
}

#[tokio::test]
async fn a_delegated_store_is_limited_to_the_childs_namespaces() {
    let fx = Fixture::shared().await;
    let root = fx.tenant_with(
        Capabilities::none()
            .with_memory_namespaces(["prefs", "scratch"])
            .unwrap()
            .with_max_delegation_depth(2),
    );
    let store = fx.store(&root);
    store
        .kv_put("prefs", "k", json!("root"), Expected::Absent)
        .await
        .unwrap();

    let child = root
        .delegate(AgentId::new("researcher").unwrap())
        .memory_namespaces(["scratch"])
        .issue()
        .unwrap();
    let sub = store.delegate(&child).unwrap();
    assert_eq!(sub.context().tenant(), root.tenant());
    sub.kv_put("scratch", "notes", json!("child"), Expected::Absent)
        .await
        .unwrap();
    assert!(matches!(
        sub.kv_get("prefs", "k").await,
        Err(Error::NamespaceNotAllowed { .. })
    ));
    // The parent sees what the child wrote: same tenant.
    assert_eq!(
        store
            .kv_get("scratch", "notes")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!("child")
    );
}

#[tokio::test]
async fn delegating_to_an_unrelated_context_is_refused() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    let stranger = fx.tenant();
    let err = store.delegate(&stranger).unwrap_err();
    assert!(
        matches!(err, Error::Context(tenant_core::Error::NotDescendant)),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_names_are_rejected_before_the_database() {
    let fx = Fixture::shared().await;
    let store = fx.store(&fx.tenant());
    for (ns, key) in [
        ("", "k"),
        ("ns", ""),
        ("ns", "a\u{0}b"),
        ("ns", &"x".repeat(600)),
    ] {
        let err = store.kv_get(ns, key).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { .. }),
            "{ns:?}/{key:?}: {err:?}"
        );
    }
}
