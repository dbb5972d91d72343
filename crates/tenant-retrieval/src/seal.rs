//! Payload sealing: XChaCha20-Poly1305 under a per-tenant key.
//!
//! Associated data binds a sealed payload to its tenant, logical collection
//! and point id, so a payload copied to another tenant, collection or point
//! does not open. The logical (not physical) collection name is bound, so a
//! Pool ↔ Silo migration moves sealed payloads unchanged. The cipher key is
//! derived from the tenant's retrieval key ([`crate::keys`]).

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::{Map, Value};
use tenant_core::TenantId;
use uuid::Uuid;

use crate::error::{Error, Result};

const AAD_MAGIC: &[u8] = b"tenant-retrieval/seal/v2";
const NONCE_LEN: usize = 24;

/// What is sealed: the text and the full metadata.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SealedBody {
    pub(crate) text: String,
    pub(crate) meta: Map<String, Value>,
}

/// Seals and opens one tenant's payloads in one logical collection.
pub(crate) struct Sealer {
    tenant: TenantId,
    collection: String,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("tenant", &self.tenant)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32], tenant: TenantId, collection: &str) -> Result<Self> {
        let cipher = XChaCha20Poly1305::new_from_slice(key)
            .map_err(|_| Error::Sealing("bad key length".into()))?;
        Ok(Self {
            tenant,
            collection: collection.to_owned(),
            cipher,
        })
    }

    fn aad(&self, point: Uuid) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_MAGIC.len() + 16 + 4 + self.collection.len() + 16);
        aad.extend_from_slice(AAD_MAGIC);
        aad.extend_from_slice(self.tenant.as_bytes());
        // Length-prefixed so tenant ‖ collection ‖ id is unambiguous.
        aad.extend_from_slice(&(self.collection.len() as u32).to_be_bytes());
        aad.extend_from_slice(self.collection.as_bytes());
        aad.extend_from_slice(point.as_bytes());
        aad
    }

    /// `base64(nonce ‖ ciphertext)`.
    pub(crate) fn seal(&self, point: Uuid, body: &SealedBody) -> Result<String> {
        let msg = serde_json::to_vec(body).map_err(|e| Error::Sealing(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(point);
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &msg,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Sealing("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    /// `None` when the blob is malformed or does not authenticate.
    pub(crate) fn open(&self, point: Uuid, sealed: &str) -> Option<SealedBody> {
        let raw = B64.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let aad = self.aad(point);
        let msg = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
            .ok()?;
        serde_json::from_slice(&msg).ok()
    }
}
