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

#[test]
fn a_replica_refuses_everything_until_synced_and_again_once_stale() {
    let early = std::time::Instant::now();
    let registry = Revocations::replica(Duration::from_millis(40)).unwrap();
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .revocations(registry.clone())
        .build()
        .unwrap();
    // Never synced: even issuing is refused.
    assert!(matches!(try_root(&issuer), Err(Error::RevocationsStale)));
    assert_eq!(registry.staleness(), None);
    registry.mark_synced(std::time::Instant::now());
    let ctx = root(&issuer);
    // Stale once the bound has passed without a sync.
    std::thread::sleep(Duration::from_millis(120));
    assert!(matches!(ctx.check(), Err(Error::RevocationsStale)));
    assert!(matches!(
        issuer.authority().admit(&ctx),
        Err(Error::RevocationsStale)
    ));
    assert!(registry.staleness().unwrap() > Duration::from_millis(40));
    // An older sync instant does not make it fresh again.
    registry.mark_synced(early);
    assert!(matches!(ctx.check(), Err(Error::RevocationsStale)));
    // An authoritative registry is never stale.
    assert_eq!(Revocations::new().max_staleness(), None);
    assert_eq!(Revocations::new().staleness(), None);
}

#[test]
fn the_in_memory_registry_is_a_revocation_store() {
    let issuer = issuer();
    let ctx = root(&issuer);
    let registry = issuer.revocations().clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(RevocationStore::revoke(
            &registry,
            &Revocation::context(&ctx),
        ))
        .unwrap();
    assert!(matches!(ctx.check(), Err(Error::ContextRevoked)));
    let all = runtime.block_on(registry.load_all()).unwrap();
    assert_eq!(all, vec![Revocation::context(&ctx)]);
}
