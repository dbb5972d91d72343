//! Keys by `kid` from a JSON Web Key Set: selection, algorithm pinning per
//! key, rotation by replacing the set, and every way a set or a header can
//! be wrong.

mod support;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;
use tenant_core::*;

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(include_bytes!("keys/ec_p256_private.pem")).unwrap()
}

fn ec_other_key() -> EncodingKey {
    EncodingKey::from_ec_pem(include_bytes!("keys/ec_p256_other_private.pem")).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(include_bytes!("keys/ed25519_private.pem")).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("keys/rsa_private.pem")).unwrap()
}

/// The public JWK of `key` with `kid` (and `alg` unless `with_alg` is false).
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str, with_alg: bool) -> Value {
    let mut v = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    v["kid"] = json!(kid);
    if !with_alg {
        v.as_object_mut().unwrap().remove("alg");
    }
    v
}

fn set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn token(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &jwt_claims(TenantId::random()), key).unwrap()
}

fn verifier(keys: &JwkKeys) -> ClaimVerifier {
    ClaimVerifier::builder()
        .jwks(keys)
        .issuer(JWT_ISS)
        .audience(JWT_AUD)
        .build()
        .unwrap()
}

fn all_algorithms() -> JwkKeys {
    JwkKeys::new(&[Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256]).unwrap()
}

#[test]
fn tokens_verify_with_the_key_their_kid_names() {
    let keys = all_algorithms();
    keys.replace(&set(&[
        jwk(&ec_key(), Algorithm::ES256, "ec-1", true),
        jwk(&ed_key(), Algorithm::EdDSA, "ed-1", false),
        jwk(&rsa_key(), Algorithm::RS256, "rsa-1", true),
    ]))
    .unwrap();
    assert_eq!(keys.key_ids(), ["ec-1", "ed-1", "rsa-1"]);
    assert!(!keys.refresh_wanted());
    let v = verifier(&keys);
    let issuer = issuer();
    v.verify(&token(&ec_key(), Algorithm::ES256, Some("ec-1")), &issuer)
        .unwrap();
    v.verify(&token(&ed_key(), Algorithm::EdDSA, Some("ed-1")), &issuer)
        .unwrap();
    v.verify(&token(&rsa_key(), Algorithm::RS256, Some("rsa-1")), &issuer)
        .unwrap();
}

#[test]
fn a_kid_pins_its_key_and_algorithm() {
    let keys = all_algorithms();
    keys.replace(&set(&[
        jwk(&ec_key(), Algorithm::ES256, "ec-1", true),
        jwk(&rsa_key(), Algorithm::RS256, "rsa-1", true),
    ]))
    .unwrap();
    let v = verifier(&keys);
    let issuer = issuer();
    // Signed by another EC key but naming ours.
    assert_eq!(
        rejection(v.verify(
            &token(&ec_other_key(), Algorithm::ES256, Some("ec-1")),
            &issuer
        )),
        ClaimRejection::BadSignature
    );
    // An RSA token naming the EC kid, an EC token naming the RSA kid.
    assert_eq!(
        rejection(v.verify(&token(&rsa_key(), Algorithm::RS256, Some("ec-1")), &issuer)),
        ClaimRejection::AlgorithmNotAllowed
    );
    assert_eq!(
        rejection(v.verify(&token(&ec_key(), Algorithm::ES256, Some("rsa-1")), &issuer)),
        ClaimRejection::AlgorithmNotAllowed
    );
    // HS256 with the public key as secret (algorithm confusion).
    let public = include_bytes!("keys/rsa_public.pem");
    assert_eq!(
        rejection(v.verify(
            &token(
                &EncodingKey::from_secret(public),
                Algorithm::HS256,
                Some("rsa-1")
            ),
            &issuer
        )),
        ClaimRejection::AlgorithmNotAllowed
    );
    // alg none, naming a real kid.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","kid":"ec-1"}"#),
        b64url(jwt_claims(TenantId::random()).to_string().as_bytes())
    );
    assert_eq!(
        rejection(v.verify(&none, &issuer)),
        ClaimRejection::AlgorithmNotAllowed
    );
    // No kid, or a kid of the wrong type.
    assert_eq!(
        rejection(v.verify(&token(&ec_key(), Algorithm::ES256, None), &issuer)),
        ClaimRejection::MissingClaim("kid".into())
    );
    assert!(issuer.revocations().is_empty());
}

#[test]
fn an_unknown_kid_is_rejected_and_asks_for_a_refresh() {
    let keys = all_algorithms();
    keys.replace(&set(&[jwk(&ec_key(), Algorithm::ES256, "2026-10", true)]))
        .unwrap();
    let v = verifier(&keys);
    let issuer = issuer();
    let rotated = token(&ec_other_key(), Algorithm::ES256, Some("2026-11"));
    assert_eq!(
        rejection(v.verify(&rotated, &issuer)),
        ClaimRejection::UnknownKeyId
    );
    assert!(keys.refresh_wanted());
    // The provider rotates: the new set holds the new key, the old one is gone.
    keys.replace(&set(&[jwk(
        &ec_other_key(),
        Algorithm::ES256,
        "2026-11",
        true,
    )]))
    .unwrap();
    assert!(!keys.refresh_wanted());
    v.verify(&rotated, &issuer).unwrap();
    assert_eq!(
        rejection(v.verify(
            &token(&ec_key(), Algorithm::ES256, Some("2026-10")),
            &issuer
        )),
        ClaimRejection::UnknownKeyId
    );
}

#[test]
fn a_bad_key_set_is_refused_and_the_previous_one_stays_in_force() {
    let keys = all_algorithms();
    keys.replace(&set(&[jwk(&ec_key(), Algorithm::ES256, "ec-1", true)]))
        .unwrap();
    let ec = jwk(&ec_key(), Algorithm::ES256, "ec-1", true);
    let mut as_rsa = ec.clone();
    as_rsa["alg"] = json!("RS256");
    let mut for_encryption = jwk(&ec_key(), Algorithm::ES256, "enc", true);
    for_encryption["use"] = json!("enc");
    let mut no_kid = ec.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let hs = json!({"kty": "oct", "k": b64url(JWT_SECRET), "kid": "hs", "alg": "HS256"});
    let bad_sets = [
        String::new(),
        "[]".into(),
        r#"{"keys":{}}"#.into(),
        r#"{"keys":[],"keys":[]}"#.into(),
        set(&[ec.clone(), ec.clone()]),
        set(&[]),
        set(&[as_rsa]),
        set(&[for_encryption]),
        set(&[no_kid]),
        // HS256 is not among the allowed algorithms of this set.
        set(&[hs]),
        set(&vec![ec.clone(); 100]),
        "x".repeat(300 * 1024),
    ];
    for bad in &bad_sets {
        assert!(
            matches!(keys.replace(bad), Err(Error::InvalidConfiguration(_))),
            "{}",
            &bad[..bad.len().min(80)]
        );
    }
    assert_eq!(keys.key_ids(), ["ec-1"]);
    verifier(&keys)
        .verify(&token(&ec_key(), Algorithm::ES256, Some("ec-1")), &issuer())
        .unwrap();
}

#[test]
fn key_sets_allow_only_supported_algorithms() {
    assert!(matches!(
        JwkKeys::new(&[]),
        Err(Error::InvalidConfiguration(_))
    ));
    assert!(matches!(
        JwkKeys::new(&[Algorithm::PS256]),
        Err(Error::InvalidConfiguration(_))
    ));
    // A symmetric key in a set is accepted only when HS256 is allowed.
    let keys = JwkKeys::new(&[Algorithm::HS256]).unwrap();
    keys.replace(&set(&[
        json!({"kty": "oct", "k": b64url(JWT_SECRET), "kid": "hs"}),
    ]))
    .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".into());
    let jwt = encode(
        &header,
        &jwt_claims(TenantId::random()),
        &EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap();
    verifier(&keys).verify(&jwt, &issuer()).unwrap();
}

struct FixedLoader(String);

impl JwksLoader for FixedLoader {
    async fn load(&self) -> Result<String> {
        Ok(self.0.clone())
    }
}

struct FailingLoader;

impl JwksLoader for FailingLoader {
    async fn load(&self) -> Result<String> {
        Err(Error::InvalidConfiguration(
            "identity provider unreachable".into(),
        ))
    }
}

#[tokio::test]
async fn a_loader_refreshes_the_set_and_a_failed_refresh_keeps_the_old_one() {
    let keys = all_algorithms();
    assert!(keys.refresh_wanted());
    keys.refresh(&FixedLoader(set(&[jwk(
        &ed_key(),
        Algorithm::EdDSA,
        "ed-1",
        true,
    )])))
    .await
    .unwrap();
    assert_eq!(keys.key_ids(), ["ed-1"]);
    assert!(keys.refresh(&FailingLoader).await.is_err());
    assert!(keys.refresh(&FixedLoader("not json".into())).await.is_err());
    assert_eq!(keys.key_ids(), ["ed-1"]);
    verifier(&keys)
        .verify(&token(&ed_key(), Algorithm::EdDSA, Some("ed-1")), &issuer())
        .unwrap();
}
