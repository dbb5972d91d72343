//! Per-tenant data keys.
//!
//! Retrieval sealing and the vault encrypt each tenant's data under that
//! tenant's own key, obtained from a [`KeyProvider`]. Two implementations
//! ship here; a KMS or HSM plugs in by implementing the trait.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use secrecy::{ExposeSecret, SecretBox};

use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::keys::{
    hkdf_expand, random_key_bytes, InternalPurpose, KeyBytes, KeyId, MasterKey, Purpose,
};

/// A tenant's data key for one purpose.
pub struct DataKey {
    tenant: TenantId,
    key_id: KeyId,
    secret: KeyBytes,
}

impl DataKey {
    /// The tenant the key belongs to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The id of the key version.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The raw 32 key bytes.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("tenant", &self.tenant)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Source of per-tenant data keys.
pub trait KeyProvider: Send + Sync + 'static {
    /// The data key of `tenant` for `purpose`. Must be stable: the same
    /// inputs always yield the same key (until the tenant's key is
    /// destroyed).
    fn data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey>;
}

impl<T: KeyProvider + ?Sized> KeyProvider for Arc<T> {
    fn data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        (**self).data_key(tenant, purpose)
    }
}

/// Derives every tenant's keys from one master key with HKDF: nothing to
/// store, nothing to lose, but no per-tenant crypto-shredding either.
///
/// ```
/// use tenant_core::{DerivedKeyProvider, KeyId, KeyProvider, MasterKey, Purpose, TenantId};
/// let keys = DerivedKeyProvider::new(MasterKey::generate(KeyId::new("k1")?));
/// let (a, b) = (TenantId::random(), TenantId::random());
/// let ka = keys.data_key(a, Purpose::PayloadSealing)?;
/// assert_eq!(ka.expose_bytes(), keys.data_key(a, Purpose::PayloadSealing)?.expose_bytes());
/// assert_ne!(ka.expose_bytes(), keys.data_key(b, Purpose::PayloadSealing)?.expose_bytes());
/// # Ok::<(), tenant_core::Error>(())
/// ```
pub struct DerivedKeyProvider {
    key_id: KeyId,
    root: KeyBytes,
}

impl DerivedKeyProvider {
    /// Uses a key derived from `master` for this provider alone as the root
    /// (no [`Purpose`], custom or not, derives it).
    pub fn new(master: MasterKey) -> Self {
        Self {
            key_id: master.id().clone(),
            root: master.internal_key(InternalPurpose::TenantDataKeys),
        }
    }
}

impl KeyProvider for DerivedKeyProvider {
    fn data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        Ok(DataKey {
            tenant,
            key_id: self.key_id.clone(),
            secret: hkdf_expand(
                self.root.expose_secret(),
                &[tenant.as_bytes(), &purpose.derivation_info()],
            ),
        })
    }
}

impl fmt::Debug for DerivedKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKeyProvider")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Keeps one random root key per tenant in a directory
/// (`<dir>/<tenant>.key`, mode 0600) and derives purpose keys from it.
///
/// Destroying a tenant's root key ([`FileKeyProvider::destroy`]) makes every
/// piece of data sealed under it unreadable: crypto-shredding for erasure.
pub struct FileKeyProvider {
    dir: PathBuf,
    cache: RwLock<HashMap<TenantId, Arc<KeyBytes>>>,
}

impl FileKeyProvider {
    /// Uses (and creates, mode 0700) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| Error::KeyStoreIo {
            path: dir.clone(),
            source,
        })?;
        set_mode(&dir, 0o700)?;
        Ok(Self {
            dir,
            cache: RwLock::default(),
        })
    }

    fn path_of(&self, tenant: TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.key"))
    }

    fn root_key(&self, tenant: TenantId) -> Result<Arc<KeyBytes>> {
        if let Some(k) = read_lock(&self.cache).get(&tenant) {
            return Ok(k.clone());
        }
        let path = self.path_of(tenant);
        let key = match read_key_file(&path)? {
            Some(k) => k,
            None => create_key_file(&self.dir, &path)?,
        };
        let key = Arc::new(key);
        write_lock(&self.cache).insert(tenant, key.clone());
        Ok(key)
    }

    /// Deletes the tenant's root key. Data sealed under it can no longer be
    /// opened; a later [`KeyProvider::data_key`] creates a new, unrelated key.
    pub fn destroy(&self, tenant: TenantId) -> Result<()> {
        write_lock(&self.cache).remove(&tenant);
        let path = self.path_of(tenant);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::KeyStoreIo { path, source }),
        }
    }
}

impl KeyProvider for FileKeyProvider {
    fn data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        let root = self.root_key(tenant)?;
        Ok(DataKey {
            tenant,
            key_id: KeyId::new("file-v1")?,
            secret: hkdf_expand(
                root.expose_secret(),
                &[tenant.as_bytes(), &purpose.derivation_info()],
            ),
        })
    }
}

impl fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned cache only means another thread panicked mid-insert of a
    // complete value; the map itself is still consistent.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::KeyStoreIo {
        path: path.to_path_buf(),
        source,
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn read_key_file(path: &Path) -> Result<Option<KeyBytes>> {
    match fs::read(path) {
        Ok(bytes) => {
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Key(format!("key file {} is not 32 bytes", path.display())))?;
            Ok(Some(SecretBox::new(Box::new(arr))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes a fresh key to a temp file and hard-links it into place, so a
/// concurrent creator (another process) either wins or reads the winner's
/// complete key; never a torn or second key.
fn create_key_file(dir: &Path, path: &Path) -> Result<KeyBytes> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = random_key_bytes();
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(key.expose_secret())
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path)?
            .ok_or_else(|| Error::Key(format!("key file {} vanished", path.display()))),
        Err(e) => Err(io_err(path)(e)),
    }
}
