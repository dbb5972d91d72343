//! Secrets never reach output, errors or logs. In its own test binary so
//! that no concurrently running test can disturb the captured tracing
//! output.

mod fixture;

use secrecy::SecretString;
use serde_json::json;
use tenant_core::*;
use tenant_tools::*;

use fixture::platform::*;
use fixture::*;

#[tokio::test]
async fn a_secret_never_appears_in_output_errors_or_logs_and_is_redacted_when_echoed() {
    let (logs, _guard) = capture_tracing();
    let p = platform();
    let tenant = TenantId::random();
    p.vault
        .store(tenant, "github", SecretString::from(SECRET.to_owned()))
        .unwrap();
    p.policies.set(
        tenant,
        ToolPolicy::deny_all()
            .allow_tools(["leaky"])
            .allow_integrations(["github"]),
    );
    let tools = p.executor(&ctx_with_tools(&p.issuer, tenant, &["leaky"]));

    let out = tools.call("leaky", json!({"text": "go"})).await.unwrap();
    assert_eq!(out, json!({"echo": "token=[REDACTED]"}));

    let err = tools
        .call("leaky", json!({"text": "fail"}))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("[REDACTED]") && !shown.contains(SECRET),
        "{shown}"
    );

    let debug = format!("{tools:?} {:?} {:?}", p.vault, p.policies);
    assert!(!debug.contains(SECRET));

    let logs = logs.text();
    assert!(logs.contains("tenant_audit"), "audit events were captured");
    assert!(
        logs.contains("got token"),
        "the tool's own log line was captured"
    );
    assert!(!logs.contains(SECRET), "secret leaked into logs:\n{logs}");
}
