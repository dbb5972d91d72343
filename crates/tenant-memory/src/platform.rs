//! [`MemoryPlatform`]: the platform-wide half of a memory handle.

use std::fmt;

use sqlx::PgPool;
use tenant_core::Subkey;

use crate::binding::PostgresKey;
use crate::error::Result;

/// What every [`MemoryStore`](crate::MemoryStore) of a platform shares: the
/// application-role pool and the PostgreSQL subkey that signs the context
/// bound to each transaction. Configure it once; make a store per request
/// with [`MemoryStore::builder`](crate::MemoryStore::builder).
///
/// The pool must connect as the application role (not the owner, not a
/// superuser, no `BYPASSRLS`); [`doctor`](crate::doctor) checks that.
#[derive(Clone)]
pub struct MemoryPlatform {
    pub(crate) pool: PgPool,
    pub(crate) key: PostgresKey,
}

impl MemoryPlatform {
    /// The pool and `issuer.subkey(Purpose::Postgres)`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKeyPurpose`](crate::Error::WrongKeyPurpose) for a
    /// subkey of another purpose.
    pub fn new(pool: &PgPool, key: &Subkey) -> Result<Self> {
        Ok(Self {
            pool: pool.clone(),
            key: PostgresKey::from_subkey(key)?,
        })
    }

    /// The application-role pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl fmt::Debug for MemoryPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPlatform")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
