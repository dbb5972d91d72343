//! What callers store and get back.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::point::TENANT_FIELD;

/// Longest accepted document id, in bytes.
pub const MAX_DOC_ID_LEN: usize = 256;
/// Longest accepted metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Deepest accepted nesting of metadata values (arrays and objects).
pub const MAX_METADATA_DEPTH: usize = 32;

/// A document to upsert: the caller's id, its vector, text and metadata.
///
/// Metadata keys are plain names (`[A-Za-z0-9_-]`, no dots); `tenant_id` is
/// reserved for the SDK and rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The caller's document id (unique within the tenant and collection).
    pub id: String,
    /// The embedding.
    pub vector: Vec<f32>,
    /// The text.
    pub text: String,
    /// Metadata (a JSON object).
    pub metadata: Map<String, Value>,
}

impl Document {
    /// A document with no metadata.
    pub fn new(id: impl Into<String>, vector: Vec<f32>, text: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            vector,
            text: text.into(),
            metadata: Map::new(),
        }
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub(crate) fn validate(&self, dims: usize, collection: &str) -> Result<()> {
        validate_doc_id(&self.id)?;
        validate_vector(&self.vector, dims, collection, "vector")?;
        for (key, value) in &self.metadata {
            validate_metadata_key(key)?;
            if nesting(value, 1) > MAX_METADATA_DEPTH {
                return Err(Error::invalid(
                    "metadata",
                    format!("`{key}` nests deeper than {MAX_METADATA_DEPTH} levels"),
                ));
            }
        }
        Ok(())
    }
}

/// A stored document returned by `get`, `scroll` or `search`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The caller's document id.
    pub id: String,
    /// Similarity score (searches only; `None` for get and scroll).
    pub score: Option<f32>,
    /// The text.
    pub text: String,
    /// The metadata.
    pub metadata: Map<String, Value>,
}

/// A vector must have the collection's dimensions and only finite values.
pub(crate) fn validate_vector(
    vector: &[f32],
    dims: usize,
    collection: &str,
    what: &'static str,
) -> Result<()> {
    if vector.len() != dims {
        return Err(Error::DimensionMismatch {
            collection: collection.to_owned(),
            expected: dims,
            actual: vector.len(),
        });
    }
    if !vector.iter().all(|x| x.is_finite()) {
        return Err(Error::NonFinite { what });
    }
    Ok(())
}

/// How deeply `v` nests, counting up to one past the limit only (so a
/// hostile value costs bounded stack).
fn nesting(v: &Value, depth: usize) -> usize {
    if depth > MAX_METADATA_DEPTH {
        return depth;
    }
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return depth,
    };
    children
        .map(|c| nesting(c, depth + 1))
        .max()
        .unwrap_or(depth)
}

pub(crate) fn validate_doc_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid("document id", "empty"));
    }
    if id.len() > MAX_DOC_ID_LEN {
        return Err(Error::invalid(
            "document id",
            format!("longer than {MAX_DOC_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_metadata_key(key: &str) -> Result<()> {
    if key == TENANT_FIELD {
        return Err(Error::ReservedMetadataKey(key.to_owned()));
    }
    let ok = !key.is_empty()
        && key.len() <= MAX_METADATA_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::invalid(
            "metadata key",
            format!("`{key}`: use 1-{MAX_METADATA_KEY_LEN} of [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}
