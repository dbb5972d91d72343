//! JWT → context and delegation costs, with raw baselines from the same run.
//!
//! Targets (DESIGN §10): JWT → context ≤ 20 µs, delegate ≤ 2 µs. Baselines:
//! a bare `jsonwebtoken::decode` of the same token (what any service pays
//! anyway), and a bare HMAC-SHA256 of a context-sized message.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use hmac::{Hmac, Mac};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tenant_core::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";

fn caps() -> Capabilities {
    Capabilities::none()
        .with_tools(["search", "python", "email", "calendar"])
        .unwrap()
        .with_collections(["docs", "tickets"])
        .unwrap()
        .with_memory_namespaces(["chat"])
        .unwrap()
        .with_models(["small", "large"])
        .unwrap()
        .with_token_budget(100_000)
        .with_max_delegation_depth(4)
}

fn bench_context(c: &mut Criterion) {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let claims = json!({
        "sub": "alice@example.com",
        "tenant_id": "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11",
        "iss": "https://idp.example.com",
        "aud": "agents",
        "exp": get_current_timestamp() + 3600,
    });
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let ed = encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(include_bytes!("../tests/keys/ed25519_private.pem")).unwrap(),
    )
    .unwrap();
    let hs_verifier = ClaimVerifier::builder()
        .hs256(SECRET)
        .issuer("https://idp.example.com")
        .audience("agents")
        .capabilities(caps())
        .build()
        .unwrap();
    let ed_verifier = ClaimVerifier::builder()
        .eddsa_pem(include_bytes!("../tests/keys/ed25519_public.pem"))
        .issuer("https://idp.example.com")
        .audience("agents")
        .capabilities(caps())
        .build()
        .unwrap();
    let mut raw_validation = Validation::new(Algorithm::HS256);
    raw_validation.set_issuer(&["https://idp.example.com"]);
    raw_validation.set_audience(&["agents"]);
    let raw_key = jsonwebtoken::DecodingKey::from_secret(SECRET);

    let mut g = c.benchmark_group("context");
    g.bench_function("jwt_hs256_raw_decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Map<String, Value>>(black_box(&hs), &raw_key, &raw_validation)
                .unwrap()
        })
    });
    g.bench_function("jwt_hs256_to_context", |b| {
        b.iter(|| hs_verifier.verify(black_box(&hs), &issuer).unwrap())
    });
    let mut ed_validation = raw_validation.clone();
    ed_validation.algorithms = vec![Algorithm::EdDSA];
    let ed_key =
        jsonwebtoken::DecodingKey::from_ed_pem(include_bytes!("../tests/keys/ed25519_public.pem"))
            .unwrap();
    g.bench_function("jwt_eddsa_raw_decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Map<String, Value>>(black_box(&ed), &ed_key, &ed_validation)
                .unwrap()
        })
    });
    g.bench_function("jwt_eddsa_to_context", |b| {
        b.iter(|| ed_verifier.verify(black_box(&ed), &issuer).unwrap())
    });

    let root = hs_verifier.verify(&hs, &issuer).unwrap();
    let agent = AgentId::new("researcher").unwrap();
    g.bench_function("delegate_narrowed", |b| {
        b.iter(|| {
            root.delegate(agent.clone())
                .tools(["search"])
                .token_budget(10_000)
                .issue()
                .unwrap()
        })
    });
    g.bench_function("delegate_inherit", |b| {
        b.iter(|| root.delegate(agent.clone()).issue().unwrap())
    });
    g.bench_function("check", |b| b.iter(|| black_box(&root).check().unwrap()));

    let mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).unwrap();
    let msg = [0u8; 160];
    g.bench_function("hmac_sha256_160b_baseline", |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(&msg));
            m.finalize()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_context
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    use tenant_testkit::bench_ratio::{median_ns, report};
    for (name, target) in [
        ("jwt_hs256_to_context", "<= 20 µs"),
        ("jwt_eddsa_to_context", "<= 20 µs"),
        ("delegate_narrowed", "<= 2 µs"),
        ("delegate_inherit", "<= 2 µs"),
        ("check", "cheap"),
    ] {
        if let Some(ns) = median_ns("context", name) {
            println!("ABSOLUTE {name}: {:.3} µs (target {target})", ns / 1000.0);
        }
    }
    report(
        "jwt_hs256_to_context vs raw jsonwebtoken decode",
        ("context", "jwt_hs256_to_context"),
        ("context", "jwt_hs256_raw_decode"),
        "overhead of context issuance",
        false,
    );
    report(
        "jwt_eddsa_to_context vs raw jsonwebtoken decode",
        ("context", "jwt_eddsa_to_context"),
        ("context", "jwt_eddsa_raw_decode"),
        "overhead of context issuance",
        false,
    );
    report(
        "delegate_narrowed vs one HMAC-SHA256",
        ("context", "delegate_narrowed"),
        ("context", "hmac_sha256_160b_baseline"),
        "informational",
        false,
    );
}
