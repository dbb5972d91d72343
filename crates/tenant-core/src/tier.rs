//! Isolation tiers and how a tenant's tier is decided.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// How strongly a tenant's data is separated from other tenants'.
///
/// A platform whose tenants have different tiers is what is often called a
/// "Bridge" model: no third tier is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationTier {
    /// Shared resources (one collection, one table set) separated by an
    /// enforced tenant condition.
    Pool,
    /// Dedicated resources per tenant (own collection, own sandbox pool).
    Silo,
}

impl IsolationTier {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            IsolationTier::Pool => 0,
            IsolationTier::Silo => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(IsolationTier::Pool),
            1 => Some(IsolationTier::Silo),
            _ => None,
        }
    }
}

/// Decides each tenant's tier.
///
/// Implemented by [`StaticTiers`] and by any
/// `Fn(TenantId) -> IsolationTier + Send + Sync` closure.
pub trait TierResolver: Send + Sync + 'static {
    /// The tier of `tenant`.
    fn tier(&self, tenant: TenantId) -> IsolationTier;
}

impl<F> TierResolver for F
where
    F: Fn(TenantId) -> IsolationTier + Send + Sync + 'static,
{
    fn tier(&self, tenant: TenantId) -> IsolationTier {
        self(tenant)
    }
}

/// A default tier plus per-tenant overrides.
///
/// ```
/// use tenant_core::{IsolationTier, StaticTiers, TenantId, TierResolver};
/// let big = TenantId::random();
/// let tiers = StaticTiers::new(IsolationTier::Pool).with(big, IsolationTier::Silo);
/// assert_eq!(tiers.tier(big), IsolationTier::Silo);
/// assert_eq!(tiers.tier(TenantId::random()), IsolationTier::Pool);
/// ```
#[derive(Clone, Debug)]
pub struct StaticTiers {
    default: IsolationTier,
    overrides: HashMap<TenantId, IsolationTier>,
}

impl StaticTiers {
    /// Every tenant gets `default` unless overridden.
    pub fn new(default: IsolationTier) -> Self {
        Self {
            default,
            overrides: HashMap::new(),
        }
    }

    /// Overrides one tenant's tier.
    pub fn with(mut self, tenant: TenantId, tier: IsolationTier) -> Self {
        self.overrides.insert(tenant, tier);
        self
    }
}

impl TierResolver for StaticTiers {
    fn tier(&self, tenant: TenantId) -> IsolationTier {
        self.overrides.get(&tenant).copied().unwrap_or(self.default)
    }
}
