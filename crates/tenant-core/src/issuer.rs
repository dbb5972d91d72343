//! [`ContextIssuer`]: the platform-side authority that mints contexts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::authority::PlatformAuthority;
use crate::capabilities::Capabilities;
use crate::context::{now_ms, to_ms, Claims, TenantContext};
use crate::error::{ClaimRejection, Error, Result};
use crate::ids::{AgentId, ContextId, PrincipalId, TenantId};
use crate::keys::{KeyId, MasterKey, Purpose, Subkey};
use crate::origin::Origin;
use crate::proof::ProofKey;
use crate::revocation::Revocations;
use crate::telemetry::Telemetry;
use crate::tier::{IsolationTier, StaticTiers, TierResolver};
use crate::token_keys::{TokenSigner, TokenVerifier};

/// The default lifetime of a root context.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// The default longest lifetime a root context may be given.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Shared by the issuer and every context it issues.
pub(crate) struct Authority {
    signing: ProofKey,
    previous: Vec<ProofKey>,
    token_signer: TokenSigner,
    token_verifier: TokenVerifier,
    revocations: Revocations,
    tiers: Arc<dyn TierResolver>,
    max_ttl: Duration,
    telemetry: Telemetry,
}

impl Authority {
    pub(crate) fn telemetry(&self) -> Telemetry {
        self.telemetry
    }

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

    pub(crate) fn token_signer(&self) -> &TokenSigner {
        &self.token_signer
    }

    pub(crate) fn token_verifier(&self) -> &TokenVerifier {
        &self.token_verifier
    }
}

/// A retired master key still accepted: its proof key and the public key
/// of its token signer.
struct PreviousKey {
    proof: ProofKey,
    token: ed25519_dalek::VerifyingKey,
}

impl PreviousKey {
    fn from_master(master: &MasterKey) -> Self {
        Self {
            proof: ProofKey::from_master(master),
            token: TokenSigner::from_master(master).verifying_key(),
        }
    }
}

/// The longest `max_ttl` an issuer may be configured with (100 years): far
/// beyond any sensible context lifetime, far below clock overflow.
pub const MAX_TTL_CEILING: Duration = Duration::from_secs(100 * 366 * 24 * 60 * 60);

/// Mints [`TenantContext`]s. Holds the platform master key (as a `secrecy`
/// secret) and hands out purpose-separated [`Subkey`]s to the layers that
/// verify contexts.
///
/// Build one per process at start-up and share it (`Clone` is cheap). Its
/// configuration (revocation registry, tiers, accepted previous keys,
/// maximum lifetime) is fixed when it is built, so every context it ever
/// issues is checked against the same registry.
///
/// ```
/// use std::time::Duration;
/// use tenant_core::*;
/// let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("2026-11")?))
///     .tiers(StaticTiers::new(IsolationTier::Pool))
///     .max_ttl(Duration::from_secs(3600))
///     .build()?;
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
    /// An issuer signing with `master` and the defaults: every tenant in the
    /// Pool tier, a fresh revocation registry, root contexts of at most 24
    /// hours, no previous keys. Use [`builder`](Self::builder) for anything
    /// else.
    pub fn new(master: MasterKey) -> Self {
        Self::from_config(Config {
            master,
            previous: Vec::new(),
            revocations: Revocations::new(),
            tiers: Arc::new(StaticTiers::new(IsolationTier::Pool)),
            max_ttl: DEFAULT_MAX_TTL,
            telemetry: Telemetry::default(),
        })
    }

    /// Starts configuring an issuer signing with `master`. The steps, all
    /// optional:
    ///
    /// 1. [`revocations`](ContextIssuerBuilder::revocations) — the registry
    ///    every context of this issuer is checked against (default: a fresh
    ///    one),
    /// 2. [`tiers`](ContextIssuerBuilder::tiers) (default: all Pool),
    /// 3. [`accept_previous`](ContextIssuerBuilder::accept_previous) for
    ///    each retired key still accepted during rotation,
    /// 4. [`max_ttl`](ContextIssuerBuilder::max_ttl) (default 24 hours),
    /// 5. [`telemetry`](ContextIssuerBuilder::telemetry) — what spans and
    ///    metrics may reveal (default: no principal, no tenant labels),
    /// 6. [`build`](ContextIssuerBuilder::build).
    pub fn builder(master: MasterKey) -> ContextIssuerBuilder {
        ContextIssuerBuilder {
            master,
            previous: Vec::new(),
            revocations: None,
            tiers: None,
            max_ttl: DEFAULT_MAX_TTL,
            telemetry: Telemetry::default(),
        }
    }

    /// Key ids are distinct here ([`ContextIssuerBuilder::build`] checks).
    fn from_config(config: Config) -> Self {
        let token_signer = TokenSigner::from_master(&config.master);
        let mut token_keys = vec![(token_signer.id().clone(), token_signer.verifying_key())];
        let mut previous = Vec::with_capacity(config.previous.len());
        for key in config.previous {
            token_keys.push((key.proof.id().clone(), key.token));
            previous.push(key.proof);
        }
        let authority = Authority {
            signing: ProofKey::from_master(&config.master),
            previous,
            token_signer,
            token_verifier: TokenVerifier::from_distinct(token_keys),
            revocations: config.revocations,
            tiers: config.tiers,
            max_ttl: config.max_ttl,
            telemetry: config.telemetry,
        };
        Self {
            master: Arc::new(config.master),
            authority: Arc::new(authority),
        }
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

    /// The public keys that verify this issuer's
    /// [`ContextToken`](crate::ContextToken)s (current and accepted previous
    /// keys): hand them to downstream processes, which accept tokens with
    /// [`accept_remote`](Self::accept_remote) and cannot mint any.
    pub fn token_verifier(&self) -> TokenVerifier {
        self.authority.token_verifier.clone()
    }

    /// The verify-only authority to configure every platform-wide resource
    /// with: handles built from those resources admit only contexts issued
    /// by this issuer (see [`PlatformAuthority`]).
    pub fn authority(&self) -> PlatformAuthority {
        PlatformAuthority::new(self.authority.clone())
    }
}

/// Everything an issuer is built from.
struct Config {
    master: MasterKey,
    previous: Vec<PreviousKey>,
    revocations: Revocations,
    tiers: Arc<dyn TierResolver>,
    max_ttl: Duration,
    telemetry: Telemetry,
}

/// Configures a [`ContextIssuer`]; made by [`ContextIssuer::builder`].
///
/// There is no way to change an issuer once built: a different registry or
/// key set is a different issuer, and a different
/// [`PlatformAuthority`](crate::PlatformAuthority).
#[must_use = "a builder does nothing until build() is called"]
pub struct ContextIssuerBuilder {
    master: MasterKey,
    previous: Vec<PreviousKey>,
    revocations: Option<Revocations>,
    tiers: Option<Arc<dyn TierResolver>>,
    max_ttl: Duration,
    telemetry: Telemetry,
}

impl ContextIssuerBuilder {
    /// What the SDK's spans and metrics may reveal about the contexts of
    /// this issuer (see [`Telemetry`]).
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The revocation registry every context of this issuer is checked
    /// against, for the issuer's whole life (share it with whatever keeps
    /// it up to date, e.g. a revocation store follower).
    pub fn revocations(mut self, revocations: Revocations) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Decides tenants' tiers with `tiers`.
    pub fn tiers(mut self, tiers: impl TierResolver) -> Self {
        self.tiers = Some(Arc::new(tiers));
        self
    }

    /// Also accepts contexts (and context tokens) signed with a previous
    /// master key (rotation): new contexts are signed with the current key
    /// only.
    pub fn accept_previous(mut self, previous: &MasterKey) -> Self {
        self.previous.push(PreviousKey::from_master(previous));
        self
    }

    /// The longest lifetime a root context may be given (at most
    /// [`MAX_TTL_CEILING`]).
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Checks the configuration and builds the issuer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a zero `max_ttl` or one above
    /// [`MAX_TTL_CEILING`], and for a previous key whose id is the current
    /// key's or another previous key's (proofs name their key by id, so two
    /// keys with one id would be ambiguous).
    pub fn build(self) -> Result<ContextIssuer> {
        if self.max_ttl.is_zero() || self.max_ttl > MAX_TTL_CEILING {
            return Err(Error::InvalidConfiguration(format!(
                "max_ttl must be positive and at most {} days",
                MAX_TTL_CEILING.as_secs() / 86_400
            )));
        }
        for (i, key) in self.previous.iter().enumerate() {
            let id = key.proof.id();
            let clash =
                id == self.master.id() || self.previous[..i].iter().any(|k| k.proof.id() == id);
            if clash {
                return Err(Error::InvalidConfiguration(format!(
                    "key id `{id}` is accepted twice"
                )));
            }
        }
        Ok(ContextIssuer::from_config(Config {
            master: self.master,
            previous: self.previous,
            revocations: self.revocations.unwrap_or_default(),
            tiers: self
                .tiers
                .unwrap_or_else(|| Arc::new(StaticTiers::new(IsolationTier::Pool))),
            max_ttl: self.max_ttl,
            telemetry: self.telemetry,
        }))
    }
}

impl fmt::Debug for ContextIssuerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextIssuerBuilder")
            .field("key_id", self.master.id())
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
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
        let ReadyToIssue { tenant, principal } = self.state;
        let root = Root {
            tenant,
            principal,
            agent: self.agent,
            capabilities: self.capabilities,
            origin: Origin::direct(now),
        };
        self.issuer.mint_root(root, now, expires_at_ms)
    }
}

impl ContextIssuer {
    /// Signs a root context unless its registry refuses it (a subject
    /// revoked until later, a revoked token or session).
    fn mint_root(&self, root: Root, now: u64, expires_at_ms: u64) -> Result<TenantContext> {
        let agent = match root.agent {
            Some(a) => a,
            None => AgentId::new("main")?,
        };
        let claims = Claims {
            id: ContextId::random(),
            tenant: root.tenant,
            principal: root.principal,
            lineage: vec![agent],
            ancestors: Vec::new(),
            tier: self.authority.tiers.tier(root.tenant),
            capabilities: root.capabilities,
            issued_at_ms: now,
            expires_at_ms,
            origin: root.origin,
        };
        self.authority.revocations.check(&claims)?;
        Ok(TenantContext::sign(claims, self.authority.clone()))
    }

    /// A root context for a verified JWT (see [`ClaimVerifier`](crate::ClaimVerifier)):
    /// refused with [`ClaimRejection::Revoked`] when the token, its session
    /// or its subject has been revoked.
    pub(crate) fn issue_from_token(&self, root: Root, expires_at_ms: u64) -> Result<TenantContext> {
        self.mint_root(root, now_ms(), expires_at_ms)
            .map_err(|e| match e {
                Error::ContextRevoked => Error::ClaimRejected(ClaimRejection::Revoked),
                other => other,
            })
    }
}

/// What a root context is made of, before the issuer signs it: from the
/// context builder, or from a verified JWT.
pub(crate) struct Root {
    pub(crate) tenant: TenantId,
    pub(crate) principal: PrincipalId,
    pub(crate) agent: Option<AgentId>,
    pub(crate) capabilities: Capabilities,
    pub(crate) origin: Origin,
}
