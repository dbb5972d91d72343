//! Durability: an upsert that has returned survives `kill -9`.
//!
//! The test re-executes its own binary as a child (selected by
//! `TR_DURABILITY_CHILD`), which upserts documents one call at a time and
//! prints `acked <n>` after each call returns. The parent SIGKILLs it
//! mid-stream, reopens the shard and checks every acknowledged document.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tenant_core::{
    Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId, StaticTiers, TenantId,
};
use tenant_retrieval::{EdgeBackend, RetrievalClient};

const CHILD_ENV: &str = "TR_DURABILITY_CHILD";
const TENANT_ENV: &str = "TR_DURABILITY_TENANT";
const ACKS_BEFORE_KILL: usize = 25;

async fn open(dir: &std::path::Path, tenant: TenantId, collection: &str) -> RetrievalClient {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let retrieval = platform(
        EdgeBackend::open(dir).unwrap(),
        &issuer,
        StaticTiers::new(tenant_core::IsolationTier::Pool),
        TenantId::random(),
    )
    .build()
    .await
    .unwrap();
    let ctx = issuer
        .context()
        .tenant(tenant)
        .principal(PrincipalId::new("svc").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    RetrievalClient::builder()
        .backend(&retrieval)
        .collection(collection)
        .tenant(&ctx)
        .build()
        .unwrap()
}

/// The child half; a no-op unless spawned by the parent test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tenant: TenantId = std::env::var(TENANT_ENV).unwrap().parse().unwrap();
    let client = open(dir.as_ref(), tenant, SEALED).await;
    let embed = tenant_retrieval::HashEmbedder::new(DIMS);
    for i in 0.. {
        let text = format!("durable document number {i}");
        client
            .upsert([tenant_retrieval::Document::new(
                format!("d{i}"),
                embed.embed_one(&text),
                text,
            )
            .with_metadata("lang", "en")])
            .await
            .unwrap();
        println!("acked {i}");
    }
}

#[test]
fn acknowledged_upserts_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::random();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .env(TENANT_ENV, tenant.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last_acked = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            let n: usize = n.trim().parse().unwrap();
            last_acked = Some(n);
            if n + 1 >= ACKS_BEFORE_KILL {
                break;
            }
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no final flush
    child.wait().unwrap();
    let last = last_acked.expect("child acknowledged nothing");
    println!(
        "child killed with SIGKILL after {} acknowledged upserts",
        last + 1
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = open(dir.path(), tenant, SEALED).await;
        for i in 0..=last {
            let rec = client.get(&format!("d{i}")).await.unwrap();
            assert_eq!(
                rec.map(|r| r.text),
                Some(format!("durable document number {i}")),
                "acknowledged document d{i} lost"
            );
        }
        let n = client.count(None).await.unwrap();
        assert!(n as usize > last, "count {n} < acknowledged {}", last + 1);
    });
}
