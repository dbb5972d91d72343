//! The typestate shared by every tenant-scoped handle builder.
//!
//! A handle builder starts in [`WantsTenant`](crate::WantsTenant) and
//! offers `build()` only in [`Scoped`], which is reachable only through
//! `.tenant(&ctx)`: code that never names a [`TenantContext`] cannot build a
//! handle, and the compiler says so.
//!
//! ```compile_fail
//! # // What a store crate writes, and what does not compile for its users:
//! use tenant_core::{Scoped, WantsTenant};
//! struct Builder<S>(S);
//! impl Builder<Scoped> { fn build(self) {} }
//! Builder(WantsTenant).build();
//! ```

use crate::context::TenantContext;

/// Builder state: a verified context has been given; `build()` is
/// available.
#[derive(Clone, Debug)]
pub struct Scoped {
    ctx: TenantContext,
}

impl Scoped {
    /// Enters the scoped state for `ctx`.
    pub fn new(ctx: &TenantContext) -> Self {
        Self { ctx: ctx.clone() }
    }

    /// The context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// Takes the context out, checking it is still valid.
    ///
    /// This trusts whichever issuer made the context; handles use
    /// [`into_admitted_context`](Self::into_admitted_context) instead.
    pub fn into_checked_context(self) -> crate::Result<TenantContext> {
        self.ctx.check()?;
        Ok(self.ctx)
    }

    /// Takes the context out if `authority` admits it: issued under that
    /// authority, proof valid, unexpired, unrevoked
    /// ([`PlatformAuthority::admit`](crate::PlatformAuthority::admit)).
    pub fn into_admitted_context(
        self,
        authority: &crate::PlatformAuthority,
    ) -> crate::Result<TenantContext> {
        authority.admit(&self.ctx)?;
        Ok(self.ctx)
    }
}
