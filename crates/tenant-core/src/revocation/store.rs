//! [`RevocationStore`]: where revocations are recorded so that every
//! process of the platform learns them.

use std::future::Future;

use crate::error::Result;
use crate::revocation::{Revocation, Revocations};

/// A place revocations are recorded and read back from.
///
/// Recording may talk to a network, so it is async; checking a context
/// never does: each process checks its local [`Revocations`] registry,
/// which a follower keeps in step with the store (see
/// [`Revocations::replica`]).
///
/// Implementations: [`Revocations`] itself (one process, authoritative),
/// and `RedisRevocationStore` (feature `redis`), shared across replicas and
/// pruned by expiry.
pub trait RevocationStore: Send + Sync {
    /// Records `revocation` durably. When this returns `Ok`, every replica
    /// following the store refuses what it covers within its staleness
    /// bound.
    fn revoke(&self, revocation: &Revocation) -> impl Future<Output = Result<()>> + Send;

    /// Every revocation still in force (entries whose coverage has expired
    /// may be left out).
    fn load_all(&self) -> impl Future<Output = Result<Vec<Revocation>>> + Send;
}

/// The in-memory registry as a store: recording applies at once.
impl RevocationStore for Revocations {
    async fn revoke(&self, revocation: &Revocation) -> Result<()> {
        self.apply(revocation);
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<Revocation>> {
        Ok(self
            .entries()
            .into_iter()
            .filter(|r| !r.is_expired())
            .collect())
    }
}
