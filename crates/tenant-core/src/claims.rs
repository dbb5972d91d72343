//! [`ClaimVerifier`]: from a JWT to a [`TenantContext`].
//!
//! The algorithm is pinned by configuration (the token's header cannot
//! choose it, so `alg: none` and algorithm-confusion attacks fail); `exp`,
//! `nbf`, `iss`, `aud` and `sub` are required and checked; the tenant claim
//! is required and must be a canonical tenant id.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Map, Value};

use crate::capabilities::{Capabilities, Scope, ScopeKind};
use crate::context::TenantContext;
use crate::error::{ClaimRejection, Error, Result};
use crate::ids::{AgentId, PrincipalId, TenantId};
use crate::issuer::ContextIssuer;

/// The default name of the tenant claim.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant_id";

/// Verifies JWTs issued by the platform's identity provider and turns them
/// into contexts.
///
/// The context's capabilities are the verifier's configured baseline,
/// narrowed (never widened) by optional token claims `tools`,
/// `collections`, `memory_namespaces`, `models` (arrays of names) and
/// `token_budget` (number). Its agent is the optional `agent` claim
/// (default `main`); it expires with the token or after the issuer's
/// maximum lifetime, whichever comes first.
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
/// # Ok::<(), tenant_core::Error>(())
/// ```
pub struct ClaimVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
    baseline: Capabilities,
}

impl std::fmt::Debug for ClaimVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimVerifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

/// Configures a [`ClaimVerifier`]. A key, an issuer and an audience are
/// required.
#[must_use = "a builder does nothing until build() is called"]
pub struct ClaimVerifierBuilder {
    key: Option<std::result::Result<(Algorithm, DecodingKey), Error>>,
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
            key: None,
            issuer: None,
            audience: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.to_owned(),
            leeway: Duration::from_secs(30),
            baseline: Capabilities::none(),
        }
    }

    /// Verifies `token` and issues a root context through `issuer`.
    ///
    /// Every rejection is an [`Error::ClaimRejected`] naming the reason, and
    /// is emitted as a `tenant_audit` event.
    pub fn verify(&self, token: &str, issuer: &ContextIssuer) -> Result<TenantContext> {
        self.verify_inner(token, issuer).inspect_err(|e| {
            crate::audit::rejected("jwt.verify", e);
        })
    }

    fn verify_inner(&self, token: &str, issuer: &ContextIssuer) -> Result<TenantContext> {
        self.check_header_algorithm(token)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;

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
            Some(Value::String(s)) => {
                PrincipalId::new(s).map_err(|_| ClaimRejection::InvalidPrincipal)?
            }
            _ => return Err(ClaimRejection::MissingClaim("sub".into()).into()),
        };
        let agent = match claims.get("agent") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(AgentId::new(s).map_err(|_| ClaimRejection::InvalidClaim("agent".into()))?)
            }
            Some(_) => return Err(ClaimRejection::InvalidClaim("agent".into()).into()),
        };
        let capabilities = self.capabilities_from(&claims)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClaimRejection::InvalidClaim("exp".into()))?;
        let token_expiry = std::time::UNIX_EPOCH + Duration::from_secs(exp);
        let issuer_limit = std::time::SystemTime::now() + issuer.max_ttl();
        let mut builder = issuer
            .context()
            .tenant(tenant)
            .principal(principal)
            .capabilities(capabilities)
            .expires_at(token_expiry.min(issuer_limit));
        if let Some(agent) = agent {
            builder = builder.agent(agent);
        }
        // A token inside its leeway window but past `exp` cannot make a
        // context that is already expired.
        builder
            .issue()
            .map_err(|_| Error::ClaimRejected(ClaimRejection::Expired))
    }

    /// Rejects any header whose `alg` is not exactly the configured one,
    /// before the library parses it (`none`, `None`, unknown names).
    fn check_header_algorithm(&self, token: &str) -> Result<()> {
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| ClaimRejection::Malformed)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&header).map_err(|_| ClaimRejection::Malformed)?;
        let expected = algorithm_name(self.algorithm);
        match header.get("alg") {
            Some(Value::String(alg)) if alg == expected => Ok(()),
            Some(_) => Err(ClaimRejection::AlgorithmNotAllowed.into()),
            None => Err(ClaimRejection::Malformed.into()),
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
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

fn map_jwt_error(kind: &ErrorKind) -> Error {
    let reason = match kind {
        ErrorKind::InvalidSignature => ClaimRejection::BadSignature,
        ErrorKind::ExpiredSignature => ClaimRejection::Expired,
        ErrorKind::ImmatureSignature => ClaimRejection::NotYetValid,
        ErrorKind::InvalidIssuer => ClaimRejection::WrongIssuer,
        ErrorKind::InvalidAudience => ClaimRejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => ClaimRejection::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => ClaimRejection::InvalidClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            ClaimRejection::AlgorithmNotAllowed
        }
        _ => ClaimRejection::Malformed,
    };
    Error::ClaimRejected(reason)
}

impl ClaimVerifierBuilder {
    /// HMAC-SHA256 with a shared secret (at least 32 bytes).
    pub fn hs256(mut self, secret: &[u8]) -> Self {
        self.key = Some(if secret.len() < 32 {
            Err(Error::InvalidConfiguration(
                "HS256 secret must be at least 32 bytes".into(),
            ))
        } else {
            Ok((Algorithm::HS256, DecodingKey::from_secret(secret)))
        });
        self
    }

    /// HMAC-SHA256 with a secret held in a `secrecy` box.
    pub fn hs256_secret(self, secret: &SecretSlice<u8>) -> Self {
        self.hs256(secret.expose_secret())
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256, public key in PEM.
    pub fn rs256_pem(mut self, public_key_pem: &[u8]) -> Self {
        self.key = Some(
            DecodingKey::from_rsa_pem(public_key_pem)
                .map(|k| (Algorithm::RS256, k))
                .map_err(|e| Error::InvalidConfiguration(format!("RS256 public key: {e}"))),
        );
        self
    }

    /// Ed25519 (`EdDSA`), public key in PEM.
    pub fn eddsa_pem(mut self, public_key_pem: &[u8]) -> Self {
        self.key = Some(
            DecodingKey::from_ed_pem(public_key_pem)
                .map(|k| (Algorithm::EdDSA, k))
                .map_err(|e| Error::InvalidConfiguration(format!("EdDSA public key: {e}"))),
        );
        self
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

    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
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
    pub fn build(self) -> Result<ClaimVerifier> {
        let (algorithm, key) = self.key.ok_or_else(|| {
            Error::InvalidConfiguration("a verification key is required".into())
        })??;
        let issuer = self
            .issuer
            .ok_or_else(|| Error::InvalidConfiguration("an issuer (iss) is required".into()))?;
        let audience = self
            .audience
            .ok_or_else(|| Error::InvalidConfiguration("an audience (aud) is required".into()))?;
        if self.tenant_claim.is_empty() {
            return Err(Error::InvalidConfiguration(
                "the tenant claim name must not be empty".into(),
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.leeway.as_secs();
        Ok(ClaimVerifier {
            algorithm,
            key,
            validation,
            tenant_claim: self.tenant_claim,
            baseline: self.baseline,
        })
    }
}
