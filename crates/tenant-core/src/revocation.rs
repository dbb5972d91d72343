//! Revocation of contexts and, through lineage, of all their descendants.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::context::TenantContext;
use crate::ids::ContextId;

/// A registry of revoked contexts, shared by an issuer and every context it
/// issues (cheap to clone).
///
/// Revoking a context revokes every context delegated from it, directly or
/// transitively, because each context records the ids of its ancestors.
/// Checking costs one atomic load while nothing is revoked.
///
/// ```
/// use std::time::Duration;
/// use tenant_core::*;
/// let revocations = Revocations::new();
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?))
///     .with_revocations(revocations.clone());
/// let root = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("alice")?)
///     .capabilities(Capabilities::unrestricted()).issue()?;
/// let child = root.delegate(AgentId::new("researcher")?).issue()?;
/// revocations.revoke(&root);
/// assert!(matches!(child.check(), Err(Error::ContextRevoked)));
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Revocations {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    revoked: RwLock<HashSet<ContextId>>,
}

impl Revocations {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes `ctx` and all its descendants.
    pub fn revoke(&self, ctx: &TenantContext) {
        self.revoke_id(ctx.id());
    }

    /// Revokes the context with this id and all its descendants.
    pub fn revoke_id(&self, id: ContextId) {
        let mut set = self
            .inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if set.insert(id) {
            self.inner.count.store(set.len(), Ordering::Release);
        }
    }

    /// Whether `id` or any of `ancestors` is revoked.
    pub(crate) fn any_revoked(&self, id: ContextId, ancestors: &[ContextId]) -> bool {
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let set = self.inner.revoked.read().unwrap_or_else(|e| e.into_inner());
        set.contains(&id) || ancestors.iter().any(|a| set.contains(a))
    }

    /// How many contexts were revoked explicitly (descendants not counted).
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Whether nothing has been revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("revoked", &self.len())
            .finish()
    }
}
