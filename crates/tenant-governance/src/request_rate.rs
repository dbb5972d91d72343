//! [`RequestRateLimiter`]: a per-tenant request-rate check, lock-free per
//! tenant, with bounded memory.
//!
//! This is the hot-path admission check for work that is counted in
//! requests rather than tokens (tool calls, API hits): one decision per
//! call, keyed by tenant, with the same semantics as `governor`'s keyed
//! GCRA check and [`Limits::requests`](crate::Limits::requests) (a bucket
//! of `capacity` requests refilled at `refill_per_second`).
//!
//! **How.** Each tenant has one *cell*: a GCRA "theoretical arrival time"
//! (TAT) in an `AtomicU64`, updated with a compare-and-swap, so concurrent
//! checks of one tenant never take a lock and never over-admit. Cells live
//! in a sharded map (`RwLock<HashMap>` per shard); a check takes one shard's
//! read lock (uncontended unless the shard is inserting), does one lookup
//! and one CAS, and allocates nothing. The clock is `quanta` (TSC-based,
//! monotonic), as in `governor`.
//!
//! **Hasher.** The map uses `foldhash` (fast, non-cryptographic, seeded
//! per map). Tenant ids are random v4 UUIDs minted by the platform, never
//! chosen by callers, so SipHash's resistance to hash flooding buys nothing
//! here; the per-process random seed keeps bucket placement unpredictable
//! anyway.
//!
//! **Bounded memory.** A shard holds at most `capacity / shards` tenants.
//! When a new tenant arrives at a full shard, *idle* cells (a full bucket:
//! their TAT is in the past, so forgetting them changes no decision) are
//! evicted; a shard full of tenants that are all rate-limited right now
//! refuses the new tenant with [`Error::LedgerUnavailable`] (fail closed)
//! rather than grow.
//!
//! **Why not `governor`.** It is the baseline this limiter is benchmarked
//! against (`benches/quota.rs`: the per-tenant check at 0.98–1.11× of
//! `governor`'s keyed check), and its keyed store grows without bound
//! unless the caller sweeps it, whereas a tenant flood here is refused
//! within a fixed memory budget. Kept hand-written for that bound, not for
//! speed.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tenant_core::{PlatformAuthority, TenantContext, TenantId};

use crate::error::{Error, Result};
use crate::ledger::{QuotaLevel, Resource};
use crate::policy::RateLimit;

type Hasher = foldhash::fast::RandomState;

/// The GCRA form of a [`RateLimit`], in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gcra {
    /// Emission interval: one request per `t` ns (1 when `frozen`).
    t: u64,
    /// Burst tolerance: `t × (capacity − 1)`.
    tau: u64,
    /// No refill: the cell counts requests and time stands still.
    frozen: bool,
    /// Capacity 0: every request is refused.
    closed: bool,
}

impl Gcra {
    fn new(limit: RateLimit) -> Self {
        let cap = u64::from(limit.capacity);
        if limit.refill_per_second > 0.0 && limit.refill_per_second.is_finite() {
            // At least 1 ns; at most ~31 years per request.
            let t = (1e9 / limit.refill_per_second).clamp(1.0, 1e18) as u64;
            Self {
                t,
                tau: t.saturating_mul(cap.saturating_sub(1)),
                frozen: false,
                closed: cap == 0,
            }
        } else {
            Self {
                t: 1,
                tau: cap.saturating_sub(1),
                frozen: true,
                closed: cap == 0,
            }
        }
    }
}

struct Cell {
    tat: AtomicU64,
    gcra: Gcra,
}

impl Cell {
    /// One GCRA decision at `now` (ns since the limiter started).
    #[inline]
    fn check(&self, now: u64) -> std::result::Result<(), Option<Duration>> {
        let g = self.gcra;
        if g.closed {
            return Err(None);
        }
        let now = if g.frozen { 0 } else { now };
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now);
            if base - now > g.tau {
                return Err((!g.frozen).then(|| Duration::from_nanos(base - now - g.tau)));
            }
            match self.tat.compare_exchange_weak(
                tat,
                base.saturating_add(g.t),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Forgetting the cell changes no decision: the bucket is full.
    fn idle(&self, now: u64) -> bool {
        let tat = self.tat.load(Ordering::Acquire);
        if self.gcra.frozen {
            tat == 0
        } else {
            tat <= now
        }
    }
}

type Shard = RwLock<HashMap<TenantId, Cell, Hasher>>;

/// A per-tenant request-rate limiter (GCRA, one atomic cell per tenant,
/// sharded, bounded); see the module docs.
///
/// ```
/// use tenant_core::*;
/// use tenant_governance::{RateLimit, RequestRateLimiter};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let limiter = RequestRateLimiter::builder(&issuer.authority())
///     .limit(RateLimit { capacity: 2, refill_per_second: 1.0 })
///     .build();
/// let ctx = issuer.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice")?).issue()?;
/// assert!(limiter.check(&ctx).is_ok());
/// assert!(limiter.check(&ctx).is_ok());
/// assert!(limiter.check(&ctx).is_err()); // the burst of 2 is spent
/// # Ok(()) }
/// ```
pub struct RequestRateLimiter {
    shards: Box<[Shard]>,
    shard_hasher: Hasher,
    per_shard: usize,
    default_limit: Gcra,
    overrides: HashMap<TenantId, Gcra>,
    clock: quanta::Clock,
    start: u64,
    authority: PlatformAuthority,
}

impl std::fmt::Debug for RequestRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRateLimiter")
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .field("default_limit", &self.default_limit)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RequestRateLimiter`].
#[derive(Clone, Debug)]
pub struct RequestRateLimiterBuilder {
    shards: usize,
    capacity: usize,
    limit: RateLimit,
    overrides: HashMap<TenantId, RateLimit>,
    authority: PlatformAuthority,
}

impl RequestRateLimiterBuilder {
    /// The limit of every tenant without an override.
    pub fn limit(mut self, limit: RateLimit) -> Self {
        self.limit = limit;
        self
    }

    /// One tenant's own limit (configuration, read when the tenant's cell is
    /// created).
    pub fn tenant_limit(mut self, tenant: TenantId, limit: RateLimit) -> Self {
        self.overrides.insert(tenant, limit);
        self
    }

    /// Number of shards (rounded up to a power of two; default
    /// [`DEFAULT_SHARDS`](crate::DEFAULT_SHARDS)).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Most tenants tracked at once (default
    /// [`DEFAULT_CAPACITY`](crate::DEFAULT_CAPACITY)).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Builds the limiter.
    pub fn build(self) -> RequestRateLimiter {
        let shards = self.shards.next_power_of_two();
        let clock = quanta::Clock::new();
        let start = clock.raw();
        RequestRateLimiter {
            shards: (0..shards)
                .map(|_| RwLock::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
            shard_hasher: Hasher::default(),
            per_shard: self.capacity.div_ceil(shards).max(1),
            default_limit: Gcra::new(self.limit),
            overrides: self
                .overrides
                .into_iter()
                .map(|(t, l)| (t, Gcra::new(l)))
                .collect(),
            clock,
            start,
            authority: self.authority,
        }
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Cells are single atomics: a panic elsewhere cannot leave one torn.
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn exceeded(retry_after: Option<Duration>) -> Error {
    Error::QuotaExceeded {
        level: QuotaLevel::Tenant,
        resource: Resource::Requests,
        retry_after,
    }
}

impl RequestRateLimiter {
    /// A limiter for contexts issued under `authority`
    /// (`issuer.authority()`) only. Defaults: 10 requests of burst refilled
    /// at 10 per second, [`DEFAULT_SHARDS`](crate::DEFAULT_SHARDS) shards,
    /// [`DEFAULT_CAPACITY`](crate::DEFAULT_CAPACITY) tenants.
    pub fn builder(authority: &PlatformAuthority) -> RequestRateLimiterBuilder {
        RequestRateLimiterBuilder {
            authority: authority.clone(),
            shards: crate::DEFAULT_SHARDS,
            capacity: crate::DEFAULT_CAPACITY,
            limit: RateLimit {
                capacity: 10,
                refill_per_second: 10.0,
            },
            overrides: HashMap::new(),
        }
    }

    /// Takes one request from `ctx`'s tenant, after admitting the context
    /// (issued under the limiter's authority; proof, expiry, revocation).
    ///
    /// # Errors
    ///
    /// [`Error::Context`] (including
    /// [`tenant_core::Error::ForeignAuthority`]); [`Error::QuotaExceeded`]
    /// at the tenant level for the request rate, with the time until one
    /// request is available (`None` when the limit never refills);
    /// [`Error::LedgerUnavailable`] when the limiter is full of
    /// rate-limited tenants.
    pub fn check(&self, ctx: &TenantContext) -> Result<()> {
        let span = tenant_core::operation_span!("quota.request_rate", ctx);
        let _entered = span.enter();
        let r = match self.authority.admit(ctx) {
            Ok(()) => self.check_verified(ctx),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &r {
            crate::telemetry::count_refusal(ctx, e);
            ctx.deny("quota.request_rate", "requests", e);
            tenant_core::telemetry::record_error(&span, e);
        }
        r
    }

    /// Takes one request from `ctx`'s tenant without re-verifying the
    /// context's proof, expiry and revocation, for callers that have
    /// already checked them in this request (e.g. right after
    /// [`Quotas::reserve`](crate::Quotas::reserve) or
    /// [`ModelGate`](crate::ModelGate) authorization). It still takes the
    /// context, never a raw tenant id, so the key cannot come from caller
    /// input, and it still refuses a context of another authority (one
    /// pointer comparison). This is the operation the benchmark compares
    /// with `governor`'s keyed check.
    ///
    /// # Errors
    ///
    /// As [`RequestRateLimiter::check`]; the only context error is
    /// [`tenant_core::Error::ForeignAuthority`].
    #[inline]
    pub fn check_verified(&self, ctx: &TenantContext) -> Result<()> {
        if !self.authority.issued(ctx) {
            return Err(tenant_core::Error::ForeignAuthority.into());
        }
        let tenant = &ctx.tenant();
        let now = self.clock.delta_as_nanos(self.start, self.clock.raw());
        let shard = self.shard_of(tenant);
        {
            let map = read(shard);
            if let Some(cell) = map.get(tenant) {
                return cell.check(now).map_err(exceeded);
            }
        }
        self.insert_and_check(shard, tenant, now)
    }

    /// Cold path: the tenant's first request (or first after eviction).
    #[cold]
    fn insert_and_check(&self, shard: &Shard, tenant: &TenantId, now: u64) -> Result<()> {
        let mut map = write(shard);
        if !map.contains_key(tenant) && map.len() >= self.per_shard {
            let before = map.len();
            map.retain(|_, c| !c.idle(now));
            tracing::debug!(
                evicted = before - map.len(),
                "request-rate limiter evicted idle tenants"
            );
            if map.len() >= self.per_shard {
                return Err(Error::ledger_unavailable(
                    "request-rate limiter is full of rate-limited tenants",
                ));
            }
        }
        let gcra = self
            .overrides
            .get(tenant)
            .copied()
            .unwrap_or(self.default_limit);
        let cell = map.entry(*tenant).or_insert_with(|| Cell {
            tat: AtomicU64::new(0),
            gcra,
        });
        cell.check(now).map_err(exceeded)
    }

    fn shard_of(&self, tenant: &TenantId) -> &Shard {
        let h = self.shard_hasher.hash_one(tenant);
        // High bits: the map itself uses the low ones of its own hash.
        let idx = (h >> 32) as usize & (self.shards.len() - 1);
        &self.shards[idx]
    }

    /// Number of tenants currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// Whether no tenant is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(capacity: u32, refill: f64) -> Cell {
        Cell {
            tat: AtomicU64::new(0),
            gcra: Gcra::new(RateLimit {
                capacity,
                refill_per_second: refill,
            }),
        }
    }

    #[test]
    fn a_burst_of_capacity_then_one_per_interval() {
        let c = cell(3, 10.0); // 100 ms per request
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            assert!(c.check(t0).is_ok());
        }
        let retry = c.check(t0).unwrap_err().unwrap();
        assert_eq!(retry, Duration::from_millis(100));
        assert!(c.check(t0 + 99_000_000).is_err());
        assert!(c.check(t0 + 100_000_000).is_ok());
        assert!(c.check(t0 + 100_000_000).is_err());
        assert!(!c.idle(t0 + 200_000_000));
        assert!(c.idle(t0 + 400_000_000));
    }

    #[test]
    fn no_refill_means_capacity_requests_ever() {
        let c = cell(2, 0.0);
        assert!(c.check(5).is_ok());
        assert!(c.check(10_000_000_000).is_ok());
        assert_eq!(c.check(u64::MAX / 2), Err(None));
        assert!(!c.idle(u64::MAX / 2));
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let c = cell(0, 100.0);
        assert_eq!(c.check(1), Err(None));
    }
}
