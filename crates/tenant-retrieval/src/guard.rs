//! Writing payloads, and the check every stored point passes before any of
//! it is returned.
//!
//! The check runs in this order: the `tenant_id` field must name this
//! tenant; the keyed leak tag must verify under this tenant's key
//! ([`crate::tag`]); the point id must be the one derived from this tenant
//! and the stored document id; in a sealed collection the sealed body must
//! open under this tenant's key (associated data: tenant ‖ collection ‖
//! point id) and every clear metadata field must equal its sealed copy.
//! The check is synchronous: keys are cached in the client.

use serde_json::{Map, Value};
use tenant_core::TenantId;
use uuid::Uuid;

use crate::collection::CollectionSpec;
use crate::document::{Document, Record};
use crate::error::{LeakReason, Result};
use crate::keys::TenantKeys;
use crate::point::{
    point_id, StoredPoint, DOC_ID_FIELD, META_FIELD, SEALED_FIELD, TAG_FIELD, TENANT_FIELD,
    TEXT_FIELD,
};
use crate::seal::SealedBody;

/// Builds the stored, tagged form of `doc` (already validated).
pub(crate) fn encode(
    tenant: TenantId,
    spec: &CollectionSpec,
    keys: &TenantKeys,
    doc: Document,
) -> Result<StoredPoint> {
    let id = point_id(tenant, &doc.id);
    let mut payload = Map::new();
    payload.insert(TENANT_FIELD.into(), Value::String(tenant.to_string()));
    payload.insert(DOC_ID_FIELD.into(), Value::String(doc.id));
    match &keys.sealer {
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
    let tag = keys.tagger.tag(id, &payload)?;
    payload.insert(TAG_FIELD.into(), Value::String(tag));
    Ok(StoredPoint {
        id,
        vector: doc.vector,
        payload,
    })
}

/// Checks one stored point and returns the caller's view of it.
pub(crate) fn check(
    tenant: TenantId,
    keys: &TenantKeys,
    id: Uuid,
    score: Option<f32>,
    mut payload: Map<String, Value>,
) -> Result<Record, LeakReason> {
    let opened = verify(tenant, keys, id, &payload)?;
    let Some(Value::String(doc_id)) = payload.remove(DOC_ID_FIELD) else {
        return Err(LeakReason::MalformedPayload);
    };
    let (text, metadata) = match opened {
        Some(body) => (body.text, body.meta),
        None => {
            let Some(Value::String(text)) = payload.remove(TEXT_FIELD) else {
                return Err(LeakReason::MalformedPayload);
            };
            match payload.remove(META_FIELD) {
                Some(Value::Object(m)) => (text, m),
                None => (text, Map::new()),
                Some(_) => return Err(LeakReason::MalformedPayload),
            }
        }
    };
    Ok(Record {
        id: doc_id,
        score,
        text,
        metadata,
    })
}

/// Checks one stored point without taking it apart (what a migration does
/// before copying it).
pub(crate) fn verify_point(
    tenant: TenantId,
    keys: &TenantKeys,
    point: &StoredPoint,
) -> Result<(), LeakReason> {
    verify(tenant, keys, point.id, &point.payload).map(|_| ())
}

/// Every check; returns the opened sealed body in sealed collections.
fn verify(
    tenant: TenantId,
    keys: &TenantKeys,
    id: Uuid,
    payload: &Map<String, Value>,
) -> Result<Option<SealedBody>, LeakReason> {
    let tenant_ok = matches!(
        payload.get(TENANT_FIELD),
        Some(Value::String(s)) if is_tenant(s, tenant)
    );
    if !tenant_ok {
        return Err(LeakReason::ForeignTenantField);
    }
    if !keys.tagger.verify(id, payload) {
        return Err(LeakReason::TagMismatch);
    }
    let Some(Value::String(doc_id)) = payload.get(DOC_ID_FIELD) else {
        return Err(LeakReason::MalformedPayload);
    };
    if point_id(tenant, doc_id) != id {
        return Err(LeakReason::PointIdMismatch);
    }
    let empty = Map::new();
    let clear_meta = match payload.get(META_FIELD) {
        Some(Value::Object(m)) => m,
        None => &empty,
        Some(_) => return Err(LeakReason::MalformedPayload),
    };
    let Some(sealer) = &keys.sealer else {
        return match payload.get(TEXT_FIELD) {
            Some(Value::String(_)) => Ok(None),
            _ => Err(LeakReason::MalformedPayload),
        };
    };
    let Some(Value::String(blob)) = payload.get(SEALED_FIELD) else {
        return Err(LeakReason::SealOpenFailed);
    };
    let body = sealer.open(id, blob).ok_or(LeakReason::SealOpenFailed)?;
    if clear_meta.iter().any(|(k, v)| body.meta.get(k) != Some(v)) {
        return Err(LeakReason::ClearFieldTampered);
    }
    Ok(Some(body))
}

/// Whether a stored `tenant_id` field names `tenant`. The SDK writes the
/// canonical (lowercase, hyphenated) form, compared without allocating;
/// any other spelling is parsed.
fn is_tenant(field: &str, tenant: TenantId) -> bool {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    field == tenant.as_uuid().hyphenated().encode_lower(&mut buf)
        || field.parse::<TenantId>().ok() == Some(tenant)
}

#[cfg(test)]
mod tests {
    //! The checks behind the tag: reachable only if a point carries a
    //! valid tag, i.e. was written with the tenant's key, so they are
    //! exercised here with points re-tagged under the right key.
    use super::*;
    use crate::tag::Tagger;
    use serde_json::json;
    use tenant_core::{DerivedKeyProvider, KeyId, MasterKey};

    fn setup(sealed: bool) -> (TenantId, CollectionSpec, TenantKeys) {
        let tenant = TenantId::random();
        let mut spec = CollectionSpec::new("vault", 4).unwrap();
        if sealed {
            spec = spec.sealed(["lang"]).unwrap();
        }
        let provider =
            DerivedKeyProvider::new(MasterKey::from_bytes(KeyId::new("d").unwrap(), [3; 32]));
        let keys = TenantKeys::new(&provider, tenant, &spec).unwrap();
        (tenant, spec, keys)
    }

    fn retag(tagger: &Tagger, p: &mut StoredPoint) {
        p.payload.remove(TAG_FIELD);
        let tag = tagger.tag(p.id, &p.payload).unwrap();
        p.payload.insert(TAG_FIELD.into(), Value::String(tag));
    }

    fn doc() -> Document {
        Document::new("d1", vec![0.5; 4], "secret text").with_metadata("lang", "en")
    }

    #[test]
    fn an_encoded_point_round_trips_sealed_and_clear() {
        for sealed in [false, true] {
            let (t, spec, keys) = setup(sealed);
            let p = encode(t, &spec, &keys, doc()).unwrap();
            assert_eq!(p.payload.contains_key(TEXT_FIELD), !sealed);
            let r = check(t, &keys, p.id, None, p.payload).unwrap();
            assert_eq!((r.id.as_str(), r.text.as_str()), ("d1", "secret text"));
            assert_eq!(r.metadata["lang"], json!("en"));
        }
    }

    #[test]
    fn with_a_valid_tag_the_seal_clear_field_and_id_checks_still_hold() {
        let (t, spec, keys) = setup(true);
        let good = encode(t, &spec, &keys, doc()).unwrap();

        let mut clear_edit = good.clone();
        clear_edit
            .payload
            .insert(META_FIELD.into(), json!({"lang": "fr"}));
        retag(&keys.tagger, &mut clear_edit);
        assert_eq!(
            verify_point(t, &keys, &clear_edit),
            Err(LeakReason::ClearFieldTampered)
        );

        let mut bad_seal = good.clone();
        bad_seal.payload.insert(SEALED_FIELD.into(), json!("AAAA"));
        retag(&keys.tagger, &mut bad_seal);
        assert_eq!(
            verify_point(t, &keys, &bad_seal),
            Err(LeakReason::SealOpenFailed)
        );

        let mut moved = good.clone();
        moved.id = Uuid::new_v4();
        retag(&keys.tagger, &mut moved);
        assert_eq!(
            verify_point(t, &keys, &moved),
            Err(LeakReason::PointIdMismatch)
        );

        let mut no_doc = good;
        no_doc.payload.remove(DOC_ID_FIELD);
        retag(&keys.tagger, &mut no_doc);
        assert_eq!(
            verify_point(t, &keys, &no_doc),
            Err(LeakReason::MalformedPayload)
        );
    }
}
