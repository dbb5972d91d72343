//! Handles trust the platform authority they were configured with, never
//! the authority a context names itself.

mod support;

use support::*;
use tenant_core::*;

#[test]
fn contexts_of_the_platform_issuer_are_admitted_directly_by_delegation_and_by_token() {
    let issuer = issuer();
    let authority = issuer.authority();
    let ctx = root(&issuer);
    authority.admit(&ctx).unwrap();
    let child = ctx
        .delegate(AgentId::new("researcher").unwrap())
        .issue()
        .unwrap();
    authority.admit(&child).unwrap();
    let back = issuer.accept_token(ctx.to_token().as_str()).unwrap();
    authority.admit(&back).unwrap();
    // A clone of the issuer is the same authority.
    authority.admit(&root(&issuer.clone())).unwrap();
}

#[test]
fn a_context_minted_by_another_issuer_is_refused_even_with_the_same_key_id() {
    let platform = issuer();
    let authority = platform.authority();
    let rogue = issuer();
    let victim = root(&platform);
    let forged = rogue
        .context()
        .tenant(victim.tenant())
        .principal(victim.principal().clone())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    forged.check().unwrap(); // it verifies against itself ...
    assert!(!authority.issued(&forged));
    assert!(matches!(
        authority.admit(&forged),
        Err(Error::ForeignAuthority)
    )); // ... but not against the platform.
    let forged_child = forged
        .delegate(AgentId::new("sub").unwrap())
        .issue()
        .unwrap();
    assert!(matches!(
        authority.admit(&forged_child),
        Err(Error::ForeignAuthority)
    ));
    // The platform's own context is untouched by the attempt.
    authority.admit(&victim).unwrap();
}

#[test]
fn a_context_of_the_same_master_key_in_another_issuer_instance_is_refused() {
    let key = || MasterKey::from_bytes(KeyId::new("k1").unwrap(), [7; 32]);
    let platform = ContextIssuer::new(key());
    let twin = ContextIssuer::new(key());
    let ctx = root(&twin);
    assert!(matches!(
        platform.authority().admit(&ctx),
        Err(Error::ForeignAuthority)
    ));
    // Crossing into the platform goes through its token acceptance.
    let admitted = platform.accept_token(ctx.to_token().as_str()).unwrap();
    platform.authority().admit(&admitted).unwrap();
}

#[test]
fn a_revoked_context_of_the_platform_is_refused() {
    let issuer = issuer();
    let ctx = root(&issuer);
    issuer.revocations().revoke(&ctx);
    assert!(matches!(
        issuer.authority().admit(&ctx),
        Err(Error::ContextRevoked)
    ));
}

#[test]
fn scoped_builder_state_admits_only_through_the_authority() {
    let platform = issuer();
    let rogue = issuer();
    let ctx = root(&rogue);
    assert!(matches!(
        Scoped::new(&ctx).into_admitted_context(&platform.authority()),
        Err(Error::ForeignAuthority)
    ));
    let ours = root(&platform);
    let admitted = Scoped::new(&ours)
        .into_admitted_context(&platform.authority())
        .unwrap();
    assert_eq!(admitted.id(), ours.id());
}
