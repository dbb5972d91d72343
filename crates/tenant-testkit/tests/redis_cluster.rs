//! Starts a real three-master Redis Cluster and talks to it with the
//! `redis` crate's cluster client.

use redis::cluster::ClusterClient;
use redis::{AsyncCommands, ErrorKind, ServerErrorKind};
use tenant_testkit::redis_cluster::key_slot;
use tenant_testkit::TestRedisCluster;

#[tokio::test]
async fn hash_tags_share_a_node_scripts_run_and_strays_are_moved() {
    // Called from inside a runtime on purpose: start() must not panic here.
    let cluster = TestRedisCluster::start().expect("start redis cluster");
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().len(), 3);

    // The server agrees with the testkit about slots and owners.
    let mut direct = redis::Client::open(cluster.url(0))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect node 0");
    for key in ["{tenant-a}:used", "{tenant-a}:held", "plain", "{}x"] {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut direct)
            .await
            .expect("keyslot");
        assert_eq!(slot, key_slot(key.as_bytes()), "{key}");
    }
    let a = cluster.node_for_key(b"{tenant-a}:used");
    assert_eq!(a, cluster.node_for_key(b"{tenant-a}:held"));

    // A multi-key script over keys of one hash tag runs on their node.
    let client = ClusterClient::new(cluster.urls()).expect("cluster client");
    let mut conn = client
        .get_async_connection()
        .await
        .expect("cluster connect");
    let script = redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]); \
         redis.call('INCRBY', KEYS[2], ARGV[1]); \
         return redis.call('GET', KEYS[1]) + redis.call('GET', KEYS[2])",
    );
    let total: i64 = script
        .key("{tenant-a}:used")
        .key("{tenant-a}:held")
        .arg(5)
        .invoke_async(&mut conn)
        .await
        .expect("script over one slot");
    assert_eq!(total, 10);
    let held: i64 = conn.get("{tenant-a}:held").await.expect("get");
    assert_eq!(held, 5);

    // Keys of different slots cannot share a script.
    let (x, y) = (0..1000)
        .map(|i| format!("k{i}"))
        .find_map(|k| {
            (key_slot(k.as_bytes()) != key_slot(b"{tenant-a}"))
                .then(|| ("{tenant-a}:used".to_owned(), k))
        })
        .expect("a key in another slot");
    let cross = redis::cmd("MGET")
        .arg(&x)
        .arg(&y)
        .query_async::<Vec<Option<i64>>>(&mut direct)
        .await;
    assert!(cross.is_err(), "cross-slot MGET refused: {cross:?}");

    // A plain connection to a node that does not own the slot gets MOVED to
    // the owner.
    let stranger = (a + 1) % cluster.len();
    let mut wrong = redis::Client::open(cluster.url(stranger))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let moved = wrong
        .get::<_, Option<i64>>("{tenant-a}:held")
        .await
        .expect_err("wrong node redirects");
    assert_eq!(
        moved.kind(),
        ErrorKind::Server(ServerErrorKind::Moved),
        "{moved}"
    );
    let (address, slot) = moved.redirect_node().expect("redirect target");
    assert_eq!(slot, key_slot(b"{tenant-a}"));
    assert_eq!(address, format!("127.0.0.1:{}", cluster.port(a)));

    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.node(i).pid()).collect();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node {pid} gone"
        );
    }
}

#[test]
fn shared_cluster_is_formed_once() {
    let cluster = TestRedisCluster::shared();
    assert!(std::ptr::eq(cluster, TestRedisCluster::shared()));
    let client = ClusterClient::new(cluster.urls()).expect("cluster client");
    let mut conn = client.get_connection().expect("sync cluster connection");
    let _: () = redis::cmd("SET")
        .arg("{t}:k")
        .arg(1)
        .query(&mut conn)
        .expect("set");
    let value: i64 = redis::cmd("GET")
        .arg("{t}:k")
        .query(&mut conn)
        .expect("get");
    assert_eq!(value, 1);
}
