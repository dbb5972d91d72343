//! Keyed leak tags.
//!
//! Every stored point carries `tag` = HMAC-SHA256 (truncated to 128 bits)
//! under the tenant's tag key over
//!
//! ```text
//! "tenant-retrieval/leak-tag/v1" ‖ tenant (16 bytes) ‖ len(collection) ‖ collection
//!   ‖ point id (16 bytes) ‖ SHA-256(canonical payload without `tag`)
//! ```
//!
//! so a point written without the tenant's key — planted with the right
//! tenant field and a derived id, copied from another tenant, moved to
//! another id or collection, or edited in place — does not verify. The
//! collection is the logical one, so Pool ↔ Silo migrations keep tags.
//!
//! The canonical payload encoding sorts object keys and encodes numbers
//! as the store returns them (integers as `i64`, everything else as `f64`),
//! so a payload reads back to the same digest from qdrant-edge and from a
//! Qdrant server. Payloads nested deeper than [`MAX_PAYLOAD_DEPTH`] never
//! verify (the SDK does not write them).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tenant_core::TenantId;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::point::{DOC_ID_FIELD, META_FIELD, SEALED_FIELD, TAG_FIELD, TENANT_FIELD, TEXT_FIELD};

/// Bytes of a tag.
pub(crate) const TAG_LEN: usize = 16;
/// Deepest payload nesting the digest follows (metadata is limited below
/// this when written).
pub(crate) const MAX_PAYLOAD_DEPTH: usize = 48;

const TAG_DOMAIN: &[u8] = b"tenant-retrieval/leak-tag/v1";

/// Computes and checks one tenant's tags in one logical collection. The
/// MAC state already holds the key and the constant prefix, so a tag costs
/// one payload digest and two SHA-256 blocks, and never awaits anything.
#[derive(Clone)]
pub(crate) struct Tagger {
    prefixed: Hmac<Sha256>,
}

impl Tagger {
    pub(crate) fn new(key: &[u8; 32], tenant: TenantId, collection: &str) -> Result<Self> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|_| Error::Sealing("bad tag key length".into()))?;
        mac.update(TAG_DOMAIN);
        mac.update(tenant.as_bytes());
        mac.update(&(collection.len() as u64).to_be_bytes());
        mac.update(collection.as_bytes());
        Ok(Self { prefixed: mac })
    }

    fn mac(&self, id: Uuid, payload: &Map<String, Value>) -> Option<Hmac<Sha256>> {
        let digest = payload_digest(payload)?;
        let mut mac = self.prefixed.clone();
        mac.update(id.as_bytes());
        mac.update(&digest);
        Some(mac)
    }

    /// The tag of a payload about to be stored (without a `tag` field).
    pub(crate) fn tag(&self, id: Uuid, payload: &Map<String, Value>) -> Result<String> {
        let mac = self
            .mac(id, payload)
            .ok_or_else(|| Error::invalid("metadata", "nested too deeply"))?;
        let full = mac.finalize().into_bytes();
        Ok(B64URL.encode(&full[..TAG_LEN]))
    }

    /// Whether `payload` carries a valid tag for point `id` (constant-time
    /// comparison).
    pub(crate) fn verify(&self, id: Uuid, payload: &Map<String, Value>) -> bool {
        let Some(Value::String(stored)) = payload.get(TAG_FIELD) else {
            return false;
        };
        let mut tag = [0u8; TAG_LEN];
        match B64URL.decode_slice(stored.as_bytes(), &mut tag) {
            Ok(TAG_LEN) => {}
            _ => return false,
        }
        match self.mac(id, payload) {
            Some(mac) => mac.verify_truncated_left(&tag).is_ok(),
            None => false,
        }
    }
}

/// The fields the SDK writes, in sorted order: payloads holding only these
/// (all of them, in practice) are digested without sorting.
const SDK_FIELDS: [&str; 5] = [
    DOC_ID_FIELD,
    META_FIELD,
    SEALED_FIELD,
    TENANT_FIELD,
    TEXT_FIELD,
];

/// SHA-256 of the canonical encoding of `payload` without its `tag` field;
/// `None` if it nests deeper than [`MAX_PAYLOAD_DEPTH`].
fn payload_digest(payload: &Map<String, Value>) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"tenant-retrieval/payload/v1");
    let present = SDK_FIELDS
        .iter()
        .filter(|k| payload.contains_key(**k))
        .count();
    let untagged = payload.len() - usize::from(payload.contains_key(TAG_FIELD));
    if present == untagged {
        h.update(b"o");
        h.update((present as u64).to_be_bytes());
        for k in SDK_FIELDS {
            if let Some(v) = payload.get(k) {
                string(&mut h, k);
                value(&mut h, v, 1)?;
            }
        }
    } else {
        object(&mut h, payload.iter().filter(|(k, _)| *k != TAG_FIELD), 0)?;
    }
    Some(h.finalize().into())
}

/// An object with its keys in sorted order (on the stack for small ones).
fn object<'a>(
    h: &mut Sha256,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    depth: usize,
) -> Option<()> {
    const INLINE: usize = 16;
    let mut inline: [(&str, &Value); INLINE] = [("", &Value::Null); INLINE];
    let mut spilled: Vec<(&str, &Value)> = Vec::new();
    let mut n = 0;
    for (k, v) in entries {
        if n < INLINE {
            inline[n] = (k.as_str(), v);
        } else {
            if n == INLINE {
                spilled.extend_from_slice(&inline);
            }
            spilled.push((k.as_str(), v));
        }
        n += 1;
    }
    let sorted: &mut [(&str, &Value)] = if n <= INLINE {
        &mut inline[..n]
    } else {
        &mut spilled
    };
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    h.update(b"o");
    h.update((n as u64).to_be_bytes());
    for (k, v) in sorted.iter() {
        string(h, k);
        value(h, v, depth + 1)?;
    }
    Some(())
}

fn string(h: &mut Sha256, s: &str) {
    h.update(b"s");
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn value(h: &mut Sha256, v: &Value, depth: usize) -> Option<()> {
    if depth > MAX_PAYLOAD_DEPTH {
        return None;
    }
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(true) => h.update(b"t"),
        Value::Bool(false) => h.update(b"f"),
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                h.update(b"i");
                h.update(i.to_be_bytes());
            }
            None => {
                h.update(b"d");
                h.update(n.as_f64().unwrap_or(f64::NAN).to_bits().to_be_bytes());
            }
        },
        Value::String(s) => string(h, s),
        Value::Array(items) => {
            h.update(b"a");
            h.update((items.len() as u64).to_be_bytes());
            for item in items {
                value(h, item, depth + 1)?;
            }
        }
        Value::Object(map) => object(h, map.iter(), depth)?,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn tagged(t: &Tagger, id: Uuid, v: Value) -> Map<String, Value> {
        let mut p = obj(v);
        let tag = t.tag(id, &p).unwrap();
        p.insert(TAG_FIELD.into(), Value::String(tag));
        p
    }

    #[test]
    fn a_tag_binds_key_tenant_collection_id_and_every_payload_byte() {
        let (a, b) = (TenantId::random(), TenantId::random());
        let key = [9u8; 32];
        let t = Tagger::new(&key, a, "docs").unwrap();
        let id = Uuid::new_v4();
        let p = tagged(
            &t,
            id,
            json!({"tenant_id": a.to_string(), "text": "x", "meta": {"n": 1}}),
        );
        assert!(t.verify(id, &p));

        assert!(!t.verify(Uuid::new_v4(), &p), "moved to another id");
        assert!(
            !Tagger::new(&key, b, "docs").unwrap().verify(id, &p),
            "other tenant"
        );
        assert!(
            !Tagger::new(&key, a, "notes").unwrap().verify(id, &p),
            "other collection"
        );
        assert!(
            !Tagger::new(&[8u8; 32], a, "docs").unwrap().verify(id, &p),
            "other key"
        );
        for edit in [
            json!({"text": "y"}),
            json!({"meta": {"n": 2}}),
            json!({"meta": {"n": 1, "x": null}}),
            json!({"extra": true}),
        ] {
            let mut q = p.clone();
            for (k, v) in obj(edit) {
                q.insert(k, v);
            }
            assert!(!t.verify(id, &q), "edited payload verified");
        }
        let mut untagged = p.clone();
        untagged.remove(TAG_FIELD);
        assert!(!t.verify(id, &untagged));
        let mut garbage = p.clone();
        garbage.insert(TAG_FIELD.into(), json!("not base64 at all!"));
        assert!(!t.verify(id, &garbage));
    }

    #[test]
    fn key_order_and_float_spelling_do_not_change_the_digest() {
        let a = obj(json!({"x": 1, "y": {"b": 2.5, "a": [1, "s"]}, "big": u64::MAX}));
        // Same values inserted in another order; a big integer read back
        // as a float, as a Qdrant server returns it.
        let b = obj(json!({"y": {"a": [1, "s"], "b": 2.5}, "big": u64::MAX as f64, "x": 1}));
        assert_eq!(payload_digest(&a), payload_digest(&b));
        let c = obj(json!({"x": 1.0, "y": {"b": 2.5, "a": [1, "s"]}, "big": u64::MAX}));
        assert_ne!(payload_digest(&a), payload_digest(&c), "1 and 1.0 differ");
    }

    #[test]
    fn extra_fields_and_large_objects_are_digested_in_key_order() {
        let many: Map<String, Value> = (0..40).map(|i| (format!("k{i}"), json!(i))).collect();
        let mut reversed = Map::new();
        for (k, v) in many.iter().rev() {
            reversed.insert(k.clone(), v.clone());
        }
        let a = obj(json!({"tenant_id": "t", "zzz": 1, "meta": many}));
        let b = obj(json!({"meta": reversed, "zzz": 1, "tenant_id": "t"}));
        assert_eq!(payload_digest(&a), payload_digest(&b));
        let c = obj(json!({"tenant_id": "t", "meta": {}}));
        assert_ne!(payload_digest(&a), payload_digest(&c));
    }

    #[test]
    fn a_payload_nested_too_deeply_never_verifies() {
        let mut deep = json!(1);
        for _ in 0..MAX_PAYLOAD_DEPTH + 2 {
            deep = json!([deep]);
        }
        let t = Tagger::new(&[1; 32], TenantId::random(), "docs").unwrap();
        let p = obj(json!({ "meta": deep, "tag": "AAAAAAAAAAAAAAAAAAAAAA" }));
        assert!(!t.verify(Uuid::new_v4(), &p));
        assert!(t.tag(Uuid::new_v4(), &p).is_err());
    }
}
