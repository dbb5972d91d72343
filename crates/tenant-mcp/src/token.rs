//! [`TokenMinter`]: short-lived bearer tokens for calling a remote MCP
//! server on behalf of one context, bound to one resource.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use tenant_core::{ContextIssuer, PlatformAuthority, Purpose, ScopeKind, TenantContext};

use crate::error::{Error, Result};
use crate::resource::ResourceUrl;

/// The default lifetime of a minted token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The longest lifetime a minted token may be given.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(300);

/// The key-derivation label of the minting key.
const PURPOSE: Purpose = Purpose::Custom("tenant-mcp/client-token/v1");

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Mints the bearer tokens this platform presents to remote MCP servers.
///
/// A token is an EdDSA-signed JWT minted for one admitted context and one
/// resource:
///
/// - `aud` is the remote server's canonical [`ResourceUrl`] (RFC 8707), so
///   no other server accepts it;
/// - `tenant_id`, `sub` (the principal) and `agent` are the context's;
/// - it lives at most the minter's lifetime ([`DEFAULT_TOKEN_TTL`], at most
///   [`MAX_TOKEN_TTL`]) and never past the context's expiry;
/// - its capability claims never exceed the context's, so a verifier that
///   narrows by them (such as `tenant_core::ClaimVerifier`) grants no more
///   than the caller holds: [`mint`](Self::mint) carries the context's
///   `tools`, `collections`, `memory_namespaces`, `models` and
///   `token_budget` (for a server that names them as this platform does);
///   a remote tool call carries exactly the one tool called, in the remote
///   server's names, and the budget — the remote's names for anything else
///   are not this platform's to narrow, nor its own to learn;
/// - a random `jti` lets the remote revoke it.
///
/// The signing key is derived from the platform master key
/// ([`from_issuer`](Self::from_issuer)), so every replica mints with the
/// same key and a remote server verifies with the public key alone
/// ([`public_key_pem`](Self::public_key_pem), [`jwks`](Self::jwks)).
/// `Debug` shows no key material.
///
/// ```
/// use tenant_core::*;
/// use tenant_mcp::{ResourceUrl, TokenMinter};
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let minter = TokenMinter::from_issuer(&issuer, "https://agents.example.com")?;
/// let ctx = issuer.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice")?)
///     .capabilities(Capabilities::none().with_tools(["search"])?)
///     .issue()?;
/// let resource = ResourceUrl::parse("https://crm.example.com/mcp")?;
/// let token = minter.mint(&ctx, &resource)?;
///
/// // The remote server verifies it with the minter's public key, for its
/// // own resource only.
/// let verifier = ClaimVerifier::builder()
///     .eddsa_pem(minter.public_key_pem().as_bytes())
///     .issuer("https://agents.example.com")
///     .audience(resource.as_str())
///     .capabilities(Capabilities::unrestricted())
///     .build()?;
/// use secrecy::ExposeSecret;
/// let remote = ContextIssuer::new(MasterKey::generate(KeyId::new("remote")?));
/// let seen = verifier.verify(token.expose_secret(), &remote)?;
/// assert_eq!(seen.tenant(), ctx.tenant());
/// assert!(!seen.capabilities().tools().allows("shell"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenMinter {
    inner: Arc<Inner>,
}

struct Inner {
    authority: PlatformAuthority,
    issuer: String,
    key_id: String,
    signing: SigningKey,
    ttl: Duration,
}

impl fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenMinter")
            .field("issuer", &self.inner.issuer)
            .field("key_id", &self.inner.key_id)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// A minter for contexts of `issuer`'s authority, naming itself `iss`
    /// (the issuer remote verifiers are configured with), signing with a
    /// key derived from the issuer's master key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for an empty or overlong `iss`.
    pub fn from_issuer(issuer: &ContextIssuer, iss: impl Into<String>) -> Result<Self> {
        let iss = iss.into();
        if iss.is_empty() || iss.len() > 512 {
            return Err(Error::InvalidConfiguration(
                "the token issuer name must be 1 to 512 bytes".into(),
            ));
        }
        let subkey = issuer.subkey(PURPOSE);
        Ok(Self {
            inner: Arc::new(Inner {
                authority: issuer.authority(),
                issuer: iss,
                key_id: format!("{}.mcp", issuer.key_id()),
                signing: SigningKey::from_bytes(subkey.expose_bytes()),
                ttl: DEFAULT_TOKEN_TTL,
            }),
        })
    }

    /// The same minter with tokens living `ttl` (1 s to [`MAX_TOKEN_TTL`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a lifetime out of range.
    pub fn with_ttl(self, ttl: Duration) -> Result<Self> {
        if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
            return Err(Error::InvalidConfiguration(format!(
                "minted tokens live 1 s to {} s",
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        let inner = &self.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                authority: inner.authority.clone(),
                issuer: inner.issuer.clone(),
                key_id: inner.key_id.clone(),
                signing: inner.signing.clone(),
                ttl,
            }),
        })
    }

    /// The `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The `kid` of minted tokens.
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// The lifetime of minted tokens.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The authority whose contexts this minter serves.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.inner.authority
    }

    /// The verifying key as a PEM `PUBLIC KEY` (for
    /// `ClaimVerifier::builder().eddsa_pem(..)`).
    pub fn public_key_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.inner.signing.verifying_key().as_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    /// The verifying key as a JSON Web Key Set (for `JwkKeys::replace`, or
    /// to publish at a `jwks_uri`).
    pub fn jwks(&self) -> String {
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.inner.key_id,
            "x": URL_SAFE_NO_PAD.encode(self.inner.signing.verifying_key().as_bytes()),
        }]})
        .to_string()
    }

    /// A token for `ctx` at `resource`, carrying the context's own tool
    /// names (for a remote server that names tools as this platform does).
    ///
    /// # Errors
    ///
    /// [`Error::Context`] when `ctx` is not admitted by the minter's
    /// authority or has expired.
    pub fn mint(&self, ctx: &TenantContext, resource: &ResourceUrl) -> Result<SecretString> {
        let tools = ctx
            .capabilities()
            .tools()
            .names()
            .map(|names| names.map(str::to_owned).collect());
        self.sign_for(ctx, resource, tools, true)
    }

    /// A token for `ctx` at `resource` whose `tools` claim lists exactly
    /// `tools` (names on the remote server, which the caller has already
    /// checked `ctx` may use) and that names no other scope.
    pub(crate) fn mint_for_remote(
        &self,
        ctx: &TenantContext,
        resource: &ResourceUrl,
        tools: Vec<String>,
    ) -> Result<SecretString> {
        self.sign_for(ctx, resource, Some(tools), false)
    }

    fn sign_for(
        &self,
        ctx: &TenantContext,
        resource: &ResourceUrl,
        tools: Option<Vec<String>>,
        scopes: bool,
    ) -> Result<SecretString> {
        self.inner.authority.admit(ctx)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let context_end = ctx.expires_at_unix_ms() / 1000;
        let exp = now
            .saturating_add(self.inner.ttl.as_secs())
            .min(context_end);
        if exp <= now {
            return Err(tenant_core::Error::ContextExpired.into());
        }
        let mut claims = Map::new();
        claims.insert("iss".into(), self.inner.issuer.clone().into());
        claims.insert("sub".into(), ctx.principal().as_str().into());
        claims.insert("aud".into(), resource.as_str().into());
        claims.insert("tenant_id".into(), ctx.tenant().to_string().into());
        claims.insert("agent".into(), ctx.agent().as_str().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), exp.into());
        claims.insert("jti".into(), uuid::Uuid::new_v4().to_string().into());
        if let Some(tools) = tools {
            claims.insert("tools".into(), tools.into());
        }
        let caps = ctx.capabilities();
        let kinds = [
            ScopeKind::Collections,
            ScopeKind::MemoryNamespaces,
            ScopeKind::Models,
        ];
        for kind in kinds.into_iter().filter(|_| scopes) {
            if let Some(names) = caps.scope(kind).names() {
                let names: Vec<Value> = names.map(Value::from).collect();
                claims.insert(kind.name().into(), names.into());
            }
        }
        if let Some(budget) = caps.token_budget() {
            claims.insert("token_budget".into(), budget.into());
        }
        Ok(self.sign(&Value::Object(claims)))
    }

    fn sign(&self, claims: &Value) -> SecretString {
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.inner.key_id});
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.inner.signing.sign(jwt.as_bytes());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        SecretString::from(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use tenant_core::*;

    fn setup() -> (ContextIssuer, TokenMinter, ResourceUrl) {
        let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
        let minter = TokenMinter::from_issuer(&issuer, "https://agents.example").unwrap();
        let resource = ResourceUrl::parse("https://remote.example/mcp").unwrap();
        (issuer, minter, resource)
    }

    fn payload(token: &SecretString) -> Value {
        let part = token.expose_secret().split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn minted_claims_never_exceed_the_context() {
        let (issuer, minter, resource) = setup();
        let ctx = issuer
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("alice").unwrap())
            .capabilities(
                Capabilities::none()
                    .with_tools(["a", "b"])
                    .unwrap()
                    .with_collections(["docs"])
                    .unwrap()
                    .with_token_budget(10),
            )
            .ttl(Duration::from_secs(20))
            .issue()
            .unwrap();
        let claims = payload(&minter.mint(&ctx, &resource).unwrap());
        assert_eq!(claims["aud"], "https://remote.example/mcp");
        assert_eq!(claims["tenant_id"], ctx.tenant().to_string());
        assert_eq!(claims["tools"], json!(["a", "b"]));
        assert_eq!(claims["collections"], json!(["docs"]));
        assert_eq!(claims["memory_namespaces"], json!([]));
        assert_eq!(claims["token_budget"], 10);
        // The context expires in 20 s, before the minter's 60 s.
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp <= ctx.expires_at_unix_ms() / 1000);
        let one = payload(
            &minter
                .mint_for_remote(&ctx, &resource, vec!["b".into()])
                .unwrap(),
        );
        assert_eq!(one["tools"], json!(["b"]));
        assert!(one.get("collections").is_none());
        assert_eq!(one["token_budget"], 10);
    }

    #[test]
    fn a_context_of_another_authority_gets_no_token() {
        let (_, minter, resource) = setup();
        let rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
        let ctx = rogue
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("mallory").unwrap())
            .issue()
            .unwrap();
        assert!(matches!(
            minter.mint(&ctx, &resource),
            Err(crate::Error::Context(tenant_core::Error::ForeignAuthority))
        ));
    }

    #[test]
    fn tokens_verify_with_the_published_keys_only_for_their_resource() {
        let (issuer, minter, resource) = setup();
        let ctx = issuer
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("alice").unwrap())
            .issue()
            .unwrap();
        let token = minter.mint(&ctx, &resource).unwrap();
        let remote = ContextIssuer::new(MasterKey::generate(KeyId::new("r").unwrap()));
        let keys = JwkKeys::new(&[jsonwebtoken::Algorithm::EdDSA]).unwrap();
        keys.replace(&minter.jwks()).unwrap();
        let verifier = |aud: &str| {
            ClaimVerifier::builder()
                .jwks(&keys)
                .issuer("https://agents.example")
                .audience(aud)
                .build()
                .unwrap()
        };
        let seen = verifier(resource.as_str())
            .verify(token.expose_secret(), &remote)
            .unwrap();
        assert_eq!(seen.principal().as_str(), "alice");
        assert!(matches!(
            verifier("https://other.example/mcp").verify(token.expose_secret(), &remote),
            Err(tenant_core::Error::ClaimRejected(
                ClaimRejection::WrongAudience
            ))
        ));
        let pem_verifier = ClaimVerifier::builder()
            .eddsa_pem(minter.public_key_pem().as_bytes())
            .issuer("https://agents.example")
            .audience(resource.as_str())
            .build()
            .unwrap();
        pem_verifier.verify(token.expose_secret(), &remote).unwrap();
    }

    #[test]
    fn ttl_is_bounded() {
        let (_, minter, _) = setup();
        assert!(minter.clone().with_ttl(Duration::ZERO).is_err());
        assert!(minter.clone().with_ttl(Duration::from_secs(301)).is_err());
        assert_eq!(
            minter.with_ttl(Duration::from_secs(5)).unwrap().ttl(),
            Duration::from_secs(5)
        );
    }
}
