//! Session binding: an `Mcp-Session-Id` belongs to the tenant and principal
//! whose token created it, and is found only by them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{SessionId, SessionManager};
use tenant_core::{PrincipalId, TenantContext, TenantId};

use crate::error::{Error, Result};

/// The longest session id accepted in a header.
const MAX_SESSION_ID_LEN: usize = 128;
/// Bindings kept before dead sessions are swept.
const SWEEP_AT: usize = 1024;

/// Whose session it is.
#[derive(Clone, PartialEq, Eq)]
struct Owner {
    tenant: TenantId,
    principal: PrincipalId,
}

impl Owner {
    fn of(ctx: &TenantContext) -> Self {
        Self {
            tenant: ctx.tenant(),
            principal: ctx.principal().clone(),
        }
    }
}

/// The owner of every live session, and a per-tenant session cap.
pub(crate) struct SessionBindings {
    owners: Mutex<HashMap<Arc<str>, Owner>>,
    manager: Arc<LocalSessionManager>,
    per_tenant: usize,
    sweep_at: Mutex<usize>,
}

impl SessionBindings {
    pub(crate) fn new(manager: Arc<LocalSessionManager>, per_tenant: usize) -> Self {
        Self {
            owners: Mutex::default(),
            manager,
            per_tenant,
            sweep_at: Mutex::new(SWEEP_AT),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Owner>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` when `id` is a session of `ctx`'s tenant and principal. Any
    /// other session, and a session nobody owns, is [`Error::UnknownSession`]:
    /// a caller cannot tell another tenant's session from none.
    pub(crate) fn check(&self, id: &str, ctx: &TenantContext) -> Result<()> {
        if id.len() > MAX_SESSION_ID_LEN {
            return Err(Error::UnknownSession);
        }
        match self.lock().get(id) {
            Some(owner) if *owner == Owner::of(ctx) => Ok(()),
            _ => Err(Error::UnknownSession),
        }
    }

    /// Whether `ctx`'s tenant may open one more session (dead sessions are
    /// swept first).
    pub(crate) async fn has_room(&self, ctx: &TenantContext) -> bool {
        let tenant = ctx.tenant();
        let mine: Vec<Arc<str>> = self
            .lock()
            .iter()
            .filter(|(_, o)| o.tenant == tenant)
            .map(|(id, _)| id.clone())
            .collect();
        if mine.len() < self.per_tenant {
            return true;
        }
        self.sweep(mine).await;
        let left = self.lock().values().filter(|o| o.tenant == tenant).count();
        left < self.per_tenant
    }

    /// Records that `ctx` created session `id`.
    pub(crate) async fn bind(&self, id: &str, ctx: &TenantContext) {
        let len = {
            let mut owners = self.lock();
            owners.insert(Arc::from(id), Owner::of(ctx));
            owners.len()
        };
        let due = {
            let mut at = self.sweep_at.lock().unwrap_or_else(|e| e.into_inner());
            if len < *at {
                false
            } else {
                *at = (len * 2).max(SWEEP_AT);
                true
            }
        };
        if due {
            let all: Vec<Arc<str>> = self.lock().keys().cloned().collect();
            self.sweep(all).await;
        }
    }

    /// Forgets session `id` (closed by its owner).
    pub(crate) fn unbind(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Drops the bindings of sessions the session manager no longer holds
    /// (closed, or idle past its keep-alive).
    async fn sweep(&self, ids: Vec<Arc<str>>) {
        for id in ids {
            let session: SessionId = id.clone();
            if !self.manager.has_session(&session).await.unwrap_or(false) {
                self.lock().remove(&id);
            }
        }
    }
}
