//! [`RedisLedger`]: quota state in Redis, shared by every replica.
//!
//! Every operation is one Lua script (`redis_ledger.lua`), so a reservation
//! checks all levels and holds the amount at all of them atomically on the
//! server, whichever process sends it. The script reads the server clock
//! (`TIME`) for periods and hold expiry, so replicas with skewed clocks
//! still agree.
//!
//! **Holds and crashes.** A reservation is recorded as one member of a
//! sorted set indexed by expiry (`hold_ttl`); the member itself lists the
//! hold's id, amounts and level keys, so settle and release find it with a
//! single `ZREM` (the client rebuilds the member from the [`Hold`] it
//! kept) and a hold that is no longer in the index is never subtracted
//! twice. Every reserve first reclaims up to 32 expired holds, so
//! reservations of a process that died (or a dropped reservation whose
//! release could not be delivered) stop counting after `hold_ttl`.
//! Dropping a [`Reservation`] cannot run async code, so
//! [`Ledger::release_detached`] hands the hold to a background task over a
//! channel; if that task cannot reach Redis, the TTL is the safety net.
//!
//! **Cost.** Per level, a reserve or settle makes one `HMGET` and one
//! `HSET` (a `PEXPIRE` only when the key's retention must be extended,
//! at most every 30 s per busy key); per operation one `TIME`, and one
//! `ZRANGEBYSCORE` + `ZADD` (reserve) or `ZREM` (settle/release). Scripts
//! run with `EVALSHA` over the connection manager's one multiplexed
//! connection, so concurrent callers are pipelined.
//!
//! **Failure.** Every command runs under `op_timeout`; a connection error,
//! timeout or script error is [`Error::LedgerUnavailable`]. The connection
//! manager reconnects by itself, and the script is re-loaded after a Redis
//! restart (`NOSCRIPT` is handled), so service resumes without restarting
//! the process.
//!
//! Keys: `<prefix>:<level key>` per level and `<prefix>:holds`. The script
//! touches keys named in the records of expired holds, so it targets a
//! single Redis primary, not Redis Cluster.
//!
//! [`Reservation`]: crate::Reservation

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::{mpsc, oneshot, Semaphore};

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
        if self.prefix.contains('\n') {
            return Err(Error::InvalidConfiguration(
                "the Redis key prefix must not contain a newline".into(),
            ));
        }
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            script: Script::new(SCRIPT),
            holds_key: format!("{}:holds", self.prefix),
            prefix: self.prefix,
            op_timeout: self.op_timeout,
        });
        runtime.spawn(batch_task(Arc::clone(&inner), rx, tx.downgrade()));
        Ok(RedisLedger {
            inner,
            jobs: tx,
            hold_ttl: self.hold_ttl,
        })
    }
}

struct Inner {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    holds_key: String,
    op_timeout: Duration,
}

/// Most operations sent in one script call.
const MAX_BATCH: usize = 64;
/// Most script calls in flight at once (so the next batch is built and sent
/// while Redis runs the previous one).
const MAX_IN_FLIGHT: usize = 2;

/// One ledger operation waiting for the batch task.
enum Op {
    Reserve { hold: Hold, ttl: Duration },
    Settle { hold: Hold, actual: Amount },
    Release { hold: Hold },
    Register { level: LevelSpec, ttl: Duration },
    Usage { level: LevelSpec, ttl: Duration },
}

/// The script's reply for one operation: `1`, or space-separated numbers.
type Reply = String;

struct Job {
    op: Op,
    /// `None` for fire-and-forget releases (dropped reservations).
    reply: Option<oneshot::Sender<Result<Reply>>>,
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
    jobs: mpsc::UnboundedSender<Job>,
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

/// Group commit: every operation waiting when a batch slot frees up goes
/// into the next script call (at most [`MAX_BATCH`] operations, at most
/// [`MAX_IN_FLIGHT`] calls at once).
async fn batch_task(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    requeue: mpsc::WeakUnboundedSender<Job>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let inner = Arc::clone(&inner);
        let requeue = requeue.clone();
        tokio::spawn(async move {
            let result = inner.run_batch(&jobs).await;
            drop(slot);
            deliver(jobs, result, &requeue);
        });
    }
}

/// Hands each job its reply.
fn deliver(
    jobs: Vec<Job>,
    result: std::result::Result<Vec<Reply>, String>,
    requeue: &mpsc::WeakUnboundedSender<Job>,
) {
    for (i, job) in jobs.into_iter().enumerate() {
        let r = match &result {
            Ok(replies) => replies
                .get(i)
                .cloned()
                .ok_or_else(|| unavailable("short script reply")),
            Err(e) => Err(unavailable(e)),
        };
        match (job.reply, job.op) {
            (Some(tx), op) => {
                if let Err(Ok(reply)) = tx.send(r) {
                    // The caller gave up (timeout, cancellation) after its
                    // reservation was granted: release it now rather than
                    // at its TTL.
                    if let (Op::Reserve { hold, .. }, "1") = (op, reply.as_str()) {
                        if let Some(q) = requeue.upgrade() {
                            let _ = q.send(Job {
                                op: Op::Release { hold },
                                reply: None,
                            });
                        }
                    }
                }
            }
            (None, Op::Release { hold }) => {
                if let Err(e) = r {
                    tracing::warn!(hold = %hold.id, error = %e,
                        "could not release a dropped reservation; it expires with its TTL");
                }
            }
            (None, _) => {}
        }
    }
}

/// The arguments of one level spec: key index, then the limits.
fn push_spec(inv: &mut redis::ScriptInvocation<'_>, key: usize, spec: &LevelSpec, keep: u64) {
    let (tk, tl, tp) = bound_args(&spec.tokens);
    let (ck, cl, cp) = bound_args(&spec.cost);
    let (rcap, rrate) = spec.requests.map_or((-1i64, 0.0), |r| {
        (i64::from(r.capacity), r.refill_per_second / 1000.0)
    });
    inv.arg(key).arg(tk).arg(tl).arg(tp).arg(ck).arg(cl).arg(cp);
    inv.arg(rcap).arg(format!("{rrate:.12}"));
    inv.arg(keep);
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

impl Op {
    /// (kind, hold id, ttl, amount, held, take a request, levels)
    fn parts(
        &self,
    ) -> (
        u8,
        Option<uuid::Uuid>,
        Duration,
        Amount,
        Amount,
        bool,
        &[LevelSpec],
    ) {
        let zero = Amount::default();
        let one = Duration::from_millis(1);
        match self {
            Op::Reserve { hold, ttl } => (
                1,
                Some(hold.id),
                *ttl,
                hold.amount,
                zero,
                true,
                &hold.levels,
            ),
            Op::Settle { hold, actual } => (
                2,
                Some(hold.id),
                one,
                *actual,
                hold.amount,
                false,
                &hold.levels,
            ),
            Op::Release { hold } => (
                3,
                Some(hold.id),
                one,
                zero,
                hold.amount,
                false,
                &hold.levels,
            ),
            Op::Register { level, ttl } => (
                4,
                None,
                *ttl,
                zero,
                zero,
                false,
                std::slice::from_ref(level),
            ),
            Op::Usage { level, ttl } => (
                5,
                None,
                *ttl,
                zero,
                zero,
                false,
                std::slice::from_ref(level),
            ),
        }
    }
}

impl Inner {
    fn key(&self, spec: &LevelSpec) -> String {
        format!("{}:{}", self.prefix, spec.key.render())
    }

    /// One script call for `jobs`, in order; one reply per job.
    async fn run_batch(&self, jobs: &[Job]) -> std::result::Result<Vec<Reply>, String> {
        let now = now_ms();
        // Distinct level keys (the script's KEYS, 1-based; the hold index
        // is KEYS[1]) and distinct (key, limits, retention) specs, each sent
        // once per batch.
        let mut keys: HashMap<String, usize> = HashMap::new();
        let mut key_order: Vec<String> = Vec::new();
        let mut specs: Vec<(usize, &LevelSpec, u64)> = Vec::new();
        let mut op_specs: Vec<Vec<usize>> = Vec::with_capacity(jobs.len());
        // The hold's record in the index: `id \n tokens \n cost \n key...`
        // (the script reads it back when it reclaims an expired hold).
        let mut records: Vec<String> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (kind, id, ttl, amount, held, _, levels) = job.op.parts();
            let mut record = match (kind, id) {
                (1, Some(id)) => {
                    format!("{}\n{}\n{}", id.simple(), amount.tokens, amount.cost_micros)
                }
                (2 | 3, Some(id)) => {
                    format!("{}\n{}\n{}", id.simple(), held.tokens, held.cost_micros)
                }
                _ => String::new(),
            };
            let mut idx = Vec::with_capacity(levels.len());
            for l in levels {
                let key = self.key(l);
                if !record.is_empty() {
                    record.push('\n');
                    record.push_str(&key);
                }
                let ki = match keys.get(&key) {
                    Some(&k) => k,
                    None => {
                        let k = key_order.len() + 2;
                        keys.insert(key.clone(), k);
                        key_order.push(key);
                        k
                    }
                };
                let keep = l.retention_ms(now, ttl);
                let si = match specs
                    .iter()
                    .position(|(k, s, kp)| *k == ki && *kp == keep && *s == l)
                {
                    Some(i) => i,
                    None => {
                        specs.push((ki, l, keep));
                        specs.len() - 1
                    }
                };
                idx.push(si + 1);
            }
            op_specs.push(idx);
            if record.is_empty() {
                record.push('-');
            }
            records.push(record);
        }
        let mut inv = self.script.prepare_invoke();
        inv.key(self.holds_key.as_str());
        for k in &key_order {
            inv.key(k.as_str());
        }
        inv.arg(specs.len()).arg(jobs.len());
        for (ki, spec, keep) in &specs {
            push_spec(&mut inv, *ki, spec, *keep);
        }
        for ((job, idx), record) in jobs.iter().zip(&op_specs).zip(records) {
            let (kind, _, ttl, amount, held, take, _) = job.op.parts();
            inv.arg(kind)
                .arg(record)
                .arg(duration_ms(ttl).max(1))
                .arg(amount.tokens)
                .arg(amount.cost_micros)
                .arg(held.tokens)
                .arg(held.cost_micros)
                .arg(u8::from(take))
                .arg(idx.len());
            for si in idx {
                inv.arg(*si);
            }
        }
        let mut conn = self.conn.clone();
        let replies: Vec<String> =
            match tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("operation timed out".to_owned()),
            };
        if replies.len() != jobs.len() {
            return Err("unexpected script reply".to_owned());
        }
        Ok(replies)
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

    /// Queues `op` for the batch task and waits for its reply, at most
    /// `op_timeout` (queueing included).
    async fn submit(&self, op: Op) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                op,
                reply: Some(tx),
            })
            .map_err(|_| unavailable("ledger task stopped (its runtime has shut down)"))?;
        match tokio::time::timeout(self.inner.op_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(unavailable("ledger task stopped")),
            Err(_) => Err(unavailable("operation timed out")),
        }
    }
}

fn int(s: &str) -> i64 {
    s.parse::<f64>().map_or(-1, |f| f as i64)
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn reserve(&self, request: &HoldRequest) -> Result<Hold> {
        let hold = Hold::new(request);
        let ttl = if request.ttl.is_zero() {
            self.hold_ttl
        } else {
            request.ttl
        };
        let reply = self
            .submit(Op::Reserve {
                hold: hold.clone(),
                ttl,
            })
            .await?;
        if reply == "1" {
            return Ok(hold);
        }
        let reply: Vec<i64> = reply.split(' ').map(int).collect();
        if reply.len() != 4 || reply[0] != 0 {
            return Err(unavailable("unexpected script reply"));
        }
        let level = usize::try_from(reply[1])
            .ok()
            .and_then(|i| request.levels.get(i.checked_sub(1)?))
            .map(|l| l.key.level())
            .ok_or_else(|| unavailable("script named an unknown level"))?;
        let resource = match reply[3] {
            1 => Resource::Tokens,
            2 => Resource::Cost,
            _ => Resource::Requests,
        };
        let retry_after = u64::try_from(reply[2]).ok().map(Duration::from_millis);
        Err(Error::QuotaExceeded {
            level,
            resource,
            retry_after,
        })
    }

    async fn settle(&self, hold: &Hold, actual: Amount) -> Result<()> {
        self.submit(Op::Settle {
            hold: hold.clone(),
            actual,
        })
        .await
        .map(drop)
    }

    async fn release(&self, hold: &Hold) -> Result<()> {
        self.submit(Op::Release { hold: hold.clone() })
            .await
            .map(drop)
    }

    fn release_detached(&self, hold: Hold) {
        if let Err(e) = self.jobs.send(Job {
            op: Op::Release { hold },
            reply: None,
        }) {
            if let Op::Release { hold } = e.0.op {
                tracing::warn!(hold = %hold.id, "ledger task gone; the hold expires with its TTL");
            }
        }
    }

    async fn register(&self, level: &LevelSpec) -> Result<()> {
        self.submit(Op::Register {
            level: level.clone(),
            ttl: self.hold_ttl,
        })
        .await
        .map(drop)
    }

    async fn usage(&self, level: &LevelSpec) -> Result<LevelUsage> {
        let v = self
            .submit(Op::Usage {
                level: level.clone(),
                ttl: self.hold_ttl,
            })
            .await?;
        let v: Vec<&str> = v.split(' ').collect();
        let n = |i: usize| v.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        Ok(LevelUsage {
            tokens_used: n(0),
            tokens_held: n(1),
            cost_used: n(2),
            cost_held: n(3),
        })
    }
}
