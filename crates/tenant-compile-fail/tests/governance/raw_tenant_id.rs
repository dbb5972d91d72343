// No handle or builder accepts a raw TenantId in place of a verified context.
use tenant_core::{PlatformAuthority, TenantId};
use tenant_governance::{Estimate, FairScheduler, Lane, ModelGate, Quotas, TenantQuota};

async fn attempts(authority: PlatformAuthority, quotas: Quotas, scheduler: FairScheduler) {
    let tenant = TenantId::random();
    let _ = ModelGate::builder(&authority).tenant(tenant);
    let _ = TenantQuota::builder().quotas(&quotas).tenant(&tenant);
    let _ = quotas.reserve(&tenant, &Estimate::new("m", 1, 1)).await;
    let _ = scheduler.admit(&tenant, Lane::Interactive).await;
}

fn main() {}
