use tenant_core::{ContextIssuer, KeyId, MasterKey, PrincipalId};

fn main() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let _ctx = issuer.context().principal(PrincipalId::new("alice").unwrap()).issue();
}
