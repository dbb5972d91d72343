//! Validation of the names callers choose: namespaces, keys, checkpoint ids.

use crate::error::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 512;

/// Non-empty, at most [`MAX_NAME_BYTES`], no control characters.
pub(crate) fn validate(kind: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName {
            kind,
            reason: "must not be empty",
        });
    }
    validate_prefix(kind, name)
}

/// Like [`validate`] but may be empty (a key prefix).
pub(crate) fn validate_prefix(kind: &'static str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidName {
            kind,
            reason: "longer than 512 bytes",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            kind,
            reason: "contains control characters",
        });
    }
    Ok(())
}
