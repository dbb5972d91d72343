//! The keys of [`ContextToken`](crate::ContextToken)s: an Ed25519 signing
//! key that stays inside the [`ContextIssuer`](crate::ContextIssuer), and
//! [`TokenVerifier`], the public half a downstream process holds.
//!
//! Verification is split from signing in the types: a `TokenVerifier`
//! holds only Ed25519 public keys, so a process (or a leak) that has one
//! can check tokens but cannot make one.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::keys::{InternalPurpose, KeyId, MasterKey};

/// Length of an Ed25519 signature.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// Signs context tokens; derived from the master key, never handed out.
pub(crate) struct TokenSigner {
    id: KeyId,
    key: SigningKey,
}

impl TokenSigner {
    pub(crate) fn from_master(master: &MasterKey) -> Self {
        let seed = master.internal_key(InternalPurpose::TokenSigning);
        Self {
            id: master.id().clone(),
            key: SigningKey::from_bytes(seed.expose_secret()),
        }
    }

    pub(crate) fn id(&self) -> &KeyId {
        &self.id
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(msg).to_bytes()
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

/// The public keys that verify [`ContextToken`](crate::ContextToken)s, by
/// key id. It cannot mint: it holds no secret.
///
/// The issuing process hands its verifier out with
/// [`ContextIssuer::token_verifier`](crate::ContextIssuer::token_verifier)
/// (public keys only: publish them as configuration); a downstream process
/// rebuilds it with [`with_key`](Self::with_key) and turns tokens into
/// contexts of its own issuer with
/// [`ContextIssuer::accept_remote`](crate::ContextIssuer::accept_remote).
///
/// ```
/// use tenant_core::*;
/// let upstream = ContextIssuer::new(MasterKey::generate(KeyId::new("up-1")?));
/// // Publish the public keys (id, 32 bytes) as configuration ...
/// let published: Vec<(KeyId, [u8; 32])> = upstream.token_verifier().public_keys().collect();
/// // ... and rebuild the verifier downstream.
/// let mut verifier = TokenVerifier::new();
/// for (id, key) in published {
///     verifier = verifier.with_key(id, key)?;
/// }
/// let downstream = ContextIssuer::new(MasterKey::generate(KeyId::new("down-1")?));
/// let ctx = upstream.context().tenant(TenantId::random())
///     .principal(PrincipalId::new("alice")?).issue()?;
/// let local = downstream.accept_remote(ctx.to_token().as_str(), &verifier)?;
/// assert_eq!(local.id(), ctx.id());
/// downstream.authority().admit(&local)?;
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct TokenVerifier {
    keys: Arc<[(KeyId, VerifyingKey)]>,
}

impl TokenVerifier {
    /// A verifier that accepts nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accepts tokens signed under `id` with the Ed25519 public key
    /// `public_key` (32 bytes, compressed Edwards point).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] for bytes that are not a valid public key or are a
    /// weak (small-order) point, which would let forged signatures verify;
    /// [`Error::InvalidConfiguration`] when `id` is already present.
    pub fn with_key(self, id: KeyId, public_key: [u8; 32]) -> Result<Self> {
        let key = VerifyingKey::from_bytes(&public_key)
            .map_err(|_| Error::Key("not an Ed25519 public key".into()))?;
        if key.is_weak() {
            return Err(Error::Key("weak Ed25519 public key refused".into()));
        }
        self.with_verifying_key(id, key)
    }

    /// [`with_key`](Self::with_key) from 64 hex digits.
    ///
    /// # Errors
    ///
    /// As [`with_key`](Self::with_key), and [`Error::Key`] for text that is
    /// not 64 hex digits.
    pub fn with_key_hex(self, id: KeyId, public_key_hex: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(public_key_hex.trim(), &mut bytes)
            .map_err(|_| Error::Key("expected 64 hex digits (an Ed25519 public key)".into()))?;
        self.with_key(id, bytes)
    }

    /// From keys whose ids the caller has checked are distinct.
    pub(crate) fn from_distinct(keys: Vec<(KeyId, VerifyingKey)>) -> Self {
        Self { keys: keys.into() }
    }

    fn with_verifying_key(self, id: KeyId, key: VerifyingKey) -> Result<Self> {
        if self.keys.iter().any(|(known, _)| *known == id) {
            return Err(Error::InvalidConfiguration(format!(
                "token key id `{id}` is given twice"
            )));
        }
        let mut keys = self.keys.to_vec();
        keys.push((id, key));
        Ok(Self { keys: keys.into() })
    }

    /// The accepted keys: id and 32-byte public key.
    pub fn public_keys(&self) -> impl Iterator<Item = (KeyId, [u8; 32])> + '_ {
        self.keys.iter().map(|(id, k)| (id.clone(), k.to_bytes()))
    }

    /// `Ok` when `signature` over `msg` verifies under the key named `id`
    /// (strict verification: no malleable or small-order signatures).
    pub(crate) fn verify(
        &self,
        id: &KeyId,
        msg: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<()> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .ok_or_else(|| Error::UnknownKey(id.clone()))?;
        key.verify_strict(msg, &Signature::from_bytes(signature))
            .map_err(|_| Error::BadProof)
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}
