use tenant_core::{ContextIssuer, KeyId, MasterKey, Revocations};

fn main() {
    // An issuer's registry is fixed when it is built: there is nothing to
    // swap it with afterwards.
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let _swapped = issuer.with_revocations(Revocations::new());
}
