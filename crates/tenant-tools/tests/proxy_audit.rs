//! Every decision of the egress proxy is audited. In its own test binary
//! so that no concurrently running test can disturb the captured tracing
//! output.

mod fixture;

use std::time::Duration;

use tenant_core::*;
use tenant_tools::*;

use fixture::http::*;
use fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_decision_is_audited() {
    if !sandbox_support() {
        return;
    }
    let issuer = issuer();
    let (_dir, root) = quota_root(&issuer, WorkspaceQuota::new(8 << 20, 256));
    let ctx = ctx_with_tools(&issuer, TenantId::random(), &[]);
    let ws = root.create(&ctx).unwrap();
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let (logs, _guard) = capture_tracing();
    let (a, _) = http_server(fixed(ok("a"))).await;
    let (b, _) = http_server(fixed(ok("b"))).await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("localhost:{a}"))
        .unwrap();
    let proxy = EgressProxy::new(&ctx, &policy);
    // On this thread, so the captured subscriber is the caller's.
    let cmd = SandboxCommand::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "20"])
        .timeout(Duration::from_secs(30))
        .args([
            format!("http://localhost:{a}/"),
            format!("http://localhost:{b}/"),
        ]);
    let out = tokio::task::block_in_place(|| {
        sandbox
            .run_with(&ws, &cmd, RunOptions::new().egress(proxy))
            .unwrap()
    });
    assert!(out.stdout_text().starts_with('a'), "{}", out.stderr_text());
    let logs = logs.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("tenant_audit"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("\"allowed\"")
            && l.contains("egress.request")
            && l.contains(&format!("localhost:{a}"))),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"denied\"")
            && l.contains("egress.request")
            && l.contains(&format!("localhost:{b}"))),
        "{logs}"
    );
    assert!(lines.iter().all(|l| l.contains(&ctx.tenant().to_string())));
}
