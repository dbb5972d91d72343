//! [`InProcessLedger`]: quota state in this process's memory.
//!
//! Sharded by tenant: every key of one tenant lives in the same shard (a
//! `Mutex` around a small hash map), so a reservation locks one shard, plus
//! the platform entry when a platform limit is set, and tenants in different
//! shards never contend. Memory is bounded: a shard holds at most
//! `capacity / shards` keys, and when it is full, entries that are *idle*
//! (their state is indistinguishable from a fresh one: nothing held, no use
//! in the current period, a full request bucket, or an expired context) are
//! evicted. Eviction therefore never forgets usage that still matters; a
//! shard full of busy tenants refuses new keys with
//! [`Error::LedgerUnavailable`] rather than growing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::ledger::{
    duration_ms, now_ms, Bound, Hold, HoldRequest, Ledger, LevelKey, LevelSpec, LevelUsage,
    Resource,
};
use crate::policy::RateLimit;
use crate::pricing::Amount;

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;
/// Default bound on the number of keys kept.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

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

#[derive(Clone, Debug, Default)]
struct Entry {
    tokens: Counter,
    cost: Counter,
    bucket: Option<Bucket>,
    lifetime_limit: Option<u64>,
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

/// Refusal: which resource and when it refills.
type Refusal = (Resource, Option<Duration>);

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
    lifetime_limit: Option<u64>,
    amount: u64,
    resource: Resource,
    now: u64,
) -> std::result::Result<(), Refusal> {
    let (limit, used, retry) = match *bound {
        Bound::Unlimited => return Ok(()),
        Bound::Periodic(b) => {
            let p = duration_ms(b.period).max(1);
            let retry = Duration::from_millis(p - now % p);
            (b.limit, counter.used_now(now / p), Some(retry))
        }
        Bound::Lifetime { limit, .. } => (limit, counter.used, None),
        Bound::Registered { .. } => match lifetime_limit {
            Some(limit) => (limit, counter.used, None),
            None => return Ok(()),
        },
    };
    if used.saturating_add(counter.held).saturating_add(amount) > limit {
        Err((resource, retry))
    } else {
        Ok(())
    }
}

fn check_level(
    spec: &LevelSpec,
    entry: Option<&Entry>,
    amount: Amount,
    take_request: bool,
    now: u64,
) -> std::result::Result<(), Refusal> {
    let empty = Entry::default();
    let e = entry.unwrap_or(&empty);
    check_bound(
        &spec.tokens,
        &e.tokens,
        e.lifetime_limit,
        amount.tokens,
        Resource::Tokens,
        now,
    )?;
    check_bound(
        &spec.cost,
        &e.cost,
        None,
        amount.cost_micros,
        Resource::Cost,
        now,
    )?;
    if let (Some(limit), true) = (spec.requests, take_request) {
        let level = e
            .bucket
            .map_or(f64::from(limit.capacity), |b| b.level_at(now));
        if level < 1.0 {
            let retry = (limit.refill_per_second > 0.0)
                .then(|| Duration::from_secs_f64((1.0 - level) / limit.refill_per_second));
            return Err((Resource::Requests, retry));
        }
    }
    Ok(())
}

fn apply_hold(spec: &LevelSpec, e: &mut Entry, amount: Amount, take_request: bool, now: u64) {
    let (tw, tp) = window_of(&spec.tokens, now);
    e.tokens.roll(tw, tp);
    e.tokens.held = e.tokens.held.saturating_add(amount.tokens);
    let (cw, cp) = window_of(&spec.cost, now);
    e.cost.roll(cw, cp);
    e.cost.held = e.cost.held.saturating_add(amount.cost_micros);
    note_lifetime(spec, e);
    if let (Some(limit), true) = (spec.requests, take_request) {
        let b = e.bucket.get_or_insert_with(|| Bucket::fresh(limit, now));
        b.limit = limit;
        b.level = b.level_at(now) - 1.0;
        b.at_ms = now;
    }
}

fn note_lifetime(spec: &LevelSpec, e: &mut Entry) {
    match spec.tokens {
        Bound::Lifetime { limit, until_ms } => {
            e.lifetime_limit = Some(limit);
            e.expires_at_ms = e.expires_at_ms.max(until_ms);
        }
        Bound::Registered { until_ms } => e.expires_at_ms = e.expires_at_ms.max(until_ms),
        _ => {}
    }
}

fn apply_end(spec: &LevelSpec, e: &mut Entry, held: Amount, actual: Amount, now: u64) {
    e.tokens.held = e.tokens.held.saturating_sub(held.tokens);
    e.cost.held = e.cost.held.saturating_sub(held.cost_micros);
    if actual != Amount::default() {
        let (tw, tp) = window_of(&spec.tokens, now);
        e.tokens.roll(tw, tp);
        e.tokens.used = e.tokens.used.saturating_add(actual.tokens);
        let (cw, cp) = window_of(&spec.cost, now);
        e.cost.roll(cw, cp);
        e.cost.used = e.cost.used.saturating_add(actual.cost_micros);
    }
}

/// Quota state in this process's memory, sharded by tenant, bounded, with
/// eviction of idle tenants (see the module docs).
///
/// ```
/// use tenant_governance::InProcessLedger;
/// let ledger = InProcessLedger::builder().shards(16).capacity(100_000).build();
/// assert_eq!(ledger.len(), 0);
/// ```
#[derive(Debug)]
pub struct InProcessLedger {
    shards: Box<[Mutex<Map>]>,
    platform: Mutex<Entry>,
    per_shard: usize,
}

/// Configures an [`InProcessLedger`].
#[derive(Debug, Clone)]
pub struct InProcessLedgerBuilder {
    shards: usize,
    capacity: usize,
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

    /// Builds the ledger.
    pub fn build(self) -> InProcessLedger {
        let shards = self.shards.next_power_of_two();
        InProcessLedger {
            shards: (0..shards).map(|_| Mutex::new(Map::default())).collect(),
            platform: Mutex::new(Entry::default()),
            per_shard: self.capacity.div_ceil(shards).max(1),
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

impl InProcessLedger {
    /// [`DEFAULT_SHARDS`] shards, [`DEFAULT_CAPACITY`] keys.
    pub fn builder() -> InProcessLedgerBuilder {
        InProcessLedgerBuilder {
            shards: DEFAULT_SHARDS,
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// Number of keys currently kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, tenant: &tenant_core::TenantId) -> &Mutex<Map> {
        let b = tenant.as_bytes();
        let mut h = [0u8; 8];
        h.copy_from_slice(&b[8..16]);
        // Random (v4) tenant ids: the low bits are uniformly distributed.
        let idx = (u64::from_le_bytes(h) as usize) & (self.shards.len() - 1);
        &self.shards[idx]
    }

    /// The one tenant of a request's non-platform levels.
    fn tenant_of(levels: &[LevelSpec]) -> Result<Option<tenant_core::TenantId>> {
        let mut tenant = None;
        for l in levels {
            if let Some(t) = l.key.tenant() {
                match tenant {
                    None => tenant = Some(t),
                    Some(prev) if prev != t => {
                        return Err(Error::InvalidConfiguration(
                            "one request's levels must belong to one tenant".into(),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(tenant)
    }

    /// Runs `f` with the tenant's shard and the platform entry locked
    /// (always in that order, so two requests cannot deadlock).
    fn with_locked<R>(
        &self,
        levels: &[LevelSpec],
        f: impl FnOnce(Option<&mut Map>, Option<&mut Entry>) -> Result<R>,
    ) -> Result<R> {
        let tenant = Self::tenant_of(levels)?;
        let needs_platform = levels.iter().any(|l| l.key == LevelKey::Platform);
        let mut shard = tenant.map(|t| lock(self.shard_of(&t)));
        let mut platform = needs_platform.then(|| lock(&self.platform));
        f(shard.as_deref_mut(), platform.as_deref_mut())
    }

    /// Makes room for `missing` new keys, evicting idle ones.
    fn make_room(&self, map: &mut Map, missing: usize, now: u64) -> Result<()> {
        if map.len() + missing <= self.per_shard {
            return Ok(());
        }
        let before = map.len();
        map.retain(|_, e| !e.idle(now));
        tracing::debug!(
            evicted = before - map.len(),
            "in-process ledger evicted idle keys"
        );
        if map.len() + missing <= self.per_shard {
            Ok(())
        } else {
            Err(Error::LedgerUnavailable {
                reason: "in-process ledger is full of active tenants".into(),
            })
        }
    }

    fn reserve_now(&self, request: &HoldRequest, take_request: bool, now: u64) -> Result<Hold> {
        let levels = &request.levels;
        let amount = request.amount;
        self.with_locked(levels, |mut map, mut platform| {
            let mut missing = 0;
            for spec in levels.iter() {
                let entry = match (&spec.key, map.as_deref(), platform.as_deref()) {
                    (LevelKey::Platform, _, Some(p)) => Some(p),
                    (_, Some(m), _) => {
                        let e = m.get(&spec.key);
                        missing += usize::from(e.is_none());
                        e
                    }
                    _ => None,
                };
                if let Err((resource, retry_after)) =
                    check_level(spec, entry, amount, take_request, now)
                {
                    return Err(Error::QuotaExceeded {
                        level: spec.key.level(),
                        resource,
                        retry_after,
                    });
                }
            }
            if let Some(m) = map.as_deref_mut() {
                self.make_room(m, missing, now)?;
            }
            for spec in levels.iter() {
                if let Some(e) = entry_mut(spec, map.as_deref_mut(), platform.as_deref_mut()) {
                    apply_hold(spec, e, amount, take_request, now);
                }
            }
            Ok(Hold::new(request))
        })
    }

    fn end_now(&self, hold: &Hold, actual: Amount) {
        let now = now_ms();
        // `tenant_of` only fails for requests that were refused at reserve.
        let _ = self.with_locked(&hold.levels, |mut map, mut platform| {
            for spec in hold.levels.iter() {
                if let Some(e) = entry_mut(spec, map.as_deref_mut(), platform.as_deref_mut()) {
                    apply_end(spec, e, hold.amount, actual, now);
                }
            }
            Ok(())
        });
    }
}

/// The entry for `spec`, created if missing (room was made beforehand).
fn entry_mut<'a>(
    spec: &LevelSpec,
    map: Option<&'a mut Map>,
    platform: Option<&'a mut Entry>,
) -> Option<&'a mut Entry> {
    match (&spec.key, map, platform) {
        (LevelKey::Platform, _, p) => p,
        (key, Some(m), _) => Some(m.entry(key.clone()).or_default()),
        _ => None,
    }
}

#[async_trait]
impl Ledger for InProcessLedger {
    async fn reserve(&self, request: &HoldRequest) -> Result<Hold> {
        self.reserve_now(request, true, now_ms())
    }

    async fn settle(&self, hold: &Hold, actual: Amount) -> Result<()> {
        self.end_now(hold, actual);
        Ok(())
    }

    async fn release(&self, hold: &Hold) -> Result<()> {
        self.end_now(hold, Amount::default());
        Ok(())
    }

    fn release_detached(&self, hold: Hold) {
        self.end_now(&hold, Amount::default());
    }

    async fn register(&self, level: &LevelSpec) -> Result<()> {
        let now = now_ms();
        let levels = std::slice::from_ref(level);
        self.with_locked(levels, |map, platform| {
            if let Some(m) = map.as_deref() {
                let missing = usize::from(!m.contains_key(&level.key));
                if let Some(m) = map {
                    self.make_room(m, missing, now)?;
                    if let Some(e) = entry_mut(level, Some(m), None) {
                        note_lifetime(level, e);
                    }
                }
            } else if let Some(e) = platform {
                note_lifetime(level, e);
            }
            Ok(())
        })
    }

    async fn usage(&self, level: &LevelSpec) -> Result<LevelUsage> {
        let now = now_ms();
        self.with_locked(std::slice::from_ref(level), |map, platform| {
            let e = match (&level.key, map, platform) {
                (LevelKey::Platform, _, Some(p)) => Some(p.clone()),
                (k, Some(m), _) => m.get(k).cloned(),
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
        })
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
        self.reserve_now(request, true, now_ms())
    }

    /// A synchronous settle.
    pub fn settle_now(&self, hold: &Hold, actual: Amount) {
        self.end_now(hold, actual);
    }
}
