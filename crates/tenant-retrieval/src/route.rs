//! Routes: where each tenant's points of each logical collection live, and
//! how every process serving a backend agrees on it.
//!
//! A route is persisted in the backend (edge: `routes.json` under the
//! locked root; server: a routes collection) with a version that grows on
//! every change. A migration moves through three persisted states:
//!
//! ```text
//! v     { tier: from }                 stable
//! v+1   { tier: from, moving_to: to }  writes fenced, reads still on `from`
//! v+2   { tier: to }                   switched (or { tier: from } if aborted)
//! ```
//!
//! When other processes share the backend ([`RouteAuthority::Shared`]),
//! every operation re-reads its route after it ran and is accepted only if
//! the route it used is still valid ([`still_valid`]); otherwise it is run
//! again on the new route. A write that meets a migration waits for it to
//! finish, then runs on the new tier. Within a process, the per-route
//! [`Gate`] makes migrations atomic for its own operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tenant_core::{IsolationTier, TenantId};
use tokio::sync::RwLock as AsyncRwLock;

/// A persisted routing decision: `tenant`'s points of `collection` live on
/// `tier`, whatever the tier resolver says (written by promote/demote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The tenant.
    pub tenant: TenantId,
    /// The logical collection.
    pub collection: String,
    /// Where its points are read from.
    pub tier: IsolationTier,
    /// Grows by one on every change.
    #[serde(default)]
    pub version: u64,
    /// Set while a migration to that tier runs: writes wait.
    #[serde(default)]
    pub moving_to: Option<IsolationTier>,
}

/// The route an operation used (or found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouteView {
    pub(crate) tier: IsolationTier,
    pub(crate) version: u64,
    pub(crate) moving_to: Option<IsolationTier>,
}

impl RouteView {
    pub(crate) fn of(entry: &RouteEntry) -> Self {
        Self {
            tier: entry.tier,
            version: entry.version,
            moving_to: entry.moving_to,
        }
    }

    /// A tenant no migration ever touched: the resolver's tier.
    pub(crate) fn unrouted(tier: IsolationTier) -> Self {
        Self {
            tier,
            version: 0,
            moving_to: None,
        }
    }
}

/// What an operation did with the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Whether an operation that ran on `used` is still correct now that the
/// persisted route is `now`.
///
/// A read is valid if nothing changed, or if only a migration started
/// since (its source is intact until the switch). A write is valid only if
/// nothing changed and no migration is running.
pub(crate) fn still_valid(used: RouteView, now: RouteView, access: Access) -> bool {
    match access {
        Access::Read => {
            now.version == used.version
                || (used.moving_to.is_none()
                    && now.moving_to.is_some()
                    && now.tier == used.tier
                    && now.version == used.version + 1)
        }
        Access::Write => now.version == used.version && now.moving_to.is_none(),
    }
}

/// Per (tenant, collection) locks that make promotion online and atomic
/// within a process.
///
/// Reads hold `route` (shared) for their whole backend call; writes hold
/// `writes` (shared) and then `route` (shared). A migration holds `writes`
/// exclusively for the copy and takes `route` exclusively only for the
/// switch, so reads are served from the source throughout the copy and
/// from the target after the switch, and no read straddles the two.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) route: Arc<AsyncRwLock<()>>,
    pub(crate) writes: Arc<AsyncRwLock<()>>,
}

type ByTenant<T> = HashMap<String, HashMap<TenantId, T>>;

/// The routes a process knows and its migration gates; one per backend
/// instance, shared by every `Retrieval` built on it.
#[derive(Default)]
pub struct RouteTable {
    entries: RwLock<ByTenant<RouteEntry>>,
    gates: Mutex<ByTenant<Arc<Gate>>>,
    pub(crate) persist: tokio::sync::Mutex<()>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl RouteTable {
    /// The known route of (`tenant`, `collection`), if any.
    pub(crate) fn get(&self, tenant: TenantId, collection: &str) -> Option<RouteView> {
        read(&self.entries)
            .get(collection)
            .and_then(|m| m.get(&tenant))
            .map(RouteView::of)
    }

    /// Records `entry` unless a newer version is already known.
    pub(crate) fn put(&self, entry: RouteEntry) {
        let mut entries = write(&self.entries);
        let slot = entries.entry(entry.collection.clone()).or_default();
        match slot.get(&entry.tenant) {
            Some(known) if known.version > entry.version => {}
            _ => {
                slot.insert(entry.tenant, entry);
            }
        }
    }

    /// Replaces what is known with a freshly loaded table.
    pub(crate) fn load(&self, loaded: Vec<RouteEntry>) {
        for entry in loaded {
            self.put(entry);
        }
    }

    /// Every known entry, sorted (what a local backend persists).
    #[cfg(feature = "edge")]
    pub(crate) fn snapshot(&self) -> Vec<RouteEntry> {
        let mut all: Vec<RouteEntry> = read(&self.entries)
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        all.sort_by(|a, b| (a.tenant, &a.collection).cmp(&(b.tenant, &b.collection)));
        all
    }

    pub(crate) fn gate(&self, tenant: TenantId, collection: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = gates.get(collection).and_then(|m| m.get(&tenant)) {
            return g.clone();
        }
        gates
            .entry(collection.to_owned())
            .or_default()
            .entry(tenant)
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IsolationTier::{Pool, Silo};

    fn v(tier: IsolationTier, version: u64, moving_to: Option<IsolationTier>) -> RouteView {
        RouteView {
            tier,
            version,
            moving_to,
        }
    }

    #[test]
    fn reads_survive_only_the_start_of_a_migration() {
        let used = v(Pool, 4, None);
        assert!(still_valid(used, used, Access::Read));
        assert!(still_valid(used, v(Pool, 5, Some(Silo)), Access::Read));
        assert!(!still_valid(used, v(Silo, 6, None), Access::Read));
        // Promoted and demoted again: back on Pool, but the Pool copy was
        // deleted in between, so the read may have missed points.
        assert!(!still_valid(used, v(Pool, 8, None), Access::Read));
        let migrating = v(Pool, 5, Some(Silo));
        assert!(still_valid(migrating, migrating, Access::Read));
        assert!(!still_valid(migrating, v(Silo, 6, None), Access::Read));
    }

    #[test]
    fn writes_need_an_unchanged_settled_route() {
        let used = v(Pool, 4, None);
        assert!(still_valid(used, used, Access::Write));
        assert!(!still_valid(used, v(Pool, 5, Some(Silo)), Access::Write));
        assert!(!still_valid(used, v(Silo, 6, None), Access::Write));
        let migrating = v(Pool, 5, Some(Silo));
        assert!(!still_valid(migrating, migrating, Access::Write));
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let t = RouteTable::default();
        let tenant = TenantId::random();
        let entry = |version| RouteEntry {
            tenant,
            collection: "docs".into(),
            tier: Silo,
            version,
            moving_to: None,
        };
        t.put(entry(3));
        t.put(entry(2));
        assert_eq!(t.get(tenant, "docs").map(|r| r.version), Some(3));
        t.put(entry(5));
        assert_eq!(t.get(tenant, "docs").map(|r| r.version), Some(5));
    }
}
