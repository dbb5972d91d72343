use tenant_core::TenantId;
use tenant_memory::MemoryStore;

fn main() {
    // A raw tenant id is not a verified context.
    let _builder = MemoryStore::builder().tenant(TenantId::random());
}
