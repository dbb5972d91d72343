//! Sandbox spawn-to-exit of `/bin/true` with the minimal root and
//! per-sandbox cgroups, against bubblewrap with the same namespaces and an
//! equivalent minimal root, measured in the same run; warm-pool acquire +
//! run against a cold spawn; and the egress proxy's added latency for one
//! HTTPS request against the same request made directly.
//!
//! Needs `bwrap` (Debian package `bubblewrap`); without it the bwrap arm
//! is skipped and no ratio against it is printed.

#[path = "../tests/fixture/http.rs"]
#[allow(dead_code)]
mod http;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tenant_core::*;
use tenant_testkit::bench_ratio::interleaved_p50s;
use tenant_tools::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Rounds of the interleaved samplers.
const ROUNDS: usize = 300;

fn bwrap_available() -> bool {
    Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// bubblewrap with what our sandbox does that bubblewrap can do: new user
/// (uid 1000), mount, pid, net, ipc, uts and cgroup namespaces, a tmpfs
/// root with `/usr` read-only and the merged-/usr symlinks, a private
/// `/proc`, a minimal `/dev`, a tmpfs `/tmp`, the workspace bound at
/// `/workspace`, every capability dropped, a clean environment, dying with
/// its parent. (It has no cgroups, Landlock or seccomp allowlist here.)
fn bwrap_true(workspace: &str) {
    let status = Command::new("bwrap")
        .args([
            "--unshare-all",
            "--unshare-user",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--bind",
            workspace,
            "/workspace",
            "--chdir",
            "/workspace",
            "--clearenv",
            "/bin/true",
        ])
        .status()
        .expect("bwrap runs");
    assert!(status.success());
}

fn context(issuer: &ContextIssuer) -> TenantContext {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("bench").unwrap())
        .issue()
        .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    ctx: TenantContext,
    ws: Workspace,
    sandbox: Arc<Sandbox>,
    no_cgroups: Sandbox,
    pool: WarmPool,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let root = WorkspaceRoot::with_quota(
        dir.path().join("ws"),
        &issuer.authority(),
        WorkspaceQuota::new(16 << 20, 1024),
    )
    .unwrap();
    let ctx = context(&issuer);
    let ws = root.create(&ctx).unwrap();
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let mut config = SandboxConfig::default();
    config.limits.memory = None;
    config.limits.pids = None;
    config.limits.cpu_millicores = None;
    let no_cgroups = Sandbox::new(config).unwrap();
    let pool = WarmPool::builder()
        .sandbox(&sandbox)
        .workspace_root(&root)
        .size(6)
        .build()
        .unwrap();
    Setup {
        _dir: dir,
        ctx,
        ws,
        sandbox,
        no_cgroups,
        pool,
    }
}

fn run_true(sandbox: &Sandbox, ws: &Workspace) {
    let out = sandbox.run(ws, &SandboxCommand::new("/bin/true")).unwrap();
    assert!(out.success());
}

fn warm_true(s: &Setup) {
    let mut warm = s
        .pool
        .acquire_within(&s.ctx, Duration::from_secs(10))
        .unwrap();
    assert!(warm
        .run(&SandboxCommand::new("/bin/true"))
        .unwrap()
        .success());
}

fn spawn(c: &mut Criterion) {
    let s = setup();
    let have_bwrap = bwrap_available();
    // bwrap's own workspace: writable by the user it runs as.
    let bwrap_ws = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        bwrap_ws.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let ws_path = bwrap_ws.path().to_str().unwrap().to_owned();

    let mut group = c.benchmark_group("spawn_to_exit");
    group.bench_function("sandbox", |b| b.iter(|| run_true(&s.sandbox, &s.ws)));
    group.bench_function("sandbox_without_cgroups", |b| {
        b.iter(|| run_true(&s.no_cgroups, &s.ws))
    });
    if have_bwrap {
        group.bench_function("bwrap", |b| b.iter(|| bwrap_true(&ws_path)));
    }
    group.bench_function("warm_pool_acquire_run", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Waiting for the recycler is not the pool's latency.
                s.pool.wait_ready(1, Duration::from_secs(10));
                let t = Instant::now();
                warm_true(&s);
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();

    // Same-run ratios from p50s of interleaved rounds.
    let mut cold = |_| run_true(&s.sandbox, &s.ws);
    let mut bare = |_| run_true(&s.no_cgroups, &s.ws);
    let mut warm = |_| warm_true(&s);
    let mut bw = |_| bwrap_true(&ws_path);
    let p50 = if have_bwrap {
        interleaved_p50s(ROUNDS, &mut [&mut cold, &mut bare, &mut warm, &mut bw])
    } else {
        interleaved_p50s(ROUNDS, &mut [&mut cold, &mut bare, &mut warm])
    };
    println!("p50 of {ROUNDS} interleaved rounds:");
    println!(
        "  sandbox spawn-to-exit (minimal root + cgroups): {:?}",
        p50[0]
    );
    println!(
        "  sandbox spawn-to-exit without cgroups:          {:?}",
        p50[1]
    );
    println!(
        "  warm pool acquire + run:                        {:?}",
        p50[2]
    );
    println!(
        "RATIO warm pool acquire+run / cold spawn: {:.2}x (target <= 0.5x)",
        p50[2].as_secs_f64() / p50[0].as_secs_f64()
    );
    if let Some(bwrap) = p50.get(3) {
        println!("  bwrap spawn-to-exit:                            {bwrap:?}");
        println!(
            "RATIO sandbox / bwrap: {:.2}x (target <= 1.0x, and <= 5 ms p50)",
            p50[0].as_secs_f64() / bwrap.as_secs_f64()
        );
    } else {
        println!("bwrap not installed: no ratio (apt-get install bubblewrap)");
    }
}

/// One HTTPS GET: `via` is the proxy's address (CONNECT first), else the
/// server is contacted directly.
async fn https_get(
    tls: &tokio_rustls::TlsConnector,
    server: u16,
    via: Option<std::net::SocketAddr>,
) -> usize {
    let tcp = match via {
        Some(proxy) => {
            let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
            s.write_all(
                format!("CONNECT 127.0.0.1:{server} HTTP/1.1\r\nHost: 127.0.0.1:{server}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200"));
            s
        }
        None => tokio::net::TcpStream::connect(("127.0.0.1", server))
            .await
            .unwrap(),
    };
    tcp.set_nodelay(true).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tls.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body).await;
    assert!(body.starts_with(b"HTTP/1.1 200"));
    body.len()
}

fn proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ca = http::TestCa::new();
    let (port, _) = rt.block_on(http::https_server(&ca, http::fixed(http::ok("hello"))));
    let mut roots = rustls::RootCertStore::empty();
    let der = {
        use base64::Engine;
        let body: String = ca.pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    roots.add(der.into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));

    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let ctx = context(&issuer);
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("127.0.0.1:{port}"))
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let _guard = EgressProxy::new(&ctx, &policy).serve(listener).unwrap();

    let mut group = c.benchmark_group("https_request");
    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(https_get(&tls, port, None)))
    });
    group.bench_function("through_egress_proxy", |b| {
        b.iter(|| rt.block_on(https_get(&tls, port, Some(proxy_addr))))
    });
    group.finish();

    let mut direct = |_| {
        rt.block_on(https_get(&tls, port, None));
    };
    let mut proxied = |_| {
        rt.block_on(https_get(&tls, port, Some(proxy_addr)));
    };
    let p50 = interleaved_p50s(ROUNDS, &mut [&mut direct, &mut proxied]);
    println!("p50 of {ROUNDS} interleaved rounds, one HTTPS GET on loopback:");
    println!(
        "  direct: {:?}  through the egress proxy: {:?}",
        p50[0], p50[1]
    );
    println!(
        "RATIO proxy / direct: {:.2}x; added latency {:?}",
        p50[1].as_secs_f64() / p50[0].as_secs_f64(),
        p50[1].saturating_sub(p50[0])
    );
}

criterion_group!(benches, spawn, proxy);
criterion_main!(benches);
