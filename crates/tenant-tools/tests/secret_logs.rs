//! Secrets never reach output, errors or logs. In its own test binary so
//! that no concurrently running test can disturb the captured tracing
//! output.

mod fixture;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tenant_core::*;
use tenant_tools::Error;
use tenant_tools::*;

use fixture::*;

const SECRET: &str = "ghp_S3cr3tT0kenValue_1234567890";

fn registry() -> ToolRegistry {
    let registry = ToolRegistry::new();
    let schema = json!({
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 100}},
        "required": ["text"],
        "additionalProperties": false
    });
    registry
        .register(FnTool::new(
            "echo",
            "Echoes",
            schema.clone(),
            |_c, input| async move { Ok(input) },
        ))
        .unwrap();
    registry
        .register(FnTool::new(
            "shell",
            "Runs anything",
            schema.clone(),
            |_c, _i| async move { Ok(json!("ran")) },
        ))
        .unwrap();
    // A careless tool that puts its credential into its output, its error
    // and its logs.
    registry
        .register(
            FnTool::new(
                "leaky",
                "Leaks its token",
                schema,
                |call, input| async move {
                    let token = call.credentials().get("github")?;
                    tracing::info!(?token, "got token");
                    if input["text"] == "fail" {
                        return Err(Error::ToolFailed {
                            tool: "leaky".into(),
                            message: format!("auth failed with {}", token.expose_secret()),
                        });
                    }
                    Ok(json!({ "echo": format!("token={}", token.expose_secret()) }))
                },
            )
            .with_integrations(["github"]),
        )
        .unwrap();
    registry
}

struct Platform {
    issuer: ContextIssuer,
    registry: ToolRegistry,
    vault: Arc<MemoryVault>,
    policies: ToolPolicies,
}

fn platform() -> Platform {
    Platform {
        issuer: issuer(),
        registry: registry(),
        vault: Arc::new(MemoryVault::new()),
        policies: ToolPolicies::new(),
    }
}

impl Platform {
    fn executor(&self, ctx: &TenantContext) -> ToolExecutor {
        ToolExecutor::builder()
            .registry(&self.registry)
            .vault(&self.vault)
            .policies(&self.policies)
            .tenant(ctx)
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn a_secret_never_appears_in_output_errors_or_logs_and_is_redacted_when_echoed() {
    let (logs, _guard) = capture_tracing();
    let p = platform();
    let tenant = TenantId::random();
    p.vault
        .put(tenant, "github", SecretString::from(SECRET.to_owned()))
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
