//! Contexts that verify against their own issuer but not the platform's,
//! tried through every public entry: `admit`, the scoped builder state,
//! `check_descendant` (what handles' `delegate` uses), delegation from a
//! foreign parent, and token acceptance. Each is refused with its typed
//! error, and the platform is unchanged afterwards.

mod support;

use std::time::{Duration, SystemTime};

use support::*;
use tenant_core::*;

fn platform_key() -> MasterKey {
    MasterKey::from_bytes(KeyId::new("platform").unwrap(), [1; 32])
}

/// Every kind of context the platform must not admit, each for the
/// victim's tenant (and, where the maker can choose, with its context id).
fn foreign_contexts(
    platform: &ContextIssuer,
    victim: &TenantContext,
) -> Vec<(&'static str, TenantContext)> {
    let rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("rogue").unwrap()));
    let same_id_rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("platform").unwrap()));
    // Same master key, another instance (and another revocation registry).
    let twin = ContextIssuer::new(platform_key());
    let downstream = ContextIssuer::new(MasterKey::generate(KeyId::new("downstream").unwrap()));
    let forge = |issuer: &ContextIssuer| {
        issuer
            .context()
            .tenant(victim.tenant())
            .principal(victim.principal().clone())
            .capabilities(Capabilities::unrestricted())
            .issue()
            .unwrap()
    };
    let twin_copy = twin.accept_token(victim.to_token().as_str()).unwrap();
    let remote_copy = downstream
        .accept_remote(victim.to_token().as_str(), &platform.token_verifier())
        .unwrap();
    let jwt_ctx = hs_verifier()
        .verify(&hs_token(&jwt_claims(victim.tenant())), &rogue)
        .unwrap();
    let mut out = vec![
        ("another key", forge(&rogue)),
        ("another key, same key id", forge(&same_id_rogue)),
        ("same master key, another issuer", forge(&twin)),
        ("the victim's own id, accepted by a twin", twin_copy.clone()),
        (
            "the victim's own id, accepted downstream",
            remote_copy.clone(),
        ),
        ("a JWT verified through a rogue issuer", jwt_ctx),
    ];
    let children: Vec<_> = out
        .iter()
        .map(|(_, c)| c.delegate(agent("sub")).issue().unwrap())
        .collect();
    out.extend(
        children
            .into_iter()
            .map(|c| ("delegated from a foreign parent", c)),
    );
    out
}

fn assert_platform_unchanged(platform: &ContextIssuer, victim: &TenantContext) {
    assert!(platform.revocations().is_empty());
    platform.authority().admit(victim).unwrap();
    victim.check().unwrap();
}

#[test]
fn no_foreign_context_is_admitted_through_any_entry() {
    let platform = ContextIssuer::new(platform_key());
    let authority = platform.authority();
    let victim = root(&platform);
    for (how, foreign) in foreign_contexts(&platform, &victim) {
        foreign.check().unwrap(); // each verifies against itself ...
        assert!(!authority.issued(&foreign), "{how}");
        assert!(
            matches!(authority.admit(&foreign), Err(Error::ForeignAuthority)),
            "{how}"
        );
        assert!(
            matches!(
                Scoped::new(&foreign).into_admitted_context(&authority),
                Err(Error::ForeignAuthority)
            ),
            "{how}"
        );
        // What every handle's `delegate` checks.
        assert!(
            matches!(
                victim.check_descendant(&foreign),
                Err(Error::ForeignAuthority)
            ),
            "{how}"
        );
        assert!(!victim.same_authority(&foreign), "{how}");
    }
    assert_platform_unchanged(&platform, &victim);
}

#[test]
fn a_twin_issuer_cannot_launder_a_revoked_context_into_a_handle() {
    // The registry swap through `delegate`: the victim's handle is asked to
    // act for a copy of a revoked context, accepted by a twin issuer whose
    // registry has never heard of the revocation.
    let platform = ContextIssuer::new(platform_key());
    let parent = root(&platform);
    let child = parent.delegate(agent("worker")).issue().unwrap();
    platform.revocations().revoke(&child);
    let twin = ContextIssuer::new(platform_key());
    let laundered = twin.accept_token(child.to_token().as_str()).unwrap();
    laundered.check().unwrap();
    assert_eq!(laundered.id(), child.id());
    assert!(matches!(
        parent.check_descendant(&laundered),
        Err(Error::ForeignAuthority)
    ));
    assert!(matches!(
        parent.check_descendant(&child),
        Err(Error::ContextRevoked)
    ));
    assert!(matches!(
        platform.authority().admit(&laundered),
        Err(Error::ForeignAuthority)
    ));
    assert_eq!(platform.revocations().len(), 1);
    parent.check().unwrap();
}

#[test]
fn tokens_of_foreign_contexts_do_not_become_platform_contexts() {
    let platform = ContextIssuer::new(platform_key());
    let victim = root(&platform);
    let rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("platform").unwrap()));
    let other = ContextIssuer::new(MasterKey::generate(KeyId::new("other").unwrap()));
    let for_victim = |issuer: &ContextIssuer| {
        issuer
            .context()
            .tenant(victim.tenant())
            .principal(principal())
            .issue()
            .unwrap()
    };
    let forged = for_victim(&rogue);
    assert!(matches!(
        platform.accept_token(forged.to_token().as_str()),
        Err(Error::BadProof)
    ));
    let stranger = for_victim(&other);
    assert!(matches!(
        platform.accept_token(stranger.to_token().as_str()),
        Err(Error::UnknownKey(_))
    ));
    // Accepting with a verifier of the rogue's keys is an explicit trust
    // decision, and still yields a context of the accepting issuer only.
    let trusted_rogue = platform
        .accept_remote(forged.to_token().as_str(), &rogue.token_verifier())
        .unwrap();
    assert!(platform.authority().admit(&trusted_rogue).is_ok());
    assert!(matches!(
        rogue.authority().admit(&trusted_rogue),
        Err(Error::ForeignAuthority)
    ));
    assert_platform_unchanged(&platform, &victim);
}

#[test]
fn handles_refuse_a_foreign_context_even_when_the_platform_registry_is_shared() {
    // Two issuers sharing one registry are still two authorities.
    let registry = Revocations::new();
    let platform = ContextIssuer::builder(platform_key())
        .revocations(registry.clone())
        .build()
        .unwrap();
    let sibling = ContextIssuer::builder(platform_key())
        .revocations(registry.clone())
        .build()
        .unwrap();
    let ctx = root(&sibling);
    assert!(matches!(
        platform.authority().admit(&ctx),
        Err(Error::ForeignAuthority)
    ));
    // A revocation through the shared registry holds for both.
    registry.apply(&Revocation::context_id(
        ctx.id(),
        SystemTime::now() + Duration::from_secs(600),
    ));
    assert!(matches!(
        sibling.authority().admit(&ctx),
        Err(Error::ContextRevoked)
    ));
}
