//! Secrets per (tenant, integration): the [`Vault`] trait (asynchronous;
//! [`SyncVault`] adapts a synchronous store), an in-memory vault and an
//! encrypted-file vault.
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
use tenant_core::{AsyncKeyProvider, Purpose, TenantId};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::tool::validate_name;

/// Storage of secrets keyed by (tenant, integration): a secrets manager,
/// a database, the process's memory.
///
/// Asynchronous, since real vaults sit behind the network. A store with a
/// synchronous API implements [`SyncVault`] instead and is a `Vault` through
/// it. Implementations must never log or `Debug`-print secret values.
#[async_trait::async_trait]
pub trait Vault: Send + Sync + 'static {
    /// The secret of `tenant` for `integration`, if one is stored.
    async fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>>;
    /// Stores (replaces) a secret.
    async fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()>;
    /// Removes a secret; returns whether one was stored.
    async fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool>;
}

/// A vault with a synchronous API (in-process, or a local store that never
/// blocks for long); every `SyncVault` is a [`Vault`].
///
/// ```
/// use secrecy::SecretString;
/// use tenant_core::TenantId;
/// use tenant_tools::{Result, SyncVault, Vault};
///
/// struct FromEnv;
/// impl SyncVault for FromEnv {
///     fn lookup(&self, _tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
///         Ok(std::env::var(format!("SECRET_{integration}")).ok().map(SecretString::from))
///     }
///     fn store(&self, _: TenantId, _: &str, _: SecretString) -> Result<()> {
///         Err(tenant_tools::Error::MissingConfiguration("a writable vault"))
///     }
///     fn delete(&self, _: TenantId, _: &str) -> Result<bool> {
///         Ok(false)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// assert!(FromEnv.get(TenantId::random(), "unset_integration").await?.is_none());
/// # Ok(()) }
/// ```
pub trait SyncVault: Send + Sync + 'static {
    /// The secret of `tenant` for `integration`, if one is stored.
    fn lookup(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>>;
    /// Stores (replaces) a secret.
    fn store(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()>;
    /// Removes a secret; returns whether one was stored.
    fn delete(&self, tenant: TenantId, integration: &str) -> Result<bool>;
}

#[async_trait::async_trait]
impl<T: SyncVault> Vault for T {
    async fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        self.lookup(tenant, integration)
    }
    async fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        self.store(tenant, integration, secret)
    }
    async fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool> {
        self.delete(tenant, integration)
    }
}

#[async_trait::async_trait]
impl<V: Vault + ?Sized> Vault for Arc<V> {
    async fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        (**self).get(tenant, integration).await
    }
    async fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        (**self).put(tenant, integration, secret).await
    }
    async fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool> {
        (**self).remove(tenant, integration).await
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

impl SyncVault for MemoryVault {
    fn lookup(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        let map = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .get(&(tenant, integration.to_owned()))
            .map(|s| SecretString::from(s.expose_secret().to_owned())))
    }

    fn store(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        validate_name("integration", integration)?;
        let mut map = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        map.insert((tenant, integration.to_owned()), secret);
        Ok(())
    }

    fn delete(&self, tenant: TenantId, integration: &str) -> Result<bool> {
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
/// secrets. Keys come from any [`AsyncKeyProvider`] (a KMS included); file
/// I/O runs on tokio's blocking pool.
pub struct FileVault {
    dir: PathBuf,
    keys: Arc<dyn AsyncKeyProvider>,
}

impl fmt::Debug for FileVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileVault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FileVault {
    /// Opens (creating if needed, mode 0700) a vault directory whose
    /// entries are encrypted under `keys`' [`Purpose::Vault`] data keys.
    pub fn open(dir: impl Into<PathBuf>, keys: impl AsyncKeyProvider) -> Result<Self> {
        let dir = dir.into();
        create_private_dir(&dir).map_err(Error::VaultIo)?;
        Ok(Self {
            dir,
            keys: Arc::new(keys),
        })
    }

    fn entry_path(&self, tenant: TenantId, integration: &str) -> PathBuf {
        let digest = Sha256::digest(integration.as_bytes());
        self.dir
            .join(tenant.to_string())
            .join(format!("{}.secret", hex::encode(digest)))
    }

    async fn cipher(&self, tenant: TenantId) -> Result<XChaCha20Poly1305> {
        let key = self.keys.load_data_key(tenant, Purpose::Vault).await?;
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

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[async_trait::async_trait]
impl Vault for FileVault {
    async fn get(&self, tenant: TenantId, integration: &str) -> Result<Option<SecretString>> {
        let path = self.entry_path(tenant, integration);
        let bytes = match blocking(move || fs::read(&path)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::VaultIo(e)),
        };
        let corrupt = || Error::VaultCorrupt {
            integration: integration.to_owned(),
        };
        let (magic, rest) = bytes
            .split_at_checked(FILE_MAGIC.len())
            .ok_or_else(corrupt)?;
        let (nonce_bytes, sealed) = rest.split_at_checked(NONCE_LEN).ok_or_else(corrupt)?;
        if magic != FILE_MAGIC {
            return Err(corrupt());
        }
        let nonce_bytes: [u8; NONCE_LEN] = nonce_bytes.try_into().map_err(|_| corrupt())?;
        let nonce = &XNonce::from(nonce_bytes);
        let aad = Self::aad(tenant, integration);
        let plain = self
            .cipher(tenant)
            .await?
            .decrypt(
                nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| corrupt())?;
        let text = std::str::from_utf8(&plain).map_err(|_| corrupt())?;
        Ok(Some(SecretString::from(text.to_owned())))
    }

    async fn put(&self, tenant: TenantId, integration: &str, secret: SecretString) -> Result<()> {
        validate_name("integration", integration)?;
        let path = self.entry_path(tenant, integration);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = Self::aad(tenant, integration);
        let sealed = self
            .cipher(tenant)
            .await?
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
        blocking(move || write_entry(&path, &nonce, &sealed))
            .await
            .map_err(Error::VaultIo)
    }

    async fn remove(&self, tenant: TenantId, integration: &str) -> Result<bool> {
        let path = self.entry_path(tenant, integration);
        match blocking(move || fs::remove_file(path)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::VaultIo(e)),
        }
    }
}

/// Runs file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Writes an entry to a temporary file and renames it into place, so a
/// reader sees the old or the new entry, never a torn one.
fn write_entry(path: &Path, nonce: &[u8; NONCE_LEN], sealed: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(FILE_MAGIC)?;
        f.write_all(nonce)?;
        f.write_all(sealed)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}
