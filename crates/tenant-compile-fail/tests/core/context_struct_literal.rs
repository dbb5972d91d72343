use tenant_core::TenantContext;

fn main() {
    let _ctx = TenantContext { inner: todo!() };
}
