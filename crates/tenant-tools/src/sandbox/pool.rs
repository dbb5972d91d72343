//! A warm pool of pre-started sandboxes for one tenant.
//!
//! A warm sandbox is a workspace plus a child already cloned into its
//! namespaces, mapped to its own host uid, restricted (rlimits, Landlock
//! ruleset ready) and blocked waiting for a command: acquiring one costs a
//! lock and a pop. After its run the slot is recycled only if a wipe is
//! verified: pid 1 reaped, no process of the slot's host uid left on the
//! host, the workspace emptied and checked empty. The next command gets a
//! freshly cloned child and an environment built from scratch. A slot that
//! fails verification is discarded (and audited), never reused.

use std::fmt;
use std::sync::{Arc, Mutex};

use tenant_core::{Scoped, TenantContext, WantsTenant};

use super::{processes_of_uid, Prepared, Sandbox, SandboxCommand, SandboxOutput};
use crate::error::{Error, Result};
use crate::workspace::{Workspace, WorkspaceRoot};

/// Default first host uid of pool slots (one uid per slot).
pub const DEFAULT_POOL_UID_BASE: u32 = 200_000;

struct Slot {
    workspace: Workspace,
    prepared: Option<Prepared>,
    uid: u32,
}

struct PoolInner {
    ctx: TenantContext,
    sandbox: Arc<Sandbox>,
    root: WorkspaceRoot,
    ready: Mutex<Vec<Slot>>,
}

impl PoolInner {
    fn make_slot(&self, uid: u32) -> Result<Slot> {
        let workspace = self.root.create(&self.ctx)?;
        let prepared = self.sandbox.prepare(&workspace, uid, uid)?;
        Ok(Slot {
            workspace,
            prepared: Some(prepared),
            uid,
        })
    }

    /// Verifies the wipe of a used slot and re-arms it, or discards it.
    fn recycle(&self, mut slot: Slot) {
        // Kill and reap an unused child first.
        drop(slot.prepared.take());
        let verdict = (|| -> Result<()> {
            let left = processes_of_uid(slot.uid);
            if left != 0 {
                return Err(Error::WipeFailed(format!("{left} process(es) left behind")));
            }
            slot.workspace.wipe()?;
            if !slot.workspace.is_empty()? {
                return Err(Error::WipeFailed("workspace not empty after wipe".into()));
            }
            slot.prepared = Some(self.sandbox.prepare(&slot.workspace, slot.uid, slot.uid)?);
            Ok(())
        })();
        match verdict {
            Ok(()) => self
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot),
            Err(e) => {
                self.ctx
                    .audit_denied("sandbox.recycle", &slot.workspace.run_id().to_string(), &e);
                // The uid is not reused either: something may still run as it.
            }
        }
    }
}

/// Builds a [`WarmPool`]: platform resources, then `.tenant(&ctx)`, then
/// `build()`.
pub struct WarmPoolBuilder<State> {
    sandbox: Option<Arc<Sandbox>>,
    root: Option<WorkspaceRoot>,
    size: usize,
    uid_base: u32,
    state: State,
}

impl<S> fmt::Debug for WarmPoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmPoolBuilder")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<S> WarmPoolBuilder<S> {
    /// The sandbox configuration slots are made with.
    pub fn sandbox(mut self, sandbox: &Arc<Sandbox>) -> Self {
        self.sandbox = Some(sandbox.clone());
        self
    }

    /// Where slot workspaces live.
    pub fn workspace_root(mut self, root: &WorkspaceRoot) -> Self {
        self.root = Some(root.clone());
        self
    }

    /// How many sandboxes to keep ready (default 2).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// First host uid of the slots; slot `i` runs as `base + i`.
    pub fn uid_base(mut self, base: u32) -> Self {
        self.uid_base = base;
        self
    }
}

impl WarmPoolBuilder<WantsTenant> {
    /// Scopes the pool to `ctx`'s tenant.
    pub fn tenant(self, ctx: &TenantContext) -> WarmPoolBuilder<Scoped> {
        WarmPoolBuilder {
            sandbox: self.sandbox,
            root: self.root,
            size: self.size,
            uid_base: self.uid_base,
            state: Scoped::new(ctx),
        }
    }
}

impl WarmPoolBuilder<Scoped> {
    /// Checks the context and pre-starts `size` sandboxes.
    pub fn build(self) -> Result<WarmPool> {
        let ctx = self.state.into_checked_context()?;
        let inner = Arc::new(PoolInner {
            ctx,
            sandbox: self.sandbox.ok_or(Error::MissingConfiguration("sandbox"))?,
            root: self
                .root
                .ok_or(Error::MissingConfiguration("workspace_root"))?,
            ready: Mutex::new(Vec::new()),
        });
        for i in 0..self.size {
            let uid = self.uid_base.saturating_add(i as u32);
            let slot = inner.make_slot(uid)?;
            inner
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot);
        }
        Ok(WarmPool { inner })
    }
}

/// Pre-started sandboxes for one tenant context.
pub struct WarmPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmPool")
            .field("ctx", &self.inner.ctx)
            .field("ready", &self.ready())
            .finish()
    }
}

impl WarmPool {
    /// Starts a builder.
    pub fn builder() -> WarmPoolBuilder<WantsTenant> {
        WarmPoolBuilder {
            sandbox: None,
            root: None,
            size: 2,
            uid_base: DEFAULT_POOL_UID_BASE,
            state: WantsTenant,
        }
    }

    /// How many sandboxes are ready now.
    pub fn ready(&self) -> usize {
        self.inner.ready.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Takes a ready sandbox ([`Error::PoolExhausted`] when none is).
    pub fn acquire(&self) -> Result<WarmSandbox> {
        self.inner.ctx.check()?;
        let slot = self
            .inner
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or(Error::PoolExhausted)?;
        Ok(WarmSandbox {
            slot: Some(slot),
            pool: self.inner.clone(),
        })
    }
}

/// A pre-started sandbox taken from a [`WarmPool`]; runs one command and
/// goes back to the pool (after verification) when dropped.
pub struct WarmSandbox {
    slot: Option<Slot>,
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
    pub fn run(&mut self, cmd: &SandboxCommand) -> Result<SandboxOutput> {
        self.pool.ctx.check()?;
        let prepared = self
            .slot
            .as_mut()
            .and_then(|s| s.prepared.take())
            .ok_or_else(|| Error::WipeFailed("this sandbox has already run".into()))?;
        self.pool.sandbox.start(prepared, cmd)
    }
}

impl Drop for WarmSandbox {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.recycle(slot);
        }
    }
}
