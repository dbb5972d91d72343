//! [`ContextToken`]: a context serialised with its proof, for crossing a
//! process boundary (a sandboxed tool, another service of the platform).
//!
//! Accepting a token re-verifies the proof, so a token whose tenant,
//! capabilities, lineage or expiry was edited is rejected with
//! [`Error::BadProof`].

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::capabilities::Capabilities;
use crate::context::{Claims, Inner, TenantContext};
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ContextId, PrincipalId, TenantId};
use crate::issuer::ContextIssuer;
use crate::keys::KeyId;
use crate::proof::Proof;
use crate::tier::IsolationTier;

const TOKEN_VERSION: u8 = 1;
/// Upper bound on an encoded token, to refuse absurd inputs before decoding.
const MAX_TOKEN_LEN: usize = 256 * 1024;

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
/// let back = issuer.accept_token(token.as_str())?;
/// assert_eq!(back.id(), ctx.id());
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
    /// Serialises this context with its proof.
    pub fn to_token(&self) -> ContextToken {
        let c = self.raw_claims();
        let proof = self.proof();
        let mut w = Writer::with_capacity(256);
        w.u8(TOKEN_VERSION);
        c.encode_identity(&mut w);
        c.capabilities.encode(&mut w);
        w.u64(c.issued_at_ms)
            .u64(c.expires_at_ms)
            .str(proof.key_id.as_str())
            .raw(&proof.tag);
        ContextToken(URL_SAFE_NO_PAD.encode(w.into_vec()))
    }
}

impl ContextIssuer {
    /// Decodes a [`ContextToken`], verifies its proof under a key this
    /// issuer accepts, and checks expiry and revocation.
    pub fn accept_token(&self, token: &str) -> Result<TenantContext> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::MalformedToken("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Error::MalformedToken("not URL-safe base64"))?;
        let mut r = Reader::new(&bytes);
        if r.u8()? != TOKEN_VERSION {
            return Err(Error::MalformedToken("unknown version"));
        }
        let (claims, key_id, tag) = decode_body(&mut r)?;
        if r.remaining() != 0 {
            return Err(Error::MalformedToken("trailing bytes"));
        }
        let authority = self.shared_authority();
        let key = authority
            .accepted_key(&key_id)
            .ok_or_else(|| Error::UnknownKey(key_id.clone()))?;
        let caps_digest = claims.capabilities.digest();
        if !key.verify(&claims.signed_bytes(&caps_digest, key_id.as_str()), &tag) {
            return Err(Error::BadProof);
        }
        let ctx = TenantContext {
            inner: std::sync::Arc::new(Inner {
                claims,
                caps_digest,
                proof: Proof { key_id, tag },
                authority: authority.clone(),
            }),
        };
        ctx.check_fresh()?;
        Ok(ctx)
    }
}

fn decode_body(r: &mut Reader<'_>) -> Result<(Claims, KeyId, [u8; 32])> {
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
    let mut ancestors = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        ancestors.push(ContextId::from_bytes(r.array()?));
    }
    let tier = IsolationTier::from_byte(r.u8()?).ok_or(Error::MalformedToken("tier"))?;
    let capabilities = Capabilities::decode(r)?;
    let issued_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let key_id = KeyId::new(r.str()?).map_err(bad("key id"))?;
    let tag = r.array()?;
    let claims = Claims {
        id,
        tenant,
        principal,
        lineage,
        ancestors,
        tier,
        capabilities,
        issued_at_ms,
        expires_at_ms,
    };
    Ok((claims, key_id, tag))
}
