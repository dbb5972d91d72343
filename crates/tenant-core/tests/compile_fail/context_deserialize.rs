use tenant_core::TenantContext;

fn main() {
    let _ctx: TenantContext = serde_json::from_str(r#"{"tenant":"6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11"}"#).unwrap();
}
