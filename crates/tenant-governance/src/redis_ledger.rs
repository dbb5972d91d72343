//! [`RedisLedger`]: quota state in Redis, shared by every replica.
//!
//! Operations go to Redis in batches, each one call of a Lua script
//! (`redis_ledger.lua`), so a reservation checks all levels and holds the
//! amount at all of them atomically on the server, whichever process sends
//! it. The script reads the server clock (`TIME`) for periods and hold
//! expiry, so replicas with skewed clocks still agree.
//!
//! **Batches.** A background task sends every operation waiting when the
//! previous call has returned as the next call (group commit, at most 128
//! operations, one call in flight, so a process's operations apply in the
//! order it queued them). `redis_batch.rs` encodes a batch so the script does little per operation: settlements and releases
//! on the same levels are summed into one adjustment, reservations with the
//! same levels share one list of them, numbers travel packed.
//!
//! **Deferred settlement.** By default settle and release return once
//! queued: the call's round trip is the reservation's alone, and the
//! settlement rides with the next batch (a batch holding only such work
//! waits up to 1 ms for an operation someone waits for). Any later
//! operation of the same ledger sees it. Deferred work of a batch whose
//! outcome is unknown (Redis down, timeout) is re-sent, before anything
//! else, until Redis answers; the ledger numbers its batches of deferred
//! work, and the script keeps the last number applied per ledger, so a
//! re-sent batch that had been applied is skipped: each settlement counts
//! exactly once. Work still queued when the runtime stops is lost, so call
//! [`Quotas::flush`](crate::Quotas::flush) on shutdown.
//! [`RedisLedgerBuilder::acknowledged_settlement`] makes settle and release
//! wait for Redis instead.
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
//! [`Ledger::release_detached`] queues its release as deferred work.
//!
//! **Cost.** Per batch and level key: one `GET` and one `SET` of the
//! level's state (ten packed doubles) and at most two `HINCRBY` on the
//! instance's hash; per batch one `TIME`, one `ZRANGEBYSCORE` (sweep, when
//! the batch reserves), one `ZSCORE` per instance (a `ZADD` when its lease
//! is refreshed), and a `GET` and `SET` of the writer's last batch number
//! when the batch carries deferred work. Scripts run with `EVALSHA` over
//! the connection manager's one multiplexed connection.
//!
//! **Failure.** Every call runs under `op_timeout`; a connection error,
//! timeout or script error is [`Error::LedgerUnavailable`] for whoever
//! waits on it. While deferred work of a failed call is being re-sent,
//! operations someone waits for fail at once and are dropped. The connection manager reconnects by itself, and the script
//! is re-loaded after a Redis restart (`NOSCRIPT` is handled), so service
//! resumes without restarting the process.
//!
//! Keys: `<prefix>:lv:<level key>` per level, `<prefix>:leases`,
//! `<prefix>:held:<instance>`, `<prefix>:gone:<instance>` and
//! `<prefix>:applied:<ledger>`. The script touches keys named in a swept
//! instance's hash, so it targets a single Redis primary, not Redis
//! Cluster.
//!
//! [`Reservation`]: crate::Reservation

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::ledger::{
    duration_ms, now_ms, Hold, HoldRequest, Ledger, LevelSpec, LevelUsage, Resource,
};
use crate::pricing::Amount;
use crate::redis_batch::{encode, Answer, InstanceArg, Job, Marker, Op};

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
    acknowledged: bool,
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

    /// Whether settle and release wait until Redis has applied them
    /// (default `false`).
    ///
    /// By default they are *deferred*: they return once queued, and the
    /// ledger applies them with its next batch, before any operation queued
    /// after them (so this process reads its own settlements, and its next
    /// reservation sees the hold gone). A batch whose outcome is unknown
    /// (Redis down, timeout) has its deferred work re-sent until Redis takes
    /// it, under a marker that makes it apply exactly once. That takes one
    /// round trip off every call's path; the price is that work still
    /// queued when the runtime stops is lost, so call
    /// [`Quotas::flush`](crate::Quotas::flush) on shutdown.
    ///
    /// With `true`, they wait for Redis and return its errors; a settlement
    /// that fails is not retried.
    pub fn acknowledged_settlement(mut self, acknowledged: bool) -> Self {
        self.acknowledged = acknowledged;
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
            deferred: !self.acknowledged,
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
const MAX_BATCH: usize = 128;

/// Quota state in Redis, shared across processes (see the module docs).
///
/// ```no_run
/// # async fn demo(ctx: tenant_core::TenantContext) -> Result<(), tenant_governance::Error> {
/// use tenant_governance::{Estimate, Quotas, RedisLedger, Usage};
/// let ledger = RedisLedger::builder()
///     .url("redis://127.0.0.1:6379")
///     .prefix("quota")
///     .build()?;
/// let quotas = Quotas::builder().ledger(ledger).build()?;
/// let reservation = quotas.reserve(&ctx, &Estimate::new("gpt-4o", 1_200, 800)).await?;
/// // ... the LLM call ...
/// reservation.settle(Usage::new(1_200, 350)).await?; // queued, applied with the next batch
/// // On shutdown, before the runtime stops:
/// quotas.flush().await?;
/// # Ok(()) }
/// ```
pub struct RedisLedger {
    inner: Arc<Inner>,
    jobs: mpsc::UnboundedSender<Job>,
    hold_ttl: Duration,
    /// Settle and release return once queued.
    deferred: bool,
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

/// Group commit, one script call at a time: every operation waiting when
/// the previous call has returned goes into the next (at most
/// [`MAX_BATCH`]). One call at a time keeps the process's operations in
/// order: a settlement or release queued before a reservation is applied
/// before it.
///
/// When a call fails, its outcome is unknown. Waiting callers get the
/// error; the deferred settlements and releases are re-sent, alone and
/// under the batch's number, before anything else, until Redis answers
/// (the script skips them if that batch was applied after all). Meanwhile
/// operations that someone waits for fail at once, and deferred ones wait.
async fn batch_task(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    requeue: mpsc::WeakUnboundedSender<Job>,
) {
    let mut retry: Option<Retry> = None;
    // Deferred work queued while a failed batch was being re-sent: it goes
    // first once that is done, in order.
    let mut backlog: Vec<Job> = Vec::new();
    // This ledger's id as a writer of deferred work, and its last batch
    // number (see `Marker`).
    let writer = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut batches = 0u64;
    loop {
        if let Some(mut r) = retry.take() {
            match inner.run_batch(&r.jobs, Some(r.marker)).await {
                Ok(_) => tracing::info!(
                    operations = r.jobs.len(),
                    attempts = r.attempts + 1,
                    "deferred quota settlements applied after a Redis failure"
                ),
                Err(e) if rx.is_closed() && r.attempts >= RETRIES_AFTER_CLOSE => {
                    tracing::error!(operations = r.jobs.len(), error = %e,
                        "ledger dropped and Redis still failing: deferred quota settlements lost; their holds expire with the ledger's lease");
                }
                Err(e) => {
                    set_aside(&mut rx, &mut backlog, &e);
                    tokio::time::sleep(retry_backoff(r.attempts)).await;
                    r.attempts += 1;
                    retry = Some(r);
                }
            }
            continue;
        }
        let mut jobs: Vec<Job> = backlog.drain(..backlog.len().min(MAX_BATCH)).collect();
        if jobs.is_empty() {
            if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        if jobs.iter().all(|j| j.reply.is_none()) {
            // Nobody waits for these: let the next operation someone waits
            // for (typically the caller's next reservation) join them, so
            // they cost no script call of their own.
            if let Ok(Some(job)) = tokio::time::timeout(LINGER, rx.recv()).await {
                jobs.push(job);
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
        }
        let marker = jobs.iter().any(Job::is_deferred).then(|| {
            batches += 1;
            Marker {
                writer,
                batch: batches,
            }
        });
        match inner.run_batch(&jobs, marker).await {
            Ok(answers) => deliver(jobs, Ok(answers), &requeue),
            Err(e) => {
                let (deferred, rest): (Vec<Job>, Vec<Job>) =
                    jobs.into_iter().partition(Job::is_deferred);
                if let (Some(m), false) = (marker, deferred.is_empty()) {
                    tracing::warn!(operations = deferred.len(), error = %e,
                        "Redis failed under deferred quota settlements; re-sending them");
                    retry = Some(Retry {
                        jobs: deferred,
                        marker: m,
                        attempts: 0,
                    });
                }
                deliver(rest, Err(e), &requeue);
            }
        }
    }
}

/// While a failed batch's deferred work is being re-sent (Redis is failing),
/// answers whoever waits at once with the failure instead of letting their
/// operations pile up (and run, unwanted, once Redis is back), and keeps
/// the deferred work, in order, for afterwards.
fn set_aside(rx: &mut mpsc::UnboundedReceiver<Job>, backlog: &mut Vec<Job>, error: &str) {
    while let Ok(job) = rx.try_recv() {
        if job.is_deferred() {
            backlog.push(job);
        } else if let Some(tx) = job.reply {
            let _ = tx.send(Err(unavailable(format!(
                "{error} (re-sending deferred settlements)"
            ))));
        }
        // Lease refreshes are dropped: the next batch refreshes what is due.
    }
}

/// How long a batch of deferred work only waits for company.
const LINGER: Duration = Duration::from_millis(1);

/// Deferred work of a failed batch, waiting to be re-sent.
struct Retry {
    jobs: Vec<Job>,
    marker: Marker,
    attempts: u32,
}

/// Once the ledger is dropped, how many more times deferred work is re-sent
/// before it is given up (with an error log).
const RETRIES_AFTER_CLOSE: u32 = 20;

/// 10 ms, doubling, at most 200 ms (so service resumes soon after Redis
/// does; reservations wait behind the re-sent work).
fn retry_backoff(attempts: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << attempts.min(5)).min(200))
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

/// Hands each job its answer.
fn deliver(
    jobs: Vec<Job>,
    result: std::result::Result<Vec<Answer>, String>,
    requeue: &mpsc::WeakUnboundedSender<Job>,
) {
    for (i, job) in jobs.into_iter().enumerate() {
        let r = match &result {
            Ok(answers) => answers
                .get(i)
                .copied()
                .ok_or_else(|| unavailable("short script reply")),
            Err(e) => Err(unavailable(e)),
        };
        // Deferred work needs no answer (and reaches here only once applied:
        // a failed batch re-sends it), nor do lease refreshes.
        let Some(tx) = job.reply else { continue };
        if let Err(Ok(answer)) = tx.send(r) {
            // The caller gave up (timeout, cancellation) after its
            // reservation was granted: release it now rather than leave it
            // to its instance's expiry.
            if let (Op::Reserve { hold, .. }, Answer::Done) = (job.op, answer) {
                if let Some(q) = requeue.upgrade() {
                    let _ = q.send(Job {
                        op: Op::Release { hold },
                        reply: None,
                    });
                }
            }
        }
    }
}

impl Inner {
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
    fn batch_instances(&self, jobs: &[Job], now: u64) -> Vec<InstanceArg> {
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
            if let Some(id) = job.op.instance() {
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
    fn batch_done(&self, names: &[InstanceArg], live: Option<&str>, now: u64) {
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

    /// One script call for `jobs`; one answer per job.
    async fn run_batch(
        &self,
        jobs: &[Job],
        marker: Option<Marker>,
    ) -> std::result::Result<Vec<Answer>, String> {
        let now = now_ms();
        let names = self.batch_instances(jobs, now);
        match self.call_script(jobs, &names, marker, now).await {
            Ok((answers, live)) => {
                self.batch_done(&names, Some(&live), now);
                Ok(answers)
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
        names: &[InstanceArg],
        marker: Option<Marker>,
        now: u64,
    ) -> std::result::Result<(Vec<Answer>, String), String> {
        let batch = encode(jobs, names, marker, &self.prefix, now)?;
        let mut inv = self.script.prepare_invoke();
        inv.key(self.leases_key.as_str());
        for k in &batch.keys {
            inv.key(k.as_str());
        }
        inv.arg(self.lease_ms)
            .arg(self.prefix.as_str())
            .arg(u8::from(batch.sweep))
            .arg(&batch.instances[..])
            .arg(&batch.specs[..])
            .arg(&batch.ops[..]);
        match batch.marker {
            Some(m) => inv.arg(format!("{:016x}", m.writer)).arg(m.batch),
            None => inv.arg("").arg(0u8),
        };
        inv.arg(&batch.retention[..]);
        let mut conn = self.conn.clone();
        let reply: Vec<String> =
            match tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("operation timed out".to_owned()),
            };
        batch.decode(jobs.len(), reply)
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
            acknowledged: false,
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

    /// Queues `op` for the batch task without waiting for it.
    fn defer(&self, op: Op) -> Result<()> {
        self.jobs
            .send(Job { op, reply: None })
            .map(drop)
            .map_err(|_| unavailable("ledger task stopped (its runtime has shut down)"))
    }

    /// Queues `op` for the batch task and waits for its answer, at most
    /// `op_timeout` (queueing included).
    async fn submit(&self, op: Op) -> Result<Answer> {
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
        // `LeaseGone`: the instance was swept (its lease expired, or Redis
        // lost it); the batch task has moved to a new one, so try again.
        let mut attempts = 0;
        let (hold, answer) = loop {
            let hold = new_hold(self.inner.instance_for_hold(ttl), request);
            let answer = self
                .submit(Op::Reserve {
                    hold: hold.clone(),
                    ttl,
                })
                .await?;
            attempts += 1;
            if answer != Answer::LeaseGone || attempts == 3 {
                break (hold, answer);
            }
        };
        match answer {
            Answer::Done => Ok(hold),
            Answer::Refused {
                level,
                retry_after,
                resource,
            } => {
                let level = level
                    .checked_sub(1)
                    .and_then(|i| request.levels.get(i))
                    .map(|l| l.key.level())
                    .ok_or_else(|| unavailable("script named an unknown level"))?;
                let resource = match resource {
                    1 => Resource::Tokens,
                    2 => Resource::Cost,
                    _ => Resource::Requests,
                };
                Err(Error::QuotaExceeded {
                    level,
                    resource,
                    retry_after,
                })
            }
            Answer::LeaseGone => Err(unavailable(
                "the ledger instance kept losing its lease; is the process stalling?",
            )),
            Answer::Usage(_) => Err(unavailable("unexpected script reply")),
        }
    }

    async fn settle(&self, hold: &Hold, actual: Amount) -> Result<()> {
        let op = Op::Settle {
            hold: hold.clone(),
            actual,
        };
        if self.deferred {
            return self.defer(op);
        }
        self.submit(op).await.map(drop)
    }

    async fn release(&self, hold: &Hold) -> Result<()> {
        let op = Op::Release { hold: hold.clone() };
        if self.deferred {
            return self.defer(op);
        }
        self.submit(op).await.map(drop)
    }

    async fn flush(&self) -> Result<()> {
        self.submit(Op::Flush).await.map(drop)
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
        match self
            .submit(Op::Usage {
                level: level.clone(),
                ttl: self.hold_ttl,
            })
            .await?
        {
            Answer::Usage(u) => Ok(u),
            _ => Err(unavailable("unexpected script reply")),
        }
    }
}
