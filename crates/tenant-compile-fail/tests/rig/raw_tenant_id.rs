// A raw tenant id is not a context: no adapter is made from one, and no
// adapter method takes one.
use tenant_core::TenantId;
use tenant_retrieval::HashEmbedder;
use tenant_rig::{TenantIndex, TenantTools};

fn index_for(tenant: TenantId) {
    let _ = TenantIndex::new(tenant, HashEmbedder::new(8));
}

fn tools_for(tenant: TenantId) {
    let _ = TenantTools::new(tenant);
}

fn narrow(index: &TenantIndex, tools: &TenantTools, tenant: TenantId) {
    let _ = index.delegate(&tenant);
    let _ = tools.delegate(&tenant);
}

fn main() {}
