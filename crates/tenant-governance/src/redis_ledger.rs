//! [`RedisLedger`]: quota state in Redis, shared by every replica.
//!
//! Every operation is one Lua script (`redis_ledger.lua`), so a reservation
//! checks all levels and holds the amount at all of them atomically on the
//! server, whichever process sends it. The script reads the server clock
//! (`TIME`) for periods and hold expiry, so replicas with skewed clocks
//! still agree.
//!
//! **Holds and crashes.** Holds are not stored one by one. Each ledger
//! has an *instance*: a random id with a lease (its member in the sorted
//! set `<prefix>:leases`, scored by expiry and refreshed every
//! `lease_ttl / 3`) and one hash `<prefix>:held:<id>` with the amounts its
//! outstanding holds hold at each level, one field per level and resource,
//! changed with `HINCRBY` by the net amount of each batch. The client keeps
//! the [`Hold`] (whose id carries the instance id) and sends its amount
//! back at settle or release. A batch first *sweeps* instances whose lease
//! has expired: their held amounts are subtracted from the levels, their
//! hash deleted and a tombstone set, so reservations of a process that died
//! stop counting `lease_ttl` after its last refresh. A settle or release of
//! a hold whose instance was swept charges usage only: nothing is ever
//! subtracted twice. A live process rotates to a new instance id when a
//! batch fails (its outcome is unknown), when its instance was swept, and
//! once its first hold's TTL has passed; an old instance keeps its lease
//! until the TTL of its last hold has passed and is then left to expire, so
//! a hold whose release never reached Redis stops counting after its TTL
//! plus `lease_ttl`, as a crashed one does.
//! Dropping a [`Reservation`] cannot run async code, so
//! [`Ledger::release_detached`] hands the hold to a background task over a
//! channel.
//!
//! **Cost.** Per batch (up to 64 operations) and level key: one `HMGET`,
//! one `HSET` (a `PEXPIRE` only when the key's retention must be extended,
//! at most every 30 s per busy key) and at most two `HINCRBY` on the
//! instance's hash; per batch one `TIME`, one `ZRANGEBYSCORE` (sweep) and
//! one `ZSCORE` per instance (a `ZADD` when its lease is refreshed). Scripts
//! run with `EVALSHA` over the connection manager's one multiplexed
//! connection, so concurrent callers are pipelined.
//!
//! **Failure.** Every command runs under `op_timeout`; a connection error,
//! timeout or script error is [`Error::LedgerUnavailable`]. The connection
//! manager reconnects by itself, and the script is re-loaded after a Redis
//! restart (`NOSCRIPT` is handled), so service resumes without restarting
//! the process.
//!
//! Keys: `<prefix>:<level key>` per level, `<prefix>:leases`,
//! `<prefix>:held:<instance>` and `<prefix>:gone:<instance>`. The script
//! touches keys named in a swept instance's hash, so it targets a single
//! Redis primary, not Redis Cluster.
//!
//! [`Reservation`]: crate::Reservation

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    lease_ttl: Duration,
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

    /// How long this ledger's holds keep counting after its last lease
    /// refresh (default 30 s; refreshed every third of it, at least 30 ms).
    /// When the process dies, its reservations stop counting this long
    /// after its last refresh. Keep it well above the longest stall the
    /// process may see (a process that misses its refreshes for this long
    /// loses its holds: over-admission, never lost accounting).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Connects lazily (the first operation connects) and starts the
    /// background release and lease-refresh tasks. Must be called inside a
    /// Tokio runtime.
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
            leases_key: format!("{}:leases", self.prefix),
            prefix: self.prefix,
            op_timeout: self.op_timeout,
            lease_ms: duration_ms(self.lease_ttl),
            instances: Mutex::new(Instances::new()),
        });
        runtime.spawn(batch_task(Arc::clone(&inner), rx, tx.downgrade()));
        runtime.spawn(refresh_task(self.lease_ttl / 3, tx.downgrade()));
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
    leases_key: String,
    op_timeout: Duration,
    lease_ms: u64,
    instances: Mutex<Instances>,
}

/// One ledger instance id, as the client sees it.
struct Instance {
    /// Whether a batch naming it got a reply (then the script must never
    /// register it again: the client may hold holds whose amounts a sweep
    /// has subtracted).
    established: bool,
    /// When new holds move to a fresh instance (the first hold's expiry).
    rotate_at_ms: u64,
    /// Until when its lease is refreshed (the last hold's expiry), once it
    /// is no longer the current instance.
    keep_until_ms: u64,
    /// When its lease was last extended (client clock).
    refreshed_ms: u64,
}

/// The current instance (new holds) and older ones whose holds may still
/// be outstanding.
struct Instances {
    current: u64,
    all: HashMap<u64, Instance>,
}

impl Instances {
    fn new() -> Self {
        let mut s = Self {
            current: 0,
            all: HashMap::new(),
        };
        s.rotate();
        s
    }

    fn rotate(&mut self) {
        let id = loop {
            let id = uuid::Uuid::new_v4().as_u64_pair().0;
            if !self.all.contains_key(&id) {
                break id;
            }
        };
        self.all.insert(
            id,
            Instance {
                established: false,
                rotate_at_ms: u64::MAX,
                keep_until_ms: 0,
                refreshed_ms: 0,
            },
        );
        self.current = id;
    }
}

/// Most operations sent in one script call.
const MAX_BATCH: usize = 64;
/// Most script calls in flight at once (so the next batch is built and sent
/// while Redis runs the previous one).
const MAX_IN_FLIGHT: usize = 2;

/// One ledger operation waiting for the batch task.
enum Op {
    Reserve {
        hold: Hold,
        ttl: Duration,
    },
    Settle {
        hold: Hold,
        actual: Amount,
    },
    Release {
        hold: Hold,
    },
    Register {
        level: LevelSpec,
        ttl: Duration,
    },
    Usage {
        level: LevelSpec,
        ttl: Duration,
    },
    /// Nothing but the batch itself: it extends the leases that are due.
    Refresh,
}

/// The script's reply for one operation: `1`, `L`, or space-separated
/// numbers.
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

/// Sends a lease refresh through the batch task every `every`, until the
/// ledger is dropped.
async fn refresh_task(every: Duration, jobs: mpsc::WeakUnboundedSender<Job>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tx) = jobs.upgrade() else { return };
        if tx
            .send(Job {
                op: Op::Refresh,
                reply: None,
            })
            .is_err()
        {
            return;
        }
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
                    // leave it to its instance's expiry.
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
                        "could not release a dropped reservation; it expires with its instance");
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

/// The instance a hold belongs to (the high half of its id).
fn instance_of(hold: &Hold) -> u64 {
    hold.id.as_u64_pair().0
}

/// What the script needs of one operation.
struct Parts<'a> {
    kind: u8,
    instance: Option<u64>,
    /// Retention of the level keys is computed for this hold time.
    ttl: Duration,
    amount: Amount,
    held: Amount,
    take: bool,
    levels: &'a [LevelSpec],
}

impl Op {
    fn parts(&self) -> Parts<'_> {
        let zero = Amount::default();
        let one = Duration::from_millis(1);
        let (kind, instance, ttl, amount, held, take, levels) = match self {
            Op::Reserve { hold, ttl } => (
                1,
                Some(instance_of(hold)),
                *ttl,
                hold.amount,
                zero,
                true,
                &hold.levels[..],
            ),
            Op::Settle { hold, actual } => (
                2,
                Some(instance_of(hold)),
                one,
                *actual,
                hold.amount,
                false,
                &hold.levels[..],
            ),
            Op::Release { hold } => (
                3,
                Some(instance_of(hold)),
                one,
                zero,
                hold.amount,
                false,
                &hold.levels[..],
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
            Op::Refresh => (6, None, one, zero, zero, false, &[][..]),
        };
        Parts {
            kind,
            instance,
            ttl,
            amount,
            held,
            take,
            levels,
        }
    }
}

impl Inner {
    fn key(&self, spec: &LevelSpec) -> String {
        format!("{}:{}", self.prefix, spec.key.render())
    }

    fn instances(&self) -> MutexGuard<'_, Instances> {
        // A panic while the lock was held cannot leave the map invalid.
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The instance a new hold of `ttl` goes to.
    fn instance_for_hold(&self, ttl: Duration) -> u64 {
        let now = now_ms();
        let expiry = now.saturating_add(duration_ms(ttl));
        let mut inst = self.instances();
        if inst
            .all
            .get(&inst.current)
            .is_none_or(|c| now >= c.rotate_at_ms)
        {
            inst.rotate();
        }
        let id = inst.current;
        if let Some(c) = inst.all.get_mut(&id) {
            c.rotate_at_ms = c.rotate_at_ms.min(expiry);
            c.keep_until_ms = c.keep_until_ms.max(expiry);
        }
        id
    }

    /// The instances a batch names: those of its holds, then those whose
    /// lease is due for a refresh. Each with (fresh, refresh).
    fn batch_instances(&self, jobs: &[Job], now: u64) -> Vec<(u64, bool, bool)> {
        let mut inst = self.instances();
        let current = inst.current;
        // Old instances whose last hold has expired are left to expire.
        inst.all
            .retain(|id, i| *id == current || now < i.keep_until_ms);
        let due = self.lease_ms / 3;
        let mut out: Vec<(u64, bool, bool)> = Vec::new();
        let mut add = |id: u64, inst: &Instances| {
            if out.iter().any(|(i, _, _)| *i == id) {
                return;
            }
            let (fresh, refresh) = inst.all.get(&id).map_or((false, false), |i| {
                (
                    !i.established,
                    i.established && now.saturating_sub(i.refreshed_ms) >= due,
                )
            });
            out.push((id, fresh, refresh));
        };
        for job in jobs {
            if let Some(id) = job.op.parts().instance {
                add(id, &inst);
            }
        }
        for (id, i) in &inst.all {
            if i.established && now.saturating_sub(i.refreshed_ms) >= due {
                add(*id, &inst);
            }
        }
        out
    }

    /// Records what a batch learnt about its instances.
    fn batch_done(&self, names: &[(u64, bool, bool)], live: Option<&str>, now: u64) {
        let mut inst = self.instances();
        let Some(live) = live else {
            // Unknown outcome: holds granted by it may be held in Redis
            // without the client knowing. New holds go to a new instance;
            // the old one expires after its last hold's TTL.
            inst.rotate();
            return;
        };
        for ((id, fresh, refresh), flag) in names.iter().zip(live.split(' ')) {
            if flag == "1" {
                if let Some(i) = inst.all.get_mut(id) {
                    i.established = true;
                    if *fresh || *refresh {
                        i.refreshed_ms = now;
                    }
                }
            } else {
                // Swept (or never registered): it holds nothing any more.
                inst.all.remove(id);
                if *id == inst.current {
                    inst.rotate();
                }
            }
        }
    }

    /// One script call for `jobs`, in order; one reply per job.
    async fn run_batch(&self, jobs: &[Job]) -> std::result::Result<Vec<Reply>, String> {
        let now = now_ms();
        let names = self.batch_instances(jobs, now);
        let result = self.call_script(jobs, &names, now).await;
        match result {
            Ok(mut replies) => {
                let live = replies.pop();
                self.batch_done(&names, live.as_deref(), now);
                Ok(replies)
            }
            Err(e) => {
                self.batch_done(&names, None, now);
                Err(e)
            }
        }
    }

    async fn call_script(
        &self,
        jobs: &[Job],
        names: &[(u64, bool, bool)],
        now: u64,
    ) -> std::result::Result<Vec<Reply>, String> {
        // Distinct level keys (the script's KEYS, 1-based; the lease index
        // is KEYS[1]) and distinct (key, limits, retention) specs, each sent
        // once per batch.
        let mut keys: HashMap<String, usize> = HashMap::new();
        let mut key_order: Vec<String> = Vec::new();
        let mut specs: Vec<(usize, &LevelSpec, u64)> = Vec::new();
        let mut op_specs: Vec<Vec<usize>> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let parts = job.op.parts();
            let mut idx = Vec::with_capacity(parts.levels.len());
            for l in parts.levels {
                let key = self.key(l);
                let ki = match keys.get(&key) {
                    Some(&k) => k,
                    None => {
                        let k = key_order.len() + 2;
                        keys.insert(key.clone(), k);
                        key_order.push(key);
                        k
                    }
                };
                let keep = l.retention_ms(now, parts.ttl);
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
        }
        let mut inv = self.script.prepare_invoke();
        inv.key(self.leases_key.as_str());
        for k in &key_order {
            inv.key(k.as_str());
        }
        inv.arg(specs.len())
            .arg(jobs.len())
            .arg(self.lease_ms)
            .arg(self.prefix.as_str())
            .arg(names.len())
            .arg(u8::from(
                jobs.iter().any(|j| matches!(j.op, Op::Reserve { .. })),
            ));
        for (id, fresh, refresh) in names {
            inv.arg(format!("{id:016x}"))
                .arg(u8::from(*fresh))
                .arg(u8::from(*refresh));
        }
        for (ki, spec, keep) in &specs {
            push_spec(&mut inv, *ki, spec, *keep);
        }
        for (job, idx) in jobs.iter().zip(&op_specs) {
            let parts = job.op.parts();
            let instance = parts
                .instance
                .and_then(|id| names.iter().position(|(i, _, _)| *i == id))
                .map_or(0, |i| i + 1);
            inv.arg(parts.kind)
                .arg(instance)
                .arg(parts.amount.tokens)
                .arg(parts.amount.cost_micros)
                .arg(parts.held.tokens)
                .arg(parts.held.cost_micros)
                .arg(u8::from(parts.take))
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
        if replies.len() != jobs.len() + 1 {
            return Err("unexpected script reply".to_owned());
        }
        Ok(replies)
    }
}

impl RedisLedger {
    /// Defaults: prefix [`DEFAULT_PREFIX`], 500 ms operation timeout, 10 min
    /// hold TTL, 30 s lease.
    pub fn builder() -> RedisLedgerBuilder {
        RedisLedgerBuilder {
            url: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: Duration::from_millis(500),
            hold_ttl: Duration::from_secs(600),
            lease_ttl: Duration::from_secs(30),
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

/// Hold ids: the instance id, then a per-process counter.
fn new_hold(instance: u64, request: &HoldRequest) -> Hold {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    Hold {
        id: uuid::Uuid::from_u64_pair(instance, COUNTER.fetch_add(1, Ordering::Relaxed)),
        levels: Arc::clone(&request.levels),
        amount: request.amount,
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn reserve(&self, request: &HoldRequest) -> Result<Hold> {
        let ttl = if request.ttl.is_zero() {
            self.hold_ttl
        } else {
            request.ttl
        };
        // `L`: the instance was swept (its lease expired, or Redis lost
        // it); the batch task has moved to a new one, so try again.
        let mut attempts = 0;
        let (hold, reply) = loop {
            let hold = new_hold(self.inner.instance_for_hold(ttl), request);
            let reply = self
                .submit(Op::Reserve {
                    hold: hold.clone(),
                    ttl,
                })
                .await?;
            attempts += 1;
            if reply != "L" || attempts == 3 {
                break (hold, reply);
            }
        };
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
                tracing::warn!(hold = %hold.id, "ledger task gone; the hold expires with its instance");
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
