//! Secrets are scrubbed from everything a run hands back — across calls,
//! tools and delegated sub-agents of the run, in common encodings, and
//! from sandbox output as it streams.

mod fixture;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tenant_core::*;
use tenant_tools::*;

use fixture::http::*;
use fixture::platform::*;
use fixture::*;

fn any_schema() -> Value {
    json!({"type": "object"})
}

/// Registers the tools of this file: one that stores its token in the
/// workspace, one that reads a workspace file back, one that runs a
/// careless subprocess, and one that calls HTTP with the token in a custom
/// header.
fn register(p: &Platform) {
    p.registry
        .register(
            FnTool::new("stash", "", any_schema(), |call, _i| async move {
                let token = call.credentials().get("github").await?;
                let raw = token.expose_secret().as_bytes().to_vec();
                call.write_file("notes.txt", [b"token: ".as_slice(), &raw].concat())
                    .await?;
                Ok(json!("stashed"))
            })
            .with_integrations(["github"]),
        )
        .unwrap();
    p.registry
        .register(FnTool::new(
            "reader",
            "",
            any_schema(),
            |call, _i| async move {
                let bytes = call.read_file("notes.txt").await?;
                Ok(json!(String::from_utf8_lossy(&bytes)))
            },
        ))
        .unwrap();
    p.registry
        .register(
            FnTool::new("careless_subprocess", "", any_schema(), |call, _i| async move {
                let token = call.credentials().get("github").await?;
                // Prints the token in two writes far apart in time, then
                // base64- and hex-encoded.
                let script = r#"printf '%s' "$T" | head -c 12; sleep 0.3; printf '%s\n' "$T" | tail -c +13;
                    printf '%s' "$T" | base64; printf '%s' "$T" | basenc --base16"#;
                let out = call
                    .run_sandboxed(
                        SandboxCommand::new("/bin/sh")
                            .args(["-c", script])
                            .env("T", token.expose_secret()),
                    )
                    .await?;
                Ok(json!(out.stdout_text()))
            })
            .with_integrations(["github"]),
        )
        .unwrap();
    p.registry
        .register(
            FnTool::new("fetch", "", any_schema(), |call, input| async move {
                let token = call.credentials().get("github").await?;
                let client = call.http()?;
                let req = client
                    .request(reqwest::Method::GET, input["url"].as_str().unwrap_or(""))?
                    .header("x-api-key", token.expose_secret());
                let res = client.send(req).await?;
                Ok(json!(res.status().as_u16()))
            })
            .with_integrations(["github"]),
        )
        .unwrap();
}

fn grant(p: &Platform, tenant: TenantId, tools: &[&str], egress: EgressPolicy) {
    p.vault
        .store(tenant, "github", SecretString::from(SECRET.to_owned()))
        .unwrap();
    p.policies.set(
        tenant,
        ToolPolicy::deny_all()
            .allow_tools(tools.iter().copied())
            .allow_integrations(["github"])
            .egress(egress),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_an_earlier_call_is_scrubbed_from_a_later_calls_file_read() {
    let p = platform();
    register(&p);
    let tenant = TenantId::random();
    grant(&p, tenant, &["stash", "reader"], EgressPolicy::deny_all());
    let (_d, root) = workspace_root(&p.issuer);
    let ctx = ctx_with_tools(&p.issuer, tenant, &["stash", "reader"]);
    let tools = ToolExecutor::builder()
        .registry(&p.registry)
        .vault(&p.vault)
        .policies(&p.policies)
        .workspace_root(&root)
        .tenant(&ctx)
        .build()
        .unwrap();
    assert_eq!(
        tools.call("stash", json!({})).await.unwrap(),
        json!("stashed")
    );
    // Another tool, which never touched a credential, reads it back.
    let out = tools.call("reader", json!({})).await.unwrap();
    assert_eq!(out, json!("token: [REDACTED]"));
    // So does a delegated sub-agent of the same run.
    let child = ctx
        .delegate(AgentId::new("sub").unwrap())
        .tools(["reader"])
        .issue()
        .unwrap();
    let sub = tools.delegate(&child).unwrap();
    assert_eq!(
        sub.call("reader", json!({})).await.unwrap(),
        json!("token: [REDACTED]")
    );
    // The file itself is as the tool wrote it: redaction is of what
    // leaves the run, not of the tenant's data.
    let entries: Vec<_> = std::fs::read_dir(root.path().join(tenant.to_string()))
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_output_streaming_a_secret_in_pieces_and_encodings_is_scrubbed() {
    if !sandbox_support() {
        return;
    }
    let p = platform();
    register(&p);
    let tenant = TenantId::random();
    grant(
        &p,
        tenant,
        &["careless_subprocess"],
        EgressPolicy::deny_all(),
    );
    let (_d, root) = quota_root(&p.issuer, WorkspaceQuota::new(4 << 20, 64));
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let tools = ToolExecutor::builder()
        .registry(&p.registry)
        .vault(&p.vault)
        .policies(&p.policies)
        .workspace_root(&root)
        .sandbox(&sandbox)
        .tenant(&ctx_with_tools(&p.issuer, tenant, &["careless_subprocess"]))
        .build()
        .unwrap();
    let out = tools.call("careless_subprocess", json!({})).await.unwrap();
    let text = out.as_str().unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in &lines {
        assert!(line.contains(REDACTED), "{line}");
    }
    use base64::Engine;
    for leaked in [
        SECRET.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(SECRET),
        hex::encode_upper(SECRET),
        SECRET[4..SECRET.len() - 4].to_owned(),
    ] {
        assert!(!text.contains(&leaked), "{leaked} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_carrying_a_secret_does_not_follow_a_cross_origin_redirect() {
    let p = platform();
    register(&p);
    let tenant = TenantId::random();
    let (target, seen_target) = http_server(fixed(ok("landed"))).await;
    let (same, seen_same) = http_server(fixed(ok("same"))).await;
    let (hop, _) = http_server(fixed(redirect(&format!("http://localhost:{target}/")))).await;
    let egress = EgressPolicy::deny_all()
        .allow_internal(&format!("127.0.0.1:{hop}"))
        .unwrap()
        .allow_internal(&format!("127.0.0.1:{same}"))
        .unwrap()
        .allow_internal(&format!("localhost:{target}"))
        .unwrap();
    grant(&p, tenant, &["fetch"], egress);
    let tools = p.executor(&ctx_with_tools(&p.issuer, tenant, &["fetch"]));
    let out = tools
        .call("fetch", json!({"url": format!("http://127.0.0.1:{hop}/")}))
        .await
        .unwrap();
    assert_eq!(out, json!(200));
    let landed = seen_target.text().to_ascii_lowercase();
    assert!(landed.starts_with("get / "), "{landed}");
    assert!(!landed.contains("x-api-key"), "{landed}");
    assert!(!landed.contains(&SECRET.to_ascii_lowercase()));
    // Without a cross-origin hop the header is sent as the tool asked.
    let out = tools
        .call("fetch", json!({"url": format!("http://127.0.0.1:{same}/")}))
        .await
        .unwrap();
    assert_eq!(out, json!(200));
    assert!(seen_same.text().contains(SECRET));
}
