//! The ledger instances a [`RedisLedger`](crate::RedisLedger) holds under,
//! as the client sees them.
//!
//! Holds are not stored one by one in Redis: each instance (a random id)
//! has, per key group, a lease and a hash of what its holds hold there. The
//! client moves new holds to a fresh instance when a call that reserved
//! failed (its outcome is unknown, so grants may be held in Redis without
//! the client knowing), when its instance was swept in some group (it
//! stalled past its lease), and once the hold TTL of the instance's first
//! hold has passed. An old instance keeps its leases until the TTL of its
//! last hold has passed, and is then left to expire: whatever it still
//! holds (a release that never arrived, a call that outlived its TTL) is
//! then swept and charged at its amount.

use std::collections::HashMap;
use std::time::Duration;

use crate::ledger::duration_ms;
use crate::redis_batch::{InstanceArg, InstanceState, Job};
use crate::redis_layout::Group;

/// One instance id.
#[derive(Debug)]
struct Instance {
    /// When new holds move to a fresh instance (the first hold's expiry).
    rotate_at_ms: u64,
    /// Until when its leases are refreshed (the last hold's expiry), once
    /// it is no longer the current instance.
    keep_until_ms: u64,
    /// The groups it may hold in, and when its lease there was last
    /// extended (client clock).
    groups: HashMap<Group, u64>,
}

impl Instance {
    fn new() -> Self {
        Self {
            rotate_at_ms: u64::MAX,
            keep_until_ms: 0,
            groups: HashMap::new(),
        }
    }
}

/// The current instance (new holds) and older ones whose holds may still
/// be outstanding.
#[derive(Debug)]
pub(crate) struct Instances {
    current: u64,
    all: HashMap<u64, Instance>,
    /// A lease is extended once a third of it has passed.
    refresh_after_ms: u64,
    /// When each group was last swept by a reserving call of this client.
    swept: HashMap<Group, u64>,
}

impl Instances {
    pub(crate) fn new(lease_ms: u64) -> Self {
        let mut s = Self {
            current: 0,
            all: HashMap::new(),
            refresh_after_ms: lease_ms / 3,
            swept: HashMap::new(),
        };
        s.rotate();
        s
    }

    /// New holds go to a fresh id from now on.
    pub(crate) fn rotate(&mut self) {
        let id = loop {
            let id = uuid::Uuid::new_v4().as_u64_pair().0;
            // 0 means "no instance" on the wire.
            if id != 0 && !self.all.contains_key(&id) {
                break id;
            }
        };
        self.all.insert(id, Instance::new());
        self.current = id;
    }

    /// The instance a new hold of `ttl` goes to.
    pub(crate) fn for_hold(&mut self, ttl: Duration, now: u64) -> u64 {
        let expiry = now.saturating_add(duration_ms(ttl));
        if self
            .all
            .get(&self.current)
            .is_none_or(|c| now >= c.rotate_at_ms)
        {
            self.rotate();
        }
        let id = self.current;
        if let Some(c) = self.all.get_mut(&id) {
            c.rotate_at_ms = c.rotate_at_ms.min(expiry);
            c.keep_until_ms = c.keep_until_ms.max(expiry);
        }
        id
    }

    fn due(&self, extended_ms: u64, now: u64) -> bool {
        now.saturating_sub(extended_ms) >= self.refresh_after_ms
    }

    /// The instances a call in `group` names: those of its jobs, then those
    /// whose lease in the group is due for a refresh. Each with whether to
    /// extend its lease.
    pub(crate) fn names(&mut self, group: Group, jobs: &[Job], now: u64) -> Vec<InstanceArg> {
        let current = self.current;
        // Instances whose last hold has expired are left to expire (and be
        // swept, charging whatever they still hold); the current one stays
        // until it has had a hold.
        self.all
            .retain(|id, i| now < i.keep_until_ms || (*id == current && i.keep_until_ms == 0));
        let mut out: Vec<InstanceArg> = Vec::new();
        for job in jobs {
            let Some(id) = job.op.instance() else {
                continue;
            };
            if id == 0 || out.iter().any(|(i, _)| *i == id) {
                continue;
            }
            let refresh = self
                .all
                .get(&id)
                .and_then(|i| i.groups.get(&group))
                .is_some_and(|&t| self.due(t, now));
            out.push((id, refresh));
        }
        for (id, i) in &self.all {
            if let Some(&t) = i.groups.get(&group) {
                if self.due(t, now) && !out.iter().any(|(o, _)| o == id) {
                    out.push((*id, true));
                }
            }
        }
        out
    }

    /// Whether a reserving call in `group` should sweep expired instances:
    /// once every third of a lease (a crashed process's holds count as held
    /// until then, so a late sweep never admits more).
    pub(crate) fn sweep_due(&mut self, group: Group, now: u64) -> bool {
        let last = self.swept.entry(group).or_insert(0);
        if now.saturating_sub(*last) >= self.refresh_after_ms {
            *last = now;
            true
        } else {
            false
        }
    }

    /// The groups where some instance's lease is due for a refresh.
    pub(crate) fn due_groups(&self, now: u64) -> Vec<Group> {
        let mut out: Vec<Group> = Vec::new();
        for i in self.all.values() {
            for (&g, &t) in &i.groups {
                if self.due(t, now) && !out.contains(&g) {
                    out.push(g);
                }
            }
        }
        out
    }

    /// Records what a call in `group` said of the instances it named;
    /// `None` when its outcome is unknown and it `reserved`.
    pub(crate) fn answered(
        &mut self,
        group: Group,
        names: &[InstanceArg],
        states: Option<&[InstanceState]>,
        reserved: bool,
        now: u64,
    ) {
        let Some(states) = states else {
            if reserved {
                // Holds granted by it may be held in Redis without the
                // client knowing: new holds go to a new instance; the old
                // one is swept (and charged) after its last hold's TTL.
                self.rotate();
            }
            return;
        };
        for ((id, _), state) in names.iter().zip(states) {
            match state {
                InstanceState::Live => {}
                InstanceState::Extended => {
                    if let Some(i) = self.all.get_mut(id) {
                        i.groups.insert(group, now);
                    }
                }
                InstanceState::Absent => {
                    if let Some(i) = self.all.get_mut(id) {
                        i.groups.remove(&group);
                    }
                }
                InstanceState::Gone => {
                    // Swept: it stalled past its lease. Its holds were
                    // charged; it can never hold again.
                    self.all.remove(id);
                    if *id == self.current {
                        self.rotate();
                    }
                }
            }
        }
    }
}
