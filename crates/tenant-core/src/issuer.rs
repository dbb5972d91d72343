//! [`ContextIssuer`]: the platform-side authority that mints contexts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::authority::PlatformAuthority;
use crate::capabilities::Capabilities;
use crate::context::{now_ms, to_ms, Claims, TenantContext};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ContextId, PrincipalId, TenantId};
use crate::keys::{KeyId, MasterKey, Purpose, Subkey};
use crate::proof::ProofKey;
use crate::revocation::Revocations;
use crate::tier::{IsolationTier, StaticTiers, TierResolver};

/// The default lifetime of a root context.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// The default longest lifetime a root context may be given.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Shared by the issuer and every context it issues.
pub(crate) struct Authority {
    signing: ProofKey,
    previous: Vec<ProofKey>,
    revocations: Revocations,
    tiers: Arc<dyn TierResolver>,
    max_ttl: Duration,
}

impl Authority {
    pub(crate) fn signing_key(&self) -> &ProofKey {
        &self.signing
    }

    pub(crate) fn accepted_key(&self, id: &KeyId) -> Option<&ProofKey> {
        if self.signing.id() == id {
            return Some(&self.signing);
        }
        self.previous.iter().find(|k| k.id() == id)
    }

    pub(crate) fn revocations(&self) -> &Revocations {
        &self.revocations
    }
}

/// Mints [`TenantContext`]s. Holds the platform master key (as a `secrecy`
/// secret) and hands out purpose-separated [`Subkey`]s to the layers that
/// verify contexts.
///
/// Build one per process at start-up and share it (`Clone` is cheap).
///
/// ```
/// use std::time::Duration;
/// use tenant_core::*;
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?))
///     .with_tiers(StaticTiers::new(IsolationTier::Pool));
/// let ctx = issuer
///     .context()
///     .tenant(TenantId::random())
///     .principal(PrincipalId::new("svc:billing")?)
///     .agent(AgentId::new("planner")?)
///     .capabilities(Capabilities::unrestricted())
///     .ttl(Duration::from_secs(300))
///     .issue()?;
/// assert_eq!(ctx.agent().as_str(), "planner");
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ContextIssuer {
    master: Arc<MasterKey>,
    authority: Arc<Authority>,
}

impl ContextIssuer {
    /// An issuer signing with `master`: every tenant in the Pool tier, a
    /// fresh revocation registry, root contexts of at most 24 hours.
    pub fn new(master: MasterKey) -> Self {
        let authority = Authority {
            signing: ProofKey::from_master(&master),
            previous: Vec::new(),
            revocations: Revocations::new(),
            tiers: Arc::new(StaticTiers::new(IsolationTier::Pool)),
            max_ttl: DEFAULT_MAX_TTL,
        };
        Self {
            master: Arc::new(master),
            authority: Arc::new(authority),
        }
    }

    fn rebuild(self, edit: impl FnOnce(&mut Authority)) -> Self {
        let old = &self.authority;
        let mut next = Authority {
            signing: old.signing.clone(),
            previous: old.previous.clone(),
            revocations: old.revocations.clone(),
            tiers: old.tiers.clone(),
            max_ttl: old.max_ttl,
        };
        edit(&mut next);
        Self {
            master: self.master,
            authority: Arc::new(next),
        }
    }

    /// Uses a shared revocation registry.
    pub fn with_revocations(self, revocations: Revocations) -> Self {
        self.rebuild(|a| a.revocations = revocations)
    }

    /// Decides tenants' tiers with `tiers`.
    pub fn with_tiers(self, tiers: impl TierResolver) -> Self {
        let tiers: Arc<dyn TierResolver> = Arc::new(tiers);
        self.rebuild(|a| a.tiers = tiers)
    }

    /// Also accepts contexts signed with a previous master key (rotation):
    /// new contexts are signed with the current key only.
    pub fn accept_previous(self, previous: &MasterKey) -> Self {
        let key = ProofKey::from_master(previous);
        self.rebuild(|a| a.previous.push(key))
    }

    /// The longest lifetime a root context may be given.
    pub fn with_max_ttl(self, max_ttl: Duration) -> Self {
        self.rebuild(|a| a.max_ttl = max_ttl)
    }

    /// The revocation registry shared with every issued context.
    pub fn revocations(&self) -> &Revocations {
        &self.authority.revocations
    }

    /// The longest lifetime a root context may be given.
    pub fn max_ttl(&self) -> Duration {
        self.authority.max_ttl
    }

    /// The id of the current signing key.
    pub fn key_id(&self) -> &KeyId {
        self.master.id()
    }

    /// The subkey for one purpose, for a layer that must verify contexts
    /// without holding the master key.
    pub fn subkey(&self, purpose: Purpose) -> Subkey {
        self.master.subkey(purpose)
    }

    /// Resolves a tenant's tier with the configured [`TierResolver`].
    pub fn tier_of(&self, tenant: TenantId) -> IsolationTier {
        self.authority.tiers.tier(tenant)
    }

    /// Starts a root context. `issue()` becomes available once tenant and
    /// principal are set.
    pub fn context(&self) -> ContextBuilder<'_, WantsTenant> {
        ContextBuilder {
            issuer: self,
            state: WantsTenant,
            agent: None,
            capabilities: Capabilities::none(),
            expiry: Expiry::Ttl(DEFAULT_TTL),
        }
    }

    pub(crate) fn shared_authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The verify-only authority to configure every platform-wide resource
    /// with: handles built from those resources admit only contexts issued
    /// by this issuer (see [`PlatformAuthority`]).
    pub fn authority(&self) -> PlatformAuthority {
        PlatformAuthority::new(self.authority.clone())
    }
}

impl fmt::Debug for ContextIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextIssuer")
            .field("key_id", self.master.id())
            .field("max_ttl", &self.authority.max_ttl)
            .finish_non_exhaustive()
    }
}

/// Builder state: the tenant is still wanted. Also the first state of every
/// tenant-scoped handle builder in the SDK.
#[derive(Debug, Clone, Copy, Default)]
pub struct WantsTenant;

/// Builder state: the principal is still wanted.
#[derive(Debug, Clone)]
pub struct WantsPrincipal {
    tenant: TenantId,
}

/// Builder state: everything required is set; `issue()` is available.
#[derive(Debug, Clone)]
pub struct ReadyToIssue {
    tenant: TenantId,
    principal: PrincipalId,
}

#[derive(Debug, Clone, Copy)]
enum Expiry {
    Ttl(Duration),
    At(SystemTime),
}

/// Builds a root [`TenantContext`]. The steps:
///
/// 1. [`tenant`](ContextBuilder::tenant) (required),
/// 2. [`principal`](ContextBuilder::principal) (required),
/// 3. optionally [`agent`](ContextBuilder::agent) (default `main`),
///    [`capabilities`](ContextBuilder::capabilities) (default
///    [`Capabilities::none`]), [`ttl`](ContextBuilder::ttl) or
///    [`expires_at`](ContextBuilder::expires_at) (default 15 minutes),
/// 4. [`issue`](ContextBuilder::issue).
#[must_use = "a builder does nothing until issue() is called"]
pub struct ContextBuilder<'a, State> {
    issuer: &'a ContextIssuer,
    state: State,
    agent: Option<AgentId>,
    capabilities: Capabilities,
    expiry: Expiry,
}

impl<'a, S> ContextBuilder<'a, S> {
    fn with_state<T>(self, state: T) -> ContextBuilder<'a, T> {
        ContextBuilder {
            issuer: self.issuer,
            state,
            agent: self.agent,
            capabilities: self.capabilities,
            expiry: self.expiry,
        }
    }

    /// The root agent (default `main`).
    pub fn agent(mut self, agent: AgentId) -> Self {
        self.agent = Some(agent);
        self
    }

    /// What the context may do (default: nothing).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Lifetime from now (default 15 minutes; at most the issuer's maximum).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Expiry::Ttl(ttl);
        self
    }

    /// Absolute expiry (at most the issuer's maximum lifetime from now).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expiry = Expiry::At(at);
        self
    }
}

impl<'a> ContextBuilder<'a, WantsTenant> {
    /// The tenant the context acts for.
    pub fn tenant(self, tenant: TenantId) -> ContextBuilder<'a, WantsPrincipal> {
        self.with_state(WantsPrincipal { tenant })
    }
}

impl<'a> ContextBuilder<'a, WantsPrincipal> {
    /// The principal on whose behalf it acts.
    pub fn principal(self, principal: PrincipalId) -> ContextBuilder<'a, ReadyToIssue> {
        let tenant = self.state.tenant;
        self.with_state(ReadyToIssue { tenant, principal })
    }
}

impl ContextBuilder<'_, ReadyToIssue> {
    /// Signs and returns the context.
    pub fn issue(self) -> Result<TenantContext> {
        let authority = self.issuer.shared_authority();
        let now = now_ms();
        let max_ms = u64::try_from(authority.max_ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at_ms = match self.expiry {
            Expiry::Ttl(ttl) => {
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                if ms == 0 {
                    return Err(Error::InvalidTtl("must be positive"));
                }
                if ms > max_ms {
                    return Err(Error::InvalidTtl("longer than the issuer's maximum"));
                }
                now.saturating_add(ms)
            }
            Expiry::At(at) => {
                let at = to_ms(at);
                if at <= now {
                    return Err(Error::InvalidTtl("expiry is in the past"));
                }
                if at - now > max_ms {
                    return Err(Error::InvalidTtl("longer than the issuer's maximum"));
                }
                at
            }
        };
        let agent = match self.agent {
            Some(a) => a,
            None => AgentId::new("main")?,
        };
        let ReadyToIssue { tenant, principal } = self.state;
        let claims = Claims {
            id: ContextId::random(),
            tenant,
            principal,
            lineage: vec![agent],
            ancestors: Vec::new(),
            tier: authority.tiers.tier(tenant),
            capabilities: self.capabilities,
            issued_at_ms: now,
            expires_at_ms,
        };
        Ok(TenantContext::sign(claims, authority.clone()))
    }
}
