//! Shared set-up for tenant-core's tests.
#![allow(dead_code)]

use std::time::Duration;

use tenant_core::*;

pub fn issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::generate(KeyId::new("test-key").unwrap()))
}

pub fn principal() -> PrincipalId {
    PrincipalId::new("alice@example.com").unwrap()
}

pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub fn root_caps() -> Capabilities {
    Capabilities::none()
        .with_tools(["search", "python", "email"])
        .unwrap()
        .with_collections(["docs", "tickets"])
        .unwrap()
        .with_memory_namespaces(["chat", "scratch"])
        .unwrap()
        .with_models(["small", "large"])
        .unwrap()
        .with_token_budget(100_000)
        .with_max_delegation_depth(3)
}

/// A root context for a random tenant with default capabilities, or the
/// issuer's refusal.
pub fn try_root(issuer: &ContextIssuer) -> Result<TenantContext> {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .issue()
}

pub fn root(issuer: &ContextIssuer) -> TenantContext {
    issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .capabilities(root_caps())
        .ttl(Duration::from_secs(600))
        .issue()
        .unwrap()
}

/// The HS256 secret of the JWT tests.
pub const JWT_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";
pub const JWT_ISS: &str = "https://idp.example.com";
pub const JWT_AUD: &str = "agent-platform";

pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT from raw header and payload JSON text (so tests can send what
/// no serializer would: duplicate names, odd numbers), HS256-signed.
pub fn sign_raw(header_json: &str, payload_json: &str) -> String {
    let input = format!(
        "{}.{}",
        b64url(header_json.as_bytes()),
        b64url(payload_json.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

/// An HS256 verifier for [`JWT_SECRET`], no leeway.
pub fn hs_verifier() -> ClaimVerifier {
    ClaimVerifier::builder()
        .hs256(JWT_SECRET)
        .issuer(JWT_ISS)
        .audience(JWT_AUD)
        .leeway(Duration::ZERO)
        .capabilities(root_caps())
        .build()
        .unwrap()
}

pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims for tenant `tenant`, as JSON.
pub fn jwt_claims(tenant: TenantId) -> serde_json::Value {
    serde_json::json!({
        "sub": "alice@example.com",
        "tenant_id": tenant.to_string(),
        "iss": JWT_ISS,
        "aud": JWT_AUD,
        "exp": now_secs() + 600,
        "iat": now_secs() - 5,
    })
}

pub fn hs_token(claims: &serde_json::Value) -> String {
    sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &claims.to_string())
}

pub fn rejection(result: Result<TenantContext>) -> ClaimRejection {
    match result {
        Err(Error::ClaimRejected(r)) => r,
        other => panic!("expected a claim rejection, got {other:?}"),
    }
}
