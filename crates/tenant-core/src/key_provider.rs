//! Per-tenant data keys.
//!
//! Retrieval sealing and the vault encrypt each tenant's data under that
//! tenant's own key, obtained from a [`KeyProvider`] (synchronous: the key
//! is derived or read locally) or an [`AsyncKeyProvider`] (a KMS, an HSM or
//! a secrets manager behind the network). Every `KeyProvider` is also an
//! `AsyncKeyProvider`. A [`KeyCache`] in front of an async provider serves
//! hot paths without awaiting the key service: it answers the synchronous
//! `KeyProvider` from what it has loaded.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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

/// Source of per-tenant data keys behind an asynchronous service (a KMS
/// that unwraps per-tenant keys, an HSM, a secrets manager).
///
/// Every [`KeyProvider`] is one (its synchronous answer, at once). A key
/// service is slow and can fail: put a [`KeyCache`] in front of it, load a
/// tenant's keys when a request for the tenant starts, and hand the cache
/// to layers that need keys on a hot path.
///
/// ```
/// use tenant_core::*;
/// struct Kms; // a remote key service
/// #[async_trait::async_trait]
/// impl AsyncKeyProvider for Kms {
///     async fn load_data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
///         // ... unwrap the tenant's key with the KMS ...
///         # DerivedKeyProvider::new(MasterKey::from_bytes(KeyId::new("kms")?, [7; 32]))
///         #     .data_key(tenant, purpose)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let keys = KeyCache::new(Kms);
/// let tenant = TenantId::random();
/// assert!(keys.data_key(tenant, Purpose::Vault).is_err()); // not loaded: never awaits
/// keys.load(tenant, &[Purpose::Vault]).await?;              // once per request start
/// let key = keys.data_key(tenant, Purpose::Vault)?;         // hot path: from memory
/// # let _ = key; Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait AsyncKeyProvider: Send + Sync + 'static {
    /// The data key of `tenant` for `purpose`. Must be stable, as
    /// [`KeyProvider::data_key`].
    ///
    /// # Errors
    ///
    /// [`Error::KeyUnavailable`] (with the service's error as its source)
    /// when the service fails.
    async fn load_data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey>;
}

#[async_trait::async_trait]
impl<T: KeyProvider + ?Sized> AsyncKeyProvider for T {
    async fn load_data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        self.data_key(tenant, purpose)
    }
}

/// How long a [`KeyCache`] keeps a key by default.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// How many (tenant, purpose) keys a [`KeyCache`] holds by default.
pub const DEFAULT_KEY_CACHE_CAPACITY: usize = 10_000;

struct CachedKey {
    key_id: KeyId,
    secret: Arc<KeyBytes>,
    loaded: Instant,
}

/// An [`AsyncKeyProvider`] with its recently loaded keys in memory.
///
/// [`load`](Self::load) fetches what is missing or older than the
/// time-to-live (one request to the service per key, concurrent loads of
/// the same key coalesced by the service's own caching, not here);
/// [`data_key`](KeyProvider::data_key) (the synchronous [`KeyProvider`])
/// answers from memory only and returns [`Error::KeyUnavailable`] for a key
/// not loaded yet, so a hot path never awaits the service. An expired key
/// is still served synchronously until the next `load` replaces it: the
/// time-to-live bounds how long a destroyed or rotated key can be used
/// after the next load, not in between. Bounded: at capacity, the oldest
/// keys are dropped. [`forget`](Self::forget) drops a tenant's keys at once
/// (erasure, crypto-shredding).
pub struct KeyCache<P> {
    provider: P,
    ttl: Duration,
    capacity: usize,
    keys: RwLock<HashMap<(TenantId, Purpose), CachedKey>>,
    /// Serialises insertions that evict, so capacity holds under load.
    evicting: Mutex<()>,
}

impl<P: AsyncKeyProvider> KeyCache<P> {
    /// A cache in front of `provider` with the default time-to-live and
    /// capacity.
    pub fn new(provider: P) -> Self {
        Self {
            provider,
            ttl: DEFAULT_KEY_CACHE_TTL,
            capacity: DEFAULT_KEY_CACHE_CAPACITY,
            keys: RwLock::default(),
            evicting: Mutex::new(()),
        }
    }

    /// How long a loaded key counts as fresh for [`load`](Self::load).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many (tenant, purpose) keys are kept at most (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The provider behind the cache.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// Loads `tenant`'s keys for `purposes` that are missing or stale.
    ///
    /// # Errors
    ///
    /// The provider's error for the first key that fails to load; keys
    /// loaded before it stay cached.
    pub async fn load(&self, tenant: TenantId, purposes: &[Purpose]) -> Result<()> {
        for &purpose in purposes {
            let fresh = read_lock(&self.keys)
                .get(&(tenant, purpose))
                .is_some_and(|k| k.loaded.elapsed() < self.ttl);
            if !fresh {
                let key = self.provider.load_data_key(tenant, purpose).await?;
                self.insert(tenant, purpose, key);
            }
        }
        Ok(())
    }

    /// The key, loaded through the provider when missing or stale.
    ///
    /// # Errors
    ///
    /// The provider's error.
    pub async fn get(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        self.load(tenant, std::slice::from_ref(&purpose)).await?;
        self.data_key(tenant, purpose)
    }

    /// Drops every cached key of `tenant`.
    pub fn forget(&self, tenant: TenantId) {
        write_lock(&self.keys).retain(|(t, _), _| *t != tenant);
    }

    fn insert(&self, tenant: TenantId, purpose: Purpose, key: DataKey) {
        let _guard = self.evicting.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = write_lock(&self.keys);
        if keys.len() >= self.capacity && !keys.contains_key(&(tenant, purpose)) {
            let excess = keys.len() + 1 - self.capacity;
            let mut by_age: Vec<_> = keys.iter().map(|(k, v)| (v.loaded, *k)).collect();
            by_age.sort_by_key(|(loaded, _)| *loaded);
            for (_, k) in by_age.into_iter().take(excess) {
                keys.remove(&k);
            }
        }
        keys.insert(
            (tenant, purpose),
            CachedKey {
                key_id: key.key_id,
                secret: Arc::new(key.secret),
                loaded: Instant::now(),
            },
        );
    }
}

impl<P: AsyncKeyProvider> KeyProvider for KeyCache<P> {
    /// The cached key, never awaiting the provider.
    ///
    /// # Errors
    ///
    /// [`Error::KeyUnavailable`] when the key was not [`load`](Self::load)ed.
    fn data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        let keys = read_lock(&self.keys);
        match keys.get(&(tenant, purpose)) {
            Some(k) => Ok(DataKey {
                tenant,
                key_id: k.key_id.clone(),
                secret: SecretBox::new(Box::new(*k.secret.expose_secret())),
            }),
            None => Err(Error::KeyUnavailable {
                tenant,
                reason: "the key is not loaded in the cache (call KeyCache::load first)".into(),
                source: None,
            }),
        }
    }
}

impl<P> fmt::Debug for KeyCache<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("cached", &read_lock(&self.keys).len())
            .finish_non_exhaustive()
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
