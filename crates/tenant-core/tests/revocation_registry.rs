//! The revocation registry stays bounded without ever un-revoking a context
//! that could still pass its checks.

mod support;

use std::time::Duration;

use support::*;
use tenant_core::*;

fn short_lived(issuer: &ContextIssuer, ttl: Duration) -> TenantContext {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .capabilities(root_caps())
        .ttl(ttl)
        .issue()
        .unwrap()
}

#[test]
fn pruning_keeps_every_live_revocation() {
    let issuer = issuer();
    let root = root(&issuer);
    let child = root.delegate(agent("child")).issue().unwrap();
    issuer.revocations().revoke(&root);

    assert_eq!(issuer.revocations().prune_expired(), 0);
    assert_eq!(issuer.revocations().len(), 1);
    assert!(matches!(root.check(), Err(Error::ContextRevoked)));
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));
}

#[test]
fn expired_revocations_are_dropped_and_their_contexts_stay_refused() {
    let issuer = issuer();
    let parent = short_lived(&issuer, Duration::from_millis(150));
    let child = parent.delegate(agent("child")).issue().unwrap();
    let live = root(&issuer);
    issuer.revocations().revoke(&parent);
    issuer.revocations().revoke(&live);
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(issuer.revocations().prune_expired(), 1);
    assert_eq!(issuer.revocations().len(), 1);
    // No longer listed, still refused: expiry covers it and its descendant.
    assert!(matches!(parent.check(), Err(Error::ContextExpired)));
    assert!(matches!(child.check(), Err(Error::ContextExpired)));
    assert!(matches!(live.check(), Err(Error::ContextRevoked)));
}

#[test]
fn revocations_by_bare_id_are_never_pruned() {
    let issuer = issuer();
    let ctx = short_lived(&issuer, Duration::from_millis(10));
    issuer.revocations().revoke_id(ctx.id());
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(issuer.revocations().prune_expired(), 0);
    assert_eq!(issuer.revocations().len(), 1);
}

#[test]
fn the_registry_sweeps_itself_as_it_grows() {
    let issuer = issuer();
    let expired: Vec<TenantContext> = (0..1100)
        .map(|_| short_lived(&issuer, Duration::from_millis(100)))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    for ctx in &expired {
        issuer.revocations().revoke(ctx);
    }
    // The 1024th entry triggered a sweep of all 1024 expired ones.
    assert_eq!(issuer.revocations().len(), 1100 - 1024);

    let live = root(&issuer);
    let child = live.delegate(agent("child")).issue().unwrap();
    issuer.revocations().revoke(&live);
    assert_eq!(issuer.revocations().len(), 1100 - 1024 + 1);
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));
}
