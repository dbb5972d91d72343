// A TenantQuota cannot be built without `.tenant(&ctx)`.
use tenant_core::*;
use tenant_governance::{Quotas, TenantQuota};

fn main() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let quotas = Quotas::builder(&issuer.authority()).build().unwrap();
    let _handle = TenantQuota::builder().quotas(&quotas).build();
}
