//! The [`Ledger`] trait: where quota state lives.
//!
//! A ledger keeps, per [`LevelKey`], the weighted tokens and cost used in the
//! current period, the amounts held by outstanding reservations, a request
//! token bucket, and (for contexts) a lifetime token budget. Its one hard
//! promise: [`Ledger::reserve`] checks *every* level of a request and holds
//! the amount at all of them in one atomic step, so concurrent callers
//! (tasks, threads or processes sharing the ledger) can never together pass
//! a limit.
//!
//! Two implementations: [`InProcessLedger`](crate::InProcessLedger) and,
//! with the `redis` feature, [`RedisLedger`](crate::RedisLedger).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tenant_core::{AgentId, ContextId, TenantId};

use crate::error::{Error, Result};
use crate::policy::{PeriodBudget, RateLimit};
use crate::pricing::{Amount, MAX_AMOUNT};

/// A level of the quota hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaLevel {
    /// The platform total, shared by every tenant.
    Platform,
    /// One tenant.
    Tenant,
    /// One agent (by agent id) within a tenant, from the tenant policy.
    Agent,
    /// A context's own token budget (`Capabilities::token_budget`), or an
    /// ancestor's: delegated contexts draw from their parents' pools.
    Context,
}

impl fmt::Display for QuotaLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaLevel::Platform => "platform",
            QuotaLevel::Tenant => "tenant",
            QuotaLevel::Agent => "agent",
            QuotaLevel::Context => "context",
        })
    }
}

/// The resource a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// Weighted tokens.
    Tokens,
    /// Cost.
    Cost,
    /// Request rate.
    Requests,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Tokens => "token",
            Resource::Cost => "cost",
            Resource::Requests => "request-rate",
        })
    }
}

/// Which counter set a level uses. Built by [`Quotas`](crate::Quotas) from a
/// context; the tenant always comes from the verified context.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LevelKey {
    /// The platform total.
    Platform,
    /// A tenant.
    Tenant(TenantId),
    /// An agent within a tenant.
    Agent(TenantId, AgentId),
    /// A context (by id) within a tenant.
    Context(TenantId, ContextId),
}

impl LevelKey {
    /// The level this key belongs to.
    pub fn level(&self) -> QuotaLevel {
        match self {
            LevelKey::Platform => QuotaLevel::Platform,
            LevelKey::Tenant(_) => QuotaLevel::Tenant,
            LevelKey::Agent(..) => QuotaLevel::Agent,
            LevelKey::Context(..) => QuotaLevel::Context,
        }
    }

    /// The tenant, for every level but the platform.
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            LevelKey::Platform => None,
            LevelKey::Tenant(t) | LevelKey::Agent(t, _) | LevelKey::Context(t, _) => Some(*t),
        }
    }

    /// A text form, unique per key (`p`, `t:<tenant>`, `a:<tenant>:<agent>`,
    /// `c:<tenant>:<context>`; the tenant has a fixed length, so the agent
    /// name cannot make two keys collide).
    pub fn render(&self) -> String {
        match self {
            LevelKey::Platform => "p".to_owned(),
            LevelKey::Tenant(t) => format!("t:{t}"),
            LevelKey::Agent(t, a) => format!("a:{t}:{a}"),
            LevelKey::Context(t, c) => format!("c:{t}:{}", hex::encode(c.as_bytes())),
        }
    }
}

/// A limit on one resource at one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bound {
    /// No limit.
    Unlimited,
    /// A budget that resets every period.
    Periodic(PeriodBudget),
    /// A budget for the lifetime of a context, which ends at `until_ms`
    /// (Unix milliseconds). The ledger stores the limit, so descendants can
    /// refer to it with [`Bound::Registered`].
    Lifetime {
        /// The budget.
        limit: u64,
        /// When the context expires (Unix ms).
        until_ms: u64,
    },
    /// A context without a budget of its own: nothing to enforce, but the
    /// ledger records that the context's pool is unlimited, so descendants
    /// referring to it with [`Bound::Registered`] know it was registered.
    LifetimeUnlimited {
        /// When the context expires (Unix ms).
        until_ms: u64,
    },
    /// The lifetime limit stored earlier for this key by a
    /// [`Bound::Lifetime`] or [`Bound::LifetimeUnlimited`] (an ancestor
    /// context's pool). A reservation naming a key for which nothing was
    /// stored is refused with
    /// [`Error::AncestorNotRegistered`](crate::Error::AncestorNotRegistered).
    Registered {
        /// When the descendant asking expires (Unix ms); the key is kept at
        /// least until then.
        until_ms: u64,
    },
}

impl Bound {
    pub(crate) fn retention_ms(&self, now_ms: u64) -> u64 {
        match self {
            Bound::Unlimited => 0,
            Bound::Periodic(b) => 2 * duration_ms(b.period),
            Bound::Lifetime { until_ms, .. }
            | Bound::LifetimeUnlimited { until_ms }
            | Bound::Registered { until_ms } => until_ms.saturating_sub(now_ms),
        }
    }

    /// The limit to enforce now, at most [`MAX_AMOUNT`] (a larger limit is
    /// never reached before the counters saturate).
    pub(crate) fn clamped(limit: u64) -> u64 {
        limit.min(MAX_AMOUNT)
    }
}

/// One level of a request: its key and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelSpec {
    /// Whose counters.
    pub key: LevelKey,
    /// Weighted-token limit.
    pub tokens: Bound,
    /// Cost limit.
    pub cost: Bound,
    /// Request-rate limit.
    pub requests: Option<RateLimit>,
}

impl LevelSpec {
    /// Checks what a ledger cannot represent: a request refill rate that is
    /// not a finite, non-negative number.
    ///
    /// # Errors
    ///
    /// [`Error::AmountOutOfRange`](crate::Error::AmountOutOfRange).
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = self.requests {
            if !(r.refill_per_second.is_finite() && r.refill_per_second >= 0.0) {
                return Err(Error::AmountOutOfRange {
                    what: "request refill rate",
                    value: if r.refill_per_second.is_finite() {
                        0
                    } else {
                        u64::MAX
                    },
                    max: MAX_AMOUNT,
                });
            }
        }
        Ok(())
    }

    /// How long the ledger should keep this level's state after a write
    /// (milliseconds): two periods, the context's remaining lifetime, the
    /// bucket's refill time, and the hold time, whichever is longest, plus
    /// a minute.
    pub fn retention_ms(&self, now_ms: u64, hold_ttl: Duration) -> u64 {
        let bucket = self.requests.map_or(0, |r| {
            if r.refill_per_second > 0.0 {
                ((f64::from(r.capacity) / r.refill_per_second) * 2000.0).min(1e12) as u64
            } else {
                86_400_000
            }
        });
        self.tokens
            .retention_ms(now_ms)
            .max(self.cost.retention_ms(now_ms))
            .max(bucket)
            .max(2 * duration_ms(hold_ttl))
            .saturating_add(60_000)
    }
}

/// A reservation request: hold `amount` at every level, for at most `ttl`
/// (after which a hold nobody settled or released is charged at its amount).
#[derive(Clone, Debug)]
pub struct HoldRequest {
    /// Every level to check and charge: the platform and levels of one
    /// tenant.
    pub levels: Arc<[LevelSpec]>,
    /// What to hold.
    pub amount: Amount,
    /// How long the hold lives without settlement.
    pub ttl: Duration,
}

impl HoldRequest {
    /// Checks the request before any ledger state is touched: the amount is
    /// within [`MAX_AMOUNT`], every level is representable
    /// ([`LevelSpec::validate`]), and the levels belong to one tenant (plus
    /// the platform). Returns that tenant.
    ///
    /// # Errors
    ///
    /// [`Error::AmountOutOfRange`](crate::Error::AmountOutOfRange), or
    /// [`Error::InvalidConfiguration`](crate::Error::InvalidConfiguration)
    /// for levels of several tenants.
    pub fn validate(&self) -> Result<Option<TenantId>> {
        self.amount.bounded("the amount to hold")?;
        let mut tenant = None;
        for level in self.levels.iter() {
            level.validate()?;
            if let Some(t) = level.key.tenant() {
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
}

/// An amount held at every level of a request, until settled or released.
///
/// Not `Clone`: settling or releasing consumes it, so a hold ends at most
/// once. A ledger accepts only holds it issued itself
/// ([`Error::UnknownHold`](crate::Error::UnknownHold) otherwise). A hold
/// dropped without being settled or released keeps counting until the
/// ledger charges it at its amount (see the ledger's docs).
#[derive(Debug)]
pub struct Hold {
    pub(crate) id: uuid::Uuid,
    /// The ledger that issued it.
    pub(crate) ledger: u64,
    pub(crate) levels: Arc<[LevelSpec]>,
    pub(crate) amount: Amount,
}

impl Hold {
    /// A new hold for `request`, for ledgers implemented outside this crate.
    ///
    /// Ids are a random per-process prefix plus a counter: unique across
    /// processes sharing a ledger without a random draw per hold. The
    /// ledgers of this crate issue their own holds and refuse holds made
    /// here.
    pub fn new(request: &HoldRequest) -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
        Self::issued(prefix, prefix, request)
    }

    /// A hold issued by ledger `ledger`, whose id starts with `prefix` (the
    /// issuing ledger instance), then a per-process counter.
    pub(crate) fn issued(ledger: u64, prefix: u64, request: &HoldRequest) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            id: uuid::Uuid::from_u64_pair(prefix, n),
            ledger,
            levels: Arc::clone(&request.levels),
            amount: request.amount,
        }
    }

    /// The same hold with other levels: one part of a hold that spans
    /// several Redis key groups, or a second handle to it inside the crate
    /// (a release of a reservation whose caller gave up).
    #[cfg(feature = "redis")]
    pub(crate) fn part(&self, levels: Arc<[LevelSpec]>) -> Self {
        Self {
            id: self.id,
            ledger: self.ledger,
            levels,
            amount: self.amount,
        }
    }

    /// A charge of usage without a hold, on `levels`: a hold of no
    /// instance, holding nothing.
    #[cfg(feature = "redis")]
    pub(crate) fn unheld(ledger: u64, levels: Arc<[LevelSpec]>) -> Self {
        Self {
            id: uuid::Uuid::from_u64_pair(0, 0),
            ledger,
            levels,
            amount: Amount::default(),
        }
    }

    /// The high half of the id: the issuing ledger instance (0: none).
    #[cfg(feature = "redis")]
    pub(crate) fn issuer(&self) -> u64 {
        self.id.as_u64_pair().0
    }

    /// Its unique id.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// The levels it holds at.
    pub fn levels(&self) -> &[LevelSpec] {
        &self.levels
    }

    /// The amount held.
    pub fn amount(&self) -> Amount {
        self.amount
    }
}

/// A level's state in the current period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelUsage {
    /// Weighted tokens settled in the current period (or lifetime).
    pub tokens_used: u64,
    /// Weighted tokens held by outstanding reservations.
    pub tokens_held: u64,
    /// Cost settled in the current period.
    pub cost_used: u64,
    /// Cost held by outstanding reservations.
    pub cost_held: u64,
}

/// Where quota state lives. See the module docs for the atomicity promise.
///
/// Every implementation keeps this invariant at every level key: a
/// reservation is granted only if `used + held + amount ≤ limit`, where
/// `held` counts every hold granted and not yet ended, and a hold ends only
/// by being settled (its actual usage charged), released by its owner, or
/// charged at its amount when it expires. Nothing else ever lowers `used`
/// or `held`.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Checks every level of `request` and, only if all allow it, holds the
    /// amount at all of them and takes one request from each bucket.
    ///
    /// # Errors
    ///
    /// [`Error::QuotaExceeded`](crate::Error::QuotaExceeded) naming the
    /// first refusing level,
    /// [`Error::AncestorNotRegistered`](crate::Error::AncestorNotRegistered),
    /// [`Error::AmountOutOfRange`](crate::Error::AmountOutOfRange) (nothing
    /// changed in each case), [`Error::Overloaded`](crate::Error::Overloaded)
    /// or [`Error::LedgerUnavailable`](crate::Error::LedgerUnavailable).
    async fn reserve(&self, request: &HoldRequest) -> Result<Hold>;

    /// A short name of the ledger for metrics (`in_process`, `redis`).
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// Ends a hold and charges `actual` (which may differ from the held
    /// amount) to the current period of every level. Charging happens even
    /// when the hold has already expired: the call did happen (an expired
    /// hold was charged at its amount; the settlement then adds what
    /// `actual` exceeds it by).
    ///
    /// A ledger may *defer* it: return once it is queued, and apply it
    /// before any later operation of this ledger handle, retrying until it
    /// is applied exactly once ([`RedisLedger`](crate::RedisLedger) does by
    /// default). [`Ledger::flush`] waits until everything queued is applied.
    async fn settle(&self, hold: Hold, actual: Amount) -> Result<()>;

    /// Ends a hold without charging anything. May be deferred, as
    /// [`Ledger::settle`].
    async fn release(&self, hold: Hold) -> Result<()>;

    /// Ends a hold from a synchronous context (a dropped reservation). Must
    /// not block; may complete later. If it never completes (the process
    /// dies), the hold is charged at its amount when it expires.
    fn release_detached(&self, hold: Hold);

    /// Charges `amount` to `levels` without a hold: usage admitted while the
    /// ledger was unreachable (a fail-open allowance). Must not block; the
    /// ledger applies it exactly once, retrying until it can.
    fn charge_detached(&self, levels: Arc<[LevelSpec]>, amount: Amount);

    /// Stores lifetime limits ([`Bound::Lifetime`]) of `level` without
    /// reserving anything, so descendants see them.
    async fn register(&self, level: &LevelSpec) -> Result<()>;

    /// The current state of `level`.
    async fn usage(&self, level: &LevelSpec) -> Result<LevelUsage>;

    /// Waits until every settlement and release this ledger has deferred
    /// so far is applied. Call it before the process exits: deferred work
    /// still queued when the runtime shuts down is lost (its holds then
    /// expire with the ledger's lease, uncharged). The default does
    /// nothing, for ledgers that never defer.
    ///
    /// # Errors
    ///
    /// [`Error::LedgerUnavailable`](crate::Error::LedgerUnavailable) when
    /// that does not happen in time; the work stays queued and is retried.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}
