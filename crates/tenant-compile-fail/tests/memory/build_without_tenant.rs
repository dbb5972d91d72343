use tenant_memory::MemoryStore;

fn main() {
    let pool = sqlx::PgPool::connect_lazy("postgres://localhost/x").unwrap();
    let issuer = tenant_core::ContextIssuer::new(tenant_core::MasterKey::generate(
        tenant_core::KeyId::new("k1").unwrap(),
    ));
    let key = issuer.subkey(tenant_core::Purpose::Postgres);
    // No `.tenant(&ctx)`: there is no `build()` to call.
    let _store = MemoryStore::builder().pool(&pool).key(&key).build();
}
