//! JWT values at and beyond every edge: validly signed tokens with extreme
//! dates, duplicate names, deep nesting, odd headers, and configuration
//! values that overflow. Each is a typed rejection, never a panic, and
//! leaves the issuer untouched.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use support::*;
use tenant_core::*;

fn tenant() -> TenantId {
    "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse().unwrap()
}

/// Nothing was issued or revoked by a rejected token.
fn assert_untouched(issuer: &ContextIssuer, bystander: &TenantContext) {
    assert!(issuer.revocations().is_empty());
    bystander.check().unwrap();
    issuer.authority().admit(bystander).unwrap();
}

/// An issuer, a context of it that must stay untouched, and valid claims
/// as JSON text.
fn setup() -> (ContextIssuer, TenantContext, String) {
    let issuer = issuer();
    let bystander = root(&issuer);
    (issuer, bystander, jwt_claims(tenant()).to_string())
}

fn verifier_with_leeway(leeway: Duration) -> Result<ClaimVerifier> {
    ClaimVerifier::builder()
        .hs256(JWT_SECRET)
        .issuer(JWT_ISS)
        .audience(JWT_AUD)
        .leeway(leeway)
        .build()
}

fn with(name: &str, value: Value) -> Value {
    let mut c = jwt_claims(tenant());
    c[name] = value;
    c
}

const OUT_OF_RANGE_DATES: [&str; 12] = [
    "18446744073709551615",
    "18446744073709551616",
    "253402300800",
    "9223372036854775807",
    "-9223372036854775808",
    "-1",
    "-0.5",
    "1e300",
    "1.7976931348623157e308",
    "\"1700000000\"",
    "[1700000000]",
    "{\"$date\":1}",
];

#[test]
fn extreme_exp_values_are_typed_rejections() {
    let issuer = issuer();
    let bystander = root(&issuer);
    for exp in OUT_OF_RANGE_DATES {
        let payload = with("exp", json!(0))
            .to_string()
            .replace("\"exp\":0", &format!("\"exp\":{exp}"));
        let token = sign_raw(r#"{"alg":"HS256"}"#, &payload);
        assert_eq!(
            rejection(hs_verifier().verify(&token, &issuer)),
            ClaimRejection::InvalidClaim("exp".into()),
            "exp = {exp}"
        );
    }
    for exp in [json!(null), json!(true)] {
        assert_eq!(
            rejection(hs_verifier().verify(&hs_token(&with("exp", exp.clone())), &issuer)),
            ClaimRejection::InvalidClaim("exp".into()),
            "exp = {exp}"
        );
    }
    assert_untouched(&issuer, &bystander);
}

#[test]
fn the_latest_representable_exp_is_capped_by_the_issuer() {
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .max_ttl(MAX_TTL_CEILING)
        .build()
        .unwrap();
    for exp in [json!(MAX_NUMERIC_DATE), json!(MAX_NUMERIC_DATE as f64)] {
        let ctx = hs_verifier()
            .verify(&hs_token(&with("exp", exp)), &issuer)
            .unwrap();
        ctx.check().unwrap();
        assert!(ctx.remaining() <= MAX_TTL_CEILING);
    }
    // The default issuer caps at its 24 hours.
    let ctx = hs_verifier()
        .verify(
            &hs_token(&with("exp", json!(MAX_NUMERIC_DATE))),
            &support::issuer(),
        )
        .unwrap();
    assert!(ctx.remaining() <= DEFAULT_MAX_TTL);
}

#[test]
fn extreme_nbf_and_iat_values_are_typed_rejections() {
    let issuer = issuer();
    let bystander = root(&issuer);
    for name in ["nbf", "iat"] {
        for value in OUT_OF_RANGE_DATES {
            let payload = with(name, json!(0))
                .to_string()
                .replace(&format!("\"{name}\":0"), &format!("\"{name}\":{value}"));
            let token = sign_raw(r#"{"alg":"HS256"}"#, &payload);
            assert_eq!(
                rejection(hs_verifier().verify(&token, &issuer)),
                ClaimRejection::InvalidClaim(name.into()),
                "{name} = {value}"
            );
        }
    }
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&with("nbf", json!(MAX_NUMERIC_DATE))), &issuer)),
        ClaimRejection::NotYetValid
    );
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&with("iat", json!(MAX_NUMERIC_DATE))), &issuer)),
        ClaimRejection::IssuedInFuture
    );
    assert_eq!(
        rejection(hs_verifier().verify(&hs_token(&with("iat", json!(now_secs() + 120))), &issuer)),
        ClaimRejection::IssuedInFuture
    );
    // Dates at the epoch are fine where they belong.
    hs_verifier()
        .verify(&hs_token(&with("nbf", json!(0))), &issuer)
        .unwrap();
    hs_verifier()
        .verify(&hs_token(&with("iat", json!(0))), &issuer)
        .unwrap();
    assert_eq!(issuer.revocations().len(), 0);
    bystander.check().unwrap();
}

#[test]
fn exp_just_past_or_inside_the_leeway_never_makes_an_expired_context() {
    let issuer = issuer();
    let lenient = verifier_with_leeway(MAX_LEEWAY).unwrap();
    for exp in [now_secs().saturating_sub(1), now_secs(), 0] {
        let r = rejection(lenient.verify(&hs_token(&with("exp", json!(exp))), &issuer));
        assert_eq!(r, ClaimRejection::Expired, "exp = {exp}");
    }
}

#[test]
fn leeway_and_ttl_configuration_values_cannot_overflow() {
    for leeway in [
        MAX_LEEWAY + Duration::from_secs(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ] {
        let built = verifier_with_leeway(leeway);
        assert!(
            matches!(built, Err(Error::InvalidConfiguration(_))),
            "{leeway:?}"
        );
    }
    let edge = verifier_with_leeway(MAX_LEEWAY).unwrap();
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .max_ttl(MAX_TTL_CEILING)
        .build()
        .unwrap();
    let mut far = with("exp", json!(MAX_NUMERIC_DATE));
    far["nbf"] = json!(MAX_NUMERIC_DATE);
    assert_eq!(
        rejection(edge.verify(&hs_token(&far), &issuer)),
        ClaimRejection::NotYetValid
    );
    for bad in [
        ClaimVerifier::builder()
            .hs256(JWT_SECRET)
            .issuer("")
            .audience(JWT_AUD)
            .build(),
        ClaimVerifier::builder()
            .hs256(JWT_SECRET)
            .issuer(JWT_ISS)
            .audience("")
            .build(),
        ClaimVerifier::builder()
            .hs256(JWT_SECRET)
            .issuer(JWT_ISS)
            .audience(JWT_AUD)
            .tenant_claim("")
            .build(),
        ClaimVerifier::builder()
            .hs256(JWT_SECRET)
            .issuer(JWT_ISS)
            .audience(JWT_AUD)
            .tenant_claim("x".repeat(10_000))
            .build(),
    ] {
        assert!(matches!(bad, Err(Error::InvalidConfiguration(_))));
    }
}

#[test]
fn duplicate_claim_names_are_rejected_wherever_they_are() {
    let issuer = issuer();
    let bystander = root(&issuer);
    let victim = TenantId::random();
    let base = jwt_claims(tenant()).to_string();
    let body = &base[1..base.len() - 1];
    let cases = [
        // The classic: one tenant for the gateway, another for us.
        (format!(r#"{{{body},"tenant_id":"{victim}"}}"#), "tenant_id"),
        (format!(r#"{{"tenant_id":"{victim}",{body}}}"#), "tenant_id"),
        (format!(r#"{{{body},"sub":"mallory"}}"#), "sub"),
        (format!(r#"{{{body},"exp":{}}}"#, MAX_NUMERIC_DATE), "exp"),
        (format!(r#"{{{body},"aud":"other"}}"#), "aud"),
        (
            format!(r#"{{{body},"tools":["a"],"tools":["b"]}}"#),
            "tools",
        ),
        // Escaped names are the same name.
        (
            format!(r#"{{{body},"tenant\u005fid":"{victim}"}}"#),
            "tenant_id",
        ),
        // Nested duplicates are a differential too.
        (
            format!(r#"{{{body},"ext":{{"role":"a","role":"b"}}}}"#),
            "role",
        ),
        (format!(r#"{{{body},"ext":[{{"x":1,"x":2}}]}}"#), "x"),
    ];
    for (payload, name) in cases {
        let token = sign_raw(r#"{"alg":"HS256"}"#, &payload);
        assert_eq!(
            rejection(hs_verifier().verify(&token, &issuer)),
            ClaimRejection::DuplicateClaim(name.into()),
            "{payload}"
        );
    }
    // In the header, too: `alg` twice must not let `none` through anywhere.
    for header in [
        r#"{"alg":"HS256","alg":"none"}"#,
        r#"{"alg":"none","alg":"HS256"}"#,
        r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
    ] {
        let token = sign_raw(header, &base);
        assert!(
            matches!(
                rejection(hs_verifier().verify(&token, &issuer)),
                ClaimRejection::DuplicateClaim(_)
            ),
            "{header}"
        );
    }
    assert_untouched(&issuer, &bystander);
}

#[test]
fn deep_nesting_and_oversized_tokens_are_rejected_without_crashing() {
    let (issuer, bystander, base) = setup();
    let body = &base[1..base.len() - 1];
    for depth in [200, 5_000] {
        let payload = format!(
            r#"{{{body},"ext":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let token = sign_raw(r#"{"alg":"HS256"}"#, &payload);
        let r = rejection(hs_verifier().verify(&token, &issuer));
        assert!(
            matches!(r, ClaimRejection::Malformed | ClaimRejection::Oversized),
            "depth {depth}: {r:?}"
        );
    }
    let header = format!(
        r#"{{"alg":"HS256","x":{}1{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    assert_eq!(
        rejection(hs_verifier().verify(&sign_raw(&header, &base), &issuer)),
        ClaimRejection::Malformed
    );
    let padded = format!(r#"{{{body},"pad":"{}"}}"#, "x".repeat(MAX_JWT_LEN));
    assert_eq!(
        rejection(hs_verifier().verify(&sign_raw(r#"{"alg":"HS256"}"#, &padded), &issuer)),
        ClaimRejection::Oversized
    );
    assert_eq!(
        rejection(hs_verifier().verify(&"a".repeat(10 * MAX_JWT_LEN), &issuer)),
        ClaimRejection::Oversized
    );
    assert_untouched(&issuer, &bystander);
}

#[test]
fn malformed_structure_and_headers_are_typed_rejections() {
    let (issuer, bystander, base) = setup();
    let good = sign_raw(r#"{"alg":"HS256"}"#, &base);
    let cases: Vec<(String, ClaimRejection)> = vec![
        (format!("{good}.extra"), ClaimRejection::Malformed),
        (good.replacen('.', "", 1), ClaimRejection::Malformed),
        (sign_raw("[]", &base), ClaimRejection::Malformed),
        (
            sign_raw(r#"{"typ":"JWT"}"#, &base),
            ClaimRejection::Malformed,
        ),
        (
            sign_raw(r#"{"alg":["HS256"]}"#, &base),
            ClaimRejection::AlgorithmNotAllowed,
        ),
        (
            sign_raw(r#"{"alg":"hs256"}"#, &base),
            ClaimRejection::AlgorithmNotAllowed,
        ),
        (
            sign_raw(r#"{"alg":"HS256 "}"#, &base),
            ClaimRejection::AlgorithmNotAllowed,
        ),
        (
            sign_raw(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, &base),
            ClaimRejection::UnsupportedCriticalHeader,
        ),
        (
            sign_raw(r#"{"alg":"HS256"}"#, "[1,2]"),
            ClaimRejection::Malformed,
        ),
        (
            sign_raw(r#"{"alg":"HS256"}"#, "null"),
            ClaimRejection::Malformed,
        ),
        (
            sign_raw(r#"{"alg":"HS256"}"#, "{"),
            ClaimRejection::Malformed,
        ),
        (
            sign_raw(r#"{"alg":"HS256"}"#, "\u{feff}{}"),
            ClaimRejection::Malformed,
        ),
        (
            format!("{}.!!", &good[..good.rfind('.').unwrap()]),
            ClaimRejection::Malformed,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(
            rejection(hs_verifier().verify(&token, &issuer)),
            want,
            "{token}"
        );
    }
    assert_untouched(&issuer, &bystander);
}

#[test]
fn wrongly_typed_standard_claims_are_typed_rejections() {
    let issuer = issuer();
    let cases = [
        ("iss", json!(42), ClaimRejection::InvalidClaim("iss".into())),
        (
            "iss",
            json!([JWT_ISS]),
            ClaimRejection::InvalidClaim("iss".into()),
        ),
        ("aud", json!(42), ClaimRejection::InvalidClaim("aud".into())),
        (
            "aud",
            json!([JWT_AUD, 1]),
            ClaimRejection::InvalidClaim("aud".into()),
        ),
        ("aud", json!([]), ClaimRejection::WrongAudience),
        ("sub", json!(42), ClaimRejection::InvalidPrincipal),
        ("sub", json!(""), ClaimRejection::InvalidPrincipal),
        ("jti", json!(42), ClaimRejection::InvalidClaim("jti".into())),
        ("jti", json!(""), ClaimRejection::InvalidClaim("jti".into())),
        (
            "jti",
            json!("j".repeat(1000)),
            ClaimRejection::InvalidClaim("jti".into()),
        ),
        ("sid", json!({}), ClaimRejection::InvalidClaim("sid".into())),
        (
            "token_budget",
            json!(-1),
            ClaimRejection::InvalidClaim("token_budget".into()),
        ),
        (
            "token_budget",
            json!(1e40),
            ClaimRejection::InvalidClaim("token_budget".into()),
        ),
        (
            "tools",
            json!("search"),
            ClaimRejection::InvalidClaim("tools".into()),
        ),
        (
            "agent",
            json!(7),
            ClaimRejection::InvalidClaim("agent".into()),
        ),
    ];
    for (name, value, want) in cases {
        let got = rejection(hs_verifier().verify(&hs_token(&with(name, value.clone())), &issuer));
        assert_eq!(got, want, "{name} = {value}");
    }
    // `aud` as an array containing ours is fine.
    hs_verifier()
        .verify(&hs_token(&with("aud", json!(["x", JWT_AUD]))), &issuer)
        .unwrap();
}

#[test]
fn es256_tokens_verify_and_other_keys_or_algorithms_do_not() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let verifier = ClaimVerifier::builder()
        .es256_pem(include_bytes!("keys/ec_p256_public.pem"))
        .issuer(JWT_ISS)
        .audience(JWT_AUD)
        .build()
        .unwrap();
    let issuer = issuer();
    let claims = jwt_claims(tenant());
    let good = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(include_bytes!("keys/ec_p256_private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(verifier.verify(&good, &issuer).unwrap().tenant(), tenant());
    let other = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(include_bytes!("keys/ec_p256_other_private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rejection(verifier.verify(&other, &issuer)),
        ClaimRejection::BadSignature
    );
    // An HS256 token "signed" with the EC public key: algorithm confusion.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(include_bytes!("keys/ec_p256_public.pem")),
    )
    .unwrap();
    assert_eq!(
        rejection(verifier.verify(&confused, &issuer)),
        ClaimRejection::AlgorithmNotAllowed
    );
    assert!(matches!(
        ClaimVerifier::builder()
            .es256_pem(b"not a key")
            .issuer(JWT_ISS)
            .audience(JWT_AUD)
            .build(),
        Err(Error::InvalidConfiguration(_))
    ));
}

fn claim_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (0u64..=MAX_NUMERIC_DATE + 10).prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        Just(json!(tenant().to_string())),
        Just(json!(JWT_ISS)),
        Just(json!(JWT_AUD)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CLAIM_NAMES: [&str; 14] = [
    "exp",
    "nbf",
    "iat",
    "iss",
    "aud",
    "sub",
    "tenant_id",
    "jti",
    "sid",
    "agent",
    "tools",
    "collections",
    "token_budget",
    "models",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value in any claim: a context or a typed rejection, never a panic.
    #[test]
    fn any_claim_value_yields_a_context_or_a_typed_rejection(
        edits in proptest::collection::vec((0..CLAIM_NAMES.len(), claim_value()), 1..5),
        leeway in 0u64..=MAX_LEEWAY.as_secs(),
    ) {
        let verifier = verifier_with_leeway(Duration::from_secs(leeway)).unwrap();
        let issuer = issuer();
        let mut claims = jwt_claims(tenant());
        for (i, value) in edits {
            claims[CLAIM_NAMES[i]] = value;
        }
        match verifier.verify(&hs_token(&claims), &issuer) {
            Ok(ctx) => {
                ctx.check().unwrap();
                prop_assert_eq!(ctx.tenant(), tenant());
                prop_assert!(ctx.remaining() <= DEFAULT_MAX_TTL);
            }
            Err(Error::ClaimRejected(_)) => {}
            Err(other) => prop_assert!(false, "untyped failure {other:?}"),
        }
    }

    /// Any text as a token: a typed rejection.
    #[test]
    fn any_token_text_is_a_typed_rejection(text in ".{0,300}") {
        let issuer = issuer();
        prop_assert!(matches!(
            hs_verifier().verify(&text, &issuer),
            Err(Error::ClaimRejected(_))
        ));
    }
}
