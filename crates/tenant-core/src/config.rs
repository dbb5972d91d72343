//! Loading configuration (tiers here; tool policies, egress and quota
//! policies in their crates) from JSON or TOML, with errors that name the
//! offending field.
//!
//! Every configurable type of the SDK implements `serde::Deserialize` and
//! checks its values while it is deserialized, so whatever the format, a
//! mistake is reported as [`Error::Config`] with the path of the field
//! (`tenants.6f1c….tier`, `egress[2]`, ...):
//!
//! ```
//! use tenant_core::{config, IsolationTier, StaticTiers, TenantId, TierResolver, TiersConfig};
//! let tiers: TiersConfig = config::from_json_str(r#"{
//!     "default": "pool",
//!     "tenants": { "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11": "silo" }
//! }"#)?;
//! let tiers = StaticTiers::from(tiers);
//! let big: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse()?;
//! assert_eq!(tiers.tier(big), IsolationTier::Silo);
//!
//! let err = config::from_json_str::<TiersConfig>(r#"{"default": "bridge"}"#).unwrap_err();
//! assert!(matches!(err, tenant_core::Error::Config { ref field, .. } if field == "default"));
//! # Ok::<(), tenant_core::Error>(())
//! ```

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Parses `text` as JSON into `T`.
///
/// # Errors
///
/// [`Error::Config`] naming the field that failed to parse or validate.
pub fn from_json_str<T: DeserializeOwned>(text: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| Error::Config {
        field: String::new(),
        reason: e.to_string(),
    })?;
    Ok(value)
}

/// Converts an already parsed JSON value into `T`.
///
/// # Errors
///
/// [`Error::Config`] naming the field that failed to parse or validate.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// Parses `text` as TOML into `T` (feature `toml`).
///
/// # Errors
///
/// [`Error::Config`]: for a syntax error, `field` is empty and the reason
/// gives the line; otherwise it names the field that failed to validate.
#[cfg(feature = "toml")]
#[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
pub fn from_toml_str<T: DeserializeOwned>(text: &str) -> Result<T> {
    let value: serde_json::Value = toml::from_str(text).map_err(|e| Error::Config {
        field: String::new(),
        reason: e.message().to_owned(),
    })?;
    from_value(value)
}

/// The message a validating `Deserialize` implementation raises for a
/// field inside the value being deserialized; [`Error::Config`] then
/// names `<path>.<field>`.
pub fn invalid_field(field: &str, reason: impl std::fmt::Display) -> String {
    format!("{FIELD_MARK}{field}{FIELD_MARK}{reason}")
}

const FIELD_MARK: char = '\u{1f}';

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> Error {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = e.into_inner().to_string();
    let (field, reason) = match message
        .strip_prefix(FIELD_MARK)
        .and_then(|rest| rest.split_once(FIELD_MARK))
    {
        Some((inner, reason)) if path.is_empty() => (inner.to_owned(), reason.to_owned()),
        Some((inner, reason)) => (format!("{path}.{inner}"), reason.to_owned()),
        None => (path, message),
    };
    // serde_json appends " at line L column C" to its messages; keep it, it
    // locates the value in the file.
    Error::Config { field, reason }
}
