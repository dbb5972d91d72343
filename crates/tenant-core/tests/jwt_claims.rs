//! `ClaimVerifier`: JWT attacks, each rejected with its own reason.

mod support;

use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;
use tenant_core::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";
const ISS: &str = "https://idp.example.com";
const AUD: &str = "agent-platform";
const TENANT: &str = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11";

fn hs_verifier() -> ClaimVerifier {
    ClaimVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .audience(AUD)
        .leeway(std::time::Duration::ZERO)
        .capabilities(root_caps())
        .build()
        .unwrap()
}

fn claims() -> Value {
    json!({
        "sub": "alice@example.com",
        "tenant_id": TENANT,
        "iss": ISS,
        "aud": AUD,
        "exp": get_current_timestamp() + 600,
        "nbf": get_current_timestamp() - 10,
    })
}

fn hs_token(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn rejection(result: Result<TenantContext>) -> ClaimRejection {
    match result {
        Err(Error::ClaimRejected(r)) => r,
        other => panic!("expected a claim rejection, got {other:?}"),
    }
}

#[test]
fn valid_hs256_token_yields_a_context_for_its_tenant() {
    let issuer = issuer();
    let ctx = hs_verifier().verify(&hs_token(&claims()), &issuer).unwrap();
    assert_eq!(ctx.tenant().to_string(), TENANT);
    assert_eq!(ctx.principal().as_str(), "alice@example.com");
    assert_eq!(ctx.agent().as_str(), "main");
    assert_eq!(ctx.capabilities(), &root_caps());
    ctx.check().unwrap();
    // The context never outlives the token.
    let exp = claims()["exp"].as_u64().unwrap() * 1000;
    assert!(ctx.expires_at_unix_ms() <= exp + 1000);
}

#[test]
fn token_claims_can_narrow_but_never_widen_the_baseline() {
    let mut c = claims();
    c["tools"] = json!(["search", "shell"]);
    c["token_budget"] = json!(5_000_000);
    let ctx = hs_verifier().verify(&hs_token(&c), &issuer()).unwrap();
    assert!(ctx.capabilities().tools().allows("search"));
    assert!(!ctx.capabilities().tools().allows("shell"));
    assert!(!ctx.capabilities().tools().allows("python"));
    assert_eq!(ctx.capabilities().token_budget(), Some(100_000));
}

#[test]
fn alg_none_is_rejected() {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = base64url(claims().to_string().as_bytes());
    let token = format!("{header}.{body}.");
    assert_eq!(
        rejection(hs_verifier().verify(&token, &issuer())),
        ClaimRejection::AlgorithmNotAllowed
    );
}

#[test]
fn algorithm_confusion_rs256_key_as_hs256_secret_is_rejected() {
    // Classic attack: sign HS256 with the verifier's RSA *public* key.
    let public = include_bytes!("keys/rsa_public.pem");
    let verifier = ClaimVerifier::builder()
        .rs256_pem(public)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(public),
    )
    .unwrap();
    assert_eq!(
        rejection(verifier.verify(&token, &issuer())),
        ClaimRejection::AlgorithmNotAllowed
    );
}

#[test]
fn wrong_hs256_key_is_a_bad_signature() {
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another secret that is long enough!!"),
    )
    .unwrap();
    assert_eq!(
        rejection(hs_verifier().verify(&token, &issuer())),
        ClaimRejection::BadSignature
    );
}

#[test]
fn rs256_tokens_verify_and_wrong_rsa_key_is_a_bad_signature() {
    let verifier = ClaimVerifier::builder()
        .rs256_pem(include_bytes!("keys/rsa_public.pem"))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let good = encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(include_bytes!("keys/rsa_private.pem")).unwrap(),
    )
    .unwrap();
    verifier.verify(&good, &issuer()).unwrap();
    let forged = encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(include_bytes!("keys/rsa_other_private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rejection(verifier.verify(&forged, &issuer())),
        ClaimRejection::BadSignature
    );
}

#[test]
fn eddsa_tokens_verify_and_tampered_payload_is_a_bad_signature() {
    let verifier = ClaimVerifier::builder()
        .eddsa_pem(include_bytes!("keys/ed25519_public.pem"))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let good = encode(
        &Header::new(Algorithm::EdDSA),
        &claims(),
        &EncodingKey::from_ed_pem(include_bytes!("keys/ed25519_private.pem")).unwrap(),
    )
    .unwrap();
    verifier.verify(&good, &issuer()).unwrap();

    // Swap the payload for one naming another tenant, keep the signature.
    let mut c = claims();
    c["tenant_id"] = json!(TenantId::random().to_string());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64url(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        rejection(verifier.verify(&tampered, &issuer())),
        ClaimRejection::BadSignature
    );
}

#[test]
fn expired_token_is_rejected() {
    let mut c = claims();
    c["exp"] = json!(get_current_timestamp() - 120);
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
        ClaimRejection::Expired
    );
}

#[test]
fn token_not_valid_yet_is_rejected() {
    let mut c = claims();
    c["nbf"] = json!(get_current_timestamp() + 300);
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
        ClaimRejection::NotYetValid
    );
}

#[test]
fn wrong_issuer_is_rejected() {
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
        ClaimRejection::WrongIssuer
    );
}

#[test]
fn wrong_audience_is_rejected() {
    let mut c = claims();
    c["aud"] = json!("some-other-service");
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
        ClaimRejection::WrongAudience
    );
}

#[test]
fn missing_tenant_claim_is_rejected() {
    let mut c = claims();
    c.as_object_mut().unwrap().remove("tenant_id");
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
        ClaimRejection::MissingClaim("tenant_id".into())
    );
}

#[test]
fn malformed_tenant_uuid_is_rejected() {
    for bad in [
        json!("not-a-uuid"),
        json!("6f1c1f4e8a4b4c3e9d6a0b7e3a2f5c11"),
        json!("{6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11}"),
        json!("00000000-0000-0000-0000-000000000000"),
        json!(42),
    ] {
        let mut c = claims();
        c["tenant_id"] = bad.clone();
        assert_eq!(
            rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
            ClaimRejection::InvalidTenant,
            "{bad}"
        );
    }
}

#[test]
fn missing_subject_and_expiry_are_rejected() {
    for claim in ["sub", "exp"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            rejection(hs_verifier().verify(&hs_token(&c), &issuer())),
            ClaimRejection::MissingClaim(claim.into())
        );
    }
}

#[test]
fn garbage_is_malformed() {
    for bad in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        let r = rejection(hs_verifier().verify(bad, &issuer()));
        assert!(
            matches!(r, ClaimRejection::Malformed | ClaimRejection::BadSignature),
            "{bad:?} gave {r:?}"
        );
    }
}

#[test]
fn verifier_requires_key_issuer_and_audience() {
    assert!(ClaimVerifier::builder()
        .issuer(ISS)
        .audience(AUD)
        .build()
        .is_err());
    assert!(ClaimVerifier::builder()
        .hs256(SECRET)
        .audience(AUD)
        .build()
        .is_err());
    assert!(ClaimVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .build()
        .is_err());
    assert!(ClaimVerifier::builder()
        .hs256(b"short")
        .issuer(ISS)
        .audience(AUD)
        .build()
        .is_err());
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
