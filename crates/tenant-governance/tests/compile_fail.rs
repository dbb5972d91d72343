//! The handle pattern, checked by the compiler.

#[test]
fn unscoped_handles_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
