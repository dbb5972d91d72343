//! [`PlatformAuthority`]: the verify-only face of a platform's
//! [`ContextIssuer`](crate::ContextIssuer), which every handle is configured
//! with.
//!
//! A context carries the authority that issued it, so a context that merely
//! verifies against itself proves nothing: anyone can build a
//! `ContextIssuer` with a key of their own and mint a context for any
//! tenant. Handles therefore never ask the context whom to trust. Each
//! platform-wide resource (memory platform, retrieval backend, tool
//! registry, quotas, ...) is configured once with the platform's
//! `PlatformAuthority`, and every handle built from it
//! [`admit`](PlatformAuthority::admit)s only contexts issued under that very
//! authority.

use std::fmt;
use std::sync::Arc;

use crate::context::TenantContext;
use crate::error::{Error, Result};
use crate::issuer::Authority;
use crate::keys::KeyId;

/// Which contexts a platform's handles accept: those issued (directly, by
/// delegation, or from a token) by one particular
/// [`ContextIssuer`](crate::ContextIssuer).
///
/// It can verify but not mint: it holds no signing capability a caller can
/// use. Cheap to clone; `Debug` shows the signing key id only.
///
/// ```
/// use tenant_core::*;
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let authority = issuer.authority();
/// let ctx = issuer.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice")?).issue()?;
/// authority.admit(&ctx)?;
///
/// // A context minted by any other issuer is refused, even though it
/// // verifies against the key of the issuer that made it.
/// let rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let forged = rogue.context().tenant(ctx.tenant())
///     .principal(PrincipalId::new("mallory")?).issue()?;
/// assert!(matches!(authority.admit(&forged), Err(Error::ForeignAuthority)));
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PlatformAuthority {
    inner: Arc<Authority>,
}

impl PlatformAuthority {
    pub(crate) fn new(inner: Arc<Authority>) -> Self {
        Self { inner }
    }

    /// Whether `ctx` was issued under this authority (without checking its
    /// proof, expiry or revocation; see [`admit`](Self::admit)).
    #[inline]
    pub fn issued(&self, ctx: &TenantContext) -> bool {
        Arc::ptr_eq(&self.inner, ctx.authority())
    }

    /// `Ok` when `ctx` was issued under this authority and is usable now:
    /// its proof verifies under this authority's keys, it has not expired,
    /// and neither it nor an ancestor has been revoked.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignAuthority`] for a context of any other issuer; else
    /// the error of [`TenantContext::check`].
    pub fn admit(&self, ctx: &TenantContext) -> Result<()> {
        if !self.issued(ctx) {
            tracing::warn!(
                target: crate::AUDIT_TARGET,
                decision = "deny",
                reason = "foreign_authority",
                tenant_id = %ctx.tenant(),
                "context from another authority refused"
            );
            return Err(Error::ForeignAuthority);
        }
        ctx.check()
    }

    /// The id of the key new contexts are signed with.
    pub fn key_id(&self) -> &KeyId {
        self.inner.signing_key().id()
    }
}

/// Two authorities are equal when they are the same issuer's (not merely
/// the same key).
impl PartialEq for PlatformAuthority {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for PlatformAuthority {}

impl fmt::Debug for PlatformAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformAuthority")
            .field("key_id", self.key_id())
            .finish_non_exhaustive()
    }
}
