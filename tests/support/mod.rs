//! Set-up shared by the facade's HTTP tests: an HS256 verifier, and a
//! platform with in-process tools and an hourly token quota per tenant.
#![allow(dead_code)] // each test crate uses its own subset

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tenant_sdk::prelude::*;

/// The identity provider's HS256 secret.
pub const SECRET: &[u8] = b"facade test secret, at least 32 bytes long";

/// Verifies tokens signed with [`SECRET`] by issuer `idp` for audience
/// `api`.
pub fn verifier() -> ClaimVerifier {
    ClaimVerifier::builder()
        .hs256(SECRET)
        .issuer("idp")
        .audience("api")
        .capabilities(Capabilities::unrestricted())
        .build()
        .unwrap()
}

/// A token for `claims` (plus `iss` and `aud`) signed with `key`.
pub fn sign(mut claims: Value, key: &[u8]) -> String {
    claims["iss"] = json!("idp");
    claims["aud"] = json!("api");
    encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
}

/// A platform of `issuer` with `tools` (each returns its input) and
/// `tokens_per_hour` per tenant; no tenant may call a tool until its
/// policy is set on the returned policies.
pub fn tools_and_quota(
    issuer: &ContextIssuer,
    tools: &[&str],
    tokens_per_hour: u64,
) -> (Platform, ToolPolicies) {
    let registry = ToolRegistry::new(&issuer.authority());
    for name in tools {
        registry
            .register(FnTool::new(
                *name,
                "",
                json!({"type": "object"}),
                |_c, i| async move { Ok(i) },
            ))
            .unwrap();
    }
    let policies = ToolPolicies::new();
    let quotas = Quotas::builder(&issuer.authority())
        .policy(Policy::new(TenantPolicy::new().tenant_limits(
            Limits::unlimited().tokens_per(tokens_per_hour, Duration::from_secs(3600)),
        )))
        .build()
        .unwrap();
    let platform = Platform::builder(&issuer.authority())
        .tools(&registry, &policies)
        .quotas(&quotas)
        .build()
        .unwrap();
    (platform, policies)
}
