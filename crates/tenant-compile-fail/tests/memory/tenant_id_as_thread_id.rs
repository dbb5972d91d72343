use tenant_core::TenantId;
use tenant_memory::MemoryStore;

async fn read(store: &MemoryStore) {
    // Store methods take thread ids scoped to the store's own tenant, never
    // a tenant id.
    let _ = store.thread(TenantId::random()).await;
}

fn main() {}
