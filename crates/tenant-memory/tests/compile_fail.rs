//! The typestate, checked by the compiler: a store cannot be built without
//! a tenant context, and no store method accepts a raw tenant id.

#[test]
fn unscoped_memory_code_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
