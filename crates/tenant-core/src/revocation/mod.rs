//! Revocation: of contexts (and, through lineage, all their descendants),
//! of JWTs by id or content, of sessions, and of a principal's earlier
//! authentications.
//!
//! [`Revocations`] is the local registry every context of an issuer is
//! checked against, synchronously, on every operation. A
//! [`RevocationStore`] records revocations where every replica can learn
//! them (the in-memory registry itself, or Redis behind the `redis`
//! feature); a replica's registry fails closed when its view of the store
//! is older than its staleness bound.

mod entry;
#[cfg(feature = "redis")]
mod redis;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::context::{now_ms, Claims, TenantContext};
use crate::error::{Error, Result};
use crate::ids::{ContextId, PrincipalId, TenantId};

pub use entry::Revocation;
use entry::Target;
pub(crate) use entry::{jwt_content_ref, jwt_id_ref, jwt_session_ref};
#[cfg(feature = "redis")]
pub use redis::{RedisRevocationStore, RevocationFollower, STREAM_RETENTION};
pub use store::RevocationStore;

/// Below this many entries the registry is never pruned automatically.
const PRUNE_FLOOR: usize = 1024;

/// A registry of revocations, shared by an issuer and every context it
/// issues (cheap to clone).
///
/// Revoking a context revokes every context delegated from it, directly or
/// transitively, because each context records the ids of its ancestors;
/// revoking a root minted from a JWT also revokes that JWT. Entries for JWT
/// ids, sessions and principals ([`Revocation`]) cover every context whose
/// root came from them. Checking costs one atomic load while nothing is
/// revoked.
///
/// A registry made with [`new`](Self::new) is authoritative: what it holds
/// is everything revoked. One made with [`replica`](Self::replica) mirrors a
/// shared [`RevocationStore`]: its follower calls
/// [`mark_synced`](Self::mark_synced) each time its view is complete up to
/// some instant, and every check fails with [`Error::RevocationsStale`] once
/// that instant is older than the staleness bound (fail closed: a replica
/// cut off from the store stops admitting contexts instead of missing
/// revocations).
///
/// The registry does not grow without bound: each entry is kept until
/// everything it covers has expired ([`Revocation::until_unix_ms`]), and
/// expired entries are swept whenever the registry has doubled since the
/// last sweep, and on [`prune_expired`](Self::prune_expired).
///
/// ```
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
#[derive(Clone)]
pub struct Revocations {
    inner: Arc<Inner>,
}

struct Inner {
    count: AtomicUsize,
    /// Zero for an authoritative registry.
    max_staleness_ns: u64,
    /// Monotonic ns (see [`monotonic_ns`]) up to which the view is
    /// complete; zero until the first sync.
    synced_at_ns: AtomicU64,
    revoked: RwLock<Revoked>,
}

/// A principal's cut-off: authentications before `before_ms` are revoked;
/// the entry is kept until `until_ms`.
#[derive(Clone, Copy)]
struct Cutoff {
    before_ms: u64,
    until_ms: u64,
}

/// Revoked things with the time each entry is kept until (unix ms), and
/// twice the size left by the last sweep (the next sweep happens at that
/// size, but never below [`PRUNE_FLOOR`]).
#[derive(Default)]
struct Revoked {
    contexts: HashMap<ContextId, u64>,
    tokens: HashMap<[u8; 32], u64>,
    sessions: HashMap<[u8; 32], u64>,
    principals: HashMap<TenantId, HashMap<PrincipalId, Cutoff>>,
    sweep_at: usize,
}

impl Revoked {
    fn len(&self) -> usize {
        self.contexts.len()
            + self.tokens.len()
            + self.sessions.len()
            + self.principals.values().map(HashMap::len).sum::<usize>()
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.len();
        self.contexts.retain(|_, until| *until > now);
        self.tokens.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
        for cuts in self.principals.values_mut() {
            cuts.retain(|_, c| c.until_ms > now);
        }
        self.principals.retain(|_, cuts| !cuts.is_empty());
        let after = self.len();
        self.sweep_at = after * 2;
        before - after
    }

    fn insert(&mut self, r: &Revocation) {
        let until = r.until_ms;
        let keep_longest = |slot: &mut u64| *slot = (*slot).max(until);
        match &r.target {
            Target::Context { id, token } => {
                keep_longest(self.contexts.entry(*id).or_insert(until));
                if let Some(t) = token {
                    keep_longest(self.tokens.entry(*t).or_insert(until));
                }
            }
            Target::Token(t) => keep_longest(self.tokens.entry(*t).or_insert(until)),
            Target::Session(s) => keep_longest(self.sessions.entry(*s).or_insert(until)),
            Target::Principal {
                tenant,
                principal,
                before_ms,
            } => {
                // Two cut-offs of one principal merge into the wider one.
                let cut = self
                    .principals
                    .entry(*tenant)
                    .or_default()
                    .entry(principal.clone())
                    .or_insert(Cutoff {
                        before_ms: *before_ms,
                        until_ms: until,
                    });
                cut.before_ms = cut.before_ms.max(*before_ms);
                cut.until_ms = cut.until_ms.max(until);
            }
        }
    }

    /// Whether anything here covers a context with these claims.
    fn covers(&self, c: &Claims) -> bool {
        let o = &c.origin;
        self.contexts.contains_key(&c.id)
            || c.ancestors.iter().any(|a| self.contexts.contains_key(a))
            || o.token.is_some_and(|t| self.tokens.contains_key(&t))
            || o.session.is_some_and(|s| self.sessions.contains_key(&s))
            || self
                .principals
                .get(&c.tenant)
                .and_then(|cuts| cuts.get(&c.principal))
                .is_some_and(|cut| o.auth_time_ms < cut.before_ms)
    }

    fn entries(&self) -> Vec<Revocation> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.contexts.iter().map(|(id, until)| Revocation {
            target: Target::Context {
                id: *id,
                token: None,
            },
            until_ms: *until,
        }));
        out.extend(self.tokens.iter().map(|(t, until)| Revocation {
            target: Target::Token(*t),
            until_ms: *until,
        }));
        out.extend(self.sessions.iter().map(|(s, until)| Revocation {
            target: Target::Session(*s),
            until_ms: *until,
        }));
        for (tenant, cuts) in &self.principals {
            out.extend(cuts.iter().map(|(principal, cut)| Revocation {
                target: Target::Principal {
                    tenant: *tenant,
                    principal: principal.clone(),
                    before_ms: cut.before_ms,
                },
                until_ms: cut.until_ms,
            }));
        }
        out
    }
}

/// Nanoseconds on a process-wide monotonic clock, never zero.
fn monotonic_ns(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(base).as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

impl Default for Revocations {
    fn default() -> Self {
        Self::new()
    }
}

impl Revocations {
    /// An empty, authoritative registry (never stale).
    pub fn new() -> Self {
        Self::with_bound(0)
    }

    /// An empty registry that mirrors a shared [`RevocationStore`]: every
    /// check fails with [`Error::RevocationsStale`] until its follower has
    /// [`mark_synced`](Self::mark_synced) it, and again whenever the last
    /// sync is older than `max_staleness`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a zero bound.
    pub fn replica(max_staleness: Duration) -> Result<Self> {
        let ns = u64::try_from(max_staleness.as_nanos()).unwrap_or(u64::MAX);
        if ns == 0 {
            return Err(Error::InvalidConfiguration(
                "a replica's staleness bound must be positive".into(),
            ));
        }
        Ok(Self::with_bound(ns))
    }

    fn with_bound(max_staleness_ns: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                count: AtomicUsize::new(0),
                max_staleness_ns,
                synced_at_ns: AtomicU64::new(0),
                revoked: RwLock::default(),
            }),
        }
    }

    /// The staleness bound of a replica (`None` for an authoritative
    /// registry).
    pub fn max_staleness(&self) -> Option<Duration> {
        (self.inner.max_staleness_ns != 0)
            .then(|| Duration::from_nanos(self.inner.max_staleness_ns))
    }

    /// Records that every revocation made in the store before `as_of` has
    /// been applied to this registry (a replica's follower calls this; an
    /// earlier instant than the last one recorded changes nothing).
    pub fn mark_synced(&self, as_of: Instant) {
        self.inner
            .synced_at_ns
            .fetch_max(monotonic_ns(as_of), Ordering::AcqRel);
    }

    /// How old the view is (`None` for an authoritative registry or a
    /// replica never synced).
    pub fn staleness(&self) -> Option<Duration> {
        if self.inner.max_staleness_ns == 0 {
            return None;
        }
        let synced = self.inner.synced_at_ns.load(Ordering::Acquire);
        (synced != 0)
            .then(|| Duration::from_nanos(monotonic_ns(Instant::now()).saturating_sub(synced)))
    }

    /// Revokes `ctx` and all its descendants (and, for a root minted from a
    /// JWT, that JWT): `self.apply(&Revocation::context(ctx))`.
    ///
    /// On a replica this acts on this process only; revoke through the
    /// shared store to reach every replica.
    pub fn revoke(&self, ctx: &TenantContext) {
        self.apply(&Revocation::context(ctx));
    }

    /// Revokes the context with this id and all its descendants. The
    /// registry does not know when that context expires, so this entry is
    /// never pruned; prefer [`revoke`](Self::revoke) when the context is at
    /// hand.
    pub fn revoke_id(&self, id: ContextId) {
        self.apply(&Revocation {
            target: Target::Context { id, token: None },
            until_ms: u64::MAX,
        });
    }

    /// Applies one revocation to this registry.
    pub fn apply(&self, revocation: &Revocation) {
        let mut revoked = self.write();
        revoked.insert(revocation);
        let mut len = revoked.len();
        if len >= revoked.sweep_at.max(PRUNE_FLOOR) {
            revoked.sweep(now_ms());
            len = revoked.len();
        }
        self.inner.count.store(len, Ordering::Release);
    }

    /// Drops the entries whose coverage has expired; returns how many were
    /// dropped. Safe at any time: an expired context and all its
    /// descendants are refused as expired whether or not they are listed.
    pub fn prune_expired(&self) -> usize {
        let mut revoked = self.write();
        let dropped = revoked.sweep(now_ms());
        self.inner.count.store(revoked.len(), Ordering::Release);
        dropped
    }

    /// Every entry the registry holds.
    pub fn entries(&self) -> Vec<Revocation> {
        self.read().entries()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Revoked> {
        self.inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Revoked> {
        self.inner.revoked.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` unless the view is stale or something here covers `claims`.
    pub(crate) fn check(&self, claims: &Claims) -> Result<()> {
        if self.inner.max_staleness_ns != 0 {
            self.check_view()?;
        }
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        if self.read().covers(claims) {
            return Err(Error::ContextRevoked);
        }
        Ok(())
    }

    fn check_view(&self) -> Result<()> {
        let synced = self.inner.synced_at_ns.load(Ordering::Acquire);
        let age = monotonic_ns(Instant::now()).saturating_sub(synced);
        if synced == 0 || age > self.inner.max_staleness_ns {
            return Err(Error::RevocationsStale);
        }
        Ok(())
    }

    /// How many entries the registry holds (descendants are not listed;
    /// entries whose coverage has expired may have been dropped).
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
            .field("max_staleness", &self.max_staleness())
            .finish()
    }
}
