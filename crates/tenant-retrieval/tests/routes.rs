//! Routes are shared: a tier change made by one process is observed by
//! every other process before it serves that tenant again.
//!
//! - Embedded (qdrant-edge): one process serves a root at a time (a second
//!   opener gets `BackendInUse`), and every `Retrieval` in that process
//!   shares the backend's routes. The next process to open the root loads
//!   the moved routes.
//! - Qdrant server: routes live in the server with a version; a process
//!   holding a stale route re-runs the operation on the new one. The child
//!   half runs in a second process (this test binary re-invoked).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tenant_core::{IsolationTier, TenantId};
use tenant_retrieval::testing::qdrant_edge::{
    self, Condition, FieldCondition, Filter, Match, ValueVariants,
};
use tenant_retrieval::{EdgeBackend, Error, RetrievalClient, SearchQuery};

const CHILD_ENV: &str = "TR_ROUTES_CHILD";
const DIR_ENV: &str = "TR_ROUTES_DIR";
const TENANT_ENV: &str = "TR_ROUTES_TENANT";
const PREFIX_ENV: &str = "TR_ROUTES_PREFIX";
const N: usize = 30;

fn spawn_child(mode: &str, envs: &[(&str, String)]) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "routes_child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

/// The next line the child printed that starts with `prefix`.
fn expect(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before `{prefix}`"
        );
        // The first line printed follows libtest's "test ... " on the same
        // line.
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim().to_owned();
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
}

fn send(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
}

fn read_command() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    line.trim().to_owned()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap()
}

async fn client_for(w: &World, tenant: TenantId) -> RetrievalClient {
    w.client(&w.ctx(tenant), DOCS)
}

/// The child half; a no-op unless spawned by a test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tenant: TenantId = env(TENANT_ENV).parse().unwrap();
    match mode.as_str() {
        "edge-open" => match EdgeBackend::open(env(DIR_ENV)) {
            Err(Error::BackendInUse { .. }) => println!("result in-use"),
            other => println!("result {other:?}"),
        },
        "edge-serve" => {
            let w = edge_world_at(env(DIR_ENV).as_ref()).await;
            let c = client_for(&w, tenant).await;
            let tier = w.retrieval.tier_of(c.context(), DOCS).unwrap();
            let hits = search_all(&w, &c).await;
            c.upsert([w.doc("from-child", "written by the second process")])
                .await
                .unwrap();
            println!("result tier={tier:?} hits={hits}");
        }
        #[cfg(feature = "server")]
        "server" => server_child(tenant).await,
        other => panic!("unknown child mode {other}"),
    }
}

async fn search_all(w: &World, c: &RetrievalClient) -> usize {
    c.search(SearchQuery::new(w.embed.embed_one("routed document")).top_k(500))
        .await
        .unwrap()
        .len()
}

async fn edge_world_at(dir: &std::path::Path) -> World {
    let issuer = tenant_core::ContextIssuer::new(tenant_core::MasterKey::generate(
        tenant_core::KeyId::new("k").unwrap(),
    ));
    let edge = EdgeBackend::open(dir).unwrap();
    let operators = TenantId::random();
    let retrieval = platform(edge.clone(), &issuer, pool(), operators)
        .build()
        .await
        .unwrap();
    World {
        issuer,
        retrieval,
        edge: Some(edge),
        dir: None,
        embed: tenant_retrieval::HashEmbedder::new(DIMS),
        operators,
    }
}

fn raw_pool_count(w: &World, tenant: TenantId) -> usize {
    let filter = Filter::new_must(Condition::Field(FieldCondition::new_match(
        "tenant_id".parse().unwrap(),
        Match::new_value(ValueVariants::String(tenant.to_string())),
    )));
    w.edge
        .as_ref()
        .unwrap()
        .with_raw_shard(&w.retrieval.naming().pool(DOCS), |s| {
            s.count(qdrant_edge::CountRequest {
                filter: Some(filter),
                exact: true,
            })
            .unwrap()
        })
        .unwrap()
}

#[test]
fn an_edge_root_is_served_by_one_process_and_the_next_one_sees_the_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::random();
    let envs = [
        (DIR_ENV, dir.path().display().to_string()),
        (TENANT_ENV, tenant.to_string()),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let w = edge_world_at(dir.path()).await;
        let c = client_for(&w, tenant).await;
        c.upsert((0..N).map(|i| w.doc(&format!("d{i}"), "routed document")))
            .await
            .unwrap();

        // While this process serves the root, another cannot even open it.
        let (mut child, _stdin, mut out) = spawn_child("edge-open", &envs);
        assert_eq!(expect(&mut out, "result "), "in-use");
        child.wait().unwrap();

        w.retrieval.promote(c.context()).await.unwrap();
        assert_eq!(raw_pool_count(&w, tenant), 0);
    });

    // The next process to open the root serves the tenant from its Silo
    // (its own resolver still says Pool) and writes there.
    let (mut child, _stdin, mut out) = spawn_child("edge-serve", &envs);
    assert_eq!(expect(&mut out, "result "), format!("tier=Silo hits={N}"));
    assert!(child.wait().unwrap().success());

    rt.block_on(async {
        let w = edge_world_at(dir.path()).await;
        let c = client_for(&w, tenant).await;
        assert_eq!(
            w.retrieval.tier_of(c.context(), DOCS).unwrap(),
            IsolationTier::Silo
        );
        assert!(c.get("from-child").await.unwrap().is_some());
        assert_eq!(c.count(None).await.unwrap(), N as u64 + 1);
        assert_eq!(
            raw_pool_count(&w, tenant),
            0,
            "nothing written to the old tier"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retrieval_on_one_edge_backend_sees_a_promotion_at_once() {
    let w = world(Kind::Edge, pool()).await.unwrap();
    let edge = w.edge.clone().unwrap();
    // A second platform object on the same backend (say, built by another
    // part of the application) with its own resolver.
    let other = platform(edge, &w.issuer, pool(), w.operators)
        .build()
        .await
        .unwrap();
    let tenant = TenantId::random();
    let ctx = w.ctx(tenant);
    let c1 = w.client(&ctx, DOCS);
    let c2 = tenant_retrieval::RetrievalClient::builder()
        .backend(&other)
        .collection(DOCS)
        .tenant(&ctx)
        .build()
        .unwrap();
    c1.upsert((0..N).map(|i| w.doc(&format!("d{i}"), "routed document")))
        .await
        .unwrap();
    assert_eq!(search_all(&w, &c2).await, N);
    w.retrieval.promote(&ctx).await.unwrap();
    assert_eq!(other.tier_of(&ctx, DOCS).unwrap(), IsolationTier::Silo);
    assert_eq!(search_all(&w, &c2).await, N);
    c2.upsert([w.doc("via-other", "routed document")])
        .await
        .unwrap();
    assert_eq!(c1.count(None).await.unwrap(), N as u64 + 1);
    assert_eq!(raw_pool_count(&w, tenant), 0);
    // And a second, independent open of the same root is refused.
    assert!(matches!(
        EdgeBackend::open(w.dir.as_ref().unwrap().path()).unwrap_err(),
        Error::BackendInUse { .. }
    ));
}

#[cfg(feature = "server")]
async fn server_world_with_prefix(prefix: &str) -> Option<World> {
    let url = std::env::var("QDRANT_URL").ok()?;
    let issuer = tenant_core::ContextIssuer::new(tenant_core::MasterKey::generate(
        tenant_core::KeyId::new("k").unwrap(),
    ));
    let backend = tenant_retrieval::QdrantBackend::builder(url)
        .routes_collection(format!("{prefix}__routes"))
        .build()
        .unwrap();
    let operators = TenantId::random();
    let retrieval = platform(backend, &issuer, pool(), operators)
        .naming(tenant_retrieval::Naming::with_prefix(prefix).unwrap())
        .build()
        .await
        .unwrap();
    Some(World {
        issuer,
        retrieval,
        edge: None,
        dir: None,
        embed: tenant_retrieval::HashEmbedder::new(DIMS),
        operators,
    })
}

/// The second process on a shared Qdrant server: caches the tenant's
/// route, then reads and writes after the parent moved the tenant, then
/// writes continuously while the parent moves it back.
#[cfg(feature = "server")]
async fn server_child(tenant: TenantId) {
    let w = server_world_with_prefix(&env(PREFIX_ENV)).await.unwrap();
    let c = client_for(&w, tenant).await;
    println!("ready hits={}", search_all(&w, &c).await);
    assert_eq!(read_command(), "go");
    let hits = search_all(&w, &c).await;
    let count = c.count(None).await.unwrap();
    c.upsert([w.doc("from-child", "routed document")])
        .await
        .unwrap();
    println!("after hits={hits} count={count}");
    assert_eq!(read_command(), "write");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = read_command();
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        c.upsert([w.doc(&format!("w{i}"), "routed document")])
            .await
            .unwrap();
        println!("acked {i}");
        i += 1;
    }
    println!("stopped {i}");
}

#[cfg(feature = "server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_shared_server_follows_promotion_and_demotion() {
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let Some(w) = server_world_with_prefix(&prefix).await else {
        eprintln!("QDRANT_URL is not set: the two-process server route test was SKIPPED");
        return;
    };
    let tenant = TenantId::random();
    let ctx = w.ctx(tenant);
    let c = w.client(&ctx, DOCS);
    c.upsert((0..N).map(|i| w.doc(&format!("d{i}"), "routed document")))
        .await
        .unwrap();
    let (mut child, mut stdin, mut out) = spawn_child(
        "server",
        &[
            (TENANT_ENV, tenant.to_string()),
            (PREFIX_ENV, prefix.clone()),
            ("QDRANT_URL", env("QDRANT_URL")),
        ],
    );
    let ready = tokio::task::block_in_place(|| expect(&mut out, "ready "));
    assert_eq!(ready, format!("hits={N}"));

    // The child has cached "Pool"; move the tenant under it.
    w.retrieval.promote(&ctx).await.unwrap();
    send(&mut stdin, "go");
    let after = tokio::task::block_in_place(|| expect(&mut out, "after "));
    assert_eq!(after, format!("hits={N} count={N}"), "stale route served");
    assert!(
        c.get("from-child").await.unwrap().is_some(),
        "child wrote to the old tier"
    );

    // Now the child writes continuously while the tenant moves back (with
    // enough points that the copy takes a while).
    const MORE: usize = 1000;
    for chunk in (0..MORE).collect::<Vec<_>>().chunks(250) {
        c.upsert(chunk.iter().map(|i| w.doc(&format!("m{i}"), "bulk")))
            .await
            .unwrap();
    }
    send(&mut stdin, "write");
    tokio::task::block_in_place(|| expect(&mut out, "acked "));
    w.retrieval.demote(&ctx).await.unwrap();
    tokio::task::block_in_place(|| expect(&mut out, "acked "));
    send(&mut stdin, "stop");
    let stopped: usize = tokio::task::block_in_place(|| expect(&mut out, "stopped "))
        .parse()
        .unwrap();
    assert!(tokio::task::block_in_place(|| child.wait())
        .unwrap()
        .success());

    assert_eq!(
        w.retrieval.tier_of(&ctx, DOCS).unwrap(),
        IsolationTier::Pool
    );
    for i in 0..stopped {
        assert!(
            c.get(&format!("w{i}")).await.unwrap().is_some(),
            "acknowledged write w{i} lost across the demotion"
        );
    }
    assert_eq!(
        c.count(None).await.unwrap(),
        (N + 1 + MORE + stopped) as u64
    );
    let silo = w.retrieval.naming().silo(DOCS, tenant);
    assert!(
        !w.physical_names().await.contains(&silo),
        "old tier left behind"
    );
    println!("second process: {stopped} acknowledged writes across the demotion, none lost");
}
