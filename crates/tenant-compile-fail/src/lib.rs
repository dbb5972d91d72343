//! Holds no code: its `tests/` check, with trybuild, that unscoped use of
//! the SDK's handles does not compile (`tests/<crate>/*.rs`, each with the
//! compiler's message for Rust 1.95 in a `.stderr` file next to it).
#![forbid(unsafe_code)]
