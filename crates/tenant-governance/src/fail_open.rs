//! The fail-open allowance: what a process admitted per tenant while the
//! ledger was unreachable, and has not yet seen charged to it.
//!
//! A tenant whose policy is [`FailureMode::Open`](crate::FailureMode::Open)
//! may be admitted while the ledger fails, but only while its *exposure* in
//! this process stays within its allowance: the estimates of its unaccounted
//! calls still in flight, plus the usage of finished ones handed to the
//! ledger ([`Ledger::charge_detached`](crate::Ledger::charge_detached)) and
//! not yet known to be applied. A ledger applies a tenant's queued charges
//! before that tenant's later operations, so the next answer the ledger
//! gives for the tenant (a grant or a refusal) proves them applied, and
//! that part of the exposure is cleared.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tenant_core::TenantId;

use crate::pricing::Amount;

#[derive(Clone, Copy, Debug, Default)]
struct Exposure {
    /// Estimates of unaccounted calls not yet settled or dropped.
    in_flight: Amount,
    /// Usage handed to the ledger and not yet known to be applied.
    handed: Amount,
}

impl Exposure {
    fn is_empty(&self) -> bool {
        self.in_flight == Amount::default() && self.handed == Amount::default()
    }
}

/// Per-tenant fail-open exposure of one [`Quotas`](crate::Quotas).
#[derive(Debug, Default)]
pub(crate) struct FailOpenJournal {
    tenants: Mutex<HashMap<TenantId, Exposure>>,
    /// Number of tenants with an exposure, read without the lock on the hot
    /// path (normally 0).
    exposed: AtomicUsize,
}

fn sub(a: Amount, b: Amount) -> Amount {
    Amount {
        tokens: a.tokens.saturating_sub(b.tokens),
        cost_micros: a.cost_micros.saturating_sub(b.cost_micros),
    }
}

impl FailOpenJournal {
    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Exposure>> {
        // Plain counters: a panic elsewhere cannot leave them torn.
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, map: &mut HashMap<TenantId, Exposure>, tenant: TenantId, e: Exposure) {
        if e.is_empty() {
            map.remove(&tenant);
        } else {
            map.insert(tenant, e);
        }
        self.exposed.store(map.len(), Ordering::Release);
    }

    /// Admits `amount` for `tenant` if its exposure stays within
    /// `allowance`; records it.
    pub(crate) fn admit(&self, tenant: TenantId, amount: Amount, allowance: Amount) -> bool {
        let mut map = self.lock();
        let mut e = map.get(&tenant).copied().unwrap_or_default();
        let after = e.in_flight.saturating_add(e.handed).saturating_add(amount);
        if after.exceeds(&allowance) {
            return false;
        }
        e.in_flight = e.in_flight.saturating_add(amount);
        self.store(&mut map, tenant, e);
        true
    }

    /// An unaccounted call of `reserved` ended, and `charged` was handed to
    /// the ledger.
    pub(crate) fn ended(&self, tenant: TenantId, reserved: Amount, charged: Amount) {
        let mut map = self.lock();
        let mut e = map.get(&tenant).copied().unwrap_or_default();
        e.in_flight = sub(e.in_flight, reserved);
        e.handed = e.handed.saturating_add(charged);
        self.store(&mut map, tenant, e);
    }

    /// The ledger answered an operation of `tenant`: every charge handed to
    /// it before is applied.
    pub(crate) fn ledger_answered(&self, tenant: TenantId) {
        if self.exposed.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut map = self.lock();
        if let Some(mut e) = map.get(&tenant).copied() {
            e.handed = Amount::default();
            self.store(&mut map, tenant, e);
        }
    }

    /// The tenant's current exposure (in flight plus handed).
    #[cfg(test)]
    pub(crate) fn exposure(&self, tenant: TenantId) -> Amount {
        let map = self.lock();
        map.get(&tenant)
            .map(|e| e.in_flight.saturating_add(e.handed))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amt(tokens: u64) -> Amount {
        Amount {
            tokens,
            cost_micros: 0,
        }
    }

    #[test]
    fn admits_within_the_allowance_and_clears_once_the_ledger_answers() {
        let j = FailOpenJournal::default();
        let t = TenantId::random();
        let allowance = amt(1_000);
        assert!(j.admit(t, amt(600), allowance));
        assert!(!j.admit(t, amt(500), allowance), "600 + 500 > 1000");
        j.ended(t, amt(600), amt(300));
        assert_eq!(j.exposure(t), amt(300), "the handed usage still counts");
        assert!(!j.admit(t, amt(800), allowance));
        j.ledger_answered(t);
        assert_eq!(j.exposure(t), amt(0));
        assert!(j.admit(t, amt(1_000), allowance));
        let other = TenantId::random();
        assert!(j.admit(other, amt(1_000), allowance), "per tenant");
    }
}
