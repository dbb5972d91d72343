//! [`ClaimVerifier`]: from a JWT to a [`TenantContext`].
//!
//! The token is taken apart here, not by a general-purpose JWT library, so
//! that every step is bounded and every failure is a typed
//! [`ClaimRejection`]:
//!
//! 1. size: at most [`MAX_JWT_LEN`] bytes, exactly three base64url parts;
//! 2. header: a JSON object with unique member names, `alg` exactly the
//!    configured (or, with a key set, the `kid`'s) algorithm, no `crit`;
//! 3. signature, verified with `jsonwebtoken`'s crypto before the payload is
//!    parsed;
//! 4. payload: a JSON object with unique member names (at any depth), so a
//!    gateway and the SDK can never read different claims from one token;
//! 5. claims: `exp` (required), `nbf`, `iat` as bounded dates with a bounded
//!    leeway and no arithmetic that can overflow; `iss`, `aud`, `sub` and the
//!    tenant claim required and well-formed;
//! 6. revocation: the token's `jti`, its session (`sid`) and its subject are
//!    looked up in the issuer's registry, so a revoked token cannot mint a
//!    context.

mod jwks;
mod numeric_date;
mod strict_json;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Map, Value};

use crate::capabilities::{Capabilities, Scope, ScopeKind};
use crate::context::{now_ms, TenantContext};
use crate::error::{ClaimRejection, Error, Result};
use crate::ids::{AgentId, PrincipalId, TenantId};
use crate::issuer::{ContextIssuer, Root};
use crate::origin::Origin;
use crate::revocation;

pub use jwks::{JwkKeys, JwksLoader};
pub use numeric_date::MAX_NUMERIC_DATE;

use jwks::{algorithm_name, KeyEntry, MAX_KID_LEN};
use strict_json::StrictJsonError;

/// The default name of the tenant claim.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant_id";
/// The longest token accepted, in bytes.
pub const MAX_JWT_LEN: usize = 16 * 1024;
/// The largest clock-skew leeway a verifier may be configured with.
pub const MAX_LEEWAY: Duration = Duration::from_secs(10 * 60);
/// The longest `jti` or `sid` accepted.
const MAX_ID_CLAIM_LEN: usize = 256;

/// Verifies JWTs issued by the platform's identity provider and turns them
/// into contexts.
///
/// The context's capabilities are the verifier's configured baseline,
/// narrowed (never widened) by optional token claims `tools`,
/// `collections`, `memory_namespaces`, `models` (arrays of names) and
/// `token_budget` (number). Its agent is the optional `agent` claim
/// (default `main`); it expires with the token or after the issuer's
/// maximum lifetime, whichever comes first. It remembers the token's `jti`
/// (or, without one, the token's signed content), `sid` and `iat`, so revoking
/// the context, the token, the session or the subject stops the token from
/// minting again (see [`Revocation`](crate::Revocation)).
///
/// ```
/// use jsonwebtoken::{encode, EncodingKey, Header};
/// use tenant_core::*;
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let verifier = ClaimVerifier::builder()
///     .hs256(b"an HS256 secret of at least 32 bytes!!")
///     .issuer("https://idp.example.com")
///     .audience("agents")
///     .capabilities(Capabilities::none().with_tools(["search"])?)
///     .build()?;
/// let claims = serde_json::json!({
///     "sub": "alice", "tenant_id": "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11",
///     "iss": "https://idp.example.com", "aud": "agents",
///     "exp": jsonwebtoken::get_current_timestamp() + 600,
/// });
/// let jwt = encode(&Header::default(), &claims,
///     &EncodingKey::from_secret(b"an HS256 secret of at least 32 bytes!!")).unwrap();
/// let ctx = verifier.verify(&jwt, &issuer)?;
/// assert_eq!(ctx.principal().as_str(), "alice");
///
/// // Revoking the context revokes the token: presenting it again fails.
/// issuer.revocations().revoke(&ctx);
/// assert!(matches!(
///     verifier.verify(&jwt, &issuer),
///     Err(Error::ClaimRejected(ClaimRejection::Revoked))
/// ));
/// # Ok::<(), tenant_core::Error>(())
/// ```
pub struct ClaimVerifier {
    keys: Keys,
    issuer: String,
    audience: String,
    tenant_claim: String,
    leeway_secs: u64,
    baseline: Capabilities,
}

/// Where the verification key comes from.
enum Keys {
    /// One key, pinned to one algorithm; the header's `kid` is ignored.
    Static(Arc<KeyEntry>),
    /// A key set, selected by the header's `kid`.
    Set(JwkKeys),
}

impl std::fmt::Debug for ClaimVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: &dyn std::fmt::Debug = match &self.keys {
            Keys::Static(entry) => &entry.algorithm,
            Keys::Set(set) => set,
        };
        f.debug_struct("ClaimVerifier")
            .field("keys", keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

/// Configures a [`ClaimVerifier`]. A key (or key set), an issuer and an
/// audience are required.
#[must_use = "a builder does nothing until build() is called"]
pub struct ClaimVerifierBuilder {
    keys: Option<Result<Keys>>,
    issuer: Option<String>,
    audience: Option<String>,
    tenant_claim: String,
    leeway: Duration,
    baseline: Capabilities,
}

impl ClaimVerifier {
    /// Starts the configuration.
    pub fn builder() -> ClaimVerifierBuilder {
        ClaimVerifierBuilder {
            keys: None,
            issuer: None,
            audience: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.to_owned(),
            leeway: Duration::from_secs(30),
            baseline: Capabilities::none(),
        }
    }

    /// The `iss` this verifier accepts (revocations by `jti` or `sid` are
    /// scoped to it).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` and issues a root context through `issuer`.
    ///
    /// Every rejection is an [`Error::ClaimRejected`] naming the reason, and
    /// is emitted as a `tenant_audit` event.
    ///
    /// Runs in a span `context.verify_jwt` (target
    /// [`SPAN_TARGET`](crate::telemetry::SPAN_TARGET)) recording the
    /// tenant on success and `error.type` on failure.
    pub fn verify(&self, token: &str, issuer: &ContextIssuer) -> Result<TenantContext> {
        let span = tracing::info_span!(
            target: crate::telemetry::SPAN_TARGET,
            "context.verify_jwt",
            tenant.id = tracing::field::Empty,
            tenant.context_id = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let _entered = span.enter();
        let result = self.verify_inner(token, issuer);
        match &result {
            Ok(ctx) => {
                span.record("tenant.id", tracing::field::display(ctx.tenant()));
                span.record("tenant.context_id", tracing::field::display(ctx.id()));
            }
            Err(e) => {
                crate::telemetry::record_error(&span, e);
                crate::audit::rejected("context.verify_jwt", e);
            }
        }
        result
    }

    fn verify_inner(&self, token: &str, issuer: &ContextIssuer) -> Result<TenantContext> {
        let parts = Parts::split(token)?;
        let header = decode_object(parts.header)?;
        let key = self.key_for(&header)?;
        let signing_input = &token[..parts.header.len() + 1 + parts.payload.len()];
        match jsonwebtoken::crypto::verify(
            parts.signature,
            signing_input.as_bytes(),
            &key.key,
            key.algorithm,
        ) {
            Ok(true) => {}
            Ok(false) => return Err(ClaimRejection::BadSignature.into()),
            Err(_) => return Err(ClaimRejection::Malformed.into()),
        }
        let claims = decode_object(parts.payload)?;
        let now = now_ms();
        let exp = self.check_times(&claims, now / 1000)?;
        self.check_issuer_and_audience(&claims)?;

        let tenant = match claims.get(&self.tenant_claim) {
            None | Some(Value::Null) => {
                return Err(ClaimRejection::MissingClaim(self.tenant_claim.clone()).into())
            }
            Some(Value::String(s)) => s
                .parse::<TenantId>()
                .map_err(|_| ClaimRejection::InvalidTenant)?,
            Some(_) => return Err(ClaimRejection::InvalidTenant.into()),
        };
        let principal = match claims.get("sub") {
            None | Some(Value::Null) => {
                return Err(ClaimRejection::MissingClaim("sub".into()).into())
            }
            Some(Value::String(s)) => {
                PrincipalId::new(s).map_err(|_| ClaimRejection::InvalidPrincipal)?
            }
            Some(_) => return Err(ClaimRejection::InvalidPrincipal.into()),
        };
        let agent = match claims.get("agent") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(AgentId::new(s).map_err(|_| ClaimRejection::InvalidClaim("agent".into()))?)
            }
            Some(_) => return Err(ClaimRejection::InvalidClaim("agent".into()).into()),
        };
        let capabilities = self.capabilities_from(&claims)?;
        let origin = self.origin(&claims, signing_input, exp)?;

        // `exp` is at most MAX_NUMERIC_DATE, so its milliseconds fit.
        let token_expiry_ms = exp.saturating_mul(1000);
        let limit_ms = now.saturating_add(duration_ms(issuer.max_ttl()));
        let expires_at_ms = token_expiry_ms.min(limit_ms);
        // A token inside its leeway window but past `exp` cannot make a
        // context that is already expired.
        if expires_at_ms <= now {
            return Err(ClaimRejection::Expired.into());
        }
        let root = Root {
            tenant,
            principal,
            agent,
            capabilities,
            origin,
        };
        issuer.issue_from_token(root, expires_at_ms)
    }

    /// Chooses the key (and so the algorithm) from the header, refusing any
    /// header `alg` other than the pinned one and any `crit` extension.
    fn key_for(&self, header: &Map<String, Value>) -> Result<Arc<KeyEntry>> {
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            Some(_) => return Err(ClaimRejection::AlgorithmNotAllowed.into()),
            None => return Err(ClaimRejection::Malformed.into()),
        };
        if header.contains_key("crit") {
            return Err(ClaimRejection::UnsupportedCriticalHeader.into());
        }
        match &self.keys {
            Keys::Static(entry) => {
                if alg != algorithm_name(entry.algorithm) {
                    return Err(ClaimRejection::AlgorithmNotAllowed.into());
                }
                Ok(entry.clone())
            }
            Keys::Set(set) => {
                let kid = match header.get("kid") {
                    None => None,
                    Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => Some(kid.as_str()),
                    Some(_) => return Err(ClaimRejection::InvalidClaim("kid".into()).into()),
                };
                Ok(set.select(kid, alg)?)
            }
        }
    }

    /// `exp` (required), `nbf` and `iat`, with the leeway. Returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>, now: u64) -> Result<u64> {
        let date = |name: &str| -> Result<Option<u64>> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => numeric_date::seconds(v)
                    .map(Some)
                    .ok_or_else(|| ClaimRejection::InvalidClaim(name.into()).into()),
            }
        };
        let exp = date("exp")?.ok_or_else(|| ClaimRejection::MissingClaim("exp".into()))?;
        // Every date is at most MAX_NUMERIC_DATE and the leeway at most
        // MAX_LEEWAY, so none of these additions can overflow.
        if exp + self.leeway_secs <= now {
            return Err(ClaimRejection::Expired.into());
        }
        if let Some(nbf) = date("nbf")? {
            if nbf > now + self.leeway_secs {
                return Err(ClaimRejection::NotYetValid.into());
            }
        }
        if let Some(iat) = date("iat")? {
            if iat > now + self.leeway_secs {
                return Err(ClaimRejection::IssuedInFuture.into());
            }
        }
        Ok(exp)
    }

    fn check_issuer_and_audience(&self, claims: &Map<String, Value>) -> Result<()> {
        match claims.get("iss") {
            None => return Err(ClaimRejection::MissingClaim("iss".into()).into()),
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err(ClaimRejection::WrongIssuer.into()),
            Some(_) => return Err(ClaimRejection::InvalidClaim("iss".into()).into()),
        }
        let listed = match claims.get("aud") {
            None => return Err(ClaimRejection::MissingClaim("aud".into()).into()),
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => {
                let mut found = false;
                for aud in auds {
                    match aud {
                        Value::String(a) => found |= *a == self.audience,
                        _ => return Err(ClaimRejection::InvalidClaim("aud".into()).into()),
                    }
                }
                found
            }
            Some(_) => return Err(ClaimRejection::InvalidClaim("aud".into()).into()),
        };
        if listed {
            Ok(())
        } else {
            Err(ClaimRejection::WrongAudience.into())
        }
    }

    fn capabilities_from(&self, claims: &Map<String, Value>) -> Result<Capabilities> {
        let mut caps = self.baseline.clone();
        for kind in ScopeKind::ALL {
            let Some(value) = claims.get(kind.name()) else {
                continue;
            };
            let names = value
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| ClaimRejection::InvalidClaim(kind.name().into()))?;
            let scope =
                Scope::only(names).map_err(|_| ClaimRejection::InvalidClaim(kind.name().into()))?;
            let narrowed = caps.scope(kind).intersect(&scope);
            caps = caps.with_scope(kind, narrowed);
        }
        if let Some(value) = claims.get("token_budget") {
            let budget = value
                .as_u64()
                .ok_or_else(|| ClaimRejection::InvalidClaim("token_budget".into()))?;
            let capped = caps.token_budget().map_or(budget, |b| b.min(budget));
            caps = caps.with_token_budget(capped);
        }
        Ok(caps)
    }

    /// The token's revocation identities: `jti` (or, without one, its
    /// signed content: the same token always has the same identity), `sid`,
    /// and `iat`.
    fn origin(&self, claims: &Map<String, Value>, signing_input: &str, exp: u64) -> Result<Origin> {
        let id_claim = |name: &str| -> Result<Option<&str>> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_CLAIM_LEN => {
                    Ok(Some(s.as_str()))
                }
                Some(_) => Err(ClaimRejection::InvalidClaim(name.into()).into()),
            }
        };
        let token = match id_claim("jti")? {
            Some(jti) => revocation::jwt_id_ref(&self.issuer, jti),
            None => revocation::jwt_content_ref(&self.issuer, signing_input),
        };
        let session = id_claim("sid")?.map(|sid| revocation::jwt_session_ref(&self.issuer, sid));
        // `iat` was checked by `check_times`; a token without one counts as
        // authenticated at the epoch, so every subject revocation covers it.
        let auth_time_ms = claims
            .get("iat")
            .and_then(numeric_date::seconds)
            .map_or(0, |s| s.saturating_mul(1000));
        Ok(Origin {
            auth_time_ms,
            token: Some(token),
            token_expires_ms: exp.saturating_mul(1000),
            session,
        })
    }
}

/// A token split into its three base64url parts.
struct Parts<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
}

impl<'t> Parts<'t> {
    fn split(token: &'t str) -> Result<Self> {
        if token.len() > MAX_JWT_LEN {
            return Err(ClaimRejection::Oversized.into());
        }
        let mut it = token.split('.');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(header), Some(payload), Some(signature), None) => Ok(Self {
                header,
                payload,
                signature,
            }),
            _ => Err(ClaimRejection::Malformed.into()),
        }
    }
}

/// base64url, then a strict JSON object.
fn decode_object(part: &str) -> Result<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ClaimRejection::Malformed)?;
    strict_json::parse_object(&bytes).map_err(|e| {
        match e {
            StrictJsonError::Duplicate(name) => ClaimRejection::DuplicateClaim(name),
            StrictJsonError::Malformed | StrictJsonError::NotAnObject => ClaimRejection::Malformed,
        }
        .into()
    })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ClaimVerifierBuilder {
    fn key(mut self, keys: Result<Keys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// HMAC-SHA256 with a shared secret (at least 32 bytes).
    pub fn hs256(self, secret: &[u8]) -> Self {
        let keys = if secret.len() < 32 {
            Err(Error::InvalidConfiguration(
                "HS256 secret must be at least 32 bytes".into(),
            ))
        } else {
            Ok(Keys::Static(Arc::new(KeyEntry {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            })))
        };
        self.key(keys)
    }

    /// HMAC-SHA256 with a secret held in a `secrecy` box.
    pub fn hs256_secret(self, secret: &SecretSlice<u8>) -> Self {
        self.hs256(secret.expose_secret())
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256, public key in PEM.
    pub fn rs256_pem(self, public_key_pem: &[u8]) -> Self {
        self.pem(Algorithm::RS256, DecodingKey::from_rsa_pem(public_key_pem))
    }

    /// ECDSA P-256 with SHA-256 (`ES256`), public key in PEM.
    pub fn es256_pem(self, public_key_pem: &[u8]) -> Self {
        self.pem(Algorithm::ES256, DecodingKey::from_ec_pem(public_key_pem))
    }

    /// Ed25519 (`EdDSA`), public key in PEM.
    pub fn eddsa_pem(self, public_key_pem: &[u8]) -> Self {
        self.pem(Algorithm::EdDSA, DecodingKey::from_ed_pem(public_key_pem))
    }

    fn pem(self, algorithm: Algorithm, key: jsonwebtoken::errors::Result<DecodingKey>) -> Self {
        let keys = key
            .map(|key| Keys::Static(Arc::new(KeyEntry { algorithm, key })))
            .map_err(|e| Error::InvalidConfiguration(format!("{algorithm:?} public key: {e}")));
        self.key(keys)
    }

    /// Keys from a JSON Web Key Set, selected by each token's `kid` (see
    /// [`JwkKeys`]); the set can be replaced at any time and every verifier
    /// built with it sees the new keys.
    pub fn jwks(self, keys: &JwkKeys) -> Self {
        self.key(Ok(Keys::Set(keys.clone())))
    }

    /// The required `iss`.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// The required `aud` member.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    /// The claim holding the tenant id (default `tenant_id`).
    pub fn tenant_claim(mut self, name: impl Into<String>) -> Self {
        self.tenant_claim = name.into();
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30 s, at
    /// most [`MAX_LEEWAY`]; whole seconds count).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The most a verified token can grant (default: nothing).
    pub fn capabilities(mut self, baseline: Capabilities) -> Self {
        self.baseline = baseline;
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a missing or invalid key, a
    /// missing or empty issuer or audience, an empty or overlong tenant
    /// claim name, or a leeway above [`MAX_LEEWAY`].
    pub fn build(self) -> Result<ClaimVerifier> {
        let invalid = |why: &str| Error::InvalidConfiguration(why.into());
        let keys = self
            .keys
            .ok_or_else(|| invalid("a verification key is required"))??;
        let issuer = self
            .issuer
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("an issuer (iss) is required"))?;
        let audience = self
            .audience
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("an audience (aud) is required"))?;
        if self.tenant_claim.is_empty() || self.tenant_claim.len() > 256 {
            return Err(invalid("the tenant claim name must be 1 to 256 bytes"));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(Error::InvalidConfiguration(format!(
                "leeway must be at most {} s",
                MAX_LEEWAY.as_secs()
            )));
        }
        Ok(ClaimVerifier {
            keys,
            issuer,
            audience,
            tenant_claim: self.tenant_claim,
            leeway_secs: self.leeway.as_secs(),
            baseline: self.baseline,
        })
    }
}

impl std::fmt::Debug for ClaimVerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimVerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}
