//! Every handle of this crate admits only contexts issued under the
//! platform authority it was configured with. A context minted by any
//! other issuer — even with the same key id, for the same tenant and
//! principal — is refused with `ForeignAuthority`, and nothing happens.

mod fixture;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenant_core::*;
use tenant_tools::Error;
use tenant_tools::*;

use fixture::platform::*;
use fixture::*;

fn foreign(err: &Error) -> bool {
    matches!(err, Error::Context(tenant_core::Error::ForeignAuthority))
}

/// A rogue issuer's context for the same tenant and principal, with every
/// capability the genuine one has.
fn rogue_twin(tenant: TenantId, tools: &[&str]) -> TenantContext {
    ctx_with_tools(&issuer(), tenant, tools)
}

#[tokio::test]
async fn an_executor_is_not_built_for_a_context_of_another_issuer() {
    let p = platform();
    let tenant = TenantId::random();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    p.registry
        .register(FnTool::new("effect", "", json!({}), move |_c, _i| {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                Ok(Value::Null)
            }
        }))
        .unwrap();
    p.policies
        .set(tenant, ToolPolicy::deny_all().allow_tools(["effect"]));
    let (_d, root) = workspace_root(&p.issuer);
    let err = ToolExecutor::builder()
        .registry(&p.registry)
        .policies(&p.policies)
        .workspace_root(&root)
        .tenant(&rogue_twin(tenant, &["effect"]))
        .build()
        .unwrap_err();
    assert!(foreign(&err), "{err}");
    assert!(!ran.load(Ordering::SeqCst));
    assert!(!root.path().join(tenant.to_string()).exists());
}

#[tokio::test]
async fn a_workspace_root_of_another_platform_is_refused_at_build() {
    let p = platform();
    let tenant = TenantId::random();
    let other = issuer();
    let (_d, root) = workspace_root(&other);
    let err = ToolExecutor::builder()
        .registry(&p.registry)
        .workspace_root(&root)
        .tenant(&ctx_with_tools(&p.issuer, tenant, &[]))
        .build()
        .unwrap_err();
    assert!(foreign(&err), "{err}");
}

#[tokio::test]
async fn delegating_to_a_foreign_context_is_refused() {
    let p = platform();
    let tenant = TenantId::random();
    p.policies
        .set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
    let tools = p.executor(&ctx_with_tools(&p.issuer, tenant, &["echo"]));
    // A rogue issuer delegates from its own twin of the parent.
    let rogue_parent = rogue_twin(tenant, &["echo"]);
    let rogue_child = rogue_parent
        .delegate(AgentId::new("sub").unwrap())
        .issue()
        .unwrap();
    let err = tools.delegate(&rogue_child).unwrap_err();
    assert!(foreign(&err), "{err}");
    // The genuine executor is unaffected.
    assert_eq!(
        tools
            .call("echo", json!({"text": "still mine"}))
            .await
            .unwrap(),
        json!({"text": "still mine"})
    );
}

#[test]
fn a_workspace_is_not_created_or_swept_for_a_foreign_context() {
    let issuer = issuer();
    let (_d, root) = workspace_root(&issuer);
    let tenant = TenantId::random();
    let stale = root.path().join(tenant.to_string()).join("crashed-run");
    std::fs::create_dir_all(&stale).unwrap();
    let rogue = rogue_twin(tenant, &[]);
    assert!(foreign(&root.create(&rogue).unwrap_err()));
    assert!(foreign(
        &root.sweep_stale(&rogue, Duration::ZERO).unwrap_err()
    ));
    let entries: Vec<_> = std::fs::read_dir(root.path().join(tenant.to_string()))
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1, "a run directory appeared");
    assert!(stale.exists(), "the sweep ran for a foreign context");
}

#[test]
fn a_warm_pool_gives_nothing_to_a_foreign_context() {
    if !sandbox_support() {
        return;
    }
    let issuer = issuer();
    let (_d, root) = quota_root(&issuer, WorkspaceQuota::new(8 << 20, 256));
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let pool = WarmPool::builder()
        .sandbox(&sandbox)
        .workspace_root(&root)
        .size(1)
        .build()
        .unwrap();
    assert_eq!(pool.ready(), 1);
    let tenant = TenantId::random();
    let err = pool.acquire(&rogue_twin(tenant, &[])).unwrap_err();
    assert!(foreign(&err), "{err}");
    assert_eq!(pool.ready(), 1, "a slot was taken");
    assert!(!root.path().join(tenant.to_string()).exists());
    // The genuine context gets it.
    let mut warm = pool.acquire(&ctx_with_tools(&issuer, tenant, &[])).unwrap();
    assert!(warm
        .run(&SandboxCommand::new("/bin/true"))
        .unwrap()
        .success());
}
