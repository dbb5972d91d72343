// The isolation suite, included by each test binary that runs it on one
// deployment: the including module defines
// `async fn fixture() -> Option<Fixture>` (`None`: the deployment is absent
// and the suite is skipped) and `const ISOLATION_CASES: u32`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;
use tenant_memory::{
    Error, Expected, MemoryStore, MessageRole, NewCheckpoint, NewMessage, ThreadId,
};

const TENANTS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    CreateThread {
        tenant: usize,
    },
    Append {
        tenant: usize,
        thread: usize,
        count: usize,
    },
    KvPut {
        tenant: usize,
        key: u8,
        value: i32,
    },
    KvDelete {
        tenant: usize,
        key: u8,
    },
    Checkpoint {
        tenant: usize,
        thread: usize,
        id: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS;
    prop_oneof![
        t.clone().prop_map(|tenant| Op::CreateThread { tenant }),
        (t.clone(), any::<usize>(), 1..4usize).prop_map(|(tenant, thread, count)| Op::Append {
            tenant,
            thread,
            count
        }),
        (t.clone(), 0..4u8, any::<i32>()).prop_map(|(tenant, key, value)| Op::KvPut {
            tenant,
            key,
            value
        }),
        (t.clone(), 0..4u8).prop_map(|(tenant, key)| Op::KvDelete { tenant, key }),
        (t, any::<usize>(), 0..3u8).prop_map(|(tenant, thread, id)| Op::Checkpoint {
            tenant,
            thread,
            id
        }),
    ]
}

/// What each tenant should see.
#[derive(Default)]
struct Model {
    /// Every thread ever created, with its tenant (others' ids are probed too).
    threads: Vec<(usize, ThreadId)>,
    messages: BTreeMap<ThreadId, usize>,
    kv: BTreeMap<(usize, String), serde_json::Value>,
    checkpoints: BTreeMap<ThreadId, BTreeSet<String>>,
}

async fn apply(stores: &[MemoryStore], model: &mut Model, op: Op) {
    match op {
        Op::CreateThread { tenant } => {
            let thread = stores[tenant]
                .create_thread("chat", json!({ "tenant": tenant }))
                .await
                .unwrap();
            model.threads.push((tenant, thread.id));
        }
        Op::Append {
            tenant,
            thread,
            count,
        } => {
            let Some(&(owner, id)) = model.threads.get(thread % model.threads.len().max(1)) else {
                return;
            };
            let batch = (0..count)
                .map(|i| NewMessage::new(MessageRole::User, json!([tenant, i])))
                .collect();
            let result = stores[tenant].append_messages(id, batch).await;
            if owner == tenant {
                result.unwrap();
                *model.messages.entry(id).or_default() += count;
            } else {
                assert!(matches!(result, Err(Error::ThreadNotFound)), "{result:?}");
            }
        }
        Op::KvPut { tenant, key, value } => {
            let key = format!("k{key}");
            stores[tenant]
                .kv_put("ns", &key, json!(value), Expected::Any)
                .await
                .unwrap();
            model.kv.insert((tenant, key), json!(value));
        }
        Op::KvDelete { tenant, key } => {
            let key = format!("k{key}");
            let deleted = stores[tenant]
                .kv_delete("ns", &key, Expected::Any)
                .await
                .unwrap();
            assert_eq!(deleted, model.kv.remove(&(tenant, key)).is_some());
        }
        Op::Checkpoint { tenant, thread, id } => {
            let Some(&(owner, thread_id)) = model.threads.get(thread % model.threads.len().max(1))
            else {
                return;
            };
            let id = format!("c{id}");
            let result = stores[tenant]
                .put_checkpoint(
                    thread_id,
                    "graph",
                    NewCheckpoint::new(id.clone(), json!({ "by": tenant })),
                )
                .await;
            if owner == tenant {
                result.unwrap();
                model.checkpoints.entry(thread_id).or_default().insert(id);
            } else {
                assert!(matches!(result, Err(Error::ThreadNotFound)), "{result:?}");
            }
        }
    }
}

async fn verify(stores: &[MemoryStore], model: &Model) {
    for (tenant, store) in stores.iter().enumerate() {
        let own: BTreeSet<ThreadId> = model
            .threads
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, id)| *id)
            .collect();
        let listed: BTreeSet<ThreadId> = store
            .list_threads(1000)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, own, "tenant {tenant} lists exactly its threads");

        let mut own_messages = 0;
        let mut own_checkpoints = 0;
        for &(owner, id) in &model.threads {
            let mine = owner == tenant;
            assert_eq!(store.thread(id).await.unwrap().is_some(), mine);
            let expected = if mine {
                model.messages.get(&id).copied().unwrap_or(0)
            } else {
                0
            };
            let last = store.last_messages(id, 1000).await.unwrap();
            assert_eq!(last.len(), expected);
            assert!(last.iter().all(|m| m.content[0] == json!(tenant)));
            let page = store.messages(id, None, 1000).await.unwrap();
            assert_eq!(page.messages.len(), expected);
            let cps: BTreeSet<String> = store
                .list_checkpoints(id, "graph", 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect();
            let expected_cps = if mine {
                model.checkpoints.get(&id).cloned().unwrap_or_default()
            } else {
                BTreeSet::new()
            };
            assert_eq!(cps, expected_cps);
            if mine {
                own_messages += expected;
                own_checkpoints += expected_cps.len();
            }
        }

        let kv: BTreeMap<String, serde_json::Value> = store
            .kv_list("ns", "", None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        let expected_kv: BTreeMap<String, serde_json::Value> = model
            .kv
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(kv, expected_kv);

        // The agent's SQL tool, asked for everything, gets only its own.
        let counts = &store
            .read_only_sql(
                "SELECT (SELECT count(*) FROM tenant_memory.threads) AS threads, \
                        (SELECT count(*) FROM tenant_memory.messages) AS messages, \
                        (SELECT count(*) FROM tenant_memory.kv) AS kv, \
                        (SELECT count(*) FROM tenant_memory.checkpoints) AS checkpoints, \
                        (SELECT count(DISTINCT tenant_id) FROM tenant_memory.threads) AS tenants",
            )
            .await
            .unwrap()[0];
        assert_eq!(counts["threads"], json!(own.len()));
        assert_eq!(counts["messages"], json!(own_messages));
        assert_eq!(counts["kv"], json!(expected_kv.len()));
        assert_eq!(counts["checkpoints"], json!(own_checkpoints));
        assert!(counts["tenants"] == json!(0) || counts["tenants"] == json!(1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ISOLATION_CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_api_ever_returns_another_tenants_data(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Some(fx) = fixture().await else { return };
            let stores: Vec<MemoryStore> = (0..TENANTS).map(|_| fx.store(&fx.tenant())).collect();
            let mut model = Model::default();
            for op in ops {
                apply(&stores, &mut model, op).await;
            }
            verify(&stores, &model).await;
            fx.app.close().await;
            fx.owner.close().await;
        });
    }
}
