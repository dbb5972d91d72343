// A ModelGate cannot be built without `.tenant(&ctx)`.
use tenant_core::*;
use tenant_governance::ModelGate;

fn main() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let _gate = ModelGate::builder(&issuer.authority()).salt_key(issuer.subkey(Purpose::CacheSalt)).build();
}
