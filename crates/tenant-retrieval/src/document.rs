//! What callers store and get back.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::point::TENANT_FIELD;

/// Longest accepted document id, in bytes.
pub const MAX_DOC_ID_LEN: usize = 256;
/// Longest accepted metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 64;

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
        if self.vector.len() != dims {
            return Err(Error::DimensionMismatch {
                collection: collection.to_owned(),
                expected: dims,
                actual: self.vector.len(),
            });
        }
        if self.vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("vector", "contains NaN or infinity"));
        }
        for key in self.metadata.keys() {
            validate_metadata_key(key)?;
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
