//! Revocation of contexts and, through lineage, of all their descendants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::context::{now_ms, TenantContext};
use crate::ids::ContextId;

/// Below this many entries the registry is never pruned automatically.
const PRUNE_FLOOR: usize = 1024;

/// A registry of revoked contexts, shared by an issuer and every context it
/// issues (cheap to clone).
///
/// Revoking a context revokes every context delegated from it, directly or
/// transitively, because each context records the ids of its ancestors.
/// Checking costs one atomic load while nothing is revoked.
///
/// The registry does not grow without bound: an entry made by
/// [`revoke`](Self::revoke) is dropped once the revoked context has expired
/// (its descendants never outlive it, so all of them fail their expiry check
/// from then on). Expired entries are swept whenever the registry has
/// doubled since the last sweep, and on [`prune_expired`](Self::prune_expired).
/// Entries made by [`revoke_id`](Self::revoke_id), whose expiry is unknown,
/// are kept.
///
/// ```
/// use std::time::Duration;
/// use tenant_core::*;
/// let revocations = Revocations::new();
/// let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k1")?))
///     .revocations(revocations.clone())
///     .build()?;
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
    revoked: RwLock<Revoked>,
}

/// Revoked context ids with the expiry of each (unix ms; `u64::MAX` when
/// unknown), and twice the size left by the last sweep (the next sweep
/// happens at that size, but never below [`PRUNE_FLOOR`]).
#[derive(Default)]
struct Revoked {
    ids: HashMap<ContextId, u64>,
    sweep_at: usize,
}

impl Revoked {
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.ids.len();
        self.ids.retain(|_, expires| *expires > now);
        self.sweep_at = self.ids.len() * 2;
        before - self.ids.len()
    }
}

impl Revocations {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes `ctx` and all its descendants.
    pub fn revoke(&self, ctx: &TenantContext) {
        self.insert(ctx.id(), ctx.expires_at_unix_ms());
    }

    /// Revokes the context with this id and all its descendants. The
    /// registry does not know when that context expires, so this entry is
    /// never pruned; prefer [`revoke`](Self::revoke) when the context is at
    /// hand.
    pub fn revoke_id(&self, id: ContextId) {
        self.insert(id, u64::MAX);
    }

    fn insert(&self, id: ContextId, expires_at_ms: u64) {
        let mut revoked = self.write();
        let entry = revoked.ids.entry(id).or_insert(expires_at_ms);
        *entry = (*entry).max(expires_at_ms);
        if revoked.ids.len() >= revoked.sweep_at.max(PRUNE_FLOOR) {
            revoked.sweep(now_ms());
        }
        self.inner.count.store(revoked.ids.len(), Ordering::Release);
    }

    /// Drops the entries of revoked contexts that have expired; returns how
    /// many were dropped. Safe at any time: an expired context and all its
    /// descendants are refused as expired whether or not they are listed.
    pub fn prune_expired(&self) -> usize {
        let mut revoked = self.write();
        let dropped = revoked.sweep(now_ms());
        self.inner.count.store(revoked.ids.len(), Ordering::Release);
        dropped
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Revoked> {
        self.inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` or any of `ancestors` is revoked.
    pub(crate) fn any_revoked(&self, id: ContextId, ancestors: &[ContextId]) -> bool {
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let revoked = self.inner.revoked.read().unwrap_or_else(|e| e.into_inner());
        revoked.ids.contains_key(&id) || ancestors.iter().any(|a| revoked.ids.contains_key(a))
    }

    /// How many revoked contexts the registry holds (descendants are not
    /// listed; entries of expired contexts may have been dropped).
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
