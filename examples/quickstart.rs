//! Quickstart: two tenants, a sub-agent with narrowed capabilities, and the
//! classic leaks failing closed.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::json;
use tenant_sdk::*;

const IDP_SECRET: &[u8] = b"demo HS256 secret - use your IdP's key in production";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Once per process: the platform's master key and the JWT verifier.
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
    let verifier = ClaimVerifier::builder()
        .hs256(IDP_SECRET)
        .issuer("https://idp.example.com")
        .audience("agent-platform")
        .capabilities(
            Capabilities::none()
                .with_tools(["search", "python", "email"])?
                .with_collections(["docs"])?
                .with_memory_namespaces(["chat", "scratch"])?
                .with_models(["small", "large"])?
                .with_token_budget(200_000)
                .with_max_delegation_depth(2),
        )
        .build()?;

    // Per request: a JWT from the identity provider becomes a context.
    let acme: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse()?;
    let globex: TenantId = "0b7e3a2f-5c11-4c3e-9d6a-6f1c1f4e8a4b".parse()?;
    let jwt_for = |tenant: TenantId, user: &str| {
        encode(
            &Header::default(),
            &json!({
                "sub": user, "tenant_id": tenant.to_string(),
                "iss": "https://idp.example.com", "aud": "agent-platform",
                "exp": get_current_timestamp() + 600,
            }),
            &EncodingKey::from_secret(IDP_SECRET),
        )
    };
    let alice = verifier.verify(&jwt_for(acme, "alice@acme.example")?, &issuer)?;
    let bob = verifier.verify(&jwt_for(globex, "bob@globex.example")?, &issuer)?;
    println!("== contexts");
    println!("acme   : {alice:?}");
    println!("globex : {bob:?}");

    // A sub-agent gets strictly less: one tool, one namespace, a small budget.
    let researcher = alice
        .delegate(AgentId::new("researcher")?)
        .tools(["search"])
        .memory_namespaces(["scratch"])
        .token_budget(20_000)
        .ttl(Duration::from_secs(120))
        .issue()?;
    println!("\n== delegation");
    println!(
        "researcher lineage {:?}, tools {:?}, budget {:?}",
        researcher.lineage(),
        researcher.capabilities().tools(),
        researcher.capabilities().token_budget()
    );

    println!("\n== attacks (each must fail closed)");
    let report = |what: &str, result: Result<TenantContext>| match result {
        Ok(ctx) => panic!("{what}: UNEXPECTEDLY ALLOWED for {:?}", ctx.tenant()),
        Err(e) => println!("blocked  {what:<58} -> {e}"),
    };
    report(
        "sub-agent asks for a tool its parent lacks",
        researcher
            .delegate(AgentId::new("coder")?)
            .tools(["shell"])
            .issue(),
    );
    report(
        "sub-agent tries to outlive its parent",
        researcher
            .delegate(AgentId::new("coder")?)
            .ttl(Duration::from_secs(3600))
            .issue(),
    );
    report(
        "JWT signed with alg:none",
        verifier.verify(
            &format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(json!({"sub":"mallory","tenant_id":globex.to_string()})
                    .to_string()
                    .as_bytes())
            ),
            &issuer,
        ),
    );
    let forged = encode(
        &Header::default(),
        &json!({"sub":"mallory","tenant_id":globex.to_string(),
                "iss":"https://idp.example.com","aud":"agent-platform",
                "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_secret(b"a guessed secret that is long enough"),
    )?;
    report(
        "JWT signed with the wrong key",
        verifier.verify(&forged, &issuer),
    );

    // A context token whose tenant was swapped to another tenant's id.
    let mut token = b64_decode(alice.to_token().as_str());
    token[17..33].copy_from_slice(globex.as_bytes());
    report(
        "context token edited to name another tenant",
        issuer.accept_token(&b64(&token)),
    );

    issuer.revocations().revoke(&alice);
    report(
        "sub-agent of a revoked session keeps working",
        researcher.check().map(|()| researcher.clone()),
    );
    bob.check()?;
    println!("\nglobex's context is unaffected by acme's revocation: ok");
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_default()
}
