//! Servers held in `static`s (never dropped) must not outlive the process,
//! whether it exits normally or is killed.
//!
//! Each test re-runs this test binary as a child that starts the shared
//! servers, prints their pids and directories, and then exits (without
//! running destructors) or waits to be `SIGKILL`ed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tenant_testkit::{
    TestCitus, TestPgBouncer, TestPostgres, TestQdrant, TestRedis, TestRedisCluster, TestkitError,
};

const CHILD_ENV: &str = "TENANT_TESTKIT_TEARDOWN_CHILD";

fn report_pid(name: &str, pid: u32) {
    println!("TESTKIT {name}_pid={pid}");
}

fn report_dir(name: &str, dir: &Path) {
    println!("TESTKIT {name}_dir={}", dir.display());
}

/// Runs only when spawned by the tests below.
#[test]
#[ignore = "helper process for the teardown tests"]
fn child_holds_shared_servers() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let pg = TestPostgres::shared();
    report_pid("pg", pg.pid());
    report_dir("pg", pg.data_dir());

    let redis = TestRedis::shared();
    let redis_log = redis.log_path().expect("redis running");
    report_pid("redis", redis.pid().expect("redis running"));
    report_dir("redis", redis_log.parent().expect("run dir"));

    let bouncer = TestPgBouncer::shared();
    report_pid("pgbouncer", bouncer.pid());
    report_dir("pgbouncer", bouncer.config_path().parent().expect("dir"));

    let cluster = TestRedisCluster::shared();
    for index in 0..cluster.len() {
        let node = cluster.node(index);
        report_pid("redis_cluster", node.pid().expect("node running"));
        report_dir(
            "redis_cluster",
            node.log_path().expect("log").parent().expect("dir"),
        );
    }

    match TestCitus::try_shared() {
        Ok(citus) => {
            for node in std::iter::once(citus.coordinator()).chain(citus.workers()) {
                report_pid("citus", node.pid());
                report_dir("citus", node.data_dir());
            }
        }
        Err(TestkitError::CitusNotFound { .. }) => eprintln!("Citus not installed: skipped"),
        Err(e) => panic!("citus: {e}"),
    }

    match TestQdrant::try_shared() {
        Ok(qdrant) => {
            report_pid("qdrant", qdrant.pid().expect("qdrant running"));
            report_dir("qdrant", qdrant.storage_dir().parent().expect("dir"));
            // A node killed as in a crash test keeps its storage for a
            // restart, but not beyond the process.
            let mut crashed = TestQdrant::start().expect("second qdrant");
            crashed.kill().expect("kill");
            report_dir(
                "qdrant_killed",
                crashed.storage_dir().parent().expect("dir"),
            );
            std::mem::forget(crashed);
        }
        Err(TestkitError::QdrantNotFound { .. }) => eprintln!("Qdrant not found: skipped"),
        Err(e) => panic!("qdrant: {e}"),
    }
    println!("TESTKIT ready");
    match mode.as_str() {
        // Statics are never dropped; exit skips every destructor anyway.
        // Wait for the parent to have checked the servers (it closes our
        // stdin) so that they are not stopped under its feet.
        "exit" => {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            std::process::exit(0)
        }
        _ => std::thread::sleep(Duration::from_secs(120)),
    }
}

struct ChildReport {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

fn spawn_child(mode: &str) -> (std::process::Child, ChildReport) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "child_holds_shared_servers",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    let stdout = child.stdout.take().expect("stdout");
    let mut report = ChildReport {
        pids: Vec::new(),
        dirs: Vec::new(),
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        // The harness may have printed "test name ... " on the same line.
        let Some((_, rest)) = line.split_once("TESTKIT ") else {
            continue;
        };
        if rest == "ready" {
            break;
        }
        let (key, value) = rest.split_once('=').expect("key=value");
        if key.ends_with("_pid") {
            report.pids.push(value.parse().expect("pid"));
        } else {
            report.dirs.push(PathBuf::from(value));
        }
    }
    // PostgreSQL, Redis, PgBouncer and three Redis Cluster nodes at least.
    assert!(
        report.pids.len() >= 6,
        "child reported its servers: {:?}",
        report.pids
    );
    for pid in &report.pids {
        assert!(alive(*pid), "server {pid} running while the child lives");
    }
    (child, report)
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn assert_cleaned_up(report: &ChildReport) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: Vec<_> = report.pids.iter().filter(|p| alive(**p)).collect();
        let left: Vec<_> = report
            .dirs
            .iter()
            .filter(|d| Path::new(d).exists())
            .collect();
        if live.is_empty() && left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orphans after the child ended: pids {live:?}, dirs {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn servers_stop_when_process_exits_without_drop() {
    let (mut child, report) = spawn_child("exit");
    // EOF on its stdin lets the child exit.
    drop(child.stdin.take());
    let status = child.wait().expect("wait child");
    assert!(status.success(), "child failed: {status}");
    assert_cleaned_up(&report);
}

#[test]
fn servers_stop_when_process_is_killed() {
    let (mut child, report) = spawn_child("kill");
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    assert_cleaned_up(&report);
}
