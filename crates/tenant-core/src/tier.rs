//! Isolation tiers and how a tenant's tier is decided.
//!
//! Synchronously by a [`TierResolver`] (a [`StaticTiers`] map, possibly
//! loaded from a [`TiersConfig`] file, or a closure), or asynchronously by
//! an [`AsyncTierResolver`] (a database, a control-plane API) through a
//! [`TierCache`], which answers the synchronous resolver from what it has
//! loaded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Result;
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

/// Decides each tenant's tier through an asynchronous source (a database,
/// a control-plane API). Every [`TierResolver`] is one.
///
/// Context issuance is synchronous: put a [`TierCache`] in front of the
/// source, give the cache to the issuer
/// ([`ContextIssuerBuilder::tiers`](crate::ContextIssuerBuilder::tiers)),
/// and [`resolve`](TierCache::resolve) the tenant when its request starts.
#[async_trait::async_trait]
pub trait AsyncTierResolver: Send + Sync + 'static {
    /// The tier of `tenant`.
    ///
    /// # Errors
    ///
    /// [`Error::TierUnavailable`](crate::Error::TierUnavailable) when the
    /// source fails.
    async fn resolve_tier(&self, tenant: TenantId) -> Result<IsolationTier>;
}

#[async_trait::async_trait]
impl<T: TierResolver + ?Sized> AsyncTierResolver for T {
    async fn resolve_tier(&self, tenant: TenantId) -> Result<IsolationTier> {
        Ok(self.tier(tenant))
    }
}

/// How long a [`TierCache`] trusts a resolved tier by default.
pub const DEFAULT_TIER_CACHE_TTL: Duration = Duration::from_secs(60);

/// An [`AsyncTierResolver`] with its answers in memory, usable wherever a
/// synchronous [`TierResolver`] is needed.
///
/// [`resolve`](Self::resolve) asks the source when the tenant is unknown or
/// its answer is older than the time-to-live; [`tier`](TierResolver::tier)
/// answers from memory, and for a tenant never resolved answers the
/// fallback tier given to [`new`](Self::new) — resolve a tenant before
/// issuing its contexts. A tenant whose tier changes (promotion) is seen
/// at its next `resolve` after the time-to-live, or at once after
/// [`set`](Self::set). Cheap to clone: clones share the cache.
///
/// ```
/// use tenant_core::*;
/// struct ControlPlane;
/// #[async_trait::async_trait]
/// impl AsyncTierResolver for ControlPlane {
///     async fn resolve_tier(&self, _tenant: TenantId) -> Result<IsolationTier> {
///         Ok(IsolationTier::Silo) // ... ask the database ...
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let tiers = TierCache::new(ControlPlane, IsolationTier::Pool);
/// let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k1")?))
///     .tiers(tiers.clone())
///     .build()?;
/// let tenant = TenantId::random();
/// tiers.resolve(tenant).await?;        // when the tenant's request starts
/// let ctx = issuer.context().tenant(tenant).principal(PrincipalId::new("a")?).issue()?;
/// assert_eq!(ctx.tier(), IsolationTier::Silo);
/// # Ok(()) }
/// ```
pub struct TierCache<R> {
    source: Arc<R>,
    fallback: IsolationTier,
    ttl: Duration,
    tiers: Arc<RwLock<HashMap<TenantId, (IsolationTier, Instant)>>>,
}

impl<R> Clone for TierCache<R> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            fallback: self.fallback,
            ttl: self.ttl,
            tiers: self.tiers.clone(),
        }
    }
}

impl<R: AsyncTierResolver> TierCache<R> {
    /// A cache in front of `source`, answering `fallback` for tenants not
    /// resolved yet.
    pub fn new(source: R, fallback: IsolationTier) -> Self {
        Self {
            source: Arc::new(source),
            fallback,
            ttl: DEFAULT_TIER_CACHE_TTL,
            tiers: Arc::default(),
        }
    }

    /// How long a resolved tier is trusted before `resolve` asks again.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The tenant's tier: cached when fresh, else from the source.
    ///
    /// # Errors
    ///
    /// The source's error (the cached answer, if any, is kept).
    pub async fn resolve(&self, tenant: TenantId) -> Result<IsolationTier> {
        let cached = self
            .tiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .copied();
        if let Some((tier, at)) = cached {
            if at.elapsed() < self.ttl {
                return Ok(tier);
            }
        }
        let tier = self.source.resolve_tier(tenant).await?;
        self.set(tenant, tier);
        Ok(tier)
    }

    /// Records a tenant's tier now (after a promotion, say).
    pub fn set(&self, tenant: TenantId, tier: IsolationTier) {
        self.tiers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, (tier, Instant::now()));
    }

    /// Forgets a tenant's tier.
    pub fn forget(&self, tenant: TenantId) {
        self.tiers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tenant);
    }
}

impl<R: AsyncTierResolver> TierResolver for TierCache<R> {
    fn tier(&self, tenant: TenantId) -> IsolationTier {
        self.tiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .map_or(self.fallback, |(tier, _)| *tier)
    }
}

impl<R> std::fmt::Debug for TierCache<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierCache")
            .field("fallback", &self.fallback)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Tiers as configuration: a default and per-tenant overrides, e.g. in TOML
///
/// ```toml
/// default = "pool"
///
/// [tenants]
/// "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11" = "silo"
/// ```
///
/// Load it with [`config::from_toml_str`](crate::config) or
/// [`config::from_json_str`](crate::config::from_json_str) (errors name the
/// field) and turn it into a [`StaticTiers`] with `From`. Unknown fields
/// are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersConfig {
    /// The tier of every tenant not listed.
    pub default: IsolationTier,
    /// Per-tenant overrides.
    #[serde(default)]
    pub tenants: HashMap<TenantId, IsolationTier>,
}

impl From<TiersConfig> for StaticTiers {
    fn from(config: TiersConfig) -> Self {
        StaticTiers {
            default: config.default,
            overrides: config.tenants,
        }
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
