//! What must not compile, per crate (core, memory, tools, governance,
//! retrieval, rig), in one trybuild project (dependencies are compiled
//! once for all of them). The `.stderr` files are for Rust 1.95.

#[test]
fn unscoped_or_forged_use_of_the_sdk_does_not_compile() {
    let t = trybuild::TestCases::new();
    // Contexts are made only through an issuer or a delegation; a verifier
    // cannot mint; an issuer's registry cannot be swapped.
    t.compile_fail("tests/core/*.rs");
    // A memory store cannot be built without a tenant context, and no store
    // method accepts a raw tenant id.
    t.compile_fail("tests/memory/*.rs");
    // Tool executors and warm-pool sandboxes exist only for a context.
    t.compile_fail("tests/tools/*.rs");
    // Quota and gate handles need a context; a hold is ended exactly once.
    t.compile_fail("tests/governance/*.rs");
    // A retrieval client needs a context and takes no tenant id; a
    // platform needs its authority; backends expose no raw paths.
    t.compile_fail("tests/retrieval/*.rs");
    // rig adapters are made only from scoped handles.
    t.compile_fail("tests/rig/*.rs");
}
