//! [`RedisLedger`]: quota state in Redis, shared by every replica.
//!
//! Every operation is one Lua script (`redis_ledger.lua`), so a reservation
//! checks all levels and holds the amount at all of them atomically on the
//! server, whichever process sends it. The script reads the server clock
//! (`TIME`) for periods and hold expiry, so replicas with skewed clocks
//! still agree.
//!
//! **Holds and crashes.** A reservation is recorded as a hash with the
//! levels and amounts, indexed in a sorted set by expiry (`hold_ttl`). Every
//! reserve first reclaims up to 32 expired holds, so reservations of a
//! process that died (or a dropped reservation whose release could not be
//! delivered) stop counting after `hold_ttl`. Dropping a [`Reservation`]
//! cannot run async code, so [`Ledger::release_detached`] hands the hold to
//! a background task over a channel; if that task cannot reach Redis, the
//! TTL is the safety net.
//!
//! **Failure.** Every command runs under `op_timeout`; a connection error,
//! timeout or script error is [`Error::LedgerUnavailable`]. The connection
//! manager reconnects by itself, and the script is re-loaded after a Redis
//! restart (`NOSCRIPT` is handled), so service resumes without restarting
//! the process.
//!
//! Keys: `<prefix>:<level key>` per level, `<prefix>:holds` and
//! `<prefix>:h:<id>`. The script touches keys derived at run time (the
//! records of expired holds), so it targets a single Redis primary, not
//! Redis Cluster.
//!
//! [`Reservation`]: crate::Reservation

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::ledger::{
    duration_ms, now_ms, Bound, Hold, HoldRequest, Ledger, LevelSpec, LevelUsage, Resource,
};
use crate::pricing::Amount;

const SCRIPT: &str = include_str!("redis_ledger.lua");

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "tg";

/// Configures a [`RedisLedger`].
#[derive(Debug, Clone)]
pub struct RedisLedgerBuilder {
    url: Option<String>,
    prefix: String,
    op_timeout: Duration,
    hold_ttl: Duration,
}

impl RedisLedgerBuilder {
    /// The server, e.g. `redis://127.0.0.1:6379`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Prefix of every key (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Upper bound on one ledger operation, connection included (default
    /// 500 ms). Past it the operation fails with `LedgerUnavailable`.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Fallback TTL of holds whose request did not say (default 10 min).
    pub fn hold_ttl(mut self, ttl: Duration) -> Self {
        self.hold_ttl = ttl;
        self
    }

    /// Connects lazily (the first operation connects) and starts the
    /// background release task. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a missing or malformed URL.
    pub fn build(self) -> Result<RedisLedger> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfiguration("RedisLedger must be built inside a Tokio runtime".into())
        })?;
        let url = self
            .url
            .ok_or_else(|| Error::InvalidConfiguration("RedisLedger needs a url".into()))?;
        let client = redis::Client::open(url.as_str())
            .map_err(|e| Error::InvalidConfiguration(format!("bad Redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            script: Script::new(SCRIPT),
            prefix: self.prefix,
            op_timeout: self.op_timeout,
        });
        runtime.spawn(release_task(Arc::clone(&inner), rx));
        Ok(RedisLedger {
            inner,
            releases: tx,
            hold_ttl: self.hold_ttl,
        })
    }
}

struct Inner {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    op_timeout: Duration,
}

/// Quota state in Redis, shared across processes (see the module docs).
///
/// ```no_run
/// # async fn demo() -> Result<(), tenant_governance::Error> {
/// use tenant_governance::RedisLedger;
/// let ledger = RedisLedger::builder().url("redis://127.0.0.1:6379").prefix("quota").build()?;
/// # Ok(()) }
/// ```
pub struct RedisLedger {
    inner: Arc<Inner>,
    releases: mpsc::UnboundedSender<Hold>,
    hold_ttl: Duration,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::LedgerUnavailable {
        reason: format!("redis: {e}"),
    }
}

async fn release_task(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Hold>) {
    while let Some(hold) = rx.recv().await {
        if let Err(e) = inner.end(&hold, None).await {
            tracing::warn!(hold = %hold.id, error = %e,
                "could not release a dropped reservation; it expires with its TTL");
        }
    }
}

/// The per-level arguments of the script.
fn push_level(inv: &mut redis::ScriptInvocation<'_>, spec: &LevelSpec, now: u64, ttl: Duration) {
    let (tk, tl, tp) = bound_args(&spec.tokens);
    let (ck, cl, cp) = bound_args(&spec.cost);
    let (rcap, rrate) = spec.requests.map_or((-1i64, 0.0), |r| {
        (i64::from(r.capacity), r.refill_per_second / 1000.0)
    });
    inv.arg(tk).arg(tl).arg(tp).arg(ck).arg(cl).arg(cp);
    inv.arg(rcap).arg(format!("{rrate:.12}"));
    inv.arg(spec.retention_ms(now, ttl));
}

fn bound_args(b: &Bound) -> (u8, u64, u64) {
    match *b {
        Bound::Unlimited => (0, 0, 1),
        Bound::Periodic(p) => (1, p.limit, duration_ms(p.period).max(1)),
        Bound::Lifetime { limit, .. } => (2, limit, 1),
        Bound::Registered { .. } => (3, 0, 1),
        #[allow(unreachable_patterns)]
        _ => (0, 0, 1),
    }
}

impl Inner {
    fn key(&self, spec: &LevelSpec) -> String {
        format!("{}:{}", self.prefix, spec.key.render())
    }

    fn holds_key(&self) -> String {
        format!("{}:holds", self.prefix)
    }

    fn record_prefix(&self) -> String {
        format!("{}:h:", self.prefix)
    }

    #[allow(clippy::too_many_arguments)]
    fn invocation(
        &self,
        op: &str,
        hold_id: &str,
        ttl: Duration,
        amount: Amount,
        take_request: bool,
        levels: &[LevelSpec],
    ) -> redis::ScriptInvocation<'_> {
        let now = now_ms();
        let mut inv = self.script.prepare_invoke();
        inv.key(self.holds_key())
            .key(format!("{}{hold_id}", self.record_prefix()));
        for l in levels {
            inv.key(self.key(l));
        }
        inv.arg(op)
            .arg(hold_id)
            .arg(duration_ms(ttl).max(1))
            .arg(amount.tokens)
            .arg(amount.cost_micros)
            .arg(self.record_prefix())
            .arg(u8::from(take_request));
        for l in levels {
            push_level(&mut inv, l, now, ttl);
        }
        inv
    }

    async fn run<T: redis::FromRedisValue>(&self, inv: redis::ScriptInvocation<'_>) -> Result<T> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("operation timed out")),
        }
    }

    async fn end(&self, hold: &Hold, actual: Option<Amount>) -> Result<()> {
        let id = hold.id.simple().to_string();
        let op = if actual.is_some() {
            "settle"
        } else {
            "release"
        };
        let inv = self.invocation(
            op,
            &id,
            Duration::from_millis(1),
            actual.unwrap_or_default(),
            false,
            &hold.levels,
        );
        let _: Vec<i64> = self.run(inv).await?;
        Ok(())
    }
}

impl RedisLedger {
    /// Defaults: prefix [`DEFAULT_PREFIX`], 500 ms operation timeout, 10 min
    /// hold TTL.
    pub fn builder() -> RedisLedgerBuilder {
        RedisLedgerBuilder {
            url: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: Duration::from_millis(500),
            hold_ttl: Duration::from_secs(600),
        }
    }

    /// Whether the server answers `PING` now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.inner.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(self.inner.op_timeout, ping).await,
            Ok(Ok(_))
        )
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn reserve(&self, request: &HoldRequest) -> Result<Hold> {
        let hold = Hold::new(request);
        let id = hold.id.simple().to_string();
        let ttl = if request.ttl.is_zero() {
            self.hold_ttl
        } else {
            request.ttl
        };
        let inv = self
            .inner
            .invocation("reserve", &id, ttl, request.amount, true, &request.levels);
        let reply: Vec<i64> = self.inner.run(inv).await?;
        match reply.as_slice() {
            [1] => Ok(hold),
            [0, level, retry, resource] => {
                let level = usize::try_from(*level)
                    .ok()
                    .and_then(|i| request.levels.get(i.checked_sub(1)?))
                    .map(|l| l.key.level())
                    .ok_or_else(|| unavailable("script named an unknown level"))?;
                let resource = match resource {
                    1 => Resource::Tokens,
                    2 => Resource::Cost,
                    _ => Resource::Requests,
                };
                let retry_after = u64::try_from(*retry).ok().map(Duration::from_millis);
                Err(Error::QuotaExceeded {
                    level,
                    resource,
                    retry_after,
                })
            }
            _ => Err(unavailable("unexpected script reply")),
        }
    }

    async fn settle(&self, hold: &Hold, actual: Amount) -> Result<()> {
        self.inner.end(hold, Some(actual)).await
    }

    async fn release(&self, hold: &Hold) -> Result<()> {
        self.inner.end(hold, None).await
    }

    fn release_detached(&self, hold: Hold) {
        if let Err(e) = self.releases.send(hold) {
            tracing::warn!(hold = %e.0.id, "release task gone; the hold expires with its TTL");
        }
    }

    async fn register(&self, level: &LevelSpec) -> Result<()> {
        let inv = self.inner.invocation(
            "register",
            "-",
            self.hold_ttl,
            Amount::default(),
            false,
            std::slice::from_ref(level),
        );
        let _: Vec<i64> = self.inner.run(inv).await?;
        Ok(())
    }

    async fn usage(&self, level: &LevelSpec) -> Result<LevelUsage> {
        let inv = self.inner.invocation(
            "usage",
            "-",
            self.hold_ttl,
            Amount::default(),
            false,
            std::slice::from_ref(level),
        );
        let v: Vec<String> = self.inner.run(inv).await?;
        let n = |i: usize| v.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        Ok(LevelUsage {
            tokens_used: n(0),
            tokens_held: n(1),
            cost_used: n(2),
            cost_held: n(3),
        })
    }
}
