//! Sandbox spawn-to-exit of `/bin/true` against bubblewrap with the same
//! namespaces, measured in the same run, plus warm-pool acquire.
//!
//! Needs `bwrap` (Debian package `bubblewrap`); without it the bwrap group
//! is skipped and no ratio is printed.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tenant_core::*;
use tenant_tools::*;

fn bwrap_available() -> bool {
    Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bwrap_true() {
    let status = Command::new("bwrap")
        .args([
            "--unshare-all",
            "--die-with-parent",
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
            "--clearenv",
            "/bin/true",
        ])
        .status()
        .expect("bwrap runs");
    assert!(status.success());
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn sample(n: usize, mut f: impl FnMut()) -> Duration {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    p50(v)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let root = WorkspaceRoot::new(dir.path().join("ws")).unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("bench").unwrap())
        .issue()
        .unwrap();
    let ws = root.create(&ctx).unwrap();
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let cmd = SandboxCommand::new("/bin/true");

    let mut group = c.benchmark_group("spawn_to_exit");
    group.bench_function("tenant_tools_sandbox", |b| {
        b.iter(|| assert!(sandbox.run(&ws, &cmd).unwrap().success()))
    });
    let have_bwrap = bwrap_available();
    if have_bwrap {
        group.bench_function("bwrap", |b| b.iter(bwrap_true));
    }
    group.finish();

    let pool = WarmPool::builder()
        .sandbox(&sandbox)
        .workspace_root(&root)
        .size(4)
        .tenant(&ctx)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("warm_pool");
    group.bench_function("acquire", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let warm = pool.acquire().unwrap();
                total += t.elapsed();
                drop(warm); // recycling is outside the measured time
            }
            total
        })
    });
    group.bench_function("acquire_run_true", |b| {
        b.iter(|| {
            let mut warm = pool.acquire().unwrap();
            assert!(warm.run(&cmd).unwrap().success());
        })
    });
    group.finish();

    // Same-run p50 figures and ratios.
    let ours = sample(200, || assert!(sandbox.run(&ws, &cmd).unwrap().success()));
    let mut acquire_only = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let warm = pool.acquire().unwrap();
        acquire_only.push(t.elapsed());
        drop(warm);
    }
    let acquire = p50(acquire_only);
    println!("sandbox spawn-to-exit p50: {ours:?}");
    println!("warm-pool acquire p50: {acquire:?}");
    if have_bwrap {
        let bwrap = sample(200, bwrap_true);
        println!("bwrap spawn-to-exit p50: {bwrap:?}");
        println!(
            "ratio sandbox/bwrap p50: {:.2}x (target <= 1.0x)",
            ours.as_secs_f64() / bwrap.as_secs_f64()
        );
    } else {
        println!("bwrap not installed: no ratio (apt-get install bubblewrap)");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
