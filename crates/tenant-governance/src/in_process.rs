//! [`InProcessLedger`]: quota state in this process's memory.
//!
//! Sharded by tenant: every key of one tenant lives in the same shard (a
//! `Mutex` around a small hash map), so a reservation locks one shard, plus
//! the platform entry when a platform limit is set, and tenants in different
//! shards never contend. Memory is bounded: a shard holds at most
//! `capacity / shards` keys, and one tenant at most
//! [`InProcessLedgerBuilder::max_keys_per_tenant`] of them, so no tenant can
//! fill a shard that other tenants need. When a shard (or a tenant's share)
//! is full, entries that are *idle* (their state is indistinguishable from a
//! fresh one: nothing held, no use in the current period, a full request
//! bucket, or an expired context) are evicted. Eviction therefore never
//! forgets usage that still matters; a shard full of busy tenants refuses new
//! keys with [`Error::LedgerUnavailable`], a tenant over its own share with
//! [`Error::Overloaded`].
//!
//! Holds carry the ledger's random id: settling or releasing a hold another
//! ledger issued (or one built with [`Hold::new`]) is refused with
//! [`Error::UnknownHold`], and settling consumes the hold, so a hold ends at
//! most once and never frees anyone else's.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tenant_core::TenantId;

use crate::error::{Error, Result};
use crate::ledger::{
    duration_ms, now_ms, Bound, Hold, HoldRequest, Ledger, LevelKey, LevelSpec, LevelUsage,
    Resource,
};
use crate::policy::RateLimit;
use crate::pricing::{Amount, MAX_AMOUNT};

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;
/// Default bound on the number of keys kept.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// Default bound on the keys one tenant may occupy (its tenant and agent
/// keys, and one per context with a budget).
pub const DEFAULT_MAX_KEYS_PER_TENANT: usize = 1024;

/// A multiplicative hasher: keys are random UUIDs (plus short agent names),
/// so SipHash's flood resistance buys nothing here and costs a lot.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Map = HashMap<LevelKey, Entry, BuildHasherDefault<KeyHasher>>;

/// One shard: its entries and how many of them each tenant occupies.
#[derive(Debug, Default)]
struct Shard {
    map: Map,
    per_tenant: HashMap<TenantId, usize, BuildHasherDefault<KeyHasher>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    /// Period index for periodic budgets; 0 for lifetime ones.
    window: u64,
    period_ms: u64,
    used: u64,
    held: u64,
}

impl Counter {
    fn used_now(&self, window: u64) -> u64 {
        if self.window == window {
            self.used
        } else {
            0
        }
    }

    fn roll(&mut self, window: u64, period_ms: u64) {
        if self.window != window {
            self.window = window;
            self.used = 0;
        }
        self.period_ms = period_ms;
    }

    fn idle(&self, now: u64) -> bool {
        self.held == 0
            && (self.used == 0 || (self.period_ms > 0 && now / self.period_ms != self.window))
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at_ms: u64,
    limit: RateLimit,
}

impl Bucket {
    fn fresh(limit: RateLimit, now: u64) -> Self {
        Self {
            level: f64::from(limit.capacity),
            at_ms: now,
            limit,
        }
    }

    fn level_at(&self, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.at_ms) as f64 / 1000.0;
        (self.level + elapsed * self.limit.refill_per_second).min(f64::from(self.limit.capacity))
    }
}

/// What a context key knows about the context's own pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Pool {
    /// Nothing registered (a descendant naming it is refused).
    #[default]
    Unregistered,
    /// Registered without a budget.
    Unlimited,
    /// Registered with this lifetime budget.
    Limit(u64),
}

#[derive(Clone, Debug, Default)]
struct Entry {
    tokens: Counter,
    cost: Counter,
    bucket: Option<Bucket>,
    pool: Pool,
    /// For context keys: when the last context using it expires.
    expires_at_ms: u64,
}

impl Entry {
    fn idle(&self, now: u64) -> bool {
        if self.tokens.held > 0 || self.cost.held > 0 {
            return false;
        }
        if self.expires_at_ms > 0 {
            return now >= self.expires_at_ms;
        }
        let bucket_full = self
            .bucket
            .is_none_or(|b| b.level_at(now) >= f64::from(b.limit.capacity));
        bucket_full && self.tokens.idle(now) && self.cost.idle(now)
    }
}

/// Why a level refuses a reservation.
enum Refusal {
    /// A limit: which resource and when it refills.
    Quota(Resource, Option<Duration>),
    /// A [`Bound::Registered`] ancestor that was never registered.
    Unregistered,
    /// Holding the amount would pass [`MAX_AMOUNT`].
    OutOfRange,
}

fn window_of(bound: &Bound, now: u64) -> (u64, u64) {
    match bound {
        Bound::Periodic(b) => {
            let p = duration_ms(b.period).max(1);
            (now / p, p)
        }
        _ => (0, 0),
    }
}

fn check_bound(
    bound: &Bound,
    counter: &Counter,
    pool: Pool,
    amount: u64,
    resource: Resource,
    now: u64,
) -> std::result::Result<(), Refusal> {
    if counter.held.saturating_add(amount) > MAX_AMOUNT {
        return Err(Refusal::OutOfRange);
    }
    let (limit, used, retry) = match *bound {
        Bound::Unlimited | Bound::LifetimeUnlimited { .. } => return Ok(()),
        Bound::Periodic(b) => {
            let p = duration_ms(b.period).max(1);
            let retry = Duration::from_millis(p - now % p);
            (b.limit, counter.used_now(now / p), Some(retry))
        }
        Bound::Lifetime { limit, .. } => (limit, counter.used, None),
        Bound::Registered { .. } => match pool {
            Pool::Limit(limit) => (limit, counter.used, None),
            Pool::Unlimited => return Ok(()),
            Pool::Unregistered => return Err(Refusal::Unregistered),
        },
    };
    if used.saturating_add(counter.held).saturating_add(amount) > Bound::clamped(limit) {
        Err(Refusal::Quota(resource, retry))
    } else {
        Ok(())
    }
}

fn check_level(
    spec: &LevelSpec,
    entry: Option<&Entry>,
    amount: Amount,
    now: u64,
) -> std::result::Result<(), Refusal> {
    let empty = Entry::default();
    let e = entry.unwrap_or(&empty);
    check_bound(
        &spec.tokens,
        &e.tokens,
        e.pool,
        amount.tokens,
        Resource::Tokens,
        now,
    )?;
    check_bound(
        &spec.cost,
        &e.cost,
        Pool::Unlimited,
        amount.cost_micros,
        Resource::Cost,
        now,
    )?;
    if let Some(limit) = spec.requests {
        let level = e
            .bucket
            .map_or(f64::from(limit.capacity), |b| b.level_at(now));
        if level < 1.0 {
            let retry = (limit.refill_per_second > 0.0)
                .then(|| Duration::from_secs_f64((1.0 - level) / limit.refill_per_second));
            return Err(Refusal::Quota(Resource::Requests, retry));
        }
    }
    Ok(())
}

fn apply_hold(spec: &LevelSpec, e: &mut Entry, amount: Amount, now: u64) {
    let (tw, tp) = window_of(&spec.tokens, now);
    e.tokens.roll(tw, tp);
    e.tokens.held = e.tokens.held.saturating_add(amount.tokens);
    let (cw, cp) = window_of(&spec.cost, now);
    e.cost.roll(cw, cp);
    e.cost.held = e.cost.held.saturating_add(amount.cost_micros);
    note_lifetime(spec, e);
    if let Some(limit) = spec.requests {
        let b = e.bucket.get_or_insert_with(|| Bucket::fresh(limit, now));
        b.limit = limit;
        b.level = b.level_at(now) - 1.0;
        b.at_ms = now;
    }
}

fn note_lifetime(spec: &LevelSpec, e: &mut Entry) {
    match spec.tokens {
        Bound::Lifetime { limit, until_ms } => {
            e.pool = Pool::Limit(limit);
            e.expires_at_ms = e.expires_at_ms.max(until_ms);
        }
        Bound::LifetimeUnlimited { until_ms } => {
            e.pool = Pool::Unlimited;
            e.expires_at_ms = e.expires_at_ms.max(until_ms);
        }
        Bound::Registered { until_ms } => e.expires_at_ms = e.expires_at_ms.max(until_ms),
        _ => {}
    }
}

/// Ends a hold of `held` (nothing for a charge without a hold) and charges
/// `actual`, saturating at [`MAX_AMOUNT`].
fn apply_end(spec: &LevelSpec, e: &mut Entry, held: Amount, actual: Amount, now: u64) {
    e.tokens.held = e.tokens.held.saturating_sub(held.tokens);
    e.cost.held = e.cost.held.saturating_sub(held.cost_micros);
    if actual != Amount::default() {
        let (tw, tp) = window_of(&spec.tokens, now);
        e.tokens.roll(tw, tp);
        e.tokens.used = e.tokens.used.saturating_add(actual.tokens).min(MAX_AMOUNT);
        let (cw, cp) = window_of(&spec.cost, now);
        e.cost.roll(cw, cp);
        e.cost.used = e
            .cost
            .used
            .saturating_add(actual.cost_micros)
            .min(MAX_AMOUNT);
    }
}

/// Quota state in this process's memory, sharded by tenant, bounded per
/// shard and per tenant, with eviction of idle tenants (see the module
/// docs).
///
/// ```
/// use tenant_governance::InProcessLedger;
/// let ledger = InProcessLedger::builder()
///     .shards(16)
///     .capacity(100_000)
///     .max_keys_per_tenant(256)
///     .build();
/// assert_eq!(ledger.len(), 0);
/// ```
#[derive(Debug)]
pub struct InProcessLedger {
    shards: Box<[Mutex<Shard>]>,
    platform: Mutex<Entry>,
    per_shard: usize,
    per_tenant: usize,
    /// The high half of every hold id this ledger issues.
    id: u64,
}

/// Configures an [`InProcessLedger`].
#[derive(Debug, Clone)]
pub struct InProcessLedgerBuilder {
    shards: usize,
    capacity: usize,
    per_tenant: usize,
}

impl InProcessLedgerBuilder {
    /// Number of shards (rounded up to a power of two).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Most keys kept in total.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Most keys one tenant may occupy (default
    /// [`DEFAULT_MAX_KEYS_PER_TENANT`]): its tenant key, one per agent and
    /// one per context with a budget. A tenant at this bound is refused
    /// new keys with [`Error::Overloaded`]; other tenants are not affected.
    pub fn max_keys_per_tenant(mut self, keys: usize) -> Self {
        self.per_tenant = keys.max(1);
        self
    }

    /// Builds the ledger.
    pub fn build(self) -> InProcessLedger {
        let shards = self.shards.next_power_of_two();
        InProcessLedger {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            platform: Mutex::new(Entry::default()),
            per_shard: self.capacity.div_ceil(shards).max(1),
            per_tenant: self.per_tenant,
            id: uuid::Uuid::new_v4().as_u64_pair().0,
        }
    }
}

impl Default for InProcessLedger {
    fn default() -> Self {
        Self::builder().build()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave an entry half-updated in
    // a way that overspends (holds are added last), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shard {
    /// Makes room for `missing` new keys of `tenant`, evicting idle ones.
    fn make_room(
        &mut self,
        tenant: TenantId,
        missing: usize,
        per_shard: usize,
        per_tenant: usize,
        now: u64,
    ) -> Result<()> {
        if missing == 0 {
            return Ok(());
        }
        let mine = |s: &Shard| s.per_tenant.get(&tenant).copied().unwrap_or(0);
        let fits =
            |s: &Shard| s.map.len() + missing <= per_shard && mine(s) + missing <= per_tenant;
        if fits(self) {
            return Ok(());
        }
        let before = self.map.len();
        let per_tenant_counts = &mut self.per_tenant;
        self.map.retain(|key, e| {
            let keep = !e.idle(now);
            if !keep {
                if let Some(t) = key.tenant() {
                    if let Some(n) = per_tenant_counts.get_mut(&t) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            keep
        });
        self.per_tenant.retain(|_, n| *n > 0);
        tracing::debug!(
            evicted = before - self.map.len(),
            "in-process ledger evicted idle keys"
        );
        if mine(self) + missing > per_tenant {
            Err(Error::Overloaded {
                reason: format!("the tenant keeps {per_tenant} ledger keys in this process"),
            })
        } else if self.map.len() + missing > per_shard {
            Err(Error::ledger_unavailable(
                "in-process ledger is full of active tenants",
            ))
        } else {
            Ok(())
        }
    }

    /// The entry for `key`, created (and counted) if missing.
    fn entry(&mut self, key: &LevelKey) -> &mut Entry {
        if !self.map.contains_key(key) {
            if let Some(t) = key.tenant() {
                *self.per_tenant.entry(t).or_default() += 1;
            }
        }
        self.map.entry(key.clone()).or_default()
    }
}

impl InProcessLedger {
    /// [`DEFAULT_SHARDS`] shards, [`DEFAULT_CAPACITY`] keys,
    /// [`DEFAULT_MAX_KEYS_PER_TENANT`] keys per tenant.
    pub fn builder() -> InProcessLedgerBuilder {
        InProcessLedgerBuilder {
            shards: DEFAULT_SHARDS,
            capacity: DEFAULT_CAPACITY,
            per_tenant: DEFAULT_MAX_KEYS_PER_TENANT,
        }
    }

    /// Number of keys currently kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, tenant: &TenantId) -> &Mutex<Shard> {
        let b = tenant.as_bytes();
        let mut h = [0u8; 8];
        h.copy_from_slice(&b[8..16]);
        let mut hasher = KeyHasher::default();
        hasher.write_u64(u64::from_le_bytes(h));
        let idx = (hasher.finish() >> 32) as usize & (self.shards.len() - 1);
        &self.shards[idx]
    }

    /// Runs `f` with the tenant's shard and the platform entry locked
    /// (always in that order, so two requests cannot deadlock).
    fn with_locked<R>(
        &self,
        tenant: Option<TenantId>,
        levels: &[LevelSpec],
        f: impl FnOnce(Option<&mut Shard>, Option<&mut Entry>) -> Result<R>,
    ) -> Result<R> {
        let needs_platform = levels.iter().any(|l| l.key == LevelKey::Platform);
        let mut shard = tenant.map(|t| lock(self.shard_of(&t)));
        let mut platform = needs_platform.then(|| lock(&self.platform));
        f(shard.as_deref_mut(), platform.as_deref_mut())
    }

    fn reserve_now(&self, request: &HoldRequest, now: u64) -> Result<Hold> {
        let tenant = request.validate()?;
        let levels = &request.levels;
        let amount = request.amount;
        self.with_locked(tenant, levels, |mut shard, mut platform| {
            let mut missing = 0;
            for spec in levels.iter() {
                let entry = match (&spec.key, shard.as_deref(), platform.as_deref()) {
                    (LevelKey::Platform, _, Some(p)) => Some(p),
                    (_, Some(s), _) => {
                        let e = s.map.get(&spec.key);
                        missing += usize::from(e.is_none());
                        e
                    }
                    _ => None,
                };
                match check_level(spec, entry, amount, now) {
                    Ok(()) => {}
                    Err(Refusal::Quota(resource, retry_after)) => {
                        return Err(Error::QuotaExceeded {
                            level: spec.key.level(),
                            resource,
                            retry_after,
                        })
                    }
                    Err(Refusal::Unregistered) => return Err(Error::AncestorNotRegistered),
                    Err(Refusal::OutOfRange) => {
                        return Err(Error::AmountOutOfRange {
                            what: "the amount held at one level",
                            value: amount.tokens.max(amount.cost_micros),
                            max: MAX_AMOUNT,
                        })
                    }
                }
            }
            if let (Some(s), Some(t)) = (shard.as_deref_mut(), tenant) {
                s.make_room(t, missing, self.per_shard, self.per_tenant, now)?;
            }
            for spec in levels.iter() {
                if let Some(e) = entry_mut(spec, shard.as_deref_mut(), platform.as_deref_mut()) {
                    apply_hold(spec, e, amount, now);
                }
            }
            Ok(Hold::issued(self.id, self.id, request))
        })
    }

    /// Ends `held` at `levels` and charges `actual`.
    fn end_now(&self, levels: &[LevelSpec], held: Amount, actual: Amount) {
        let now = now_ms();
        let tenant = levels.iter().find_map(|l| l.key.tenant());
        let _ = self.with_locked(tenant, levels, |mut shard, mut platform| {
            for spec in levels.iter() {
                if let Some(e) = entry_mut(spec, shard.as_deref_mut(), platform.as_deref_mut()) {
                    apply_end(spec, e, held, actual, now);
                }
            }
            Ok(())
        });
    }

    /// A hold this ledger issued, else [`Error::UnknownHold`].
    fn own(&self, hold: &Hold) -> Result<()> {
        if hold.ledger == self.id {
            Ok(())
        } else {
            Err(Error::UnknownHold)
        }
    }
}

/// The entry for `spec`, created if missing (room was made beforehand).
fn entry_mut<'a>(
    spec: &LevelSpec,
    shard: Option<&'a mut Shard>,
    platform: Option<&'a mut Entry>,
) -> Option<&'a mut Entry> {
    match (&spec.key, shard, platform) {
        (LevelKey::Platform, _, p) => p,
        (key, Some(s), _) => Some(s.entry(key)),
        _ => None,
    }
}

#[async_trait]
impl Ledger for InProcessLedger {
    fn kind(&self) -> &'static str {
        "in_process"
    }

    async fn reserve(&self, request: &HoldRequest) -> Result<Hold> {
        self.reserve_now(request, now_ms())
    }

    async fn settle(&self, hold: Hold, actual: Amount) -> Result<()> {
        self.settle_now(hold, actual)
    }

    async fn release(&self, hold: Hold) -> Result<()> {
        self.own(&hold)?;
        self.end_now(&hold.levels, hold.amount, Amount::default());
        Ok(())
    }

    fn release_detached(&self, hold: Hold) {
        if self.own(&hold).is_ok() {
            self.end_now(&hold.levels, hold.amount, Amount::default());
        } else {
            tracing::warn!(hold = %hold.id, "a hold this ledger did not issue was dropped into it; ignored");
        }
    }

    fn charge_detached(&self, levels: Arc<[LevelSpec]>, amount: Amount) {
        self.end_now(&levels, Amount::default(), amount.saturated());
    }

    async fn register(&self, level: &LevelSpec) -> Result<()> {
        let now = now_ms();
        level.validate()?;
        let tenant = level.key.tenant();
        self.with_locked(tenant, std::slice::from_ref(level), |shard, platform| {
            match (shard, tenant) {
                (Some(s), Some(t)) => {
                    let missing = usize::from(!s.map.contains_key(&level.key));
                    s.make_room(t, missing, self.per_shard, self.per_tenant, now)?;
                    note_lifetime(level, s.entry(&level.key));
                }
                _ => {
                    if let Some(e) = platform {
                        note_lifetime(level, e);
                    }
                }
            }
            Ok(())
        })
    }

    async fn usage(&self, level: &LevelSpec) -> Result<LevelUsage> {
        let now = now_ms();
        self.with_locked(
            level.key.tenant(),
            std::slice::from_ref(level),
            |shard, platform| {
                let e = match (&level.key, shard, platform) {
                    (LevelKey::Platform, _, Some(p)) => Some(p.clone()),
                    (k, Some(s), _) => s.map.get(k).cloned(),
                    _ => None,
                }
                .unwrap_or_default();
                let (tw, _) = window_of(&level.tokens, now);
                let (cw, _) = window_of(&level.cost, now);
                Ok(LevelUsage {
                    tokens_used: e.tokens.used_now(tw),
                    tokens_held: e.tokens.held,
                    cost_used: e.cost.used_now(cw),
                    cost_held: e.cost.held,
                })
            },
        )
    }
}

impl InProcessLedger {
    /// A synchronous reserve for hot paths that are not async (and for
    /// benchmarks): the same check-and-hold as [`Ledger::reserve`].
    ///
    /// # Errors
    ///
    /// As [`Ledger::reserve`].
    pub fn try_reserve(&self, request: &HoldRequest) -> Result<Hold> {
        self.reserve_now(request, now_ms())
    }

    /// A synchronous settle: ends the hold and charges `actual`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownHold`] for a hold this ledger did not issue;
    /// [`Error::AmountOutOfRange`] for an amount above
    /// [`MAX_AMOUNT`](crate::MAX_AMOUNT), which is charged saturated (the
    /// call happened) and the hold ended all the same.
    pub fn settle_now(&self, hold: Hold, actual: Amount) -> Result<()> {
        self.own(&hold)?;
        let checked = actual.bounded("the settled usage");
        self.end_now(&hold.levels, hold.amount, actual.saturated());
        checked.map(drop)
    }
}
