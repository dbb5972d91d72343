use tenant_core::TenantId;
use tenant_memory::MemoryStore;

async fn read(store: &MemoryStore) {
    // The SQL tool has no way to name a tenant either.
    let _ = store.sql_tool().query(TenantId::random(), "SELECT 1").await;
}

fn main() {}
