//! Attacks on contexts and context tokens: each must fail with its own
//! typed error.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use support::*;
use tenant_core::*;

fn decode(token: &ContextToken) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.as_str()).unwrap()
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn issued_context_checks_and_round_trips_through_a_token() {
    let issuer = issuer();
    let ctx = root(&issuer);
    ctx.check().unwrap();
    let back = issuer.accept_token(ctx.to_token().as_str()).unwrap();
    assert_eq!(back.id(), ctx.id());
    assert_eq!(back.tenant(), ctx.tenant());
    assert_eq!(back.capabilities(), ctx.capabilities());
    assert_eq!(back.expires_at_unix_ms(), ctx.expires_at_unix_ms());
    back.check().unwrap();
}

#[test]
fn token_from_another_platform_key_is_rejected_as_bad_proof() {
    // Same key id, different key material: a forger who guesses the id.
    let ours = issuer();
    let forger = issuer();
    let forged = root(&forger).to_token();
    assert!(matches!(
        ours.accept_token(forged.as_str()),
        Err(Error::BadProof)
    ));
}

#[test]
fn token_signed_with_an_unknown_key_id_is_rejected() {
    let ours = issuer();
    let other = ContextIssuer::new(MasterKey::generate(KeyId::new("other").unwrap()));
    let token = root(&other).to_token();
    match ours.accept_token(token.as_str()) {
        Err(Error::UnknownKey(id)) => assert_eq!(id.as_str(), "other"),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn token_with_a_swapped_tenant_is_rejected_as_bad_proof() {
    let issuer = issuer();
    let ctx = root(&issuer);
    let mut bytes = decode(&ctx.to_token());
    // Layout: version(1) | context id(16) | tenant(16) | ...
    let victim = TenantId::random();
    bytes[17..33].copy_from_slice(victim.as_bytes());
    assert!(matches!(
        issuer.accept_token(&encode(&bytes)),
        Err(Error::BadProof)
    ));
}

#[test]
fn token_with_tampered_capabilities_is_rejected_as_bad_proof() {
    let issuer = issuer();
    let narrow = issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .capabilities(Capabilities::none().with_tools(["search"]).unwrap())
        .issue()
        .unwrap();
    let mut bytes = decode(&narrow.to_token());
    // Rename the one allowed tool "search" to "shell!" in place (same length).
    let pos = bytes
        .windows(6)
        .position(|w| w == b"search")
        .expect("tool name is in the token");
    bytes[pos..pos + 6].copy_from_slice(b"shell!");
    assert!(matches!(
        issuer.accept_token(&encode(&bytes)),
        Err(Error::BadProof)
    ));
}

#[test]
fn token_with_an_extended_expiry_is_rejected_as_bad_proof() {
    let issuer = issuer();
    let ctx = root(&issuer);
    let mut bytes = decode(&ctx.to_token());
    let exp = ctx.expires_at_unix_ms().to_be_bytes();
    let pos = bytes.windows(8).rposition(|w| w == exp).unwrap();
    let later = (ctx.expires_at_unix_ms() + 86_400_000).to_be_bytes();
    bytes[pos..pos + 8].copy_from_slice(&later);
    assert!(matches!(
        issuer.accept_token(&encode(&bytes)),
        Err(Error::BadProof)
    ));
}

#[test]
fn truncated_or_garbage_tokens_are_malformed() {
    let issuer = issuer();
    let token = root(&issuer).to_token();
    let text = token.as_str();
    for bad in [&text[..text.len() / 2], "", "!!!not base64!!!", "AAAA"] {
        assert!(
            matches!(issuer.accept_token(bad), Err(Error::MalformedToken(_))),
            "{bad:?} should be malformed"
        );
    }
}

#[test]
fn expired_context_fails_check_and_cannot_delegate() {
    let issuer = issuer();
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .capabilities(root_caps())
        .ttl(Duration::from_millis(30))
        .issue()
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert!(matches!(ctx.check(), Err(Error::ContextExpired)));
    assert!(matches!(
        ctx.delegate(agent("late")).issue(),
        Err(Error::ContextExpired)
    ));
    assert!(matches!(
        issuer.accept_token(ctx.to_token().as_str()),
        Err(Error::ContextExpired)
    ));
}

#[test]
fn revoking_a_parent_rejects_every_descendant() {
    let issuer = issuer();
    let root = root(&issuer);
    let child = root.delegate(agent("child")).issue().unwrap();
    let grandchild = child.delegate(agent("grandchild")).issue().unwrap();
    let sibling_root = support::root(&issuer);

    issuer.revocations().revoke(&child);

    root.check().unwrap();
    sibling_root.check().unwrap();
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));
    assert!(matches!(grandchild.check(), Err(Error::ContextRevoked)));
    assert!(matches!(
        grandchild.delegate(agent("great")).issue(),
        Err(Error::ContextRevoked)
    ));
    assert!(matches!(
        issuer.accept_token(grandchild.to_token().as_str()),
        Err(Error::ContextRevoked)
    ));
}

#[test]
fn rotated_key_keeps_old_contexts_valid_only_while_accepted() {
    let old = MasterKey::from_bytes(KeyId::new("2026-10").unwrap(), [7; 32]);
    let old_issuer = ContextIssuer::new(MasterKey::from_bytes(
        KeyId::new("2026-10").unwrap(),
        [7; 32],
    ));
    let token = root(&old_issuer).to_token();

    let rotated = ContextIssuer::builder(MasterKey::generate(KeyId::new("2026-11").unwrap()))
        .accept_previous(&old)
        .build()
        .unwrap();
    let accepted = rotated.accept_token(token.as_str()).unwrap();
    // Accepted contexts, and their delegations, carry proofs of the new key.
    assert_eq!(accepted.key_id().as_str(), "2026-11");
    let child = accepted.delegate(agent("child")).issue().unwrap();
    assert_eq!(child.key_id().as_str(), "2026-11");
    // Tokens made now are signed with the new key and still accepted.
    rotated.accept_token(child.to_token().as_str()).unwrap();

    let retired = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11").unwrap()));
    assert!(matches!(
        retired.accept_token(token.as_str()),
        Err(Error::UnknownKey(_))
    ));
}

#[test]
fn debug_output_never_contains_key_material() {
    let bytes = [0x5a_u8; 32];
    let master = MasterKey::from_bytes(KeyId::new("k").unwrap(), bytes);
    let sub = master.subkey(Purpose::Postgres);
    let sub_hex = hex::encode(sub.expose_bytes());
    let issuer = ContextIssuer::new(master);
    let ctx = root(&issuer);
    let shown = format!("{issuer:?} {ctx:?} {sub:?} {:?}", ctx.to_token());
    assert!(!shown.contains(&sub_hex));
    assert!(!shown.contains("5a5a"));
    assert!(!shown.contains("90, 90"));
    assert!(!shown.contains(ctx.to_token().as_str()));
}

#[test]
fn subkeys_are_separated_by_purpose_and_key_id() {
    let a = MasterKey::from_bytes(KeyId::new("a").unwrap(), [1; 32]);
    let a_again = MasterKey::from_bytes(KeyId::new("a").unwrap(), [1; 32]);
    let b = MasterKey::from_bytes(KeyId::new("b").unwrap(), [1; 32]);
    let pg = a.subkey(Purpose::Postgres);
    assert_eq!(
        pg.expose_bytes(),
        a_again.subkey(Purpose::Postgres).expose_bytes()
    );
    assert_ne!(pg.expose_bytes(), a.subkey(Purpose::Vault).expose_bytes());
    assert_ne!(
        pg.expose_bytes(),
        b.subkey(Purpose::Postgres).expose_bytes()
    );
}
