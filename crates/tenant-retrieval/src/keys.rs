//! A tenant's retrieval keys for one logical collection, derived once when
//! a client is opened and cached in it, so checking a hit never waits for a
//! key provider.
//!
//! The tenant's data key for [`Purpose::PayloadSealing`] (from the
//! platform's [`KeyProvider`]) is never used directly: the tag key and the
//! seal key are derived from it with HMAC-SHA256 under distinct labels.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenant_core::{KeyProvider, Purpose, TenantId};
use zeroize::Zeroizing;

use crate::collection::CollectionSpec;
use crate::error::{Error, Result};
use crate::seal::Sealer;
use crate::tag::Tagger;

const TAG_KEY_LABEL: &[u8] = b"tenant-retrieval/leak-tag-key/v1";
const SEAL_KEY_LABEL: &[u8] = b"tenant-retrieval/seal-key/v1";

/// The tagger of every collection and, in sealed collections, the sealer.
pub(crate) struct TenantKeys {
    pub(crate) tagger: Tagger,
    pub(crate) sealer: Option<Sealer>,
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKeys")
            .field("sealed", &self.sealer.is_some())
            .finish_non_exhaustive()
    }
}

impl TenantKeys {
    pub(crate) fn new(
        provider: &dyn KeyProvider,
        tenant: TenantId,
        spec: &CollectionSpec,
    ) -> Result<Self> {
        let data = provider.data_key(tenant, Purpose::PayloadSealing)?;
        let tag_key = derive(data.expose_bytes(), TAG_KEY_LABEL)?;
        let tagger = Tagger::new(&tag_key, tenant, spec.name())?;
        let sealer = if spec.is_sealed() {
            let seal_key = derive(data.expose_bytes(), SEAL_KEY_LABEL)?;
            Some(Sealer::new(&seal_key, tenant, spec.name())?)
        } else {
            None
        };
        Ok(Self { tagger, sealer })
    }
}

fn derive(root: &[u8; 32], label: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(root)
        .map_err(|_| Error::Sealing("bad data key length".into()))?;
    mac.update(label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}
