//! Writing payloads, and the check every stored point passes before any of
//! it is returned.
//!
//! The check runs in this order: the `tenant_id` field must name this
//! tenant; the point id must be the one derived from this tenant and the
//! stored document id; in a sealed collection the sealed body must open
//! under this tenant's key (associated data: tenant ‖ collection ‖ point
//! id) and every clear metadata field must equal its sealed copy. Any
//! failure refuses the whole response.

use serde_json::{Map, Value};
use tenant_core::TenantId;
use uuid::Uuid;

use crate::collection::CollectionSpec;
use crate::document::{Document, Record};
use crate::error::{LeakReason, Result};
use crate::point::{
    point_id, StoredPoint, DOC_ID_FIELD, META_FIELD, SEALED_FIELD, TENANT_FIELD, TEXT_FIELD,
};
use crate::seal::{SealedBody, Sealer};

/// Builds the stored form of `doc` (already validated).
pub(crate) fn encode(
    tenant: TenantId,
    spec: &CollectionSpec,
    sealer: Option<&Sealer>,
    doc: Document,
) -> Result<StoredPoint> {
    let id = point_id(tenant, &doc.id);
    let mut payload = Map::new();
    payload.insert(TENANT_FIELD.into(), Value::String(tenant.to_string()));
    payload.insert(DOC_ID_FIELD.into(), Value::String(doc.id));
    match sealer {
        None => {
            payload.insert(TEXT_FIELD.into(), Value::String(doc.text));
            payload.insert(META_FIELD.into(), Value::Object(doc.metadata));
        }
        Some(sealer) => {
            let clear: Map<String, Value> = doc
                .metadata
                .iter()
                .filter(|(k, _)| spec.is_clear(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let body = SealedBody {
                text: doc.text,
                meta: doc.metadata,
            };
            payload.insert(META_FIELD.into(), Value::Object(clear));
            payload.insert(SEALED_FIELD.into(), Value::String(sealer.seal(id, &body)?));
        }
    }
    Ok(StoredPoint {
        id,
        vector: doc.vector,
        payload,
    })
}

/// Checks one stored point and returns the caller's view of it.
pub(crate) fn check(
    tenant: TenantId,
    sealer: Option<&Sealer>,
    id: Uuid,
    score: Option<f32>,
    mut payload: Map<String, Value>,
) -> Result<Record, LeakReason> {
    let tenant_ok = matches!(
        payload.get(TENANT_FIELD),
        Some(Value::String(s)) if is_tenant(s, tenant)
    );
    if !tenant_ok {
        return Err(LeakReason::ForeignTenantField);
    }
    let Some(Value::String(doc_id)) = payload.remove(DOC_ID_FIELD) else {
        return Err(LeakReason::MalformedPayload);
    };
    if point_id(tenant, &doc_id) != id {
        return Err(LeakReason::PointIdMismatch);
    }
    let clear_meta = match payload.remove(META_FIELD) {
        Some(Value::Object(m)) => m,
        None => Map::new(),
        Some(_) => return Err(LeakReason::MalformedPayload),
    };
    let (text, metadata) = match sealer {
        None => match payload.remove(TEXT_FIELD) {
            Some(Value::String(text)) => (text, clear_meta),
            _ => return Err(LeakReason::MalformedPayload),
        },
        Some(sealer) => {
            let Some(Value::String(blob)) = payload.get(SEALED_FIELD) else {
                return Err(LeakReason::SealOpenFailed);
            };
            let body = sealer.open(id, blob).ok_or(LeakReason::SealOpenFailed)?;
            if clear_meta.iter().any(|(k, v)| body.meta.get(k) != Some(v)) {
                return Err(LeakReason::ClearFieldTampered);
            }
            (body.text, body.meta)
        }
    };
    Ok(Record {
        id: doc_id,
        score,
        text,
        metadata,
    })
}

/// Whether a stored `tenant_id` field names `tenant`. The SDK writes the
/// canonical (lowercase, hyphenated) form, compared without allocating;
/// any other spelling is parsed.
fn is_tenant(field: &str, tenant: TenantId) -> bool {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    field == tenant.as_uuid().hyphenated().encode_lower(&mut buf)
        || field.parse::<TenantId>().ok() == Some(tenant)
}
