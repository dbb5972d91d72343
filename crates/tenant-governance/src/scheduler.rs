//! [`FairScheduler`]: weighted fair admission of LLM and tool work.
//!
//! Start-time fair queuing across tenants: each tenant has a virtual finish
//! tag that advances by `1 / weight` per admitted request; the next slot goes
//! to the waiting tenant with the smallest start tag `max(tag, V)` where `V`
//! is the virtual time of the last admission (ties: earliest arrival). A
//! tenant that queues 100× more work than another therefore gets no more
//! than its weight share while both are waiting, and a tenant that was idle
//! does not bank credit (its tag is brought up to `V`). Within a tenant the
//! interactive lane is served before the batch lane. Admission is bounded
//! globally (`capacity`) and per tenant (`TenantPolicy::max_in_flight`), and
//! each lane's queue per tenant is bounded (`TenantPolicy::max_queued`).
//!
//! Decisions depend only on arrival order and weights, never on wall-clock
//! time, so they are reproducible.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tenant_core::{PlatformAuthority, TenantContext, TenantId};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::policy::Policy;

/// Which queue a request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// A user is waiting: served first.
    Interactive,
    /// Background work: served when the tenant has no interactive work.
    Batch,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Interactive => "interactive",
            Lane::Batch => "batch",
        })
    }
}

struct Waiter {
    seq: u64,
    tx: oneshot::Sender<SchedulerPermit>,
    ctx: TenantContext,
}

struct TenantQueue {
    weight: f64,
    max_in_flight: usize,
    max_queued: usize,
    in_flight: usize,
    finish: f64,
    interactive: VecDeque<Waiter>,
    batch: VecDeque<Waiter>,
}

impl TenantQueue {
    fn head_seq(&self) -> Option<u64> {
        self.interactive
            .front()
            .or_else(|| self.batch.front())
            .map(|w| w.seq)
    }

    /// Discards waiters at the heads of the lanes that gave up.
    fn drop_cancelled(&mut self) {
        for lane in [&mut self.interactive, &mut self.batch] {
            while lane.front().is_some_and(|w| w.tx.is_closed()) {
                lane.pop_front();
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.interactive.is_empty() && self.batch.is_empty()
    }
}

struct State {
    capacity: usize,
    in_flight: usize,
    virtual_time: f64,
    next_seq: u64,
    tenants: HashMap<TenantId, TenantQueue>,
}

struct Shared {
    state: Mutex<State>,
    policy: Policy,
    authority: PlatformAuthority,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Weighted fair admission across tenants (see the module docs).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tenant_core::*;
/// use tenant_governance::{FairScheduler, Lane, Policy};
/// # let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// # let ctx = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("a")?).issue()?;
/// let scheduler = FairScheduler::builder(&issuer.authority())
///     .policy(Policy::default())
///     .capacity(32)
///     .build();
/// let permit = scheduler.admit(&ctx, Lane::Interactive).await?;
/// // ... call the model ...
/// drop(permit); // frees the slot for the next tenant in line
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FairScheduler {
    shared: Arc<Shared>,
}

impl fmt::Debug for FairScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.shared.state);
        f.debug_struct("FairScheduler")
            .field("capacity", &s.capacity)
            .field("in_flight", &s.in_flight)
            .field("tenants", &s.tenants.len())
            .finish()
    }
}

/// Configures a [`FairScheduler`].
#[derive(Debug)]
#[must_use]
pub struct FairSchedulerBuilder {
    policy: Policy,
    capacity: usize,
    authority: PlatformAuthority,
}

impl FairSchedulerBuilder {
    /// Weights, per-tenant concurrency and queue bounds come from here.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Requests admitted at once across all tenants (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Builds the scheduler.
    pub fn build(self) -> FairScheduler {
        FairScheduler {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    capacity: self.capacity,
                    in_flight: 0,
                    virtual_time: 0.0,
                    next_seq: 0,
                    tenants: HashMap::new(),
                }),
                policy: self.policy,
                authority: self.authority,
            }),
        }
    }
}

impl FairScheduler {
    /// A scheduler for contexts issued under `authority`
    /// (`issuer.authority()`) only; default policy, capacity 64.
    pub fn builder(authority: &PlatformAuthority) -> FairSchedulerBuilder {
        FairSchedulerBuilder {
            policy: Policy::default(),
            capacity: 64,
            authority: authority.clone(),
        }
    }

    /// Waits for a slot for `ctx` in `lane`. Cancel-safe: dropping the
    /// future gives up the place in the queue (or the slot, if it had just
    /// been granted).
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context or one not issued under
    /// the scheduler's authority ([`tenant_core::Error::ForeignAuthority`]);
    /// [`Error::QueueFull`] when the tenant already has `max_queued`
    /// requests waiting in that lane.
    pub async fn admit(&self, ctx: &TenantContext, lane: Lane) -> Result<SchedulerPermit> {
        let span = tenant_core::operation_span!("schedule.admit", ctx);
        tenant_core::telemetry::traced(span, async {
            if let Err(e) = self.shared.authority.admit(ctx) {
                ctx.deny("schedule.admit", &lane.to_string(), &e);
                return Err(e.into());
            }
            let rx = self.enqueue(ctx, lane)?;
            // The sender is only dropped with a permit sent or by the
            // scheduler being dropped, which cannot happen while `self`
            // lives; treat it as a closed queue anyway.
            rx.await
                .map_err(|_| Error::InvalidConfiguration("scheduler shut down".into()))
        })
        .await
    }

    fn enqueue(
        &self,
        ctx: &TenantContext,
        lane: Lane,
    ) -> Result<oneshot::Receiver<SchedulerPermit>> {
        let (tx, rx) = oneshot::channel();
        let grants = {
            let mut s = lock(&self.shared.state);
            let seq = s.next_seq;
            s.next_seq += 1;
            let vt = s.virtual_time;
            let policy = self.shared.policy.for_context(ctx);
            let q = s
                .tenants
                .entry(ctx.tenant())
                .or_insert_with(|| TenantQueue {
                    weight: f64::from(policy.weight.max(1)),
                    max_in_flight: policy.max_in_flight,
                    max_queued: policy.max_queued,
                    in_flight: 0,
                    finish: vt,
                    interactive: VecDeque::new(),
                    batch: VecDeque::new(),
                });
            let queue = match lane {
                Lane::Interactive => &mut q.interactive,
                Lane::Batch => &mut q.batch,
            };
            if queue.len() >= q.max_queued {
                queue.retain(|w| !w.tx.is_closed());
            }
            if queue.len() >= q.max_queued {
                let max_queued = q.max_queued;
                let idle = q.is_idle();
                if idle {
                    s.tenants.remove(&ctx.tenant());
                }
                return Err(Error::QueueFull { lane, max_queued });
            }
            queue.push_back(Waiter {
                seq,
                tx,
                ctx: ctx.clone(),
            });
            self.dispatch(&mut s)
        };
        deliver(grants);
        Ok(rx)
    }

    /// Picks waiters while there is room; returns the grants to send once
    /// the lock is released (a failed send drops the permit, whose `Drop`
    /// takes the lock again).
    fn dispatch(&self, s: &mut State) -> Vec<(oneshot::Sender<SchedulerPermit>, SchedulerPermit)> {
        let mut grants = Vec::new();
        while s.in_flight < s.capacity {
            let vt = s.virtual_time;
            let mut best: Option<(f64, u64, TenantId)> = None;
            for (id, q) in s.tenants.iter_mut() {
                if q.in_flight >= q.max_in_flight {
                    continue;
                }
                q.drop_cancelled();
                let Some(seq) = q.head_seq() else { continue };
                let start = q.finish.max(vt);
                let better = match best {
                    None => true,
                    Some((bs, bseq, _)) => start < bs || (start == bs && seq < bseq),
                };
                if better {
                    best = Some((start, seq, *id));
                }
            }
            let Some((start, _, tenant)) = best else {
                break;
            };
            let Some(q) = s.tenants.get_mut(&tenant) else {
                break;
            };
            let Some(waiter) = q.interactive.pop_front().or_else(|| q.batch.pop_front()) else {
                break;
            };
            q.finish = start + 1.0 / q.weight;
            q.in_flight += 1;
            s.in_flight += 1;
            s.virtual_time = start;
            let permit = SchedulerPermit {
                shared: Arc::clone(&self.shared),
                ctx: waiter.ctx,
            };
            grants.push((waiter.tx, permit));
        }
        s.tenants.retain(|_, q| !q.is_idle());
        grants
    }

    /// Requests waiting (and not given up), all tenants and lanes.
    pub fn queued(&self) -> usize {
        let s = lock(&self.shared.state);
        s.tenants
            .values()
            .flat_map(|q| q.interactive.iter().chain(q.batch.iter()))
            .filter(|w| !w.tx.is_closed())
            .count()
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.state).in_flight
    }
}

fn deliver(grants: Vec<(oneshot::Sender<SchedulerPermit>, SchedulerPermit)>) {
    for (tx, permit) in grants {
        // A waiter that gave up returns the permit, which frees the slot.
        let _ = tx.send(permit);
    }
}

/// An admitted slot, bound to the context it was admitted for. Dropping it
/// frees the slot.
#[must_use = "the slot is freed when the permit is dropped"]
pub struct SchedulerPermit {
    shared: Arc<Shared>,
    ctx: TenantContext,
}

impl fmt::Debug for SchedulerPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerPermit")
            .field("tenant", &self.ctx.tenant())
            .finish()
    }
}

impl SchedulerPermit {
    /// The context this slot was admitted for.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }
}

impl Drop for SchedulerPermit {
    fn drop(&mut self) {
        let scheduler = FairScheduler {
            shared: Arc::clone(&self.shared),
        };
        let grants = {
            let mut s = lock(&self.shared.state);
            s.in_flight = s.in_flight.saturating_sub(1);
            if let Some(q) = s.tenants.get_mut(&self.ctx.tenant()) {
                q.in_flight = q.in_flight.saturating_sub(1);
            }
            scheduler.dispatch(&mut s)
        };
        deliver(grants);
    }
}
