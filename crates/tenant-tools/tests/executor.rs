//! The executor: allowlists, delegation, schema validation, credentials.

mod fixture;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tenant_core::*;
use tenant_tools::Error;
use tenant_tools::*;

use fixture::platform::*;
use fixture::*;

fn names(list: Vec<ToolInfo>) -> Vec<String> {
    list.into_iter().map(|t| t.name).collect()
}

#[tokio::test]
async fn listing_shows_only_tools_allowed_by_policy_and_capabilities() {
    let p = platform();
    let tenant = TenantId::random();
    p.policies.set(
        tenant,
        ToolPolicy::deny_all().allow_tools(["echo", "leaky"]),
    );
    // The context holds echo and shell; the policy allows echo and leaky.
    let ctx = ctx_with_tools(&p.issuer, tenant, &["echo", "shell"]);
    let tools = p.executor(&ctx);
    assert_eq!(names(tools.list().unwrap()), vec!["echo"]);
}

#[tokio::test]
async fn calling_a_tool_outside_the_allowlist_is_refused_and_nothing_runs() {
    let p = platform();
    let tenant = TenantId::random();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    p.registry
        .register(FnTool::new("side_effect", "", json!({}), move |_c, _i| {
            let flag = flag.clone();
            async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(Value::Null)
            }
        }))
        .unwrap();
    p.policies
        .set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
    let ctx = ctx_with_tools(&p.issuer, tenant, &["echo", "side_effect", "shell"]);
    let tools = p.executor(&ctx);
    for name in ["side_effect", "shell", "does_not_exist"] {
        let err = tools.call(name, json!({"text": "x"})).await.unwrap_err();
        assert!(
            matches!(err, Error::ToolNotAllowed { ref tool } if tool == name),
            "{err}"
        );
    }
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test]
async fn another_tenants_policy_does_not_apply() {
    let p = platform();
    let (a, b) = (TenantId::random(), TenantId::random());
    p.policies
        .set(a, ToolPolicy::deny_all().allow_tools(["shell"]));
    let ctx_b = ctx_with_tools(&p.issuer, b, &["shell"]);
    let tools_b = p.executor(&ctx_b);
    assert!(tools_b.list().unwrap().is_empty());
    assert!(matches!(
        tools_b.call("shell", json!({"text": "x"})).await,
        Err(Error::ToolNotAllowed { .. })
    ));
}

#[tokio::test]
async fn a_delegated_sub_agent_loses_the_tools_it_was_not_given() {
    let p = platform();
    let tenant = TenantId::random();
    p.policies.set(
        tenant,
        ToolPolicy::deny_all().allow_tools(["echo", "shell"]),
    );
    let ctx = ctx_with_tools(&p.issuer, tenant, &["echo", "shell"]);
    let parent = p.executor(&ctx);
    let child_ctx = ctx
        .delegate(AgentId::new("researcher").unwrap())
        .tools(["echo"])
        .issue()
        .unwrap();
    let child = parent.delegate(&child_ctx).unwrap();
    assert_eq!(names(child.list().unwrap()), vec!["echo"]);
    assert!(matches!(
        child.call("shell", json!({"text": "x"})).await,
        Err(Error::ToolNotAllowed { .. })
    ));
    assert_eq!(
        child.call("echo", json!({"text": "hi"})).await.unwrap(),
        json!({"text": "hi"})
    );
    // The parent keeps its tools.
    assert_eq!(names(parent.list().unwrap()), vec!["echo", "shell"]);
}

#[tokio::test]
async fn delegating_to_a_context_of_another_lineage_is_refused() {
    let p = platform();
    let tenant = TenantId::random();
    let ctx = ctx_with_tools(&p.issuer, tenant, &["echo"]);
    let stranger = ctx_with_tools(&p.issuer, tenant, &["echo"]);
    let tools = p.executor(&ctx);
    assert!(matches!(
        tools.delegate(&stranger),
        Err(Error::Context(tenant_core::Error::NotDescendant))
    ));
}

#[tokio::test]
async fn a_revoked_context_can_no_longer_list_or_call() {
    let p = platform();
    let tenant = TenantId::random();
    p.policies
        .set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
    let ctx = ctx_with_tools(&p.issuer, tenant, &["echo"]);
    let tools = p.executor(&ctx);
    p.issuer.revocations().revoke(&ctx);
    assert!(matches!(
        tools.list(),
        Err(Error::Context(tenant_core::Error::ContextRevoked))
    ));
    assert!(matches!(
        tools.call("echo", json!({"text": "x"})).await,
        Err(Error::Context(tenant_core::Error::ContextRevoked))
    ));
}

#[tokio::test]
async fn input_that_violates_the_schema_never_reaches_the_tool() {
    let p = platform();
    let tenant = TenantId::random();
    p.policies
        .set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
    let tools = p.executor(&ctx_with_tools(&p.issuer, tenant, &["echo"]));
    for bad in [
        json!({}),
        json!({"text": 5}),
        json!({"text": "x", "path": "/etc/shadow"}),
        json!({"text": "x".repeat(101)}),
    ] {
        assert!(matches!(
            tools.call("echo", bad).await,
            Err(Error::InvalidInput { .. })
        ));
    }
}

#[test]
fn a_schema_the_validator_cannot_enforce_is_refused_at_registration() {
    let registry = ToolRegistry::new(&issuer().authority());
    let err = registry
        .register(FnTool::new(
            "re",
            "",
            json!({"type": "string", "pattern": "^(?=a)a$"}),
            |_c, i| async move { Ok(i) },
        ))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSchema { .. }));
    assert!(matches!(
        registry.register(FnTool::new("bad name", "", json!({}), |_c, i| async move {
            Ok(i)
        })),
        Err(Error::InvalidName { .. })
    ));
}

#[tokio::test]
async fn credentials_need_both_a_declaration_and_the_tenants_grant() {
    let p = platform();
    let tenant = TenantId::random();
    p.vault
        .store(tenant, "github", SecretString::from(SECRET.to_owned()))
        .unwrap();
    p.registry
        .register(FnTool::new(
            "undeclared",
            "",
            json!({}),
            |call, _i| async move { call.credentials().get("github").await.map(|_| Value::Null) },
        ))
        .unwrap();
    // Policy allows both tools but does not grant the integration.
    p.policies.set(
        tenant,
        ToolPolicy::deny_all().allow_tools(["leaky", "undeclared"]),
    );
    let tools = p.executor(&ctx_with_tools(&p.issuer, tenant, &["leaky", "undeclared"]));
    assert!(matches!(
        tools.call("undeclared", json!({})).await,
        Err(Error::IntegrationNotDeclared { .. })
    ));
    assert!(matches!(
        tools.call("leaky", json!({"text": "go"})).await,
        Err(Error::IntegrationNotAllowed { .. })
    ));
}

#[tokio::test]
async fn a_tenant_cannot_obtain_another_tenants_secret() {
    let p = platform();
    let (a, b) = (TenantId::random(), TenantId::random());
    p.vault
        .store(a, "github", SecretString::from(SECRET.to_owned()))
        .unwrap();
    for t in [a, b] {
        p.policies.set(
            t,
            ToolPolicy::deny_all()
                .allow_tools(["leaky"])
                .allow_integrations(["github"]),
        );
    }
    let tools_b = p.executor(&ctx_with_tools(&p.issuer, b, &["leaky"]));
    assert!(matches!(
        tools_b.call("leaky", json!({"text": "go"})).await,
        Err(Error::SecretNotFound { .. })
    ));
}

#[tokio::test]
async fn the_file_vault_encrypts_and_binds_each_secret_to_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(DerivedKeyProvider::new(MasterKey::generate(
        KeyId::new("k").unwrap(),
    )));
    let vault = FileVault::open(dir.path(), keys.clone()).unwrap();
    let (a, b) = (TenantId::random(), TenantId::random());
    vault
        .put(a, "github", SecretString::from(SECRET.to_owned()))
        .await
        .unwrap();
    assert_eq!(
        vault
            .get(a, "github")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        SECRET
    );
    assert!(vault.get(b, "github").await.unwrap().is_none());

    // Nothing on disk contains the plaintext.
    let mut files = Vec::new();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
        files.push(entry);
    }
    assert_eq!(files.len(), 1);

    // Copying tenant A's file into tenant B's place does not give B the secret.
    let a_file = &files[0];
    let b_dir = dir.path().join(b.to_string());
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::copy(a_file, b_dir.join(a_file.file_name().unwrap())).unwrap();
    assert!(matches!(
        vault.get(b, "github").await,
        Err(Error::VaultCorrupt { .. })
    ));

    // Reopening with the same keys reads it back; a flipped bit does not.
    let reopened = FileVault::open(dir.path(), keys).unwrap();
    assert_eq!(
        reopened
            .get(a, "github")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        SECRET
    );
    let mut bytes = std::fs::read(a_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(a_file, bytes).unwrap();
    assert!(matches!(
        reopened.get(a, "github").await,
        Err(Error::VaultCorrupt { .. })
    ));
    assert!(!format!("{reopened:?}").contains(SECRET));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn tool_policies_load_from_configuration_and_errors_name_the_field() {
    let (a, b) = (TenantId::random(), TenantId::random());
    let toml = format!(
        r#"
        [tenants.{a}]
        tools = ["echo"]
        integrations = ["github"]
        egress.allow = ["api.github.com:443"]
        egress.inject = [{{ host = "api.github.com:443", integration = "github", how = "bearer" }}]

        [tenants.{b}]
        tools = ["shell"]
        egress.allow = ["pypi.org"]
        "#
    );
    let policies: ToolPolicies = config::from_toml_str(&toml).unwrap();
    let p = platform();
    let tools_a = ToolExecutor::builder()
        .registry(&p.registry)
        .policies(&policies)
        .tenant(&ctx_with_tools(&p.issuer, a, &["echo", "shell"]))
        .build()
        .unwrap();
    let names: Vec<_> = tools_a
        .list()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["echo"]);

    let field = |text: &str| match config::from_toml_str::<ToolPolicies>(text) {
        Err(tenant_core::Error::Config { field, reason }) => (field, reason),
        other => panic!("{other:?}"),
    };
    let (f, reason) = field(&format!(
        "[tenants.{a}]\negress.allow = [\"api.github.com:443\", \"not a host\"]"
    ));
    assert_eq!(f, format!("tenants.{a}.egress.allow[1]"), "{reason}");
    let (f, _) = field(&format!("[tenants.{a}]\ntools = [\"bad name!\"]"));
    assert_eq!(f, format!("tenants.{a}.tools[0]"));
    let (f, _) = field(&format!(
        "[tenants.{a}]\negress.inject = [{{ host = \"x.example:443\", integration = \"g\", how = \"bearer\" }}]"
    ));
    assert_eq!(
        f,
        format!("tenants.{a}.egress.inject[0]"),
        "an injection for a host not allowed"
    );
    let (f, _) = field(&format!(
        "[tenants.{a}]\negress.inject = [{{ host = \"a.example\", integration = \"g\", how = \"carrier-pigeon\" }}]"
    ));
    assert!(
        f.starts_with(&format!("tenants.{a}.egress.inject[0]")),
        "{f}"
    );
    let (f, _) = field("[tenants.not-a-tenant]\ntools = []");
    assert_eq!(f, "tenants.not-a-tenant");
    let (f, _) = field(&format!("[tenants.{a}]\ntool = [\"echo\"]"));
    assert_eq!(f, format!("tenants.{a}.tool"));
}
