//! Platform keys: the master key, key ids, and purpose-separated subkeys.
//!
//! The master key never leaves [`ContextIssuer`](crate::ContextIssuer).
//! Everything else gets a subkey derived with HKDF-SHA256 for one purpose
//! (`issuer.subkey(Purpose::Postgres)`), so a layer that verifies contexts
//! (PostgreSQL, a vault) holds a key that can do nothing else, and a leak of
//! one subkey does not reveal the master key or the other subkeys. The keys
//! that can mint contexts (the context-proof key and the context-token
//! signing key) are not purposes: nothing public derives them.

use std::fmt;

use hkdf::Hkdf;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::ids::validate_name;

const HKDF_SALT: &[u8] = b"tenant-sdk/hkdf/v1";

/// Names a key version so keys can rotate: every proof records the id of
/// the key that made it. 1–64 characters from `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Box<str>);

impl KeyId {
    /// Parses and validates a key id.
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref();
        validate_name(s, "key id", 64, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
        })?;
        Ok(Self(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", &*self.0)
    }
}

/// What a derived key is for. Each purpose yields an independent key.
///
/// The key that signs [`TenantContext`](crate::TenantContext) proofs is not
/// a `Purpose`: it never leaves the [`ContextIssuer`](crate::ContextIssuer),
/// so no layer that is handed a subkey can mint contexts with it.
///
/// Purposes are domain-separated: every derivation names the class of the
/// purpose (built-in or custom) and its label, each length-prefixed (see
/// [`derivation_info`](Purpose::derivation_info)), so a custom label equal
/// to a built-in's (`Custom("postgres")`) derives an unrelated key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// The key PostgreSQL uses to verify the context bound to a transaction.
    Postgres,
    /// Per-tenant keys sealing retrieval payloads.
    PayloadSealing,
    /// Per-tenant keys encrypting vault secrets.
    Vault,
    /// Per-tenant prompt prefix-cache salts.
    CacheSalt,
    /// Anything else; the label must be unique to its use. It can never
    /// derive a built-in purpose's key, whatever it is.
    Custom(&'static str),
}

impl Purpose {
    /// The purpose's label (for messages; derivations use
    /// [`derivation_info`](Self::derivation_info)).
    pub fn label(&self) -> &'static str {
        match self {
            Purpose::Postgres => "postgres",
            Purpose::PayloadSealing => "payload-sealing",
            Purpose::Vault => "vault",
            Purpose::CacheSalt => "cache-salt",
            Purpose::Custom(label) => label,
        }
    }

    fn domain(&self) -> Domain {
        match self {
            Purpose::Custom(label) => Domain::Custom(label),
            built_in => Domain::BuiltIn(built_in.label()),
        }
    }

    /// The bytes naming this purpose in every key derivation: the class
    /// (built-in or custom) and the label, each with a 32-bit length
    /// prefix. A [`KeyProvider`](crate::KeyProvider) backed by a KMS should
    /// use them as (part of) its derivation context, so custom purposes
    /// cannot collide with built-in ones there either.
    ///
    /// ```
    /// use tenant_core::Purpose;
    /// assert_ne!(Purpose::Vault.derivation_info(), Purpose::Custom("vault").derivation_info());
    /// ```
    pub fn derivation_info(&self) -> Vec<u8> {
        self.domain().info()
    }
}

/// The classes of derived keys. Internal keys (the context-proof key, the
/// context-token signing key, the root of derived tenant data keys) are
/// reachable only inside this crate.
#[derive(Clone, Copy)]
pub(crate) enum Domain {
    Internal(InternalPurpose),
    BuiltIn(&'static str),
    Custom(&'static str),
}

/// Keys that never leave `tenant-core`.
#[derive(Clone, Copy)]
pub(crate) enum InternalPurpose {
    /// HMAC key of in-process context proofs: it can mint contexts.
    ContextProof,
    /// Ed25519 seed signing [`ContextToken`](crate::ContextToken)s.
    TokenSigning,
    /// Root of [`DerivedKeyProvider`](crate::DerivedKeyProvider)'s keys.
    TenantDataKeys,
}

impl Domain {
    fn parts(&self) -> (&'static [u8], &'static [u8]) {
        match self {
            Domain::Internal(p) => (
                b"internal",
                match p {
                    InternalPurpose::ContextProof => b"context-proof",
                    InternalPurpose::TokenSigning => b"context-token-signing",
                    InternalPurpose::TenantDataKeys => b"tenant-data-keys",
                },
            ),
            Domain::BuiltIn(label) => (b"built-in", label.as_bytes()),
            Domain::Custom(label) => (b"custom", label.as_bytes()),
        }
    }

    pub(crate) fn info(&self) -> Vec<u8> {
        let (class, label) = self.parts();
        let mut out = Vec::with_capacity(8 + class.len() + label.len());
        for part in [class, label] {
            out.extend_from_slice(&len_prefix(part.len()));
            out.extend_from_slice(part);
        }
        out
    }
}

/// A 32-bit big-endian length; labels longer than 4 GiB cannot exist in a
/// `&'static str` a program was compiled with, and saturating keeps the
/// encoding total anyway.
fn len_prefix(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

/// 32 bytes of key material in a `secrecy` box (zeroised on drop, never
/// printed).
pub(crate) type KeyBytes = SecretBox<[u8; 32]>;

pub(crate) fn random_key_bytes() -> KeyBytes {
    let mut bytes = Box::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    SecretBox::new(bytes)
}

/// HKDF-SHA256(`ikm`) expanded with length-prefixed `info` parts.
pub(crate) fn hkdf_expand(ikm: &[u8], info: &[&[u8]]) -> KeyBytes {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), ikm);
    let mut full_info = Vec::with_capacity(64);
    for part in info {
        full_info.extend_from_slice(&len_prefix(part.len()));
        full_info.extend_from_slice(part);
    }
    let mut out = Box::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: this cannot fail.
    hk.expand(&full_info, out.as_mut())
        .expect("32-byte HKDF output is always valid");
    SecretBox::new(out)
}

fn parse_hex_key(hex_text: &str) -> Result<KeyBytes> {
    let mut bytes = Box::new([0u8; 32]);
    hex::decode_to_slice(hex_text.trim(), bytes.as_mut())
        .map_err(|_| Error::Key("expected 64 hex digits (32 bytes)".into()))?;
    Ok(SecretBox::new(bytes))
}

/// The platform master key, with its [`KeyId`].
///
/// ```
/// use tenant_core::{KeyId, MasterKey};
/// let key = MasterKey::from_bytes(KeyId::new("2026-11")?, [0xab; 32]);
/// let shown = format!("{key:?}");
/// assert!(shown.contains("2026-11") && !shown.contains("171"));
/// # Ok::<(), tenant_core::Error>(())
/// ```
pub struct MasterKey {
    id: KeyId,
    secret: KeyBytes,
}

impl MasterKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate(id: KeyId) -> Self {
        Self {
            id,
            secret: random_key_bytes(),
        }
    }

    /// A key from 32 bytes of existing material.
    pub fn from_bytes(id: KeyId, bytes: [u8; 32]) -> Self {
        Self {
            id,
            secret: SecretBox::new(Box::new(bytes)),
        }
    }

    /// A key from 64 hex digits (e.g. read from a secret manager).
    pub fn from_hex(id: KeyId, hex_text: &SecretString) -> Result<Self> {
        Ok(Self {
            id,
            secret: parse_hex_key(hex_text.expose_secret())?,
        })
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Derives the subkey for one purpose.
    pub fn subkey(&self, purpose: Purpose) -> Subkey {
        Subkey {
            key_id: self.id.clone(),
            purpose,
            secret: self.derive(purpose.domain()),
        }
    }

    /// The key of one domain: HKDF(master, class ‖ label ‖ key id).
    pub(crate) fn derive(&self, domain: Domain) -> KeyBytes {
        hkdf_expand(
            self.secret.expose_secret(),
            &[&domain.info(), self.id.as_str().as_bytes()],
        )
    }

    /// A key that never leaves this crate.
    pub(crate) fn internal_key(&self, purpose: InternalPurpose) -> KeyBytes {
        self.derive(Domain::Internal(purpose))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A key derived from the master key for one [`Purpose`].
pub struct Subkey {
    key_id: KeyId,
    purpose: Purpose,
    secret: KeyBytes,
}

impl Subkey {
    /// The id of the master key it was derived from.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Its purpose.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The raw key bytes. Handle with care: pass them only to the layer the
    /// purpose names.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.secret.expose_secret()
    }

    /// The key as lowercase hex (for installing into PostgreSQL, say).
    pub fn to_hex(&self) -> SecretString {
        SecretString::from(hex::encode(self.secret.expose_secret()))
    }

    /// A further derivation, e.g. per tenant: HKDF(subkey, parts).
    pub fn derive(&self, parts: &[&[u8]]) -> Subkey {
        Subkey {
            key_id: self.key_id.clone(),
            purpose: self.purpose,
            secret: hkdf_expand(self.secret.expose_secret(), parts),
        }
    }
}

impl fmt::Debug for Subkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subkey")
            .field("key_id", &self.key_id)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_custom_label_derives_an_internal_key() {
        let master = MasterKey::from_bytes(KeyId::new("k1").unwrap(), [9; 32]);
        let internal = [
            InternalPurpose::ContextProof,
            InternalPurpose::TenantDataKeys,
        ];
        for label in [
            "context-proof",
            "tenant-data-keys",
            "context-token-signing",
            "internal",
            "\0\0\0\x08internal\0\0\0\x0dcontext-proof",
        ] {
            let sub = master.subkey(Purpose::Custom(label));
            for purpose in internal {
                assert_ne!(
                    sub.expose_bytes(),
                    master.internal_key(purpose).expose_secret(),
                    "{label:?}"
                );
            }
        }
    }
}
