//! Secrets per (tenant, integration): the [`Vault`] trait, an in-memory
//! vault and an encrypted-file vault.
//!
//! A vault is a platform-wide store; tools never see it. They receive
//! secrets only through [`Credentials`](crate::Credentials) at call time,
//! for integrations they declared and the tenant's policy grants.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tenant_core::{KeyProvider, Purpose, TenantId};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::tool::validate_name;

/// Storage of secrets keyed by (tenant, integration).
///
/// Implementations must never log or `Debug`-print secret values.
pub trait Vault: Send + Sync + 'static {
    /// The secret of `tenant` for `integration`, if one is stored.
    fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>>;
    /// Stores (replaces) a secret.
    fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()>;
    /// Removes a secret; returns whether one was stored.
    fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool>;
}

impl<V: Vault + ?Sized> Vault for Arc<V> {
    fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        (**self).get(tenant, integration)
    }
    fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        (**self).put(tenant, integration, secret)
    }
    fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool> {
        (**self).remove(tenant, integration)
    }
}

/// An in-memory vault (tests, single-process deployments).
#[derive(Default)]
pub struct MemoryVault {
    secrets: RwLock<HashMap<(TenantId, String), SecretString>>,
}

impl MemoryVault {
    /// An empty vault.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.secrets.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("MemoryVault").field("entries", &n).finish()
    }
}

impl Vault for MemoryVault {
    fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        let map = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .get(&(tenant, integration.to_owned()))
            .map(|s| SecretString::from(s.expose_secret().to_owned())))
    }

    fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        validate_name("integration", integration)?;
        let mut map = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        map.insert((tenant, integration.to_owned()), secret);
        Ok(())
    }

    fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool> {
        let mut map = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        Ok(map.remove(&(tenant, integration.to_owned())).is_some())
    }
}

const FILE_MAGIC: &[u8; 4] = b"TTV1";
const AAD_LABEL: &[u8] = b"tenant-tools/vault/v1\0";
const NONCE_LEN: usize = 24;

/// A vault that keeps each secret in its own file, encrypted with
/// XChaCha20-Poly1305 under the tenant's [`Purpose::Vault`] data key.
///
/// Layout: `<dir>/<tenant>/<sha256(integration)>.secret`, mode 0600,
/// contents `TTV1 ‖ nonce(24) ‖ ciphertext`. The associated data binds the
/// tenant and the integration, so a file copied to another tenant's
/// directory or renamed to another integration does not decrypt
/// ([`Error::VaultCorrupt`]). Destroying a tenant's key in a
/// [`FileKeyProvider`](tenant_core::FileKeyProvider) crypto-shreds its
/// secrets.
pub struct FileVault {
    dir: PathBuf,
    keys: Arc<dyn KeyProvider>,
}

impl fmt::Debug for FileVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileVault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FileVault {
    /// Opens (creating if needed, mode 0700) a vault directory.
    pub fn open(dir: impl Into<PathBuf>, keys: Arc<dyn KeyProvider>) -> Result<Self> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Self { dir, keys })
    }

    fn entry_path(&self, tenant: TenantId, integration: &str) -> PathBuf {
        let digest = Sha256::digest(integration.as_bytes());
        self.dir
            .join(tenant.to_string())
            .join(format!("{}.secret", hex::encode(digest)))
    }

    fn cipher(&self, tenant: TenantId) -> Result<XChaCha20Poly1305> {
        let key = self.keys.data_key(tenant, Purpose::Vault)?;
        Ok(XChaCha20Poly1305::new(key.expose_bytes().into()))
    }

    fn aad(tenant: TenantId, integration: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 20 + integration.len());
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(tenant.as_bytes());
        aad.extend_from_slice(&(integration.len() as u32).to_be_bytes());
        aad.extend_from_slice(integration.as_bytes());
        aad
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::VaultIo)
}

impl Vault for FileVault {
    fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        let path = self.entry_path(tenant, integration);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::VaultIo(e)),
        };
        let corrupt = || Error::VaultCorrupt {
            integration: integration.to_owned(),
        };
        if bytes.len() < FILE_MAGIC.len() + NONCE_LEN || &bytes[..4] != FILE_MAGIC {
            return Err(corrupt());
        }
        let nonce_bytes: [u8; NONCE_LEN] =
            bytes[4..4 + NONCE_LEN].try_into().map_err(|_| corrupt())?;
        let nonce = &XNonce::from(nonce_bytes);
        let aad = Self::aad(tenant, integration);
        let plain = self
            .cipher(tenant)?
            .decrypt(
                nonce,
                Payload {
                    msg: &bytes[4 + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| corrupt())?;
        let text = std::str::from_utf8(&plain).map_err(|_| corrupt())?;
        Ok(Some(SecretString::from(text.to_owned())))
    }

    fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        validate_name("integration", integration)?;
        let path = self.entry_path(tenant, integration);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = Self::aad(tenant, integration);
        let sealed = self
            .cipher(tenant)?
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::VaultCorrupt {
                integration: integration.to_owned(),
            })?;
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(FILE_MAGIC)?;
            f.write_all(&nonce)?;
            f.write_all(&sealed)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::VaultIo(e)
        })
    }

    fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool> {
        match fs::remove_file(self.entry_path(tenant, integration)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::VaultIo(e)),
        }
    }
}
