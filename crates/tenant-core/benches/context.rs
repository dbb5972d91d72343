//! JWT → context and delegation costs, with raw baselines from the same run.
//!
//! Targets (DESIGN §10): JWT → context ≤ 20 µs, delegate ≤ 2 µs. Baselines:
//! a bare `jsonwebtoken::decode` of the same token (what any service pays
//! anyway), and a bare HMAC-SHA256 of a context-sized message. Also
//! reported: context tokens (Ed25519 sign and accept, against a bare
//! Ed25519 verification), JWT → context with a populated revocation
//! registry, and `check` on a replica registry (staleness clock read).

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

fn claims() -> Value {
    json!({
        "sub": "alice@example.com",
        "tenant_id": "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11",
        "iss": "https://idp.example.com",
        "aud": "agents",
        "exp": get_current_timestamp() + 3600,
    })
}

fn hs_token() -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn hs_verifier() -> ClaimVerifier {
    ClaimVerifier::builder()
        .hs256(SECRET)
        .issuer("https://idp.example.com")
        .audience("agents")
        .capabilities(caps())
        .build()
        .unwrap()
}

fn raw_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["https://idp.example.com"]);
    validation.set_audience(&["agents"]);
    validation
}

fn bench_context(c: &mut Criterion) {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let claims = claims();
    let hs = hs_token();
    let ed = encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(include_bytes!("../tests/keys/ed25519_private.pem")).unwrap(),
    )
    .unwrap();
    let hs_verifier = hs_verifier();
    let ed_verifier = ClaimVerifier::builder()
        .eddsa_pem(include_bytes!("../tests/keys/ed25519_public.pem"))
        .issuer("https://idp.example.com")
        .audience("agents")
        .capabilities(caps())
        .build()
        .unwrap();
    let raw_validation = raw_validation();
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

    // The same token, with a registry holding 10k unrelated revocations of
    // every kind, so the revocation lookups leave the fast path.
    let crowded = ContextIssuer::builder(MasterKey::generate(KeyId::new("bench").unwrap()))
        .revocations(crowded_registry())
        .build()
        .unwrap();
    g.bench_function("jwt_hs256_to_context_10k_revocations", |b| {
        b.iter(|| hs_verifier.verify(black_box(&hs), &crowded).unwrap())
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
    let replica = Revocations::replica(Duration::from_secs(3600)).unwrap();
    replica.mark_synced(std::time::Instant::now());
    let replica_issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("bench").unwrap()))
        .revocations(replica)
        .build()
        .unwrap();
    let replica_root = hs_verifier.verify(&hs, &replica_issuer).unwrap();
    g.bench_function("check_replica", |b| {
        b.iter(|| black_box(&replica_root).check().unwrap())
    });

    // Context tokens: Ed25519 across processes.
    let token = root.to_token();
    let downstream = ContextIssuer::new(MasterKey::generate(KeyId::new("down").unwrap()));
    let verifier = issuer.token_verifier();
    g.bench_function("token_ed25519_sign", |b| {
        b.iter(|| black_box(&root).to_token())
    });
    g.bench_function("token_ed25519_accept_remote", |b| {
        b.iter(|| {
            downstream
                .accept_remote(black_box(token.as_str()), &verifier)
                .unwrap()
        })
    });
    g.bench_function("token_ed25519_accept_own", |b| {
        b.iter(|| issuer.accept_token(black_box(token.as_str())).unwrap())
    });
    let raw_signing = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let raw_verifying = raw_signing.verifying_key();
    let raw_msg = vec![0u8; token.as_str().len() * 3 / 4];
    let raw_sig = ed25519_dalek::Signer::sign(&raw_signing, &raw_msg);
    g.bench_function("ed25519_verify_strict_baseline", |b| {
        b.iter(|| {
            raw_verifying
                .verify_strict(black_box(&raw_msg), &raw_sig)
                .unwrap()
        })
    });

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

/// A registry of 10k revocations that match nothing the bench checks.
fn crowded_registry() -> Revocations {
    let registry = Revocations::new();
    let until = std::time::SystemTime::now() + Duration::from_secs(3600);
    let other = ContextIssuer::new(MasterKey::generate(KeyId::new("other").unwrap()));
    for i in 0..2_500 {
        let ctx = other
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new(format!("p{i}")).unwrap())
            .issue()
            .unwrap();
        registry.revoke(&ctx);
        registry.apply(&Revocation::jwt_id(
            "https://idp.example.com",
            &format!("j{i}"),
            until,
        ));
        registry.apply(&Revocation::jwt_session(
            "https://idp.example.com",
            &format!("s{i}"),
            until,
        ));
        registry.apply(&Revocation::principal(
            "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse().unwrap(),
            &PrincipalId::new(format!("u{i}")).unwrap(),
            std::time::SystemTime::now(),
            until,
        ));
    }
    registry
}

/// Prints the interleaved p50s of `subject` and `baseline` and their ratio.
fn pair(
    name: &str,
    rounds: usize,
    subject: &mut dyn FnMut(usize),
    baseline: &mut dyn FnMut(usize),
) {
    let p50 = tenant_testkit::bench_ratio::interleaved_p50s(rounds, &mut [subject, baseline]);
    let (s, b) = (p50[0].as_nanos() as f64, p50[1].as_nanos().max(1) as f64);
    println!(
        "INTERLEAVED {name}: p50 {:.3} µs vs baseline p50 {:.3} µs, ratio {:.2}",
        s / 1000.0,
        b / 1000.0,
        s / b
    );
}

/// The main figures again, each sampled interleaved with its baseline.
fn interleaved() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("bench").unwrap()));
    let hs = hs_token();
    let verifier = hs_verifier();
    let validation = raw_validation();
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET);
    pair(
        "jwt_hs256_to_context vs raw jsonwebtoken decode",
        20_000,
        &mut |_| {
            black_box(verifier.verify(black_box(&hs), &issuer).unwrap());
        },
        &mut |_| {
            black_box(
                jsonwebtoken::decode::<Map<String, Value>>(black_box(&hs), &key, &validation)
                    .unwrap(),
            );
        },
    );

    let root = verifier.verify(&hs, &issuer).unwrap();
    let agent = AgentId::new("researcher").unwrap();
    let mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).unwrap();
    let msg = [0u8; 160];
    pair(
        "delegate_narrowed vs one HMAC-SHA256 of 160 bytes",
        50_000,
        &mut |_| {
            black_box(
                root.delegate(agent.clone())
                    .tools(["search"])
                    .token_budget(10_000)
                    .issue()
                    .unwrap(),
            );
        },
        &mut |_| {
            let mut m = mac.clone();
            m.update(black_box(&msg));
            black_box(m.finalize());
        },
    );

    let token = root.to_token();
    let downstream = ContextIssuer::new(MasterKey::generate(KeyId::new("down").unwrap()));
    let token_keys = issuer.token_verifier();
    let raw_signing = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let raw_verifying = raw_signing.verifying_key();
    let raw_msg = vec![0u8; token.as_str().len() * 3 / 4];
    let raw_sig = ed25519_dalek::Signer::sign(&raw_signing, &raw_msg);
    pair(
        "token_ed25519_accept_remote vs one Ed25519 verify_strict",
        3_000,
        &mut |_| {
            black_box(
                downstream
                    .accept_remote(black_box(token.as_str()), &token_keys)
                    .unwrap(),
            );
        },
        &mut |_| {
            raw_verifying
                .verify_strict(black_box(&raw_msg), &raw_sig)
                .unwrap();
        },
    );
}

fn main() {
    benches();
    interleaved();
    Criterion::default().configure_from_args().final_summary();
    use tenant_testkit::bench_ratio::{median_ns, report};
    for (name, target) in [
        ("jwt_hs256_to_context", "<= 20 µs"),
        ("jwt_eddsa_to_context", "<= 20 µs"),
        ("delegate_narrowed", "<= 2 µs"),
        ("delegate_inherit", "<= 2 µs"),
        ("check", "cheap"),
        ("check_replica", "cheap"),
        ("jwt_hs256_to_context_10k_revocations", "<= 20 µs"),
        ("token_ed25519_sign", "reported"),
        ("token_ed25519_accept_remote", "reported"),
        ("token_ed25519_accept_own", "reported"),
        ("ed25519_verify_strict_baseline", "baseline"),
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
        "token_ed25519_accept_remote vs one bare Ed25519 verification",
        ("context", "token_ed25519_accept_remote"),
        ("context", "ed25519_verify_strict_baseline"),
        "informational",
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
