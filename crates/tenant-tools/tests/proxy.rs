//! Egress of sandboxed processes through the per-run proxy: real `curl`
//! inside the sandbox, real HTTP and HTTPS servers on the host's loopback.

mod fixture;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use tenant_core::*;
use tenant_tools::*;

use fixture::http::*;
use fixture::*;

const SECRET: &str = "ghp_Inj3ctedN0tHeld_98765432";

struct Env {
    _dir: tempfile::TempDir,
    ctx: TenantContext,
    ws: Arc<Workspace>,
    sandbox: Arc<Sandbox>,
}

fn env() -> Option<Env> {
    if !sandbox_support() {
        return None;
    }
    if !std::path::Path::new("/usr/bin/curl").exists() {
        panic!("these tests run the real curl: apt-get install curl");
    }
    let issuer = issuer();
    let (dir, root) = quota_root(&issuer, WorkspaceQuota::new(8 << 20, 256));
    let ctx = ctx_with_tools(&issuer, TenantId::random(), &[]);
    let ws = Arc::new(root.create(&ctx).unwrap());
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    Some(Env {
        _dir: dir,
        ctx,
        ws,
        sandbox,
    })
}

fn curl(args: &[&str]) -> SandboxCommand {
    SandboxCommand::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "20"])
        .args(args.iter().copied())
        .timeout(Duration::from_secs(30))
}

impl Env {
    async fn run(&self, policy: &EgressPolicy, cmd: SandboxCommand) -> SandboxOutput {
        let proxy = EgressProxy::new(&self.ctx, policy);
        self.sandbox
            .run_async(self.ws.clone(), cmd, RunOptions::new().egress(proxy))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_host_is_reachable_and_every_other_way_out_fails() {
    let Some(e) = env() else { return };
    let (a, seen_a) = http_server(fixed(ok("hello from A"))).await;
    let (b, seen_b) = http_server(fixed(ok("B must not answer"))).await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("localhost:{a}"))
        .unwrap();
    let out = e
        .run(&policy, curl(&[&format!("http://localhost:{a}/x")]))
        .await;
    assert_eq!(out.stdout_text(), "hello from A", "{}", out.stderr_text());
    assert!(
        seen_a.text().starts_with("GET /x HTTP/1.1"),
        "{}",
        seen_a.text()
    );

    // Another port, another name for the same server, the address
    // literal, and going around the proxy: all refused.
    for args in [
        vec!["-f".to_owned(), format!("http://localhost:{b}/")],
        vec!["-f".to_owned(), format!("http://127.0.0.1:{a}/")],
        vec!["-f".to_owned(), format!("http://[::1]:{a}/")],
        vec![
            "--noproxy".to_owned(),
            "*".to_owned(),
            format!("http://127.0.0.1:{a}/"),
        ],
        vec![
            "--noproxy".to_owned(),
            "*".to_owned(),
            format!("http://127.0.0.1:{b}/"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = e.run(&policy, curl(&args)).await;
        assert!(!out.success(), "{args:?} got out: {}", out.stdout_text());
    }
    assert_eq!(
        seen_a.hits(),
        1,
        "the allowed server was reached another way"
    );
    assert_eq!(seen_b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_an_allowed_host_is_tunnelled_and_other_hosts_are_refused() {
    let Some(e) = env() else { return };
    let ca = TestCa::new();
    let (good, seen_good) = https_server(&ca, fixed(ok("tls ok"))).await;
    let (bad, seen_bad) = https_server(&ca, fixed(ok("tls secret"))).await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("localhost:{good}"))
        .unwrap()
        .trust_pem(ca.pem.as_bytes())
        .unwrap();
    let out = e
        .run(&policy, curl(&[&format!("https://localhost:{good}/")]))
        .await;
    assert_eq!(out.stdout_text(), "tls ok", "{}", out.stderr_text());
    let out = e
        .run(&policy, curl(&[&format!("https://localhost:{bad}/")]))
        .await;
    assert!(!out.success());
    assert!(out.stderr_text().contains("403"), "{}", out.stderr_text());
    assert_eq!(seen_good.hits(), 1);
    assert_eq!(seen_bad.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redirect_hop_is_checked_again() {
    let Some(e) = env() else { return };
    let (forbidden, seen_forbidden) = http_server(fixed(ok("internal admin"))).await;
    let (allowed, seen_allowed) = http_server(fixed(ok("fine"))).await;
    let (to_forbidden, _) = http_server(fixed(redirect(&format!(
        "http://localhost:{forbidden}/admin"
    ))))
    .await;
    let (to_allowed, _) =
        http_server(fixed(redirect(&format!("http://localhost:{allowed}/ok")))).await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("localhost:{to_forbidden}"))
        .unwrap()
        .allow_internal(&format!("localhost:{to_allowed}"))
        .unwrap()
        .allow_internal(&format!("localhost:{allowed}"))
        .unwrap();
    let out = e
        .run(
            &policy,
            curl(&["-fL", &format!("http://localhost:{to_forbidden}/")]),
        )
        .await;
    assert!(!out.success());
    assert!(!out.stdout_text().contains("internal admin"));
    assert_eq!(
        seen_forbidden.hits(),
        0,
        "the redirect target was contacted"
    );
    let out = e
        .run(
            &policy,
            curl(&["-fL", &format!("http://localhost:{to_allowed}/")]),
        )
        .await;
    assert_eq!(out.stdout_text(), "fine", "{}", out.stderr_text());
    assert_eq!(seen_allowed.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_run_may_open_inet_sockets_but_reach_nothing_but_the_proxy() {
    let Some(e) = env() else { return };
    let (a, seen_a) = http_server(fixed(ok("x"))).await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("localhost:{a}"))
        .unwrap();
    let script = format!(
        r#"use Socket;
        for my $d (16, 17, 40, 38, 44) {{ my $ok = socket(my $s, $d, 2, 0); print "fam $d ", ($ok ? "OPEN" : $!+0), "\n"; }}
        for my $port ({a}, 22, 80, 3129) {{
            socket(my $s, PF_INET, SOCK_STREAM, 0) or die "inet: $!";
            my $r = connect($s, pack_sockaddr_in($port, inet_aton("127.0.0.1")));
            print "tcp $port ", ($r ? "CONNECTED" : $!+0), "\n";
        }}
        socket(my $u, PF_INET, SOCK_DGRAM, 0) or die;
        my $sent = send($u, "x", 0, pack_sockaddr_in(53, inet_aton("8.8.8.8")));
        print "udp ", (defined $sent ? "SENT" : $!+0), "\n";
        socket(my $p, PF_INET, SOCK_STREAM, 0) or die;
        print "proxy ", (connect($p, pack_sockaddr_in(3128, inet_aton("127.0.0.1"))) ? "CONNECTED" : $!+0), "\n";"#
    );
    let out = e
        .run(
            &policy,
            SandboxCommand::new("/usr/bin/perl").args(["-e", &script]),
        )
        .await;
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "fam" => assert_eq!(f[2], "1", "family {} not refused: {line}", f[1]),
            "tcp" => assert_ne!(f[2], "CONNECTED", "{line}"),
            "udp" => assert_ne!(f[1], "SENT", "{line}"),
            "proxy" => assert_eq!(f[1], "CONNECTED", "{line}"),
            _ => panic!("{line}"),
        }
    }
    assert_eq!(text.lines().count(), 11);
    assert_eq!(seen_a.hits(), 0);
}

/// The platform of the credential tests: a `curl` tool declaring the
/// `github` integration, the tenant granted it, and the proxy injecting
/// it for one host.
struct Broker {
    _dir: tempfile::TempDir,
    tools: ToolExecutor,
}

async fn broker(port: u16, ca: &TestCa, how: CredentialInjection) -> Option<Broker> {
    if !sandbox_support() {
        return None;
    }
    let issuer = issuer();
    let (dir, root) = quota_root(&issuer, WorkspaceQuota::new(8 << 20, 256));
    let tenant = TenantId::random();
    let registry = ToolRegistry::new(&issuer.authority());
    registry
        .register(
            CommandTool::new("curl", "HTTP client", "/bin/sh", ["-c"])
                .with_integrations(["github"])
                .timeout(Duration::from_secs(30)),
        )
        .unwrap();
    let vault = Arc::new(MemoryVault::new());
    vault
        .store(tenant, "github", SecretString::from(SECRET.to_owned()))
        .unwrap();
    let entry = format!("localhost:{port}");
    let egress = EgressPolicy::deny_all()
        .allow_internal(&entry)
        .unwrap()
        .inject(&entry, "github", how)
        .unwrap()
        .trust_pem(ca.pem.as_bytes())
        .unwrap();
    let policies = ToolPolicies::new();
    policies.set(
        tenant,
        ToolPolicy::deny_all()
            .allow_tools(["curl"])
            .allow_integrations(["github"])
            .egress(egress),
    );
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let tools = ToolExecutor::builder()
        .registry(&registry)
        .policies(&policies)
        .vault(&vault)
        .workspace_root(&root)
        .sandbox(&sandbox)
        .tenant(&ctx_with_tools(&issuer, tenant, &["curl"]))
        .build()
        .unwrap();
    Some(Broker { _dir: dir, tools })
}

impl Broker {
    /// Fetches `url` with verbose curl and shows everything the process
    /// could have seen of the secret: its environment, its files, its whole
    /// output. Returns the tool's output as text.
    async fn look_everywhere(&self, url: &str) -> String {
        let script = format!(
            "env > env.txt; cat /proc/self/environ >> env.txt; \
             grep -rl ghp_ /run /tmp /workspace 2>/dev/null; \
             curl -sSv --max-time 20 -o body.txt {url}; cat env.txt"
        );
        let out = self
            .tools
            .call("curl", json!({"args": [script]}))
            .await
            .unwrap();
        out.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_credential_reaches_the_https_server_but_never_the_process() {
    let ca = TestCa::new();
    let (port, seen) = https_server(&ca, fixed(ok("authorized"))).await;
    let Some(b) = broker(port, &ca, CredentialInjection::Bearer).await else {
        return;
    };
    let url = format!("https://localhost:{port}/repos");
    let shown = b.look_everywhere(&url).await;
    assert!(shown.contains("HTTP/1.1 200"), "{shown}");
    // The server got it, in the request for the injected host.
    let received = seen.text();
    assert!(
        received.contains(&format!("authorization: Bearer {SECRET}")),
        "{received}"
    );
    // The process never had it: not even redacted (a redaction would
    // mean it passed through the process's output).
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        !shown.contains(REDACTED),
        "the secret reached the process: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_basic_credential_over_plain_http_never_reaches_the_process() {
    let (port, seen) = http_server(fixed(ok("authorized"))).await;
    let Some(b) = broker(
        port,
        &TestCa::new(),
        CredentialInjection::Basic {
            username: "bot".into(),
        },
    )
    .await
    else {
        return;
    };
    let url = format!("http://localhost:{port}/");
    let shown = b.look_everywhere(&url).await;
    let expected = base64_basic("bot", SECRET);
    assert!(
        seen.text()
            .contains(&format!("authorization: Basic {expected}")),
        "{}",
        seen.text()
    );
    assert!(!shown.contains(&expected) && !shown.contains(SECRET));
    assert!(
        !shown.contains(REDACTED),
        "the secret reached the process: {shown}"
    );
}

fn base64_basic(user: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_echoing_the_credential_back_is_redacted_from_the_output() {
    let ca = TestCa::new();
    // A careless upstream that reflects request headers into its body.
    let (port, _) = https_server(
        &ca,
        Arc::new(|head: &str| {
            let auth = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization"))
                .unwrap_or("")
                .to_owned();
            ok(&format!("you sent: {auth}"))
        }),
    )
    .await;
    let Some(b) = broker(port, &ca, CredentialInjection::Bearer).await else {
        return;
    };
    let out = b
        .tools
        .call(
            "curl",
            json!({"args": [format!("curl -sS --max-time 20 https://localhost:{port}/")]}),
        )
        .await
        .unwrap();
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("you sent: authorization: "), "{stdout}");
    assert!(
        stdout.contains(REDACTED) && !stdout.contains(SECRET),
        "{stdout}"
    );
}
