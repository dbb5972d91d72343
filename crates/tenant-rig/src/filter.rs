//! Translating rig's canonical search filter into a [`MetadataFilter`].
//!
//! The translation is total or it fails: every leaf becomes a condition on
//! the caller's own metadata, and anything the store cannot express (or
//! that names the tenant field) is a typed error. The result is handed to
//! [`RetrievalClient::search`](tenant_retrieval::RetrievalClient::search),
//! which nests it as one `must` clause beneath the tenant condition — so a
//! filter can only narrow the tenant's documents, whatever its `or`s say.

use rig_core::vector_store::request::Filter;
use serde_json::Value;
use tenant_retrieval::{Bounds, FilterValue, MetadataFilter};

use crate::error::{Error, Result};

/// rig's canonical filter, the one its vector-store tool deserialises from
/// the model's arguments and its agents send for dynamic context.
pub type RigFilter = Filter<Value>;

/// Deepest accepted filter tree. Filters can come from a model; a bound
/// keeps a hostile one from costing stack or store time.
pub const MAX_FILTER_DEPTH: usize = 32;

/// The payload field the SDK owns; filters may not name it.
const TENANT_FIELD: &str = "tenant_id";

/// Translates a rig filter into a [`MetadataFilter`] over the caller's
/// metadata keys.
///
/// - `eq` with a string, boolean or integral number is a keyword/integer
///   match; `gt`/`lt` with a number is an open numeric range; `and`/`or`
///   become all/any.
/// - A key naming the tenant field (any ASCII case) is
///   [`Error::TenantFieldInFilter`].
/// - Any other value (null, array, object, fractional equality), an
///   ordering on a non-number, or a tree deeper than [`MAX_FILTER_DEPTH`]
///   is [`Error::UnsupportedFilter`].
///
/// ```
/// use rig_core::vector_store::request::SearchFilter;
/// use serde_json::json;
/// use tenant_rig::{metadata_filter, Error, RigFilter};
///
/// let f = RigFilter::eq("lang", json!("en")).and(RigFilter::gt("year", json!(2020)));
/// assert!(metadata_filter(&f).is_ok());
///
/// let widen = RigFilter::eq("tenant_id", json!("someone-else")).or(RigFilter::eq("lang", json!("en")));
/// assert!(matches!(metadata_filter(&widen), Err(Error::TenantFieldInFilter(_))));
/// ```
pub fn metadata_filter(filter: &RigFilter) -> Result<MetadataFilter> {
    translate(filter, 1)
}

fn translate(filter: &RigFilter, depth: usize) -> Result<MetadataFilter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(Error::UnsupportedFilter(format!(
            "deeper than {MAX_FILTER_DEPTH} levels"
        )));
    }
    Ok(match filter {
        Filter::Eq(key, value) => MetadataFilter::eq(field(key)?, eq_value(key, value)?),
        Filter::Gt(key, value) => MetadataFilter::range(
            field(key)?,
            Bounds {
                gt: Some(number(key, "gt", value)?),
                ..Bounds::default()
            },
        ),
        Filter::Lt(key, value) => MetadataFilter::range(
            field(key)?,
            Bounds {
                lt: Some(number(key, "lt", value)?),
                ..Bounds::default()
            },
        ),
        Filter::And(l, r) => {
            MetadataFilter::all([translate(l, depth + 1)?, translate(r, depth + 1)?])
        }
        Filter::Or(l, r) => {
            MetadataFilter::any([translate(l, depth + 1)?, translate(r, depth + 1)?])
        }
    })
}

fn field(key: &str) -> Result<&str> {
    if key.eq_ignore_ascii_case(TENANT_FIELD) {
        return Err(Error::TenantFieldInFilter(key.to_owned()));
    }
    Ok(key)
}

fn eq_value(key: &str, value: &Value) -> Result<FilterValue> {
    match value {
        Value::String(s) => Ok(FilterValue::Str(s.clone())),
        Value::Bool(b) => Ok(FilterValue::Bool(*b)),
        Value::Number(n) => n.as_i64().map(FilterValue::Int).ok_or_else(|| {
            Error::UnsupportedFilter(format!(
                "`eq` on `{key}` with {n}: equality needs a string, boolean or integer \
                 (use `gt`/`lt` for fractional numbers)"
            ))
        }),
        other => Err(Error::UnsupportedFilter(format!(
            "`eq` on `{key}` with {}: equality needs a string, boolean or integer",
            kind(other)
        ))),
    }
}

fn number(key: &str, op: &str, value: &Value) -> Result<f64> {
    value.as_f64().ok_or_else(|| {
        Error::UnsupportedFilter(format!(
            "`{op}` on `{key}` with {}: ordering needs a number",
            kind(value)
        ))
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rig_core::vector_store::request::SearchFilter;
    use serde_json::json;

    #[test]
    fn leaves_and_combinators_translate_to_the_same_tree() {
        let f = RigFilter::eq("lang", json!("en"))
            .and(RigFilter::gt("year", json!(2020)).or(RigFilter::eq("draft", json!(false))));
        let expected = MetadataFilter::all([
            MetadataFilter::eq("lang", "en"),
            MetadataFilter::any([
                MetadataFilter::range(
                    "year",
                    Bounds {
                        gt: Some(2020.0),
                        ..Bounds::default()
                    },
                ),
                MetadataFilter::eq("draft", false),
            ]),
        ]);
        assert_eq!(metadata_filter(&f).unwrap(), expected);
    }

    #[test]
    fn the_tenant_field_is_refused_anywhere_in_the_tree_in_any_case() {
        for key in ["tenant_id", "TENANT_ID", "Tenant_Id"] {
            let f = RigFilter::eq("lang", json!("en"))
                .or(RigFilter::lt("year", json!(3000)).and(RigFilter::eq(key, json!("x"))));
            assert!(matches!(
                metadata_filter(&f),
                Err(Error::TenantFieldInFilter(k)) if k == key
            ));
        }
    }

    #[test]
    fn unsupported_values_are_refused_not_ignored() {
        for f in [
            RigFilter::eq("k", json!(null)),
            RigFilter::eq("k", json!(["a"])),
            RigFilter::eq("k", json!({"a": 1})),
            RigFilter::eq("k", json!(1.5)),
            RigFilter::gt("k", json!("2020")),
            RigFilter::lt("k", json!(true)),
        ] {
            assert!(
                matches!(metadata_filter(&f), Err(Error::UnsupportedFilter(_))),
                "{f:?}"
            );
        }
    }

    #[test]
    fn a_filter_deeper_than_the_limit_is_refused() {
        let mut f = RigFilter::eq("k", json!("v"));
        for _ in 0..MAX_FILTER_DEPTH {
            f = f.or(RigFilter::eq("k", json!("v")));
        }
        assert!(matches!(
            metadata_filter(&f),
            Err(Error::UnsupportedFilter(_))
        ));
    }
}
