//! Context tokens across processes: a downstream process holds only public
//! keys (`TokenVerifier`), accepts tokens into its own issuer, and can mint
//! nothing the upstream accepts. Every attack asserts its typed error and
//! that nothing changed.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use support::*;
use tenant_core::*;

const MAGIC: &[u8] = b"tenant-sdk/context-token/v2";

fn upstream() -> ContextIssuer {
    ContextIssuer::new(MasterKey::from_bytes(KeyId::new("up").unwrap(), [1; 32]))
}

fn downstream() -> ContextIssuer {
    ContextIssuer::new(MasterKey::from_bytes(KeyId::new("down").unwrap(), [2; 32]))
}

fn bytes_of(token: &ContextToken) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.as_str()).unwrap()
}

fn text(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Re-signs a token body (everything but the last 64 bytes) with `key`.
fn resign(token: &ContextToken, key: &SigningKey) -> String {
    let mut bytes = bytes_of(token);
    bytes.truncate(bytes.len() - 64);
    let mut msg = MAGIC.to_vec();
    msg.extend_from_slice(&bytes);
    bytes.extend_from_slice(&key.sign(&msg).to_bytes());
    text(&bytes)
}

/// The downstream's state, to assert that a refused token changed nothing.
fn assert_unchanged(down: &ContextIssuer, accepted: &TenantContext) {
    assert!(down.revocations().is_empty());
    accepted.check().unwrap();
    down.authority().admit(accepted).unwrap();
}

#[test]
fn a_remote_token_becomes_a_context_of_the_receiving_issuer() {
    let (up, down) = (upstream(), downstream());
    let ctx = root(&up);
    let child = ctx
        .delegate(agent("worker"))
        .tools(["search"])
        .issue()
        .unwrap();
    let local = down
        .accept_remote(child.to_token().as_str(), &up.token_verifier())
        .unwrap();
    assert_eq!(local.id(), child.id());
    assert_eq!(local.tenant(), child.tenant());
    assert_eq!(local.principal(), child.principal());
    assert_eq!(local.lineage(), child.lineage());
    assert_eq!(local.ancestors(), child.ancestors());
    assert_eq!(local.capabilities(), child.capabilities());
    assert_eq!(local.expires_at_unix_ms(), child.expires_at_unix_ms());
    down.authority().admit(&local).unwrap();
    // Each side's handles admit only their own issuer's contexts.
    assert!(matches!(
        up.authority().admit(&local),
        Err(Error::ForeignAuthority)
    ));
    assert!(matches!(
        down.authority().admit(&child),
        Err(Error::ForeignAuthority)
    ));
    // Narrowing still holds downstream.
    assert!(matches!(
        local.delegate(agent("sub")).tools(["email"]).issue(),
        Err(Error::Widening {
            capability: "tools"
        })
    ));
}

#[test]
fn a_token_of_another_authority_is_refused() {
    let (up, down) = (upstream(), downstream());
    let accepted = down
        .accept_remote(root(&up).to_token().as_str(), &up.token_verifier())
        .unwrap();
    // Another key id: unknown to the verifier.
    let stranger = ContextIssuer::new(MasterKey::generate(KeyId::new("stranger").unwrap()));
    match down.accept_remote(root(&stranger).to_token().as_str(), &up.token_verifier()) {
        Err(Error::UnknownKey(id)) => assert_eq!(id.as_str(), "stranger"),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    // The same key id with other key material: the signature fails.
    let impostor = ContextIssuer::new(MasterKey::generate(KeyId::new("up").unwrap()));
    assert!(matches!(
        down.accept_remote(root(&impostor).to_token().as_str(), &up.token_verifier()),
        Err(Error::BadProof)
    ));
    // The downstream's own tokens are not the upstream's.
    assert!(matches!(
        up.accept_token(accepted.to_token().as_str()),
        Err(Error::UnknownKey(_))
    ));
    assert!(matches!(
        down.accept_remote(accepted.to_token().as_str(), &up.token_verifier()),
        Err(Error::UnknownKey(_))
    ));
    assert_unchanged(&down, &accepted);
}

#[test]
fn a_verifying_key_cannot_be_used_to_mint() {
    let (up, down) = (upstream(), downstream());
    let verifier = up.token_verifier();
    let accepted = down
        .accept_remote(root(&up).to_token().as_str(), &verifier)
        .unwrap();
    let (id, public) = verifier.public_keys().next().unwrap();
    assert_eq!(id.as_str(), "up");
    let genuine = root(&up).to_token();

    // The public key as an Ed25519 secret.
    let as_secret = SigningKey::from_bytes(&public);
    assert!(matches!(
        down.accept_remote(&resign(&genuine, &as_secret), &verifier),
        Err(Error::BadProof)
    ));
    // The public key as a master key.
    let as_master = ContextIssuer::new(MasterKey::from_bytes(id.clone(), public));
    assert!(matches!(
        down.accept_remote(root(&as_master).to_token().as_str(), &verifier),
        Err(Error::BadProof)
    ));
    assert!(matches!(
        up.accept_token(root(&as_master).to_token().as_str()),
        Err(Error::BadProof)
    ));
    // No subkey of the upstream is its token key either.
    for purpose in [
        Purpose::Postgres,
        Purpose::PayloadSealing,
        Purpose::Vault,
        Purpose::CacheSalt,
        Purpose::Custom("context-token-signing"),
    ] {
        let sub = *up.subkey(purpose).expose_bytes();
        assert!(matches!(
            down.accept_remote(&resign(&genuine, &SigningKey::from_bytes(&sub)), &verifier),
            Err(Error::BadProof)
        ));
    }
    assert_unchanged(&down, &accepted);
}

#[test]
fn edited_tokens_fail_their_signature() {
    let (up, down) = (upstream(), downstream());
    let verifier = up.token_verifier();
    let ctx = root(&up);
    let accepted = down
        .accept_remote(ctx.to_token().as_str(), &verifier)
        .unwrap();
    let original = bytes_of(&ctx.to_token());
    let len = original.len();
    // Flip one bit in every byte position: tenant, lineage, capabilities,
    // times, key id and signature alike.
    for pos in 0..len {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x01;
        let result = down.accept_remote(&text(&bytes), &verifier);
        assert!(
            matches!(
                result,
                Err(Error::BadProof | Error::MalformedToken(_) | Error::UnknownKey(_))
            ),
            "byte {pos}: {result:?}"
        );
    }
    // Another genuine token's signature on this body.
    let other = bytes_of(&root(&up).to_token());
    let mut spliced = original.clone();
    spliced[len - 64..].copy_from_slice(&other[other.len() - 64..]);
    assert!(matches!(
        down.accept_remote(&text(&spliced), &verifier),
        Err(Error::BadProof)
    ));
    assert_unchanged(&down, &accepted);
}

#[test]
fn malformed_and_oversized_tokens_are_refused() {
    let (up, down) = (upstream(), downstream());
    let verifier = up.token_verifier();
    let accepted = down
        .accept_remote(root(&up).to_token().as_str(), &verifier)
        .unwrap();
    let genuine = bytes_of(&root(&up).to_token());
    let huge = "A".repeat(300 * 1024);
    let mut trailing = genuine.clone();
    trailing.insert(genuine.len() - 64, 0);
    let mut version = genuine.clone();
    version[0] = 1;
    for bad in [
        String::new(),
        "!!!".into(),
        "AAAA".into(),
        text(&genuine[..genuine.len() / 2]),
        text(&genuine[..63]),
        text(&trailing),
        text(&version),
        huge,
    ] {
        let result = down.accept_remote(&bad, &verifier);
        assert!(
            matches!(result, Err(Error::MalformedToken(_))),
            "{}: {result:?}",
            &bad[..bad.len().min(40)]
        );
    }
    assert_unchanged(&down, &accepted);
}

#[test]
fn verifiers_refuse_keys_that_are_not_ed25519_public_keys() {
    let id = || KeyId::new("k").unwrap();
    // The identity point has small order: any signature "verifies" under
    // some constructions.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        TokenVerifier::new().with_key(id(), identity),
        Err(Error::Key(_))
    ));
    // y = 2 is not the y-coordinate of any curve point.
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    assert!(matches!(
        TokenVerifier::new().with_key(id(), off_curve),
        Err(Error::Key(_))
    ));
    assert!(matches!(
        TokenVerifier::new().with_key_hex(id(), "not hex"),
        Err(Error::Key(_))
    ));
    let (kid, public) = upstream().token_verifier().public_keys().next().unwrap();
    let verifier = TokenVerifier::new().with_key(kid.clone(), public).unwrap();
    assert!(matches!(
        verifier.clone().with_key(kid.clone(), public),
        Err(Error::InvalidConfiguration(_))
    ));
    let from_hex = TokenVerifier::new()
        .with_key_hex(kid, &hex::encode(public))
        .unwrap();
    downstream()
        .accept_remote(root(&upstream()).to_token().as_str(), &from_hex)
        .unwrap();
}

#[test]
fn an_empty_verifier_accepts_nothing() {
    let down = downstream();
    assert!(matches!(
        down.accept_remote(root(&upstream()).to_token().as_str(), &TokenVerifier::new()),
        Err(Error::UnknownKey(_))
    ));
}

#[test]
fn revocation_in_the_receiving_process_covers_accepted_contexts_and_their_children() {
    let (up, down) = (upstream(), downstream());
    let ctx = root(&up);
    let local = down
        .accept_remote(ctx.to_token().as_str(), &up.token_verifier())
        .unwrap();
    let child = local.delegate(agent("child")).issue().unwrap();
    down.revocations().revoke_id(ctx.id());
    assert!(matches!(local.check(), Err(Error::ContextRevoked)));
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));
    assert!(matches!(
        down.accept_remote(ctx.to_token().as_str(), &up.token_verifier()),
        Err(Error::ContextRevoked)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_token_text_never_panics_and_never_verifies(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (up, down) = (upstream(), downstream());
        prop_assert!(down.accept_remote(&text(&bytes), &up.token_verifier()).is_err());
        let as_text = String::from_utf8_lossy(&bytes);
        prop_assert!(down.accept_remote(&as_text, &up.token_verifier()).is_err());
    }
}

#[test]
fn an_accepted_context_lives_no_longer_than_the_receivers_maximum() {
    let up = ContextIssuer::builder(MasterKey::from_bytes(KeyId::new("up").unwrap(), [1; 32]))
        .max_ttl(std::time::Duration::from_secs(24 * 3600))
        .build()
        .unwrap();
    let down = ContextIssuer::builder(MasterKey::from_bytes(KeyId::new("down").unwrap(), [2; 32]))
        .max_ttl(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let long = up
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("alice").unwrap())
        .ttl(std::time::Duration::from_secs(12 * 3600))
        .issue()
        .unwrap();
    let local = down
        .accept_remote(long.to_token().as_str(), &up.token_verifier())
        .unwrap();
    assert!(local.expires_at_unix_ms() < long.expires_at_unix_ms());
    assert!(local.remaining() <= std::time::Duration::from_secs(60));
    assert_eq!(local.id(), long.id());
    // A shorter context keeps its own expiry.
    let short = up
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("alice").unwrap())
        .ttl(std::time::Duration::from_secs(30))
        .issue()
        .unwrap();
    let local = down
        .accept_remote(short.to_token().as_str(), &up.token_verifier())
        .unwrap();
    assert_eq!(local.expires_at_unix_ms(), short.expires_at_unix_ms());
}
