//! [`JwkKeys`]: the identity provider's signing keys from a JSON Web Key
//! Set, selected by `kid`, replaced as a whole when the provider rotates.
//!
//! The SDK fetches nothing itself: the application hands over the key set
//! text (from its HTTP client, a file, a secret manager) with
//! [`JwkKeys::replace`], or through a [`JwksLoader`] with
//! [`JwkKeys::refresh`]. A token naming a `kid` the set does not hold is
//! rejected ([`ClaimRejection::UnknownKeyId`]) and raises
//! [`JwkKeys::refresh_wanted`], so the application can refresh early.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::{ClaimRejection, Error, Result};
use crate::jwt::strict_json;

/// The most keys a set may hold, and the longest key set text accepted.
const MAX_KEYS: usize = 64;
const MAX_JWKS_LEN: usize = 256 * 1024;
/// The longest `kid` accepted (in a key set or a token header).
pub(crate) const MAX_KID_LEN: usize = 256;

/// Supplies the current key set text (e.g. by fetching the provider's
/// `jwks_uri`). Called by [`JwkKeys::refresh`]; the SDK never calls it on
/// the request path.
pub trait JwksLoader: Send + Sync {
    /// The current JSON Web Key Set, as JSON text.
    fn load(&self) -> impl Future<Output = Result<String>> + Send;
}

/// One usable key: its pinned algorithm and decoding key.
pub(crate) struct KeyEntry {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The identity provider's keys by `kid`, shared by every
/// [`ClaimVerifier`](crate::ClaimVerifier) built with it (cheap to clone).
///
/// Each key is pinned to one algorithm: its `alg` member, or the one its
/// type implies (EC P-256 → ES256, OKP Ed25519 → EdDSA, RSA → RS256), and
/// must be among the algorithms the set was created to allow. A token's
/// header `alg` must equal its key's algorithm. Keys with `use` other than
/// `sig`, unsupported types or algorithms, or without a `kid` are skipped
/// (and counted in [`skipped`](Self::skipped)); two keys with one `kid`
/// make the whole set invalid.
///
/// ```
/// use jsonwebtoken::Algorithm;
/// use tenant_core::JwkKeys;
/// let keys = JwkKeys::new(&[Algorithm::EdDSA, Algorithm::ES256])?;
/// keys.replace(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"2026-11",
///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#)?;
/// assert_eq!(keys.key_ids(), vec!["2026-11".to_owned()]);
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone)]
pub struct JwkKeys {
    inner: Arc<Shared>,
}

struct Shared {
    allowed: Vec<Algorithm>,
    table: RwLock<Arc<Table>>,
    refresh_wanted: AtomicBool,
    skipped: AtomicU64,
}

#[derive(Default)]
struct Table {
    keys: HashMap<String, Arc<KeyEntry>>,
}

impl JwkKeys {
    /// An empty set that will accept keys for `allowed` algorithms only
    /// (any of HS256, RS256, ES256, EdDSA).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] when `allowed` is empty or names
    /// another algorithm.
    pub fn new(allowed: &[Algorithm]) -> Result<Self> {
        if allowed.is_empty() {
            return Err(Error::InvalidConfiguration(
                "a key set needs at least one allowed algorithm".into(),
            ));
        }
        if let Some(alg) = allowed.iter().find(|a| !supported(**a)) {
            return Err(Error::InvalidConfiguration(format!(
                "algorithm {alg:?} is not supported (HS256, RS256, ES256, EdDSA are)"
            )));
        }
        Ok(Self {
            inner: Arc::new(Shared {
                allowed: allowed.to_vec(),
                table: RwLock::default(),
                refresh_wanted: AtomicBool::new(true),
                skipped: AtomicU64::new(0),
            }),
        })
    }

    /// Replaces the whole set with the keys of `jwks_json` (a JSON Web Key
    /// Set). On error the previous set stays in force.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for text that is too long, not a key
    /// set, has duplicate member names or duplicate `kid`s, or holds no
    /// usable key.
    pub fn replace(&self, jwks_json: &str) -> Result<()> {
        let table = self.parse(jwks_json)?;
        *self.inner.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.inner.refresh_wanted.store(false, Ordering::Release);
        Ok(())
    }

    /// Loads the set through `loader` and [`replace`](Self::replace)s it;
    /// on any error the previous set stays in force.
    ///
    /// # Errors
    ///
    /// The loader's error, or [`replace`](Self::replace)'s.
    pub async fn refresh(&self, loader: &impl JwksLoader) -> Result<()> {
        let text = loader.load().await?;
        self.replace(&text)
    }

    /// Whether a token named a `kid` the set does not hold since the last
    /// successful replacement (or nothing has been loaded yet): a hint to
    /// refresh now rather than at the next scheduled time.
    pub fn refresh_wanted(&self) -> bool {
        self.inner.refresh_wanted.load(Ordering::Acquire)
    }

    /// The `kid`s currently held, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.table().keys.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How many keys of loaded sets were skipped as unusable.
    pub fn skipped(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    fn table(&self) -> Arc<Table> {
        self.inner
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The key for a token header's `kid` and `alg`.
    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        alg: &str,
    ) -> std::result::Result<Arc<KeyEntry>, ClaimRejection> {
        let kid = kid.ok_or_else(|| ClaimRejection::MissingClaim("kid".into()))?;
        let Some(entry) = self.table().keys.get(kid).cloned() else {
            self.inner.refresh_wanted.store(true, Ordering::Release);
            return Err(ClaimRejection::UnknownKeyId);
        };
        if algorithm_name(entry.algorithm) != alg {
            return Err(ClaimRejection::AlgorithmNotAllowed);
        }
        Ok(entry)
    }

    fn parse(&self, jwks_json: &str) -> Result<Table> {
        let invalid = |why: &str| Error::InvalidConfiguration(format!("key set: {why}"));
        if jwks_json.len() > MAX_JWKS_LEN {
            return Err(invalid("too long"));
        }
        // Duplicate member names are refused here as in tokens.
        strict_json::parse_object(jwks_json.as_bytes())
            .map_err(|e| invalid(&format!("not a strict JSON object ({e:?})")))?;
        let set: JwkSet =
            serde_json::from_str(jwks_json).map_err(|_| invalid("not a JSON Web Key Set"))?;
        if set.keys.len() > MAX_KEYS {
            return Err(invalid("too many keys"));
        }
        let mut table = Table::default();
        let mut skipped = 0;
        for jwk in &set.keys {
            let Some((kid, entry)) = self.usable(jwk) else {
                skipped += 1;
                continue;
            };
            if table.keys.insert(kid.clone(), Arc::new(entry)).is_some() {
                return Err(invalid(&format!("kid `{kid}` appears twice")));
            }
        }
        self.inner.skipped.fetch_add(skipped, Ordering::Relaxed);
        if table.keys.is_empty() {
            return Err(invalid("no usable signing key"));
        }
        Ok(table)
    }

    fn usable(&self, jwk: &Jwk) -> Option<(String, KeyEntry)> {
        let kid = jwk.common.key_id.clone()?;
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return None;
        }
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let implied = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            _ => return None,
        };
        let algorithm = match jwk.common.key_algorithm {
            None => implied,
            Some(KeyAlgorithm::HS256) => Algorithm::HS256,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
            Some(_) => return None,
        };
        if algorithm != implied || !self.inner.allowed.contains(&algorithm) {
            return None;
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some((kid, KeyEntry { algorithm, key }))
    }
}

impl fmt::Debug for JwkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwkKeys")
            .field("allowed", &self.inner.allowed)
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

/// The algorithms a verifier can be pinned to.
pub(crate) fn supported(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
    )
}

/// The header `alg` value of a supported algorithm.
pub(crate) fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}
