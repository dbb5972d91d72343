//! What must not compile: contexts made any way but through an issuer or a
//! delegation. The `.stderr` files are for Rust 1.95.

#[test]
fn contexts_cannot_be_forged_at_compile_time() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
