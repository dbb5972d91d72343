//! Warm pools of pre-started sandboxes.
//!
//! A warm slot is an empty tmpfs workspace plus a child already cloned into
//! its namespaces, mapped to the slot's own host uid, placed in its control
//! groups, inside its minimal root, with every privilege dropped, Landlock
//! and seccomp in force — blocked waiting for a command. Acquiring one
//! admits the context, pops the slot and moves the workspace's mount under
//! the tenant (`<root>/<tenant>/<run>`): no clone, no mount building on the
//! caller's path.
//!
//! Recycling happens on the pool's own thread, never on the caller's: the
//! used slot's sandbox is killed and reaped, its control groups emptied
//! and removed, the host is checked to hold no process of the slot's uid,
//! and its workspace tmpfs is unmounted (the data is gone with it). Only
//! then is a fresh, verified-empty tmpfs mounted and a new child prepared
//! for the same uid. A slot failing verification is discarded and audited,
//! and its uid retired.
//!
//! Every pool reserves its own range of host uids (see
//! [`DEFAULT_POOL_UID_BASE`](super::DEFAULT_POOL_UID_BASE)); ranges of two
//! pools never overlap. Pool-tier tenants share the pool's slots (a slot
//! never serves two runs: it is rebuilt in between); with
//! [`tiers`](WarmPoolBuilder::tiers), each Silo-tier tenant gets a
//! dedicated set of slots with a uid range of its own.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tenant_core::{IsolationTier, TenantContext, TenantId, TierResolver};

use super::uids::UidRange;
use super::{processes_of_uid, Prepared, Sandbox, SandboxCommand, SandboxOutput};
use crate::error::{Error, Result};
use crate::redaction::Redactor;
use crate::workspace::{Unassigned, Workspace, WorkspaceRoot};

/// A slot ready to be acquired.
struct Ready {
    uid: u32,
    workspace: Unassigned,
    prepared: Prepared,
}

/// A slot after its run, on its way back.
struct Used {
    uid: u32,
    workspace: Workspace,
    prepared: Prepared,
    ctx: TenantContext,
}

/// The slots of the shared pool or of one dedicated tenant.
struct SubPool {
    tenant: Option<TenantId>,
    uids: UidRange,
    ready: Mutex<Vec<Ready>>,
    available: Condvar,
}

impl SubPool {
    fn new(tenant: Option<TenantId>, uids: UidRange) -> Arc<Self> {
        Arc::new(Self {
            tenant,
            uids,
            ready: Mutex::new(Vec::new()),
            available: Condvar::new(),
        })
    }

    fn push(&self, slot: Ready) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
        self.available.notify_one();
    }

    fn len(&self) -> usize {
        self.ready.lock().map(|r| r.len()).unwrap_or(0)
    }
}

enum Job {
    Refill(Arc<SubPool>, u32),
    Recycle(Arc<SubPool>, Box<Used>),
}

/// What the recycler needs to make slots.
#[derive(Clone)]
struct Maker {
    sandbox: Arc<Sandbox>,
    root: WorkspaceRoot,
    /// Set when the pool is dropped: used slots are still wiped, no new
    /// ones are made.
    stopping: Arc<AtomicBool>,
}

impl Maker {
    fn make(&self, uid: u32) -> Result<Ready> {
        let workspace = self.root.unassigned()?;
        if !workspace.is_empty()? {
            return Err(Error::WipeFailed("a fresh workspace is not empty".into()));
        }
        let prepared = self.sandbox.prepare(workspace.path(), uid, uid, None)?;
        Ok(Ready {
            uid,
            workspace,
            prepared,
        })
    }

    /// Tears a used slot down and proves nothing of it is left.
    fn wipe(&self, used: Used) -> Result<u32> {
        let Used {
            uid,
            workspace,
            prepared,
            ctx,
        } = used;
        // Kill and reap the sandbox; its control groups are emptied and
        // removed with it.
        drop(prepared);
        let verdict = (|| {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let left = processes_of_uid(uid);
                if left == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::WipeFailed(format!(
                        "{left} process(es) of host uid {uid} left behind"
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })();
        let run = workspace.run_id().to_string();
        // Unmounting the tmpfs discards everything the run wrote.
        drop(workspace);
        match verdict {
            Ok(()) => {
                ctx.audit_allowed("sandbox.recycle", &run);
                Ok(uid)
            }
            Err(e) => {
                ctx.deny("sandbox.recycle", &run, &e);
                Err(e)
            }
        }
    }

    fn run(self, jobs: std::sync::mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            let (sub, uid) = match job {
                Job::Refill(sub, uid) => (sub, Ok(uid)),
                Job::Recycle(sub, used) => {
                    let uid = self.wipe(*used);
                    (sub, uid)
                }
            };
            // A uid whose wipe failed is retired, never handed out again.
            let Ok(uid) = uid else { continue };
            if self.stopping.load(Ordering::SeqCst) {
                continue;
            }
            match self.make(uid) {
                Ok(slot) => sub.push(slot),
                Err(e) => tracing::warn!(
                    target: tenant_core::AUDIT_TARGET,
                    decision = "denied",
                    action = "sandbox.refill",
                    tenant_id = ?sub.tenant,
                    error = %e,
                    "a warm slot could not be prepared"
                ),
            }
        }
    }
}

struct PoolInner {
    maker: Maker,
    shared: Arc<SubPool>,
    tiers: Option<Arc<dyn TierResolver>>,
    dedicated_size: u32,
    dedicated: Mutex<HashMap<TenantId, Arc<SubPool>>>,
    jobs: Mutex<Option<Sender<Job>>>,
    recycler: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PoolInner {
    fn send(&self, job: Job) {
        if let Some(jobs) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = jobs.send(job);
        }
    }
}

impl Drop for PoolInner {
    /// Lets the recycler finish the slots it was given, so that every
    /// sandbox, cgroup and workspace mount of the pool is torn down before
    /// the pool is gone.
    fn drop(&mut self) {
        self.maker.stopping.store(true, Ordering::SeqCst);
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let recycler = self
            .recycler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = recycler {
            let _ = handle.join();
        }
    }
}

impl PoolInner {
    fn sub_pool(&self, tenant: TenantId) -> Result<Arc<SubPool>> {
        let silo = self
            .tiers
            .as_ref()
            .is_some_and(|t| t.tier(tenant) == IsolationTier::Silo);
        if !silo {
            return Ok(self.shared.clone());
        }
        let mut dedicated = self.dedicated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sub) = dedicated.get(&tenant) {
            return Ok(sub.clone());
        }
        let uids = UidRange::reserve(None, self.dedicated_size)?;
        let sub = SubPool::new(Some(tenant), uids);
        for i in 0..self.dedicated_size {
            if let Some(uid) = sub.uids.uid(i) {
                self.send(Job::Refill(sub.clone(), uid));
            }
        }
        dedicated.insert(tenant, sub.clone());
        Ok(sub)
    }
}

/// Builds a [`WarmPool`] from platform resources.
pub struct WarmPoolBuilder {
    sandbox: Option<Arc<Sandbox>>,
    root: Option<WorkspaceRoot>,
    size: u32,
    uid_base: Option<u32>,
    tiers: Option<Arc<dyn TierResolver>>,
    dedicated_size: Option<u32>,
}

impl fmt::Debug for WarmPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmPoolBuilder")
            .field("size", &self.size)
            .field("uid_base", &self.uid_base)
            .finish_non_exhaustive()
    }
}

impl WarmPoolBuilder {
    /// The sandbox configuration slots are made with.
    pub fn sandbox(mut self, sandbox: &Arc<Sandbox>) -> Self {
        self.sandbox = Some(sandbox.clone());
        self
    }

    /// Where slot workspaces live. Its quota sizes each slot's tmpfs, and
    /// its authority decides which contexts may acquire.
    pub fn workspace_root(mut self, root: &WorkspaceRoot) -> Self {
        self.root = Some(root.clone());
        self
    }

    /// How many sandboxes the shared slots keep ready (default 2).
    pub fn size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// First host uid of the shared slots (slot `i` runs as `base + i`).
    /// Default: the lowest range no other pool holds. A range that
    /// overlaps another pool's is [`Error::UidRangeUnavailable`].
    pub fn uid_base(mut self, base: u32) -> Self {
        self.uid_base = Some(base);
        self
    }

    /// Gives every Silo-tier tenant (per `tiers`) dedicated slots, with a
    /// uid range of their own, made on the tenant's first acquire; Pool-tier
    /// tenants share the pool's slots.
    pub fn tiers(mut self, tiers: impl TierResolver) -> Self {
        self.tiers = Some(Arc::new(tiers));
        self
    }

    /// How many slots a dedicated (Silo-tier) tenant keeps ready (default:
    /// the pool's size).
    pub fn dedicated_size(mut self, size: u32) -> Self {
        self.dedicated_size = Some(size);
        self
    }

    /// Reserves the uid range and prepares the shared slots.
    ///
    /// Errors: [`Error::MissingConfiguration`], [`Error::UidRangeUnavailable`],
    /// [`Error::SandboxUnavailable`] (a root without a quota), and any
    /// sandbox setup error.
    pub fn build(self) -> Result<WarmPool> {
        let sandbox = self.sandbox.ok_or(Error::MissingConfiguration("sandbox"))?;
        let root = self
            .root
            .ok_or(Error::MissingConfiguration("workspace_root"))?;
        sandbox.check_workspace_root(root.path())?;
        let uids = UidRange::reserve(self.uid_base, self.size)?;
        let maker = Maker {
            sandbox,
            root,
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let shared = SubPool::new(None, uids);
        for i in 0..self.size {
            if let Some(uid) = shared.uids.uid(i) {
                shared.push(maker.make(uid)?);
            }
        }
        let (tx, rx) = channel();
        let recycler = maker.clone();
        let recycler = std::thread::Builder::new()
            .name("tenant-tools-pool".into())
            .spawn(move || recycler.run(rx))
            .map_err(|e| Error::setup("pool thread", e))?;
        Ok(WarmPool {
            inner: Arc::new(PoolInner {
                maker,
                shared,
                tiers: self.tiers,
                dedicated_size: self.dedicated_size.unwrap_or(self.size).max(1),
                dedicated: Mutex::new(HashMap::new()),
                jobs: Mutex::new(Some(tx)),
                recycler: Mutex::new(Some(recycler)),
            }),
        })
    }
}

/// Pre-started sandboxes, platform-wide: any context the workspace root's
/// authority admits may acquire one, which then runs for that context's
/// tenant only.
pub struct WarmPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmPool")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl WarmPool {
    /// Starts a builder.
    pub fn builder() -> WarmPoolBuilder {
        WarmPoolBuilder {
            sandbox: None,
            root: None,
            size: 2,
            uid_base: None,
            tiers: None,
            dedicated_size: None,
        }
    }

    /// How many shared sandboxes are ready now.
    pub fn ready(&self) -> usize {
        self.inner.shared.len()
    }

    /// How many sandboxes are ready now for `ctx`'s tenant (its dedicated
    /// slots for a Silo-tier tenant, else the shared ones).
    pub fn ready_for(&self, ctx: &TenantContext) -> Result<usize> {
        self.inner.maker.root.authority().admit(ctx)?;
        Ok(self.inner.sub_pool(ctx.tenant())?.len())
    }

    /// Takes a ready sandbox for `ctx` ([`Error::PoolExhausted`] when none
    /// is ready; recycled slots come back in the background).
    ///
    /// Errors: [`Error::Context`] for a context the root's authority does
    /// not admit (nothing is taken from the pool), [`Error::PoolExhausted`].
    pub fn acquire(&self, ctx: &TenantContext) -> Result<WarmSandbox> {
        self.acquire_within(ctx, Duration::ZERO)
    }

    /// Like [`acquire`](Self::acquire), waiting up to `wait` (at most a
    /// minute) for a slot to come back. Blocking: call from a blocking
    /// context.
    pub fn acquire_within(&self, ctx: &TenantContext, wait: Duration) -> Result<WarmSandbox> {
        if wait > Duration::from_secs(60) {
            return Err(Error::InvalidDuration {
                what: "pool wait",
                max: Duration::from_secs(60),
            });
        }
        self.inner.maker.root.authority().admit(ctx)?;
        let sub = self.inner.sub_pool(ctx.tenant())?;
        let deadline = Instant::now() + wait;
        let slot = {
            let mut ready = sub.ready.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(slot) = ready.pop() {
                    break slot;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::PoolExhausted);
                }
                ready = sub
                    .available
                    .wait_timeout(ready, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        let Ready {
            uid,
            workspace,
            prepared,
        } = slot;
        let workspace = match workspace.assign(ctx) {
            Ok(ws) => ws,
            Err(e) => {
                drop(prepared);
                self.inner.send(Job::Refill(sub, uid));
                return Err(e);
            }
        };
        ctx.audit_allowed("sandbox.acquire", &workspace.run_id().to_string());
        Ok(WarmSandbox {
            slot: Some(Used {
                uid,
                workspace,
                prepared,
                ctx: ctx.clone(),
            }),
            sub,
            pool: self.inner.clone(),
        })
    }

    /// Waits until at least `n` shared sandboxes are ready, for at most
    /// `timeout` (capped at a minute). Blocking.
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(Duration::from_secs(60));
        while self.ready() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// A pre-started sandbox taken from a [`WarmPool`]: runs one command for
/// the context that acquired it, and goes back to the pool's recycler
/// when dropped.
pub struct WarmSandbox {
    slot: Option<Used>,
    sub: Arc<SubPool>,
    pool: Arc<PoolInner>,
}

impl fmt::Debug for WarmSandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmSandbox").finish_non_exhaustive()
    }
}

impl WarmSandbox {
    /// The sandbox's workspace (write inputs here before running).
    pub fn workspace(&self) -> Option<&Workspace> {
        self.slot.as_ref().map(|s| &s.workspace)
    }

    /// Runs `cmd` in the pre-started child.
    ///
    /// Errors: [`Error::WipeFailed`] when this sandbox has already run,
    /// [`Error::Context`] when the context has expired or been revoked.
    pub fn run(&mut self, cmd: &SandboxCommand) -> Result<SandboxOutput> {
        self.run_redacted(cmd, None)
    }

    /// [`run`](Self::run), scrubbing every secret `redactor` knows from the
    /// output.
    pub fn run_redacted(
        &mut self,
        cmd: &SandboxCommand,
        redactor: Option<&Redactor>,
    ) -> Result<SandboxOutput> {
        let slot = self
            .slot
            .as_mut()
            .ok_or_else(|| Error::WipeFailed("this sandbox has been returned".into()))?;
        self.pool.maker.root.authority().admit(&slot.ctx)?;
        self.pool
            .maker
            .sandbox
            .start(&mut slot.prepared, cmd, redactor)
    }
}

impl Drop for WarmSandbox {
    fn drop(&mut self) {
        if let Some(used) = self.slot.take() {
            self.pool
                .send(Job::Recycle(self.sub.clone(), Box::new(used)));
        }
    }
}
