//! [`TenantContext`]: the verified, signed statement "this principal, through
//! this chain of agents, acts for this tenant with these capabilities until
//! this time".

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::capabilities::Capabilities;
use crate::encoding::Writer;
use crate::error::{Error, Result};
use crate::ids::{AgentId, ContextId, PrincipalId, TenantId};
use crate::issuer::Authority;
use crate::origin::Origin;
use crate::proof::Proof;
use crate::tier::IsolationTier;

/// Milliseconds since the Unix epoch, saturating.
pub(crate) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Everything a context asserts; the proof covers all of it.
pub(crate) struct Claims {
    pub(crate) id: ContextId,
    pub(crate) tenant: TenantId,
    pub(crate) principal: PrincipalId,
    /// Root agent first, this context's agent last; never empty.
    pub(crate) lineage: Vec<AgentId>,
    /// Ids of the contexts this one was delegated from, root first.
    pub(crate) ancestors: Vec<ContextId>,
    pub(crate) tier: IsolationTier,
    pub(crate) capabilities: Capabilities,
    pub(crate) issued_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    /// Where the root came from (authentication time, token, session).
    pub(crate) origin: Origin,
}

pub(crate) const SIGNED_MAGIC: &[u8] = b"tenant-sdk/context/v2";

impl Claims {
    /// The bytes the proof is computed over (capabilities by digest).
    pub(crate) fn signed_bytes(&self, caps_digest: &[u8; 32], key_id: &str) -> Vec<u8> {
        let mut w = Writer::with_capacity(192);
        w.raw(SIGNED_MAGIC);
        self.encode_identity(&mut w);
        w.raw(caps_digest)
            .u64(self.issued_at_ms)
            .u64(self.expires_at_ms);
        self.origin.encode(&mut w);
        w.str(key_id);
        w.into_vec()
    }

    pub(crate) fn encode_identity(&self, w: &mut Writer) {
        w.raw(self.id.as_bytes())
            .raw(self.tenant.as_bytes())
            .str(self.principal.as_str())
            .count(self.lineage.len());
        for agent in &self.lineage {
            w.str(agent.as_str());
        }
        w.count(self.ancestors.len());
        for a in &self.ancestors {
            w.raw(a.as_bytes());
        }
        w.u8(self.tier.to_byte());
    }
}

struct Inner {
    claims: Claims,
    caps_digest: [u8; 32],
    proof: Proof,
    authority: Arc<Authority>,
}

/// A verified tenant context: the only way into any tenant-scoped handle.
///
/// Cheap to clone (one `Arc`), `Send + Sync`. It has no public fields, no
/// `Default`, no public constructor and no `Deserialize`: it is made only by
/// a [`ContextIssuer`](crate::ContextIssuer) (directly, from a verified JWT
/// through [`ClaimVerifier`](crate::ClaimVerifier), or from a signed
/// [`ContextToken`](crate::ContextToken)) or by [`TenantContext::delegate`],
/// which can only narrow.
///
/// `Debug` shows ids only, never key material.
///
/// ```
/// use tenant_core::*;
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let ctx = issuer
///     .context()
///     .tenant("6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse()?)
///     .principal(PrincipalId::new("alice@example.com")?)
///     .capabilities(Capabilities::none().with_tools(["search"])?)
///     .issue()?;
/// ctx.check()?;
/// assert_eq!(ctx.tenant().to_string(), "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11");
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone)]
pub struct TenantContext {
    inner: Arc<Inner>,
}

impl TenantContext {
    pub(crate) fn sign(claims: Claims, authority: Arc<Authority>) -> Self {
        let caps_digest = claims.capabilities.digest();
        let key = authority.signing_key();
        let proof = key.sign(&claims.signed_bytes(&caps_digest, key.id().as_str()));
        Self {
            inner: Arc::new(Inner {
                claims,
                caps_digest,
                proof,
                authority,
            }),
        }
    }

    fn claims(&self) -> &Claims {
        &self.inner.claims
    }

    /// The unique id of this context (revocation is keyed by it).
    pub fn id(&self) -> ContextId {
        self.claims().id
    }

    /// The tenant this context acts for.
    pub fn tenant(&self) -> TenantId {
        self.claims().tenant
    }

    /// The principal (human or service) on whose behalf it acts.
    pub fn principal(&self) -> &PrincipalId {
        &self.claims().principal
    }

    /// The agent this context belongs to (the last of the lineage).
    pub fn agent(&self) -> &AgentId {
        // `lineage` is never empty: the issuer and delegation always push.
        self.claims()
            .lineage
            .last()
            .expect("lineage always holds at least the root agent")
    }

    /// Agent lineage, root agent first, this context's agent last.
    pub fn lineage(&self) -> &[AgentId] {
        &self.claims().lineage
    }

    /// Ids of the contexts this one descends from, root first.
    pub fn ancestors(&self) -> &[ContextId] {
        &self.claims().ancestors
    }

    /// How many delegations separate this context from its root (0 = root).
    pub fn depth(&self) -> usize {
        self.claims().ancestors.len()
    }

    /// The tenant's isolation tier, resolved when the root was issued.
    pub fn tier(&self) -> IsolationTier {
        self.claims().tier
    }

    /// What the SDK's spans and metrics may reveal about this context (the
    /// issuer's [`Telemetry`](crate::Telemetry)).
    pub fn telemetry(&self) -> crate::Telemetry {
        self.authority().telemetry()
    }

    /// What this context may do.
    pub fn capabilities(&self) -> &Capabilities {
        &self.claims().capabilities
    }

    /// The capability digest covered by the proof.
    pub fn capabilities_digest(&self) -> &[u8; 32] {
        &self.inner.caps_digest
    }

    /// When it was issued.
    pub fn issued_at(&self) -> SystemTime {
        from_ms(self.claims().issued_at_ms)
    }

    /// When it stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        from_ms(self.claims().expires_at_ms)
    }

    /// Expiry in milliseconds since the Unix epoch.
    pub fn expires_at_unix_ms(&self) -> u64 {
        self.claims().expires_at_ms
    }

    /// Time left before expiry (zero when expired).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.claims().expires_at_ms.saturating_sub(now_ms()))
    }

    /// The id of the key that signed the proof.
    pub fn key_id(&self) -> &crate::KeyId {
        &self.inner.proof.key_id
    }

    /// Verifies the context is still usable: the proof verifies under a key
    /// its issuer accepts, it has not expired, and neither it nor any
    /// ancestor has been revoked (nor the token, session or principal it
    /// was minted for). Every handle calls this on every operation; it
    /// costs one HMAC and one atomic load (plus a clock read when the
    /// registry is a replica with a staleness bound). It never blocks on a
    /// network: revocations are looked up in the issuer's local registry.
    pub fn check(&self) -> Result<()> {
        self.verify_proof()?;
        self.check_fresh()
    }

    /// Expiry and revocation only (the proof was verified when the context
    /// was made and the context is immutable).
    pub(crate) fn check_fresh(&self) -> Result<()> {
        let c = self.claims();
        if now_ms() >= c.expires_at_ms {
            return Err(Error::ContextExpired);
        }
        self.inner.authority.revocations().check(c)
    }

    pub(crate) fn verify_proof(&self) -> Result<()> {
        let proof = &self.inner.proof;
        let key = self
            .inner
            .authority
            .accepted_key(&proof.key_id)
            .ok_or_else(|| Error::UnknownKey(proof.key_id.clone()))?;
        let msg = self
            .claims()
            .signed_bytes(&self.inner.caps_digest, proof.key_id.as_str());
        if key.verify(&msg, &proof.tag) {
            Ok(())
        } else {
            Err(Error::BadProof)
        }
    }

    /// Whether `self` is `ancestor` or was delegated (transitively) from it.
    pub fn descends_from(&self, ancestor: &TenantContext) -> bool {
        self.tenant() == ancestor.tenant()
            && (self.id() == ancestor.id() || self.ancestors().contains(&ancestor.id()))
    }

    /// `Ok` when `child` is this context or one delegated from it, was
    /// issued under the same authority, and is itself valid
    /// ([`check`](Self::check)). Handles use this in their `delegate`
    /// methods.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignAuthority`] for a context of another issuer (even one
    /// carrying this context's id, e.g. accepted from its token by an issuer
    /// with another revocation registry), [`Error::NotDescendant`], or the
    /// error of [`check`](Self::check).
    pub fn check_descendant(&self, child: &TenantContext) -> Result<()> {
        if !self.same_authority(child) {
            return Err(Error::ForeignAuthority);
        }
        if !child.descends_from(self) {
            return Err(Error::NotDescendant);
        }
        child.check()
    }

    /// Whether two handles' contexts were issued by the same authority
    /// (same keys and revocation registry).
    pub fn same_authority(&self, other: &TenantContext) -> bool {
        Arc::ptr_eq(&self.inner.authority, &other.inner.authority)
    }

    #[inline]
    pub(crate) fn authority(&self) -> &Arc<Authority> {
        &self.inner.authority
    }

    pub(crate) fn raw_claims(&self) -> &Claims {
        self.claims()
    }
}

impl fmt::Debug for TenantContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.claims();
        f.debug_struct("TenantContext")
            .field("id", &c.id)
            .field("tenant", &c.tenant)
            .field("principal", &c.principal)
            .field("lineage", &c.lineage)
            .field("tier", &c.tier)
            .field("key_id", &self.inner.proof.key_id)
            .finish_non_exhaustive()
    }
}
