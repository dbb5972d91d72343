//! Where a [`RedisLedger`](crate::RedisLedger) keeps each level: the key
//! groups.
//!
//! A *group* is a set of keys one script call may touch together: its level
//! keys, its lease index, the held-amount hashes, tombstones and applied
//! markers of the instances holding in it. On a single server the whole
//! keyspace is one group (keys `<prefix>:…`). On a Redis Cluster every key
//! of a group carries the same hash tag, so the group lives in one slot:
//! the platform's level in `<prefix>:{p}:…`, and each tenant's levels
//! (tenant, agents, contexts) in one of [`CLUSTER_GROUPS`] groups
//! `<prefix>:{g<n>}:…`, chosen by a fixed hash of the tenant id. All of one
//! tenant's levels therefore share a slot, and a reservation without a
//! platform limit is one atomic script call, as on a single server. The
//! number of groups is fixed, so every replica agrees where a tenant lives.

use std::sync::Arc;

use tenant_core::TenantId;

use crate::ledger::{LevelKey, LevelSpec};

/// Tenant groups on a cluster: the most masters the tenants' levels can be
/// spread over.
pub(crate) const CLUSTER_GROUPS: u16 = 64;

/// A key group (index into [`Layout::prefixes`]).
pub(crate) type Group = u16;

/// The platform's group on a cluster.
const PLATFORM_GROUP: Group = CLUSTER_GROUPS;

/// The key layout of one ledger.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The key prefix of each group.
    prefixes: Arc<[String]>,
    cluster: bool,
}

/// FNV-1a over the tenant id: fixed across processes and builds.
fn tenant_group(tenant: &TenantId) -> Group {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(CLUSTER_GROUPS)) as Group
}

impl Layout {
    /// One group, `<prefix>:…`.
    pub(crate) fn single(prefix: &str) -> Self {
        Self {
            prefixes: vec![prefix.to_owned()].into(),
            cluster: false,
        }
    }

    /// [`CLUSTER_GROUPS`] tenant groups and the platform's, each one hash
    /// tag.
    pub(crate) fn cluster(prefix: &str) -> Self {
        let prefixes = (0..CLUSTER_GROUPS)
            .map(|g| format!("{prefix}:{{g{g}}}"))
            .chain(std::iter::once(format!("{prefix}:{{p}}")))
            .collect::<Vec<_>>();
        Self {
            prefixes: prefixes.into(),
            cluster: true,
        }
    }

    /// Whether the groups are cluster slots.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The group of a level key.
    pub(crate) fn group_of(&self, key: &LevelKey) -> Group {
        if !self.cluster {
            return 0;
        }
        match key.tenant() {
            Some(t) => tenant_group(&t),
            None => PLATFORM_GROUP,
        }
    }

    /// The key prefix of a group.
    pub(crate) fn prefix(&self, group: Group) -> &str {
        self.prefixes
            .get(usize::from(group))
            .map_or("", String::as_str)
    }

    /// `levels` split by group, in order of first appearance; each part
    /// with the indices its levels had in `levels`. One group (always, on
    /// a single server): the levels themselves, no copy.
    pub(crate) fn split(&self, levels: &Arc<[LevelSpec]>) -> Vec<Part> {
        let first = levels.first().map_or(0, |l| self.group_of(&l.key));
        if levels.iter().all(|l| self.group_of(&l.key) == first) {
            return vec![Part {
                group: first,
                levels: Arc::clone(levels),
                indices: None,
            }];
        }
        let mut parts: Vec<(Group, Vec<LevelSpec>, Vec<usize>)> = Vec::new();
        for (i, l) in levels.iter().enumerate() {
            let g = self.group_of(&l.key);
            match parts.iter_mut().find(|(pg, _, _)| *pg == g) {
                Some((_, ls, is)) => {
                    ls.push(l.clone());
                    is.push(i);
                }
                None => parts.push((g, vec![l.clone()], vec![i])),
            }
        }
        parts
            .into_iter()
            .map(|(group, levels, indices)| Part {
                group,
                levels: levels.into(),
                indices: Some(indices),
            })
            .collect()
    }
}

/// The levels of a request that live in one group.
pub(crate) struct Part {
    pub(crate) group: Group,
    pub(crate) levels: Arc<[LevelSpec]>,
    /// Each level's index in the whole request (`None`: the same).
    indices: Option<Vec<usize>>,
}

impl Part {
    /// The index in the whole request of this part's level `i`.
    pub(crate) fn index(&self, i: usize) -> usize {
        self.indices
            .as_ref()
            .and_then(|is| is.get(i).copied())
            .unwrap_or(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Bound;

    fn spec(key: LevelKey) -> LevelSpec {
        LevelSpec {
            key,
            tokens: Bound::Unlimited,
            cost: Bound::Unlimited,
            requests: None,
        }
    }

    #[test]
    fn a_tenants_levels_share_one_group_and_the_platform_has_its_own() {
        let layout = Layout::cluster("q");
        let t = TenantId::random();
        let agent = tenant_core::AgentId::new("a").unwrap();
        let levels: Arc<[LevelSpec]> = vec![
            spec(LevelKey::Platform),
            spec(LevelKey::Tenant(t)),
            spec(LevelKey::Agent(t, agent)),
        ]
        .into();
        let parts = layout.split(&levels);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].group, PLATFORM_GROUP);
        assert_eq!(parts[1].levels.len(), 2);
        assert_eq!((parts[1].index(0), parts[1].index(1)), (1, 2));
        assert!(layout.prefix(parts[1].group).starts_with("q:{g"));
        assert_eq!(layout.prefix(PLATFORM_GROUP), "q:{p}");
        assert_eq!(Layout::single("q").split(&levels).len(), 1);
    }
}
