//! Per-tenant admission to a [`RedisLedger`](crate::RedisLedger)'s queue.
//!
//! Each tenant may have at most `max_pending` operations that someone waits
//! for (reservations, registrations, usage reads) queued or on the wire in
//! this process. The next one is refused at once with
//! [`Error::Overloaded`](crate::Error::Overloaded): a tenant that floods the
//! ledger is refused its own calls, while the batch task serves the other
//! tenants' queues in turn. Settlements and releases are never refused
//! (they end holds that were admitted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tenant_core::TenantId;

use crate::error::{Error, Result};

/// Pending operations per tenant (`None`: platform-only operations).
#[derive(Debug)]
pub(crate) struct Admission {
    max_pending: usize,
    pending: Mutex<HashMap<Option<TenantId>, usize>>,
}

/// One admitted operation; its slot is freed when it is dropped (with its
/// job, once answered or given up).
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    tenant: Option<TenantId>,
}

impl Admission {
    pub(crate) fn new(max_pending: usize) -> Arc<Self> {
        Arc::new(Self {
            max_pending: max_pending.max(1),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Option<TenantId>, usize>> {
        // Plain counters: a panic elsewhere cannot leave them torn.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more operation of `tenant`.
    ///
    /// # Errors
    ///
    /// [`Error::Overloaded`] when the tenant has `max_pending` already.
    pub(crate) fn admit(self: &Arc<Self>, tenant: Option<TenantId>) -> Result<Permit> {
        let mut pending = self.lock();
        let n = pending.entry(tenant).or_default();
        if *n >= self.max_pending {
            return Err(Error::Overloaded {
                reason: format!(
                    "{} ledger operations of this tenant are already pending in this process",
                    self.max_pending
                ),
            });
        }
        *n += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            tenant,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut pending = self.admission.lock();
        if let Some(n) = pending.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.tenant);
            }
        }
    }
}
