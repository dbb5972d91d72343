use tenant_tools::WarmPool;

fn misuse(pool: &WarmPool) {
    // A warm sandbox is only ever handed to a verified context.
    let _ = pool.acquire();
    let _ = pool.acquire(tenant_core::TenantId::random());
}

fn main() {}
