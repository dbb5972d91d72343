//! The batch task of a [`RedisLedger`](crate::RedisLedger): group commit
//! with one batch in flight, tenants served in turn.
//!
//! * **Queues per tenant.** Operations wait in one FIFO queue per tenant
//!   (admission bounds how many each tenant may have waiting, see
//!   `redis_admission.rs`). A batch takes one operation from each tenant
//!   with work, in turn, until it holds [`MAX_BATCH`], so a tenant that
//!   floods the ledger fills batches only with what other tenants leave:
//!   everyone else's operation goes out in the next batch.
//! * **Time out on the wire.** Nothing times out while it waits in its
//!   queue; each script call is bounded by the operation timeout once it is
//!   sent, and every operation sent gets an answer (its result, or
//!   [`Error::LedgerUnavailable`]).
//! * **One batch in flight.** The next batch is built when the previous one
//!   has returned, so a tenant's operations apply in the order it queued
//!   them: a settlement or release queued before a reservation is applied
//!   before it. On a cluster a batch is one script call per key group, sent
//!   together.
//! * **Exactly once.** When a call fails its outcome is unknown. Whoever
//!   waits gets the error; the settlements and releases are re-sent, alone
//!   and before anything else, under the batch's number, until Redis
//!   answers (the script skips them if that batch was applied after all).
//!   Meanwhile operations that someone waits for fail at once, and
//!   settlements wait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Script;
use tenant_core::TenantId;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::ledger::now_ms;
use crate::redis_batch::{encode, Answer, CallError, InstanceArg, Job, Marker, Op, Reply};
use crate::redis_conn::Connector;
use crate::redis_instances::Instances;
use crate::redis_layout::{Group, Layout};

/// Most operations in one batch.
pub(crate) const MAX_BATCH: usize = 128;

/// How long a batch of deferred work only waits for company.
const LINGER: Duration = Duration::from_millis(1);

/// Once the ledger is dropped, how many more times deferred work is re-sent
/// before it is given up (with an error log).
const RETRIES_AFTER_CLOSE: u32 = 20;

/// What the batch task shares with the ledger handle.
pub(crate) struct Shared {
    pub(crate) connector: Connector,
    pub(crate) script: Script,
    pub(crate) layout: Layout,
    pub(crate) op_timeout: Duration,
    pub(crate) lease_ms: u64,
    pub(crate) instances: Mutex<Instances>,
}

impl Shared {
    pub(crate) fn instances(&self) -> MutexGuard<'_, Instances> {
        // A panic while the lock was held cannot leave the map invalid.
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::ledger_unavailable(format!("redis: {e}"))
}

/// A failed call as [`Error::LedgerUnavailable`], keeping Redis's error.
fn call_unavailable(e: &CallError) -> Error {
    match e {
        CallError::Unknown(_, Some(source)) => Error::LedgerUnavailable {
            reason: format!("redis: {e}"),
            source: Some(source.clone()),
        },
        _ => unavailable(e),
    }
}

/// Waiting operations, one FIFO queue per tenant, served in turn.
#[derive(Default)]
struct Queues {
    by_tenant: HashMap<Option<TenantId>, VecDeque<Job>>,
    /// Tenants with waiting work, in serving order.
    ring: VecDeque<Option<TenantId>>,
    /// Flushes waiting for everything received before them.
    flushes: Vec<(u64, oneshot::Sender<Result<Answer>>)>,
    next_seq: u64,
    /// A lease refresh tick arrived.
    refresh: bool,
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn receive(&mut self, mut job: Job) {
        job.seq = self.next_seq;
        self.next_seq += 1;
        match job.op {
            Op::Flush => {
                if let Some(tx) = job.reply {
                    self.flushes.push((job.seq, tx));
                }
            }
            Op::Refresh => self.refresh = true,
            _ => {
                let tenant = job.op.tenant();
                let q = self.by_tenant.entry(tenant).or_default();
                if q.is_empty() {
                    self.ring.push_back(tenant);
                }
                q.push_back(job);
            }
        }
    }

    /// Up to `max` operations, one per tenant in turn. Operations whose
    /// caller gave up before they were sent are dropped here.
    fn take(&mut self, max: usize, out: &mut Vec<Job>) {
        while out.len() < max {
            let Some(tenant) = self.ring.pop_front() else {
                return;
            };
            let Some(q) = self.by_tenant.get_mut(&tenant) else {
                continue;
            };
            while let Some(job) = q.pop_front() {
                if !job.abandoned() {
                    out.push(job);
                    break;
                }
            }
            if q.is_empty() {
                self.by_tenant.remove(&tenant);
            } else {
                self.ring.push_back(tenant);
            }
        }
    }

    /// The oldest operation still waiting.
    fn oldest(&self) -> Option<u64> {
        self.by_tenant
            .values()
            .filter_map(|q| q.front().map(|j| j.seq))
            .min()
    }

    /// Answers the flushes that nothing older is waiting for.
    fn answer_flushes(&mut self, retrying: Option<u64>) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest = match (self.oldest(), retrying) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(seq, _)| oldest.is_none_or(|o| o > *seq));
        self.flushes = waiting;
        for (_, tx) in done {
            let _ = tx.send(Ok(Answer::Done));
        }
    }

    /// While deferred work of a failed batch is being re-sent: answers
    /// everyone who waits (operations and flushes) with the failure, and
    /// keeps the deferred work, in order, for afterwards.
    fn fail_waiting(&mut self, error: &str) {
        let fail = |tx: oneshot::Sender<Result<Answer>>| {
            let _ = tx.send(Err(unavailable(format!(
                "{error} (re-sending deferred settlements)"
            ))));
        };
        for (_, tx) in self.flushes.drain(..) {
            fail(tx);
        }
        self.refresh = false;
        let mut emptied = Vec::new();
        for (tenant, q) in &mut self.by_tenant {
            q.retain_mut(|job| {
                if job.durable {
                    return true;
                }
                if let Some(tx) = job.reply.take() {
                    fail(tx);
                }
                false
            });
            if q.is_empty() {
                emptied.push(*tenant);
            }
        }
        for t in emptied {
            self.by_tenant.remove(&t);
            self.ring.retain(|r| *r != t);
        }
    }
}

/// Deferred work of a failed batch, waiting to be re-sent.
struct Retry {
    jobs: Vec<Job>,
    marker: Marker,
    attempts: u32,
}

/// 10 ms, doubling, at most 200 ms (so service resumes soon after Redis
/// does; reservations wait behind the re-sent work).
fn retry_backoff(attempts: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << attempts.min(5)).min(200))
}

/// The jobs of one key group in a batch and the outcome of their call.
struct GroupRun {
    jobs: Vec<Job>,
    result: std::result::Result<Reply, CallError>,
}

/// Runs the batch task until the ledger is dropped and its work is done.
pub(crate) async fn batch_task(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    requeue: mpsc::WeakUnboundedSender<Job>,
) {
    let mut queues = Queues::default();
    let mut retry: Option<Retry> = None;
    // This ledger's id as a writer of deferred work, and its last batch
    // number (see `Marker`).
    let writer = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut batches = 0u64;
    loop {
        if let Some(mut r) = retry.take() {
            let runs = shared
                .run(std::mem::take(&mut r.jobs), Some(r.marker), false)
                .await;
            let mut failed = None;
            for run in runs {
                match run.result {
                    Ok(reply) => {
                        log_invalid(&reply);
                        tracing::info!(
                            operations = run.jobs.len(),
                            attempts = r.attempts + 1,
                            "deferred quota settlements applied after a Redis failure"
                        );
                    }
                    Err(CallError::Rejected(e)) => lost(run.jobs.len(), &e),
                    Err(CallError::Unknown(e, _)) => {
                        r.jobs.extend(run.jobs);
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                if rx.is_closed() && r.attempts >= RETRIES_AFTER_CLOSE {
                    tracing::error!(operations = r.jobs.len(), error = %e,
                        "ledger dropped and Redis still failing: deferred quota settlements lost; their holds are charged at their estimates when their leases expire");
                } else {
                    while let Ok(job) = rx.try_recv() {
                        queues.receive(job);
                    }
                    queues.fail_waiting(&e);
                    tokio::time::sleep(retry_backoff(r.attempts)).await;
                    r.attempts += 1;
                    retry = Some(r);
                    continue;
                }
            }
            queues.answer_flushes(None);
            continue;
        }

        if queues.is_empty() && !queues.refresh {
            let mut received = Vec::new();
            if rx.recv_many(&mut received, MAX_BATCH).await == 0 {
                return;
            }
            for job in received {
                queues.receive(job);
            }
        }
        while let Ok(job) = rx.try_recv() {
            queues.receive(job);
        }
        queues.answer_flushes(None);
        let mut jobs = Vec::new();
        queues.take(MAX_BATCH, &mut jobs);
        if !jobs.is_empty() && jobs.iter().all(|j| j.reply.is_none()) {
            // Nobody waits for these: let the next operation someone waits
            // for (typically the caller's next reservation) join them, so
            // they cost no script call of their own.
            if let Ok(Some(job)) = tokio::time::timeout(LINGER, rx.recv()).await {
                queues.receive(job);
                while let Ok(job) = rx.try_recv() {
                    queues.receive(job);
                }
                queues.take(MAX_BATCH, &mut jobs);
            }
        }
        let refresh = std::mem::take(&mut queues.refresh);
        if jobs.is_empty() && !refresh {
            continue;
        }
        let marker = jobs.iter().any(|j| j.durable).then(|| {
            batches += 1;
            Marker {
                writer,
                batch: batches,
            }
        });
        let mut again = Vec::new();
        for run in shared.run(jobs, marker, refresh).await {
            match run.result {
                Ok(reply) => {
                    log_invalid(&reply);
                    deliver(run.jobs, reply.answers, &requeue);
                }
                Err(e) => {
                    let (durable, waiting): (Vec<Job>, Vec<Job>) =
                        run.jobs.into_iter().partition(|j| j.durable);
                    fail(waiting, &e);
                    match e {
                        CallError::Unknown(..) if !durable.is_empty() => {
                            tracing::warn!(operations = durable.len(), error = %e,
                                "Redis failed under deferred quota settlements; re-sending them");
                            again.extend(durable.into_iter().map(|mut j| {
                                // Whoever waited for it has its answer.
                                if let Some(tx) = j.reply.take() {
                                    let _ = tx.send(Err(call_unavailable(&e)));
                                }
                                j
                            }));
                        }
                        CallError::Rejected(e) if !durable.is_empty() => lost(durable.len(), &e),
                        _ => {}
                    }
                }
            }
        }
        if let (Some(m), false) = (marker, again.is_empty()) {
            retry = Some(Retry {
                jobs: again,
                marker: m,
                attempts: 0,
            });
        }
        let retrying = retry
            .as_ref()
            .and_then(|r| r.jobs.iter().map(|j| j.seq).min());
        queues.answer_flushes(retrying);
    }
}

fn lost(operations: usize, error: &str) {
    tracing::error!(operations, error,
        "the ledger script rejected deferred quota settlements; they are lost and their holds are charged at their estimates when they expire");
}

fn log_invalid(reply: &Reply) {
    if reply.invalid > 0 {
        tracing::error!(
            operations = reply.invalid,
            "the ledger script skipped invalid operations"
        );
    }
}

/// Answers whoever waits on `jobs` with the failure.
fn fail(jobs: Vec<Job>, error: &CallError) {
    for job in jobs {
        if let Some(tx) = job.reply {
            let _ = tx.send(Err(call_unavailable(error)));
        }
    }
}

/// Hands each job its answer.
fn deliver(jobs: Vec<Job>, answers: Vec<Answer>, requeue: &mpsc::WeakUnboundedSender<Job>) {
    for (job, answer) in jobs.into_iter().zip(answers) {
        let Job {
            op, reply, group, ..
        } = job;
        // Deferred work needs no answer (and reaches here only once applied:
        // a failed batch re-sends it), nor do lease refreshes.
        let Some(tx) = reply else { continue };
        if let Err(Ok(Answer::Done)) = tx.send(Ok(answer)) {
            // The caller gave up (cancellation) after its reservation was
            // granted: release it now rather than leave it to be charged
            // when its instance expires.
            if let (Op::Reserve { hold, .. }, Some(q)) = (op, requeue.upgrade()) {
                let mut job = Job::new(Op::Release { hold }, group);
                job.durable = true;
                let _ = q.send(job);
            }
        }
    }
}

impl Shared {
    /// One batch: one script call per key group, sent together. Every job
    /// comes back with its group's outcome.
    async fn run(&self, jobs: Vec<Job>, marker: Option<Marker>, refresh: bool) -> Vec<GroupRun> {
        let now = now_ms();
        let mut by_group: Vec<(Group, Vec<Job>)> = Vec::new();
        for job in jobs {
            match by_group.iter_mut().find(|(g, _)| *g == job.group) {
                Some((_, js)) => js.push(job),
                None => by_group.push((job.group, vec![job])),
            }
        }
        if refresh {
            for g in self.instances().due_groups(now) {
                if !by_group.iter().any(|(bg, _)| *bg == g) {
                    by_group.push((g, Vec::new()));
                }
            }
        }
        let calls = by_group.iter().map(|(group, jobs)| {
            let names = self.instances().names(*group, jobs, now);
            async move {
                let result = self.call(*group, jobs, &names, marker, now).await;
                (names, result)
            }
        });
        let results = futures_util::future::join_all(calls).await;
        let mut runs = Vec::with_capacity(by_group.len());
        for ((group, jobs), (names, result)) in by_group.into_iter().zip(results) {
            let reserved = jobs.iter().any(|j| matches!(j.op, Op::Reserve { .. }));
            let states = result.as_ref().ok().map(|r| r.instances.as_slice());
            self.instances()
                .answered(group, &names, states, reserved, now);
            runs.push(GroupRun { jobs, result });
        }
        runs
    }

    /// One script call for the jobs of `group`.
    async fn call(
        &self,
        group: Group,
        jobs: &[Job],
        names: &[InstanceArg],
        marker: Option<Marker>,
        now: u64,
    ) -> std::result::Result<Reply, CallError> {
        let prefix = self.layout.prefix(group);
        let mut batch = encode(jobs, names, marker, prefix, now).map_err(CallError::Rejected)?;
        if batch.reserves() && self.instances().sweep_due(group, now) {
            batch.sweep = true;
        }
        let inv = batch.invocation(&self.script, prefix, self.lease_ms);
        let call = async {
            let mut conn = self
                .connector
                .get()
                .await
                .map_err(|e| CallError::Unknown(e, None))?;
            inv.invoke_async::<Vec<String>>(&mut conn)
                .await
                .map_err(|e| CallError::Unknown(e.to_string(), Some(Arc::new(e))))
        };
        let reply = match tokio::time::timeout(self.op_timeout, call).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(CallError::Unknown("operation timed out".to_owned(), None)),
        };
        batch.decode(jobs.len(), names.len(), reply)
    }
}
