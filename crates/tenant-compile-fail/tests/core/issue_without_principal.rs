use tenant_core::{ContextIssuer, KeyId, MasterKey, TenantId};

fn main() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let _ctx = issuer.context().tenant(TenantId::random()).issue();
}
