//! How a document is stored: derived point ids and the payload layout.
//!
//! ```text
//! { "tenant_id": "<uuid>",          SDK-owned, keyword index (is_tenant)
//!   "doc_id":    "<caller's id>",
//!   "text":      "...",             absent when the collection is sealed
//!   "meta":      { ... },           all metadata, or only filterable fields when sealed
//!   "sealed":    "<base64 nonce‖ciphertext>",   sealed collections only
//!   "tag":       "<base64url MAC>" }            keyed leak tag, every point
//! ```

use serde_json::{Map, Value};
use tenant_core::TenantId;
use uuid::Uuid;

/// Payload field holding the owning tenant (SDK-owned; callers cannot set it).
pub(crate) const TENANT_FIELD: &str = "tenant_id";
/// Payload field holding the caller's document id.
pub(crate) const DOC_ID_FIELD: &str = "doc_id";
/// Payload field holding the document text (unsealed collections).
pub(crate) const TEXT_FIELD: &str = "text";
/// Payload object holding metadata (all of it, or the filterable part).
pub(crate) const META_FIELD: &str = "meta";
/// Payload field holding the sealed text and metadata.
pub(crate) const SEALED_FIELD: &str = "sealed";
/// Payload field holding the keyed leak tag.
pub(crate) const TAG_FIELD: &str = "tag";

/// Namespace of derived point ids (a fixed, random UUID).
const POINT_NAMESPACE: Uuid = Uuid::from_u128(0x7c2e_51d4_3a9b_4f0e_a6b1_58d2_c0f3_9e17);

/// The point id of `doc_id` for `tenant`: UUIDv5 over the tenant's 16 bytes
/// followed by the document id, so the same document id in two tenants is
/// two points, and no tenant can name another tenant's point.
pub fn point_id(tenant: TenantId, doc_id: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + doc_id.len());
    name.extend_from_slice(tenant.as_bytes());
    name.extend_from_slice(doc_id.as_bytes());
    Uuid::new_v5(&POINT_NAMESPACE, &name)
}

/// A point as the backend stores it. Only this crate makes one (encoded
/// and tagged from a checked document, or copied verbatim by a migration).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPoint {
    /// Point id.
    pub id: Uuid,
    /// Dense vector (empty when not requested).
    pub vector: Vec<f32>,
    /// Payload object.
    pub payload: Map<String, Value>,
}

/// A scored point returned by a backend search.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredHit {
    /// Point id.
    pub id: Uuid,
    /// Similarity score.
    pub score: f32,
    /// Payload object.
    pub payload: Map<String, Value>,
}
