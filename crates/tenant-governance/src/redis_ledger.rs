//! [`RedisLedger`]: quota state in Redis, shared by every replica, on a
//! single server or a Redis Cluster.
//!
//! Operations go to Redis in batches, each one call of a Lua script
//! (`redis_ledger.lua`) per key group, so a reservation checks all levels
//! and holds the amount at all of them atomically on the server, whichever
//! process sends it. The script reads the server clock (`TIME`) for periods
//! and leases, so replicas with skewed clocks still agree. It validates a
//! whole batch before it writes anything: one operation's invalid input is
//! skipped on its own and cannot change, strand or double-charge another's.
//!
//! **Batches** (`redis_batcher.rs`): a background task sends every operation
//! waiting when the previous batch has returned as the next batch (group
//! commit, one batch in flight), taking operations from per-tenant queues in
//! turn; `redis_batch.rs` encodes each group's part so the script does
//! little per operation.
//!
//! **Admission** (`redis_admission.rs`): a tenant may have at most
//! [`RedisLedgerBuilder::max_pending_per_tenant`] operations pending in the
//! process; beyond that its calls get [`Error::Overloaded`] at once, and
//! other tenants are served as before. Operations time out on the wire
//! ([`RedisLedgerBuilder::op_timeout`] per script call), never in the queue.
//!
//! **Deferred settlement.** By default settle and release return once
//! queued and ride with the next batch; a failed batch's settlements are
//! re-sent until applied, exactly once. If the process dies before they are
//! applied, its holds are charged at their estimates when its lease
//! expires: a settlement that is lost is *re-derived* as the estimate,
//! which is never less than the usage when the call's output was capped at
//! it. A settlement above its estimate therefore waits until Redis has
//! applied it.
//!
//! **Holds and crashes** (`redis_instances.rs`): holds are not stored one
//! by one. Each ledger holds under an *instance* (a random id) with a lease
//! per key group; an instance whose lease expires (its process died or
//! stalled) is swept by the next batch that reserves or reads usage in that
//! group, and its holds are *charged* at their amounts, never handed back.
//!
//! **Cluster** (`redis_layout.rs`): each tenant's levels share one hash
//! tag, so a reservation without a platform limit is one atomic call. With a
//! platform limit, the platform's level lives in a slot of its own and a
//! reservation is made in two steps (see [`RedisLedgerBuilder::cluster`]).
//!
//! [`Reservation`]: crate::Reservation

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::ledger::{
    duration_ms, now_ms, Hold, HoldRequest, Ledger, LevelSpec, LevelUsage, Resource,
};
use crate::pricing::{Amount, MAX_AMOUNT};
use crate::redis_admission::Admission;
use crate::redis_batch::{Answer, Job, Op};
use crate::redis_batcher::{batch_task, unavailable, Shared, MAX_BATCH};
use crate::redis_conn::Connector;
use crate::redis_instances::Instances;
use crate::redis_layout::{Layout, Part};

/// The ledger script.
pub(crate) const SCRIPT: &str = include_str!("redis_ledger.lua");

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "tg";

/// Default bound on a tenant's pending ledger operations in one process.
pub const DEFAULT_MAX_PENDING_PER_TENANT: usize = 256;

/// Where the ledger's Redis is.
#[derive(Debug, Clone)]
enum Target {
    None,
    Single(String),
    Cluster(Vec<String>),
}

/// Configures a [`RedisLedger`].
#[derive(Debug, Clone)]
pub struct RedisLedgerBuilder {
    target: Target,
    prefix: String,
    op_timeout: Duration,
    hold_ttl: Duration,
    lease_ttl: Duration,
    acknowledged: bool,
    max_pending: usize,
}

impl RedisLedgerBuilder {
    /// A single server (or a primary behind Sentinel), e.g.
    /// `redis://127.0.0.1:6379`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.target = Target::Single(url.into());
        self
    }

    /// A Redis Cluster, reached through any of `nodes` (URLs of masters or
    /// replicas; the rest of the cluster is discovered).
    ///
    /// Every key of one tenant carries the same hash tag, so a tenant's
    /// levels (tenant, agents, contexts) live in one slot and a reservation
    /// is one atomic script call, as on a single server. The platform's
    /// level, shared by all tenants, lives in a slot of its own: when a
    /// platform limit is set, a reservation first holds at the platform,
    /// then at the tenant's levels, and releases the platform hold if the
    /// tenant's levels refuse. Each level is still never passed (see
    /// the crate's governance guide for the invariant); a crash between the
    /// two steps leaves a platform hold that is charged when the lease
    /// expires, so the platform can only be over-charged, never
    /// over-spent. Every replica must use the same mode and prefix.
    pub fn cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.target = Target::Cluster(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Prefix of every key (default [`DEFAULT_PREFIX`]; no `{` or `}`,
    /// which would change the cluster slot of the keys).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Upper bound on one script call on the wire, connection included
    /// (default 500 ms). Past it the call's operations fail with
    /// `LedgerUnavailable` (and its deferred work is re-sent). Time spent
    /// waiting in the process's own queue does not count.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Fallback TTL of holds whose request did not say (default 10 min).
    pub fn hold_ttl(mut self, ttl: Duration) -> Self {
        self.hold_ttl = ttl;
        self
    }

    /// How long this ledger's holds keep counting as holds after its last
    /// lease refresh (default 30 s; refreshed every third of it, at least
    /// 30 ms). When the process dies (or stalls this long), its
    /// reservations are charged at their estimates this long after its last
    /// refresh; a late settlement of a stalled process then adds only what
    /// its usage exceeds the estimate by.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Most operations one tenant may have pending (queued or on the wire)
    /// in this process (default [`DEFAULT_MAX_PENDING_PER_TENANT`]); the
    /// next one is refused with [`Error::Overloaded`]. Settlements and
    /// releases do not count.
    pub fn max_pending_per_tenant(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// Whether settle and release wait until Redis has applied them
    /// (default `false`).
    ///
    /// By default they are *deferred*: they return once queued, and the
    /// ledger applies them with its next batch, before any operation of the
    /// same tenant queued after them (so this process reads its own
    /// settlements, and its next reservation sees the hold gone). A batch
    /// whose outcome is unknown (Redis down, timeout) has its deferred work
    /// re-sent until Redis takes it, under a marker that makes it apply
    /// exactly once. A settlement above its hold's amount waits for Redis
    /// all the same (so a crash cannot lose the excess). Call
    /// [`Quotas::flush`](crate::Quotas::flush) on shutdown; deferred work
    /// lost with the process is charged at the holds' estimates when the
    /// lease expires.
    ///
    /// With `true`, they wait for Redis and return its errors; a settlement
    /// that fails is not retried (its hold is charged at its estimate when
    /// it expires).
    pub fn acknowledged_settlement(mut self, acknowledged: bool) -> Self {
        self.acknowledged = acknowledged;
        self
    }

    /// Connects lazily (the first operation connects) and starts the
    /// background batch and lease-refresh tasks. Must be called inside a
    /// Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a missing or malformed URL, or a
    /// prefix with `{` or `}`.
    pub fn build(self) -> Result<RedisLedger> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfiguration("RedisLedger must be built inside a Tokio runtime".into())
        })?;
        if self.prefix.contains(['{', '}']) {
            return Err(Error::InvalidConfiguration(
                "the RedisLedger prefix must not contain '{' or '}'".into(),
            ));
        }
        let (connector, layout) = match &self.target {
            Target::None => {
                return Err(Error::InvalidConfiguration(
                    "RedisLedger needs .url(..) or .cluster(..)".into(),
                ))
            }
            Target::Single(url) => (
                Connector::single(url, self.op_timeout),
                Layout::single(&self.prefix),
            ),
            Target::Cluster(nodes) => (
                Connector::cluster(nodes, self.op_timeout),
                Layout::cluster(&self.prefix),
            ),
        };
        let connector = connector.map_err(Error::InvalidConfiguration)?;
        let lease_ms = duration_ms(self.lease_ttl);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            connector,
            script: Script::new(SCRIPT),
            layout,
            op_timeout: self.op_timeout,
            lease_ms,
            instances: Mutex::new(Instances::new(lease_ms)),
        });
        runtime.spawn(batch_task(Arc::clone(&shared), rx, tx.downgrade()));
        runtime.spawn(refresh_task(self.lease_ttl / 3, tx.downgrade()));
        Ok(RedisLedger {
            shared,
            jobs: tx,
            admission: Admission::new(self.max_pending),
            hold_ttl: self.hold_ttl,
            deferred: !self.acknowledged,
            id: uuid::Uuid::new_v4().as_u64_pair().0,
            prefix: self.prefix,
        })
    }
}

/// Quota state in Redis, shared across processes (see the module docs and
/// the governance guide).
///
/// ```no_run
/// # async fn demo(ctx: tenant_core::TenantContext, authority: tenant_core::PlatformAuthority)
/// # -> Result<(), tenant_governance::Error> {
/// use tenant_governance::{Estimate, Quotas, RedisLedger, Usage};
/// let ledger = RedisLedger::builder()
///     .url("redis://127.0.0.1:6379") // or .cluster(["redis://10.0.0.1:7000", ...])
///     .prefix("quota")
///     .build()?;
/// let quotas = Quotas::builder(&authority).ledger(ledger).build()?;
/// let reservation = quotas.reserve(&ctx, &Estimate::new("gpt-4o", 1_200, 800)).await?;
/// // ... the LLM call, with max_tokens = 800 ...
/// reservation.settle(Usage::new(1_200, 350)).await?; // queued, applied with the next batch
/// // On shutdown, before the runtime stops:
/// quotas.flush().await?;
/// # Ok(()) }
/// ```
pub struct RedisLedger {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
    admission: Arc<Admission>,
    hold_ttl: Duration,
    /// Settle and release return once queued.
    deferred: bool,
    /// Holds this ledger issued carry it.
    id: u64,
    prefix: String,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("prefix", &self.prefix)
            .field("cluster", &self.shared.layout.is_cluster())
            .finish_non_exhaustive()
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
        if tx.send(Job::new(Op::Refresh, 0)).is_err() {
            return;
        }
    }
}

/// How a multi-step reservation ended.
enum Reserved {
    Granted,
    /// An instance was gone: retry under a new one.
    LeaseGone,
}

fn stopped() -> Error {
    unavailable("ledger task stopped (its runtime has shut down)")
}

impl RedisLedger {
    /// Defaults: prefix [`DEFAULT_PREFIX`], 500 ms operation timeout, 10 min
    /// hold TTL, 30 s lease, [`DEFAULT_MAX_PENDING_PER_TENANT`] pending
    /// operations per tenant, deferred settlement.
    pub fn builder() -> RedisLedgerBuilder {
        RedisLedgerBuilder {
            target: Target::None,
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: Duration::from_millis(500),
            hold_ttl: Duration::from_secs(600),
            lease_ttl: Duration::from_secs(30),
            acknowledged: false,
            max_pending: DEFAULT_MAX_PENDING_PER_TENANT,
        }
    }

    /// Whether the server (a cluster node) answers `PING` now.
    pub async fn ping(&self) -> bool {
        let ping = async {
            let mut conn = self.shared.connector.get().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        matches!(
            tokio::time::timeout(self.shared.op_timeout, ping).await,
            Ok(Ok(_))
        )
    }

    /// Queues `job` without waiting for it.
    fn send(&self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| stopped())
    }

    /// Queues `op` in `group` for someone who waits, after admitting it for
    /// its tenant, and returns where its answer comes.
    fn enqueue(
        &self,
        op: Op,
        group: u16,
        durable: bool,
    ) -> Result<oneshot::Receiver<Result<Answer>>> {
        let permit = if durable {
            None
        } else {
            Some(self.admission.admit(op.tenant())?)
        };
        let (tx, rx) = oneshot::channel();
        let mut job = Job::new(op, group);
        job.reply = Some(tx);
        job.durable = durable;
        job.permit = permit;
        self.send(job)?;
        Ok(rx)
    }

    /// Queues `op` and waits for its answer. Nothing times out in the
    /// queue: the batch task answers every operation it sends within the
    /// operation timeout of sending it.
    async fn submit(&self, op: Op, group: u16) -> Result<Answer> {
        let rx = self.enqueue(op, group, false)?;
        rx.await.map_err(|_| stopped())?
    }

    /// A hold this ledger issued, else [`Error::UnknownHold`].
    fn own(&self, hold: &Hold) -> Result<()> {
        if hold.ledger == self.id {
            Ok(())
        } else {
            Err(Error::UnknownHold)
        }
    }

    /// The parts of `hold`, one per key group (the hold itself when it has
    /// one group).
    fn parts(&self, hold: Hold) -> Vec<(u16, Hold)> {
        let parts = self.shared.layout.split(&hold.levels);
        if let [only] = parts.as_slice() {
            return vec![(only.group, hold)];
        }
        parts
            .into_iter()
            .map(|p| (p.group, hold.part(p.levels)))
            .collect()
    }

    /// Ends `hold` in every group: `Settle` of `actual`, or `Release`.
    async fn end(&self, hold: Hold, actual: Option<Amount>) -> Result<()> {
        let wait = !self.deferred || actual.is_some_and(|a| a.exceeds(&hold.amount));
        let mut answers = Vec::new();
        for (group, part) in self.parts(hold) {
            let op = match actual {
                Some(actual) => Op::Settle { hold: part, actual },
                None => Op::Release { hold: part },
            };
            if wait {
                // Acknowledged: not re-sent on failure. An overrun: re-sent,
                // but the caller learns whether Redis has it.
                let rx = {
                    let (tx, rx) = oneshot::channel();
                    let mut job = Job::new(op, group);
                    job.reply = Some(tx);
                    job.durable = self.deferred;
                    self.send(job)?;
                    rx
                };
                answers.push(rx);
            } else {
                let mut job = Job::new(op, group);
                job.durable = true;
                self.send(job)?;
            }
        }
        for rx in answers {
            rx.await.map_err(|_| stopped())??;
        }
        Ok(())
    }

    /// Reserves `hold` part by part, releasing the parts already held when
    /// a later one is refused or fails, or when the caller gives up between
    /// two parts.
    async fn reserve_parts(
        &self,
        request: &HoldRequest,
        hold: &Hold,
        parts: &[Part],
        ttl: Duration,
    ) -> Result<Reserved> {
        let mut granted = GrantedParts {
            jobs: &self.jobs,
            parts: Vec::new(),
        };
        for part in parts {
            let op = Op::Reserve {
                hold: hold.part(Arc::clone(&part.levels)),
                ttl,
            };
            match self.submit(op, part.group).await {
                Ok(Answer::Done) => granted
                    .parts
                    .push((part.group, hold.part(Arc::clone(&part.levels)))),
                Ok(Answer::LeaseGone) => return Ok(Reserved::LeaseGone),
                Ok(Answer::Refused {
                    level,
                    retry_after,
                    resource,
                }) => return Err(refusal(request, part, level, retry_after, resource)),
                Ok(Answer::Invalid) => {
                    return Err(Error::InvalidConfiguration(
                        "the ledger script found the reservation invalid".into(),
                    ))
                }
                Ok(Answer::Usage(_)) => return Err(unavailable("unexpected script reply")),
                Err(e) => return Err(e),
            }
        }
        granted.parts.clear();
        Ok(Reserved::Granted)
    }
}

/// The parts of a reservation granted so far; released when dropped unless
/// the whole reservation was granted (then the list is empty).
struct GrantedParts<'a> {
    jobs: &'a mpsc::UnboundedSender<Job>,
    parts: Vec<(u16, Hold)>,
}

impl Drop for GrantedParts<'_> {
    fn drop(&mut self) {
        for (group, hold) in self.parts.drain(..) {
            let mut job = Job::new(Op::Release { hold }, group);
            job.durable = true;
            // If the task is gone, the part is charged when it expires.
            let _ = self.jobs.send(job);
        }
    }
}

/// The error for a refusal of level `level` (1-based in `part`).
fn refusal(
    request: &HoldRequest,
    part: &Part,
    level: usize,
    retry_after: Option<Duration>,
    resource: u8,
) -> Error {
    let Some(spec) = level
        .checked_sub(1)
        .and_then(|i| request.levels.get(part.index(i)))
    else {
        return unavailable("script named an unknown level");
    };
    let resource = match resource {
        1 => Resource::Tokens,
        2 => Resource::Cost,
        3 => Resource::Requests,
        4 => return Error::AncestorNotRegistered,
        _ => {
            return Error::AmountOutOfRange {
                what: "the amount held at one level",
                value: request.amount.tokens.max(request.amount.cost_micros),
                max: MAX_AMOUNT,
            }
        }
    };
    Error::QuotaExceeded {
        level: spec.key.level(),
        resource,
        retry_after,
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn reserve(&self, request: &HoldRequest) -> Result<Hold> {
        request.validate()?;
        let ttl = if request.ttl.is_zero() {
            self.hold_ttl
        } else {
            request.ttl
        };
        let parts = self.shared.layout.split(&request.levels);
        // `LeaseGone`: the instance was swept (its lease expired); the
        // batch task has moved to a new one, so try again.
        for _ in 0..3 {
            let instance = self.shared.instances().for_hold(ttl, now_ms());
            let hold = Hold::issued(self.id, instance, request);
            match self.reserve_parts(request, &hold, &parts, ttl).await? {
                Reserved::Granted => return Ok(hold),
                Reserved::LeaseGone => continue,
            }
        }
        Err(unavailable(
            "the ledger instance kept losing its lease; is the process stalling?",
        ))
    }

    async fn settle(&self, hold: Hold, actual: Amount) -> Result<()> {
        self.own(&hold)?;
        let in_range = actual.bounded("the settled usage");
        self.end(hold, Some(actual.saturated())).await?;
        in_range.map(drop)
    }

    async fn release(&self, hold: Hold) -> Result<()> {
        self.own(&hold)?;
        self.end(hold, None).await
    }

    async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let mut job = Job::new(Op::Flush, 0);
        job.reply = Some(tx);
        self.send(job)?;
        rx.await.map_err(|_| stopped())?.map(drop)
    }

    fn release_detached(&self, hold: Hold) {
        if self.own(&hold).is_err() {
            tracing::warn!(hold = %hold.id, "a hold this ledger did not issue was dropped into it; ignored");
            return;
        }
        for (group, part) in self.parts(hold) {
            let mut job = Job::new(Op::Release { hold: part }, group);
            job.durable = true;
            if self.send(job).is_err() {
                tracing::warn!("ledger task gone; the hold is charged when its lease expires");
            }
        }
    }

    fn charge_detached(&self, levels: Arc<[LevelSpec]>, amount: Amount) {
        let amount = amount.saturated();
        for (group, part) in self.parts(Hold::unheld(self.id, levels)) {
            let mut job = Job::new(
                Op::Settle {
                    hold: part,
                    actual: amount,
                },
                group,
            );
            job.durable = true;
            if self.send(job).is_err() {
                tracing::error!(
                    tokens = amount.tokens,
                    "ledger task gone; a fail-open charge is lost"
                );
            }
        }
    }

    async fn register(&self, level: &LevelSpec) -> Result<()> {
        level.validate()?;
        let group = self.shared.layout.group_of(&level.key);
        self.submit(
            Op::Register {
                level: level.clone(),
                ttl: self.hold_ttl,
            },
            group,
        )
        .await
        .map(drop)
    }

    async fn usage(&self, level: &LevelSpec) -> Result<LevelUsage> {
        let group = self.shared.layout.group_of(&level.key);
        match self
            .submit(
                Op::Usage {
                    level: level.clone(),
                    ttl: self.hold_ttl,
                },
                group,
            )
            .await?
        {
            Answer::Usage(u) => Ok(u),
            Answer::Invalid => Err(Error::InvalidConfiguration(
                "the ledger script found the usage read invalid".into(),
            )),
            _ => Err(unavailable("unexpected script reply")),
        }
    }
}

// The batch bound must fit the script's `u16` counts.
const _: () = assert!(MAX_BATCH < u16::MAX as usize);
// Amounts that pass `bounded` are exact doubles.
const _: () = assert!(MAX_AMOUNT < (1u64 << 53));
