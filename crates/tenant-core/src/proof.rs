//! Context proofs: HMAC-SHA256 under the context-proof key, which is
//! derived inside this crate and never handed out.
//!
//! The MAC covers a canonical encoding of everything that grants authority:
//! context id, tenant, principal, agent lineage, ancestors, tier, the
//! capability digest, issue and expiry times, and the key id. Changing any
//! of them invalidates the proof.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use secrecy::ExposeSecret;

use crate::keys::{InternalPurpose, KeyId, MasterKey};

type HmacSha256 = Hmac<Sha256>;

/// The proof attached to every context: which key made it, and the tag.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Proof {
    pub(crate) key_id: KeyId,
    pub(crate) tag: [u8; 32],
}

/// A pre-keyed HMAC for one key version (cloning the keyed state saves two
/// SHA-256 compressions per proof).
#[derive(Clone)]
pub(crate) struct ProofKey {
    id: KeyId,
    mac: HmacSha256,
}

impl ProofKey {
    pub(crate) fn from_master(master: &MasterKey) -> Self {
        let key = master.internal_key(InternalPurpose::ContextProof);
        Self {
            id: master.id().clone(),
            // HMAC accepts keys of any length: this cannot fail.
            mac: HmacSha256::new_from_slice(key.expose_secret())
                .expect("HMAC takes any key length"),
        }
    }

    pub(crate) fn id(&self) -> &KeyId {
        &self.id
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Proof {
        let mut mac = self.mac.clone();
        mac.update(msg);
        Proof {
            key_id: self.id.clone(),
            tag: mac.finalize().into_bytes().into(),
        }
    }

    /// Constant-time comparison.
    pub(crate) fn verify(&self, msg: &[u8], tag: &[u8; 32]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(msg);
        mac.verify_slice(tag).is_ok()
    }
}
