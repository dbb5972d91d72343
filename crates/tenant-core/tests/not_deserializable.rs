//! `TenantContext` must never implement `serde::Deserialize`: a context is
//! made by an issuer or a delegation, never parsed from bytes (tokens go
//! through `ContextIssuer::accept_token`, which verifies the proof).
//!
//! Checked with the inherent-const-versus-trait-const probe: the inherent
//! `IMPLEMENTED` exists only when the bound holds, otherwise the trait's
//! `false` is used. (A trybuild case would depend on rustc's list of other
//! `Deserialize` impls, which changes with cargo feature unification.)

use std::marker::PhantomData;

use tenant_core::TenantContext;

trait Fallback {
    const IMPLEMENTED: bool = false;
}

struct Probe<T>(PhantomData<T>);

impl<T> Fallback for Probe<T> {}

impl<T: serde::de::DeserializeOwned> Probe<T> {
    #[allow(dead_code)]
    const IMPLEMENTED: bool = true;
}

#[test]
fn tenant_context_does_not_implement_deserialize() {
    // Evaluated at compile time: adding `Deserialize` breaks the build.
    const { assert!(!Probe::<TenantContext>::IMPLEMENTED) };
}

#[test]
fn the_probe_detects_types_that_do() {
    const { assert!(Probe::<tenant_core::TenantId>::IMPLEMENTED) };
    const { assert!(Probe::<tenant_core::Capabilities>::IMPLEMENTED) };
}
