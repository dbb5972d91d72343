//! JSON objects parsed the strict way: a member name that appears twice, at
//! any depth, is refused instead of silently resolved.
//!
//! Parsers disagree on duplicates (first wins, last wins, error), so a
//! token with `"tenant_id"` twice could mean one tenant to a gateway and
//! another to us. Nesting is bounded by `serde_json`'s recursion limit
//! (128), which fails with an error, never a stack overflow.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a JSON text was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StrictJsonError {
    /// Not JSON, or nested deeper than the parser's limit.
    Malformed,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A member name appears twice in one object (the name is reported).
    Duplicate(String),
}

/// Parses `bytes` as one JSON object with unique member names throughout.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
    let parsed: Strict = serde_json::from_slice(bytes).map_err(|_| StrictJsonError::Malformed)?;
    if let Some(name) = parsed.duplicate {
        return Err(StrictJsonError::Duplicate(name));
    }
    match parsed.value {
        Value::Object(map) => Ok(map),
        _ => Err(StrictJsonError::NotAnObject),
    }
}

/// A value and the first duplicated member name found inside it.
struct Strict {
    value: Value,
    duplicate: Option<String>,
}

impl Strict {
    fn plain(value: Value) -> Self {
        Self {
            value,
            duplicate: None,
        }
    }
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        Number::from_f64(v)
            .map(|n| Strict::plain(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict::plain(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict::plain(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        let mut duplicate = None;
        while let Some(item) = seq.next_element::<Strict>()? {
            duplicate = duplicate.or(item.duplicate);
            items.push(item.value);
        }
        Ok(Strict {
            value: Value::Array(items),
            duplicate,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let mut map = Map::new();
        let mut duplicate = None;
        while let Some(name) = access.next_key::<String>()? {
            let item = access.next_value::<Strict>()?;
            duplicate = duplicate.or(item.duplicate);
            if map.contains_key(&name) {
                duplicate.get_or_insert(name);
            } else {
                map.insert(name, item.value);
            }
        }
        Ok(Strict {
            value: Value::Object(map),
            duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(StrictJsonError::Duplicate("a".into()))
        );
        assert_eq!(
            parse_object(br#"{"a":{"b":[{"c":1,"c":1}]}}"#),
            Err(StrictJsonError::Duplicate("c".into()))
        );
        // Escapes are decoded before comparing: "\u0061" is "a".
        assert_eq!(
            parse_object(br#"{"a":1,"\u0061":2}"#),
            Err(StrictJsonError::Duplicate("a".into()))
        );
        assert!(parse_object(br#"{"a":{"a":1},"b":[{"a":2}]}"#).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse_object(deep.as_bytes()),
            Err(StrictJsonError::Malformed)
        );
        let deep_objects = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
        assert_eq!(
            parse_object(deep_objects.as_bytes()),
            Err(StrictJsonError::Malformed)
        );
    }

    #[test]
    fn non_objects_and_garbage_are_refused() {
        assert_eq!(parse_object(b"[1]"), Err(StrictJsonError::NotAnObject));
        assert_eq!(parse_object(b"{"), Err(StrictJsonError::Malformed));
        assert_eq!(parse_object(b"{} {}"), Err(StrictJsonError::Malformed));
        assert_eq!(parse_object(b"\xff"), Err(StrictJsonError::Malformed));
    }
}
