use tenant_core::{ContextIssuer, KeyId, MasterKey, Purpose};

fn main() {
    // The key that mints contexts is not a purpose anyone can ask for.
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let _minting_key = issuer.subkey(Purpose::ContextProof);
}
