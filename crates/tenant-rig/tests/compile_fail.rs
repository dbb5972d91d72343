//! The adapters are made only from scoped handles, enforced by the compiler.

#[test]
fn adapters_cannot_be_made_or_narrowed_from_a_raw_tenant_id() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
