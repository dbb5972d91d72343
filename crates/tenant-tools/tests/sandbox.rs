//! The kernel sandbox, attacked from inside, on the real kernel.

mod fixture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_core::*;
use tenant_tools::sandbox::WaitStatus;
use tenant_tools::Error;
use tenant_tools::*;

use fixture::*;

fn sandbox_with(f: impl FnOnce(&mut SandboxConfig)) -> Sandbox {
    let mut config = SandboxConfig::default();
    f(&mut config);
    Sandbox::new(config).expect("this machine supports every sandbox layer")
}

struct Run {
    _dir: tempfile::TempDir,
    root: WorkspaceRoot,
    ctx: TenantContext,
    ws: Workspace,
}

fn run_setup() -> Run {
    let (dir, root) = workspace_root();
    let ctx = ctx_with_tools(&issuer(), TenantId::random(), &[]);
    let ws = root.create(&ctx).unwrap();
    Run {
        _dir: dir,
        root,
        ctx,
        ws,
    }
}

fn sh(script: &str) -> SandboxCommand {
    SandboxCommand::new("/bin/sh").args(["-c", script])
}

#[test]
fn the_kernel_supports_and_enforces_every_layer() {
    let s = SandboxSupport::detect();
    assert!(s.namespaces);
    assert!(s.landlock_abi.unwrap() >= 4);
    assert!(s.landlock_enforced && s.seccomp_enforced);
}

#[test]
fn an_unavailable_isolation_level_is_an_error_not_a_downgrade() {
    let config = SandboxConfig {
        min_landlock_abi: 99,
        ..SandboxConfig::default()
    };
    assert!(matches!(
        Sandbox::new(config),
        Err(Error::SandboxUnavailable(_))
    ));
}

#[test]
fn a_command_runs_as_an_unprivileged_pid_1_with_only_its_declared_environment() {
    let r = run_setup();
    let sb = sandbox_with(|_| {});
    let out = sb
        .run(
            &r.ws,
            &sh("id -u; echo $$; env | sort; echo hi > out.txt").env("GREETING", "hello"),
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(
        lines[1], "1",
        "the command is pid 1 of its own pid namespace"
    );
    assert!(text.contains("GREETING=hello"));
    assert!(
        !text.contains("CARGO") && !text.contains("HOME="),
        "host environment leaked: {text}"
    );
    assert_eq!(r.ws.read("out.txt").unwrap(), b"hi\n");
}

#[test]
fn a_sandboxed_process_cannot_read_etc_shadow() {
    let r = run_setup();
    let out = sandbox_with(|_| {})
        .run(&r.ws, &sh("cat /etc/shadow; cat /etc/passwd"))
        .unwrap();
    assert!(!out.success());
    assert!(out.stdout.is_empty());
    assert!(out.stderr_text().contains("Permission denied"));
}

#[test]
fn a_sandboxed_process_cannot_read_another_workspace() {
    let r = run_setup();
    let other_ctx = ctx_with_tools(&issuer(), TenantId::random(), &[]);
    let other = r.root.create(&other_ctx).unwrap();
    other.write("secret.txt", b"tenant B's secret").unwrap();
    let sb = sandbox_with(|_| {});
    // Even when the other workspace belongs to the same sandbox user.
    sb.run(&other, &sh("true")).unwrap();
    let script = format!(
        "cat {}/secret.txt; ls {}",
        other.path().display(),
        other.path().display()
    );
    let out = sb.run(&r.ws, &sh(&script)).unwrap();
    assert!(!out.success());
    assert!(!out.stdout_text().contains("secret"));
    assert_eq!(other.read("secret.txt").unwrap(), b"tenant B's secret");
}

#[test]
fn a_sandboxed_process_cannot_write_outside_its_workspace() {
    let r = run_setup();
    let target = format!("/tmp/tenant-tools-escape-{}", uuid_like());
    let parent_target = r.ws.path().parent().unwrap().join("escape");
    let script = format!(
        "echo x > {target}; echo x > {}; mkdir /usr/escape; touch /dev/shm/escape",
        parent_target.display()
    );
    let out = sandbox_with(|_| {}).run(&r.ws, &sh(&script)).unwrap();
    assert!(!out.success());
    assert!(!std::path::Path::new(&target).exists());
    assert!(!parent_target.exists());
    assert!(!std::path::Path::new("/usr/escape").exists());
    assert!(!std::path::Path::new("/dev/shm/escape").exists());
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

#[test]
fn a_sandboxed_process_cannot_reach_a_listening_loopback_port() {
    let r = run_setup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("echo GET > /dev/tcp/127.0.0.1/{port} && echo connected");
    let out = sandbox_with(|_| {})
        .run(
            &r.ws,
            &SandboxCommand::new("/bin/bash").args(["-c", &script]),
        )
        .unwrap();
    assert!(!out.success());
    assert!(!out.stdout_text().contains("connected"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the listener saw a connection"
    );
}

#[test]
fn ptrace_io_uring_bpf_and_unshare_are_refused_by_seccomp() {
    let r = run_setup();
    // x86-64 numbers: ptrace 101, io_uring_setup 425, bpf 321, unshare 272,
    // process_vm_readv 310, keyctl 250, perf_event_open 298.
    let script = r#"for my $nr (101, 425, 321, 272, 310, 250, 298) {
        my $r = syscall($nr, 0, 0, 0, 0, 0); print "$nr $r ", $!+0, "\n" }"#;
    let out = sandbox_with(|_| {})
        .run(
            &r.ws,
            &SandboxCommand::new("/usr/bin/perl").args(["-e", script]),
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    for line in text.lines() {
        assert!(line.ends_with(" -1 1"), "not refused with EPERM: {line}");
    }
    assert_eq!(text.lines().count(), 7);
}

#[test]
fn a_fork_bomb_is_contained_by_the_process_limit() {
    const UID: u32 = 64_990;
    let r = run_setup();
    let sb = sandbox_with(|c| {
        c.host_uid = UID;
        c.host_gid = UID;
        c.limits.processes = 32;
        c.timeout = Duration::from_secs(3);
    });
    let started = Instant::now();
    let out = sb
        .run(
            &r.ws,
            &sh("bomb() { bomb | bomb & }; bomb; sleep 1; echo survived"),
        )
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        out.stderr_text().contains("fork") || out.stderr_text().contains("Resource"),
        "the limit did not bite: {}",
        out.stderr_text()
    );
    assert_eq!(
        processes_of_uid(UID),
        0,
        "bomb processes survived the sandbox"
    );
    // The host can still start processes.
    assert!(std::process::Command::new("/bin/true")
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_sleeping_process_is_killed_at_the_timeout_with_its_children() {
    const UID: u32 = 64_991;
    let r = run_setup();
    let sb = sandbox_with(|c| {
        c.host_uid = UID;
        c.host_gid = UID;
    });
    let started = Instant::now();
    let out = sb
        .run(
            &r.ws,
            &sh("sleep 100 & sleep 100 & (sleep 100 &) ; sleep 100")
                .timeout(Duration::from_millis(500)),
        )
        .unwrap();
    let elapsed = started.elapsed();
    assert!(out.timed_out);
    assert_eq!(out.status, WaitStatus::Signaled(libc_sigkill()));
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(processes_of_uid(UID), 0, "children survived the timeout");
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn a_relative_program_path_or_nul_byte_is_refused() {
    let r = run_setup();
    let sb = sandbox_with(|_| {});
    assert!(matches!(
        sb.run(&r.ws, &SandboxCommand::new("sh")),
        Err(Error::InvalidCommand(_))
    ));
    assert!(matches!(
        sb.run(&r.ws, &SandboxCommand::new("/bin/sh").arg("a\0b")),
        Err(Error::InvalidCommand(_))
    ));
}

#[test]
fn a_missing_program_reports_the_execve_error() {
    let r = run_setup();
    let err = sandbox_with(|_| {})
        .run(&r.ws, &SandboxCommand::new("/usr/bin/does-not-exist"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SandboxSetup {
                stage: "execve",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_warm_pool_recycles_only_verified_clean_sandboxes() {
    let r = run_setup();
    let sb = Arc::new(sandbox_with(|_| {}));
    let pool = WarmPool::builder()
        .sandbox(&sb)
        .workspace_root(&r.root)
        .size(2)
        .uid_base(64_000)
        .tenant(&r.ctx)
        .build()
        .unwrap();
    assert_eq!(pool.ready(), 2);
    {
        let mut warm = pool.acquire().unwrap();
        assert_eq!(pool.ready(), 1);
        let out = warm
            .run(&sh("echo leftover > file; sleep 100 & echo $$").env("RUN", "first"))
            .unwrap();
        assert_eq!(out.stdout_text().trim(), "1");
        assert!(matches!(warm.run(&sh("true")), Err(Error::WipeFailed(_))));
    }
    // Recycled: back in the pool, workspace empty, no process left.
    assert_eq!(pool.ready(), 2);
    for _ in 0..2 {
        let mut warm = pool.acquire().unwrap();
        assert!(warm.workspace().unwrap().is_empty().unwrap());
        let out = warm.run(&sh("ls -A; env")).unwrap();
        assert!(out.success());
        assert!(!out.stdout_text().contains("leftover"));
        assert!(!out.stdout_text().contains("RUN=first"));
    }
    assert!(processes_of_uid(64_000) == 0 && processes_of_uid(64_001) == 0);
    let _a = pool.acquire().unwrap();
    let _b = pool.acquire().unwrap();
    assert!(matches!(pool.acquire(), Err(Error::PoolExhausted)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_tool_runs_in_the_sandbox_through_the_executor() {
    let (_d, root) = workspace_root();
    let issuer = issuer();
    let tenant = TenantId::random();
    let registry = ToolRegistry::new();
    registry
        .register(
            CommandTool::new("shell", "POSIX shell", "/bin/sh", ["-c"])
                .timeout(Duration::from_secs(5)),
        )
        .unwrap();
    let policies = ToolPolicies::new();
    policies.set(tenant, ToolPolicy::deny_all().allow_tools(["shell"]));
    let sandbox = Arc::new(sandbox_with(|_| {}));
    let ctx = ctx_with_tools(&issuer, tenant, &["shell"]);
    let tools = ToolExecutor::builder()
        .registry(&registry)
        .policies(&policies)
        .workspace_root(&root)
        .sandbox(&sandbox)
        .tenant(&ctx)
        .build()
        .unwrap();
    let out = tools
        .call(
            "shell",
            json!({"args": ["echo made > f; cat f; cat /etc/shadow"]}),
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], json!("made\n"));
    assert_eq!(out["exit_code"], json!(1));
}
