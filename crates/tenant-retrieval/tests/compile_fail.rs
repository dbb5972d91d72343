//! The handle pattern, enforced by the compiler.

#[test]
fn handles_cannot_be_built_or_used_without_a_context() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
