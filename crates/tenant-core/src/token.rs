//! [`ContextToken`]: a context serialised with an Ed25519 signature, for
//! crossing a process boundary (a sandboxed tool, another service of the
//! platform).
//!
//! The in-process proof (an HMAC) is never serialised: its key can mint.
//! A token instead carries an Ed25519 signature by the issuing authority,
//! so the receiving side needs only a [`TokenVerifier`] (public keys) and
//! cannot mint tokens of its own. Accepting a token makes a context of the
//! *receiving* issuer (same id, tenant, lineage, capabilities and expiry),
//! admitted by that issuer's handles and checked against its revocation
//! registry; a token whose tenant, capabilities, lineage or expiry was
//! edited is rejected with [`Error::BadProof`].

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::capabilities::Capabilities;
use crate::context::{Claims, TenantContext};
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ContextId, PrincipalId, TenantId};
use crate::issuer::ContextIssuer;
use crate::keys::KeyId;
use crate::origin::Origin;
use crate::tier::IsolationTier;
use crate::token_keys::{TokenVerifier, SIGNATURE_LEN};

const TOKEN_VERSION: u8 = 2;
/// Domain separation of token signatures from every other Ed25519 use.
const TOKEN_MAGIC: &[u8] = b"tenant-sdk/context-token/v2";
/// Upper bound on an encoded token, to refuse absurd inputs before decoding.
pub(crate) const MAX_TOKEN_LEN: usize = 256 * 1024;

/// A signed, serialised [`TenantContext`] (URL-safe base64 text).
///
/// It is a bearer credential for its lifetime: `Debug` does not print it.
///
/// ```
/// use tenant_core::*;
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let ctx = issuer.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice")?).issue()?;
/// let token = ctx.to_token();
/// // The same issuer (or one built from the same master key in another
/// // process) accepts its own tokens ...
/// let back = issuer.accept_token(token.as_str())?;
/// assert_eq!(back.id(), ctx.id());
/// // ... and a process holding only the public keys accepts them into
/// // its own issuer.
/// let downstream = ContextIssuer::new(MasterKey::generate(KeyId::new("d1")?));
/// let local = downstream.accept_remote(token.as_str(), &issuer.token_verifier())?;
/// assert_eq!(local.tenant(), ctx.tenant());
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ContextToken(String);

impl ContextToken {
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ContextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextToken(..)")
    }
}

impl TenantContext {
    /// Serialises this context, signed with its issuer's current Ed25519
    /// token key.
    pub fn to_token(&self) -> ContextToken {
        let c = self.raw_claims();
        let signer = self.authority().token_signer();
        let mut w = Writer::with_capacity(320);
        w.u8(TOKEN_VERSION);
        c.encode_identity(&mut w);
        c.capabilities.encode(&mut w);
        w.u64(c.issued_at_ms).u64(c.expires_at_ms);
        c.origin.encode(&mut w);
        w.str(signer.id().as_str());
        let signature = signer.sign(&signed_message(w.as_slice()));
        w.raw(&signature);
        ContextToken(URL_SAFE_NO_PAD.encode(w.into_vec()))
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(TOKEN_MAGIC.len() + body.len());
    msg.extend_from_slice(TOKEN_MAGIC);
    msg.extend_from_slice(body);
    msg
}

impl ContextIssuer {
    /// Accepts a [`ContextToken`] signed by this issuer's own keys (current
    /// or accepted previous), e.g. one this process sent to a worker and
    /// got back, or one issued by another process built from the same
    /// master key. The result is a context of this issuer, checked for
    /// expiry and revocation. Equivalent to
    /// `self.accept_remote(token, &self.token_verifier())`.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedToken`], [`Error::UnknownKey`] for a key id this
    /// issuer does not accept, [`Error::BadProof`] for a signature that does
    /// not verify, [`Error::ContextExpired`], [`Error::ContextRevoked`].
    pub fn accept_token(&self, token: &str) -> Result<TenantContext> {
        self.accept_with(token, self.shared_authority().token_verifier())
    }

    /// Accepts a [`ContextToken`] from another process whose public keys
    /// `verifier` holds, as a context of *this* issuer: same id, tenant,
    /// principal, lineage, ancestors, tier, capabilities and expiry, with a
    /// proof of this issuer, admitted by this issuer's
    /// [`PlatformAuthority`](crate::PlatformAuthority) and checked against
    /// this issuer's revocation registry (revoking by context id therefore
    /// holds on both sides when they share a revocation store).
    ///
    /// Costs one Ed25519 verification; the contexts it makes are checked
    /// with the in-process HMAC from then on. Their expiry is capped at
    /// this issuer's [`max_ttl`](Self::max_ttl) from now.
    ///
    /// # Errors
    ///
    /// As [`accept_token`](Self::accept_token).
    pub fn accept_remote(&self, token: &str, verifier: &TokenVerifier) -> Result<TenantContext> {
        self.accept_with(token, verifier)
    }

    fn accept_with(&self, token: &str, verifier: &TokenVerifier) -> Result<TenantContext> {
        let span = tracing::info_span!(
            target: crate::telemetry::SPAN_TARGET,
            "context.accept_token",
            tenant.id = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let _entered = span.enter();
        let result = decode_and_verify(token, verifier)
            .inspect_err(|e| crate::audit::rejected("context.accept_token", e))
            .and_then(|mut claims| {
                // A context lives here no longer than this issuer's own
                // maximum, whatever the sending process allowed.
                let max_ms = u64::try_from(self.max_ttl().as_millis()).unwrap_or(u64::MAX);
                claims.expires_at_ms = claims
                    .expires_at_ms
                    .min(crate::context::now_ms().saturating_add(max_ms));
                let ctx = TenantContext::sign(claims, self.shared_authority().clone());
                ctx.check_fresh()?;
                Ok(ctx)
            });
        match &result {
            Ok(ctx) => {
                span.record("tenant.id", tracing::field::display(ctx.tenant()));
            }
            Err(e) => crate::telemetry::record_error(&span, e),
        }
        result
    }
}

/// Decodes a token and verifies its signature; the claims are returned
/// only if it verifies.
fn decode_and_verify(token: &str, verifier: &TokenVerifier) -> Result<Claims> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::MalformedToken("too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Error::MalformedToken("not URL-safe base64"))?;
    let body_len = bytes
        .len()
        .checked_sub(SIGNATURE_LEN)
        .ok_or(Error::MalformedToken("truncated"))?;
    let (body, signature) = bytes.split_at(body_len);
    let mut r = Reader::new(body);
    if r.u8()? != TOKEN_VERSION {
        return Err(Error::MalformedToken("unknown version"));
    }
    let claims = decode_claims(&mut r)?;
    let key_id = KeyId::new(r.str()?).map_err(|_| Error::MalformedToken("key id"))?;
    if r.remaining() != 0 {
        return Err(Error::MalformedToken("trailing bytes"));
    }
    let mut sig = [0u8; SIGNATURE_LEN];
    sig.copy_from_slice(signature);
    verifier.verify(&key_id, &signed_message(body), &sig)?;
    Ok(claims)
}

fn decode_claims(r: &mut Reader<'_>) -> Result<Claims> {
    let bad = |what| move |_| Error::MalformedToken(what);
    let id = ContextId::from_bytes(r.array()?);
    let tenant = TenantId::from_uuid(uuid::Uuid::from_bytes(r.array()?)).map_err(bad("tenant"))?;
    let principal = PrincipalId::new(r.str()?).map_err(bad("principal"))?;
    let n = r.u16()? as usize;
    if n == 0 {
        return Err(Error::MalformedToken("empty lineage"));
    }
    let mut lineage = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        lineage.push(AgentId::new(r.str()?).map_err(bad("agent"))?);
    }
    let n = r.u16()? as usize;
    if n + 1 != lineage.len() {
        return Err(Error::MalformedToken("lineage and ancestors disagree"));
    }
    let mut ancestors = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        ancestors.push(ContextId::from_bytes(r.array()?));
    }
    let tier = IsolationTier::from_byte(r.u8()?).ok_or(Error::MalformedToken("tier"))?;
    let capabilities = Capabilities::decode(r)?;
    let issued_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let origin = Origin::decode(r)?;
    Ok(Claims {
        id,
        tenant,
        principal,
        lineage,
        ancestors,
        tier,
        capabilities,
        issued_at_ms,
        expires_at_ms,
        origin,
    })
}
