//! [`Revocation`]: one thing revoked (a context tree, a JWT, a session, a
//! subject) and how long the entry must be kept.

use std::fmt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::context::{now_ms, to_ms, TenantContext};
use crate::error::{Error, Result};
use crate::ids::{ContextId, PrincipalId, TenantId};

/// What a revocation covers.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A context and every context delegated from it; for a root minted
    /// from a JWT, also that JWT (so presenting it again mints nothing).
    Context {
        id: ContextId,
        token: Option<[u8; 32]>,
    },
    /// A JWT, by its identity ([`jwt_id_ref`] or [`jwt_content_ref`]).
    Token([u8; 32]),
    /// A JWT session (`sid`): every token of it and every context minted
    /// from one.
    Session([u8; 32]),
    /// Everything of one principal of one tenant authenticated before a
    /// time (ms since the epoch).
    Principal {
        tenant: TenantId,
        principal: PrincipalId,
        before_ms: u64,
    },
}

/// One revocation: what is revoked and until when the entry must be kept
/// (after that, everything it covers has expired anyway, so registries and
/// stores drop it).
///
/// Apply it to a local [`Revocations`](crate::Revocations) registry, or
/// record it in a shared [`RevocationStore`](crate::RevocationStore) so
/// every replica learns it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tenant_core::*;
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let ctx = issuer.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice")?).issue()?;
/// // Log alice out everywhere: everything she authenticated until now.
/// let logout = Revocation::principal(
///     ctx.tenant(), ctx.principal(), SystemTime::now() + Duration::from_millis(1),
///     SystemTime::now() + issuer.max_ttl(),
/// );
/// issuer.revocations().apply(&logout);
/// assert!(matches!(ctx.check(), Err(Error::ContextRevoked)));
/// // Entries travel between processes as text.
/// assert_eq!(Revocation::from_text(&logout.to_text())?, logout);
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Revocation {
    pub(crate) target: Target,
    pub(crate) until_ms: u64,
}

impl Revocation {
    /// Revokes `ctx` and every context delegated from it. When `ctx` is a
    /// root minted from a JWT, the JWT is revoked too: presenting it again
    /// is refused ([`ClaimRejection::Revoked`](crate::ClaimRejection::Revoked)).
    /// Kept until `ctx` (and that JWT) has expired.
    pub fn context(ctx: &TenantContext) -> Self {
        let origin = &ctx.raw_claims().origin;
        let root_token = if ctx.depth() == 0 { origin.token } else { None };
        let until_ms = match root_token {
            Some(_) => ctx.expires_at_unix_ms().max(origin.token_expires_ms),
            None => ctx.expires_at_unix_ms(),
        };
        Self {
            target: Target::Context {
                id: ctx.id(),
                token: root_token,
            },
            until_ms,
        }
    }

    /// Revokes the context with this id and all its descendants, keeping
    /// the entry until `until` (at least the context's expiry).
    pub fn context_id(id: ContextId, until: SystemTime) -> Self {
        Self {
            target: Target::Context { id, token: None },
            until_ms: to_ms(until),
        }
    }

    /// Revokes the JWT with id `jti` from issuer `iss` (the
    /// [`ClaimVerifier::issuer`](crate::ClaimVerifier::issuer)) and every
    /// context minted from it; keep it `until` the token's `exp`.
    pub fn jwt_id(iss: &str, jti: &str, until: SystemTime) -> Self {
        Self {
            target: Target::Token(jwt_id_ref(iss, jti)),
            until_ms: to_ms(until),
        }
    }

    /// Revokes every JWT of session `sid` from issuer `iss` and every
    /// context minted from one; keep it `until` the session's last token
    /// has expired.
    pub fn jwt_session(iss: &str, sid: &str, until: SystemTime) -> Self {
        Self {
            target: Target::Session(jwt_session_ref(iss, sid)),
            until_ms: to_ms(until),
        }
    }

    /// Revokes everything `principal` of `tenant` authenticated before
    /// `issued_before`: contexts issued directly before then (and their
    /// descendants), and JWTs whose `iat` is before then (or that have no
    /// `iat`) along with their contexts. Keep it `until` the longest-lived
    /// of those has expired (`issued_before` plus the longest context or
    /// token lifetime). An `issued_before` in the future also refuses new
    /// contexts for the principal until then.
    pub fn principal(
        tenant: TenantId,
        principal: &PrincipalId,
        issued_before: SystemTime,
        until: SystemTime,
    ) -> Self {
        Self {
            target: Target::Principal {
                tenant,
                principal: principal.clone(),
                before_ms: to_ms(issued_before),
            },
            until_ms: to_ms(until),
        }
    }

    /// When the entry may be dropped, in ms since the epoch.
    pub fn until_unix_ms(&self) -> u64 {
        self.until_ms
    }

    /// Whether everything this entry covers has expired.
    pub fn is_expired(&self) -> bool {
        self.until_ms <= now_ms()
    }

    /// A stable key naming what is revoked (not until when): two
    /// revocations of the same thing have the same key. Stores use it to
    /// keep one entry per revoked thing.
    pub fn key(&self) -> String {
        match &self.target {
            Target::Context { id, .. } => format!("ctx:{}", hex::encode(id.as_bytes())),
            Target::Token(r) => format!("jwt:{}", hex::encode(r)),
            Target::Session(r) => format!("sid:{}", hex::encode(r)),
            Target::Principal {
                tenant,
                principal,
                before_ms,
            } => {
                let digest = digest(
                    b"tenant-sdk/revocation/principal/v1",
                    &[tenant.as_bytes(), principal.as_str().as_bytes()],
                );
                format!("prn:{}:{before_ms}", hex::encode(digest))
            }
        }
    }

    /// The entry as one line of ASCII text (for stores); read it back with
    /// [`from_text`](Self::from_text).
    pub fn to_text(&self) -> String {
        let until = self.until_ms;
        match &self.target {
            Target::Context { id, token } => {
                let mut s = format!("1 c {until} {}", hex::encode(id.as_bytes()));
                if let Some(t) = token {
                    s.push(' ');
                    s.push_str(&hex::encode(t));
                }
                s
            }
            Target::Token(r) => format!("1 t {until} {}", hex::encode(r)),
            Target::Session(r) => format!("1 s {until} {}", hex::encode(r)),
            Target::Principal {
                tenant,
                principal,
                before_ms,
            } => format!(
                "1 p {until} {before_ms} {} {}",
                hex::encode(tenant.as_bytes()),
                hex::encode(principal.as_str())
            ),
        }
    }

    /// Parses [`to_text`](Self::to_text) output.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedRevocation`] for anything else.
    pub fn from_text(text: &str) -> Result<Self> {
        if text.len() > 1024 {
            return Err(Error::MalformedRevocation("too long"));
        }
        let fields: Vec<&str> = text.split(' ').collect();
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| Error::MalformedRevocation("not a number"))
        };
        let target = match fields.as_slice() {
            ["1", "c", _, id] => Target::Context {
                id: ContextId::from_bytes(hex_array(id)?),
                token: None,
            },
            ["1", "c", _, id, token] => Target::Context {
                id: ContextId::from_bytes(hex_array(id)?),
                token: Some(hex_array(token)?),
            },
            ["1", "t", _, r] => Target::Token(hex_array(r)?),
            ["1", "s", _, r] => Target::Session(hex_array(r)?),
            ["1", "p", _, before, tenant, principal] => {
                let tenant = TenantId::from_uuid(uuid::Uuid::from_bytes(hex_array(tenant)?))
                    .map_err(|_| Error::MalformedRevocation("tenant"))?;
                let name = hex::decode(principal)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(Error::MalformedRevocation("principal"))?;
                Target::Principal {
                    tenant,
                    principal: PrincipalId::new(name)
                        .map_err(|_| Error::MalformedRevocation("principal"))?,
                    before_ms: number(before)?,
                }
            }
            _ => return Err(Error::MalformedRevocation("unknown form")),
        };
        let until_ms = number(fields.get(2).copied().unwrap_or_default())?;
        Ok(Self { target, until_ms })
    }
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("key", &self.key())
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

fn hex_array<const N: usize>(s: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::MalformedRevocation("not hex"))?;
    Ok(out)
}

/// SHA-256 over a domain tag and length-prefixed parts.
fn digest(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in std::iter::once(domain).chain(parts.iter().copied()) {
        h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The identity of JWT `jti` of issuer `iss`.
pub(crate) fn jwt_id_ref(iss: &str, jti: &str) -> [u8; 32] {
    digest(
        b"tenant-sdk/revocation/jwt-id/v1",
        &[iss.as_bytes(), jti.as_bytes()],
    )
}

/// The identity of a JWT without `jti`: its signed content (header and
/// payload as sent). Unlike the signature, which some algorithms let a
/// holder re-randomise, the content cannot change while the token still
/// verifies.
pub(crate) fn jwt_content_ref(iss: &str, signing_input: &str) -> [u8; 32] {
    digest(
        b"tenant-sdk/revocation/jwt-content/v1",
        &[iss.as_bytes(), signing_input.as_bytes()],
    )
}

/// The identity of session `sid` of issuer `iss`.
pub(crate) fn jwt_session_ref(iss: &str, sid: &str) -> [u8; 32] {
    digest(
        b"tenant-sdk/revocation/jwt-session/v1",
        &[iss.as_bytes(), sid.as_bytes()],
    )
}
