// A TenantQuota cannot be built without `.tenant(&ctx)`.
use tenant_governance::{Quotas, TenantQuota};

fn main() {
    let quotas = Quotas::builder().build().unwrap();
    let _handle = TenantQuota::builder().quotas(&quotas).build();
}
