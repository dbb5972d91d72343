//! `TenantTools` through rig's tool types: only allowed tools exist, and
//! everything else is the executor's `ToolNotAllowed`.

mod platform;

use platform::Platform;
use rig_core::tool::ToolErrorKind;
use serde_json::json;
use tenant_rig::Error;
use tenant_tools::ToolPolicy;

fn is_not_allowed(err: &Error, name: &str) -> bool {
    matches!(err, Error::Tools(tenant_tools::Error::ToolNotAllowed { tool }) if tool == name)
}

#[tokio::test]
async fn rig_sees_only_the_tools_the_executor_allows() {
    let p = Platform::start().await;
    let a = p.tools(p.a);
    let names: Vec<String> = a
        .rig_tools()
        .unwrap()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(names, ["add"]);
    let defs = a.definitions().unwrap();
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].parameters["required"], json!(["a", "b"]));

    let mut b: Vec<String> = p
        .tools(p.b)
        .rig_tools()
        .unwrap()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    b.sort();
    assert_eq!(b, ["add", "shell"]);
}

#[tokio::test]
async fn an_allowed_tool_runs_through_the_executor() {
    let p = Platform::start().await;
    let add = p.tools(p.a).rig_tool("add").unwrap();
    let out = add.execute(json!({"a": 2, "b": 3})).await.unwrap();
    assert_eq!(out.as_json(), Some(&json!(5)));
}

#[tokio::test]
async fn a_tool_outside_the_allowlist_is_the_executors_tool_not_allowed_and_never_runs() {
    let p = Platform::start().await;
    let a = p.tools(p.a);
    assert!(is_not_allowed(&a.rig_tool("shell").unwrap_err(), "shell"));
    assert!(is_not_allowed(
        &a.rig_tool("no-such-tool").unwrap_err(),
        "no-such-tool"
    ));
    assert!(is_not_allowed(
        &a.call("shell", json!({"cmd": "cat /etc/passwd"}))
            .await
            .unwrap_err(),
        "shell"
    ));
    assert_eq!(p.shell_runs(), 0);
}

#[tokio::test]
async fn a_tool_revoked_after_the_agent_was_built_fails_with_tool_not_allowed() {
    let p = Platform::start().await;
    let b = p.tools(p.b);
    let shell = b.rig_tool("shell").unwrap();
    p.policies
        .set(p.b, ToolPolicy::deny_all().allow_tools(["add"]));

    let err = shell.execute(json!({"cmd": "id"})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    assert!(matches!(
        err.downcast_ref::<tenant_tools::Error>(),
        Some(tenant_tools::Error::ToolNotAllowed { tool }) if tool == "shell"
    ));
    assert_eq!(p.shell_runs(), 0);
}

#[tokio::test]
async fn schema_violations_are_invalid_args_for_the_model() {
    let p = Platform::start().await;
    let add = p.tools(p.a).rig_tool("add").unwrap();
    let err = add.execute(json!({"a": "two"})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::InvalidArgs);
    assert!(matches!(
        err.downcast_ref::<tenant_tools::Error>(),
        Some(tenant_tools::Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn a_sub_agent_gets_only_its_narrower_tools() {
    let p = Platform::start().await;
    let parent = p.tools(p.b);
    let child_ctx = parent
        .context()
        .delegate(tenant_core::AgentId::new("researcher").unwrap())
        .capabilities(
            tenant_core::Capabilities::none()
                .with_tools(["add"])
                .unwrap(),
        )
        .issue()
        .unwrap();
    let child = parent.delegate(&child_ctx).unwrap();
    let names: Vec<String> = child
        .rig_tools()
        .unwrap()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(names, ["add"]);
    assert!(is_not_allowed(
        &child.call("shell", json!({})).await.unwrap_err(),
        "shell"
    ));
    assert_eq!(p.shell_runs(), 0);
}
