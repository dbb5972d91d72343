use tenant_core::{ContextIssuer, KeyId, MasterKey, PrincipalId, TenantId};

fn main() {
    // Neither the verify-only authority nor a token verifier can issue.
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let authority = issuer.authority();
    let _a = authority.context().tenant(TenantId::random());
    let verifier = issuer.token_verifier();
    let _b = verifier.context().principal(PrincipalId::new("p").unwrap());
}
