//! A small JSON Schema validator for tool inputs.
//!
//! Tool arguments come from a model, i.e. from the attacker (prompt
//! injection), so they are validated before the tool sees them. We enforce
//! the subset of JSON Schema (draft 2020-12 keywords) that tool definitions
//! use in practice — `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `minLength`,
//! `maxLength`, `minimum`, `maximum`, `minItems`, `maxItems` — plus the
//! annotations `title`, `description`, `default`, `examples`, `$schema`.
//! Any other keyword is refused when the tool is registered: a schema we
//! cannot enforce would silently accept what its author meant to reject.

use serde_json::{Map, Value};

/// Deepest input nesting accepted (arrays and objects).
pub const MAX_INPUT_DEPTH: usize = 32;

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "title",
    "description",
    "default",
    "examples",
    "$schema",
];

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// A validated input schema.
#[derive(Clone, Debug)]
pub struct InputSchema {
    schema: Value,
}

/// Where and why a value failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// JSON pointer of the offending value (`""` is the root).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl InputSchema {
    /// Checks that `schema` uses only supported keywords.
    pub fn new(schema: Value) -> Result<Self, String> {
        check_schema(&schema, "")?;
        Ok(Self { schema })
    }

    /// The schema as JSON.
    pub fn as_json(&self) -> &Value {
        &self.schema
    }

    /// Validates `value` against the schema.
    pub fn validate(&self, value: &Value) -> Result<(), SchemaViolation> {
        if nesting(value) > MAX_INPUT_DEPTH {
            return fail("", "nested too deeply");
        }
        validate(&self.schema, value, &mut String::new(), 0)
    }
}

/// How deeply arrays and objects nest in `value` (iteratively: no
/// recursion on attacker-controlled depth).
fn nesting(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        if d > MAX_INPUT_DEPTH {
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

fn check_schema(schema: &Value, at: &str) -> Result<(), String> {
    let obj = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(o) => o,
        _ => return Err(format!("schema at `{at}` is not an object")),
    };
    for key in obj.keys() {
        if !KNOWN.contains(&key.as_str()) {
            return Err(format!("unsupported keyword `{key}` at `{at}`"));
        }
    }
    match obj.get("type") {
        None => {}
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(ts))
            if ts
                .iter()
                .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))) => {}
        Some(_) => return Err(format!("invalid `type` at `{at}`")),
    }
    if let Some(props) = obj.get("properties") {
        let props = props
            .as_object()
            .ok_or_else(|| format!("`properties` at `{at}` is not an object"))?;
        for (name, sub) in props {
            check_schema(sub, &format!("{at}/properties/{name}"))?;
        }
    }
    if let Some(req) = obj.get("required") {
        let ok = req
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string));
        if !ok {
            return Err(format!("`required` at `{at}` is not an array of strings"));
        }
    }
    if let Some(extra) = obj.get("additionalProperties") {
        check_schema(extra, &format!("{at}/additionalProperties"))?;
    }
    if let Some(items) = obj.get("items") {
        check_schema(items, &format!("{at}/items"))?;
    }
    if obj.get("enum").is_some_and(|e| !e.is_array()) {
        return Err(format!("`enum` at `{at}` is not an array"));
    }
    for key in ["minLength", "maxLength", "minItems", "maxItems"] {
        if obj.get(key).is_some_and(|v| v.as_u64().is_none()) {
            return Err(format!("`{key}` at `{at}` is not a non-negative integer"));
        }
    }
    for key in ["minimum", "maximum"] {
        if obj.get(key).is_some_and(|v| !v.is_number()) {
            return Err(format!("`{key}` at `{at}` is not a number"));
        }
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "string" => v.is_string(),
        _ => false,
    }
}

fn fail(path: &str, reason: impl Into<String>) -> Result<(), SchemaViolation> {
    Err(SchemaViolation {
        path: path.to_owned(),
        reason: reason.into(),
    })
}

fn validate(
    schema: &Value,
    value: &Value,
    path: &mut String,
    depth: usize,
) -> Result<(), SchemaViolation> {
    if depth > MAX_INPUT_DEPTH {
        return fail(path, "nested too deeply");
    }
    let obj = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return fail(path, "no value is allowed here"),
        Value::Object(o) => o,
        _ => return fail(path, "schema is not an object"),
    };
    match obj.get("type") {
        Some(Value::String(t)) if !type_matches(t, value) => {
            return fail(path, format!("expected {t}"));
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, value)) =>
        {
            return fail(path, "value has none of the allowed types");
        }
        _ => {}
    }
    if let Some(Value::Array(options)) = obj.get("enum") {
        if !options.contains(value) {
            return fail(path, "value is not one of the allowed values");
        }
    }
    if let Some(c) = obj.get("const") {
        if c != value {
            return fail(path, "value differs from the required constant");
        }
    }
    match value {
        Value::String(s) => check_string(obj, s, path)?,
        Value::Number(n) => check_number(obj, n.as_f64().unwrap_or(f64::NAN), path)?,
        Value::Array(items) => check_array(obj, items, path, depth)?,
        Value::Object(map) => check_object(obj, map, path, depth)?,
        _ => {}
    }
    Ok(())
}

fn check_string(obj: &Map<String, Value>, s: &str, path: &str) -> Result<(), SchemaViolation> {
    let len = s.chars().count() as u64;
    if obj
        .get("minLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| len < m)
    {
        return fail(path, "string is too short");
    }
    if obj
        .get("maxLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| len > m)
    {
        return fail(path, "string is too long");
    }
    Ok(())
}

fn check_number(obj: &Map<String, Value>, n: f64, path: &str) -> Result<(), SchemaViolation> {
    if obj
        .get("minimum")
        .and_then(Value::as_f64)
        .is_some_and(|m| n.is_nan() || n < m)
    {
        return fail(path, "number is below the minimum");
    }
    if obj
        .get("maximum")
        .and_then(Value::as_f64)
        .is_some_and(|m| n.is_nan() || n > m)
    {
        return fail(path, "number is above the maximum");
    }
    Ok(())
}

fn check_array(
    obj: &Map<String, Value>,
    items: &[Value],
    path: &mut String,
    depth: usize,
) -> Result<(), SchemaViolation> {
    let len = items.len() as u64;
    if obj
        .get("minItems")
        .and_then(Value::as_u64)
        .is_some_and(|m| len < m)
    {
        return fail(path, "too few items");
    }
    if obj
        .get("maxItems")
        .and_then(Value::as_u64)
        .is_some_and(|m| len > m)
    {
        return fail(path, "too many items");
    }
    if let Some(item_schema) = obj.get("items") {
        for (i, item) in items.iter().enumerate() {
            let base = path.len();
            path.push_str(&format!("/{i}"));
            validate(item_schema, item, path, depth + 1)?;
            path.truncate(base);
        }
    }
    Ok(())
}

fn check_object(
    obj: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &mut String,
    depth: usize,
) -> Result<(), SchemaViolation> {
    if let Some(Value::Array(required)) = obj.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                return fail(path, format!("missing required property `{name}`"));
            }
        }
    }
    let props = obj.get("properties").and_then(Value::as_object);
    let extra = obj.get("additionalProperties");
    for (name, v) in map {
        let base = path.len();
        path.push('/');
        path.push_str(&name.replace('~', "~0").replace('/', "~1"));
        match props.and_then(|p| p.get(name)) {
            Some(sub) => validate(sub, v, path, depth + 1)?,
            None => match extra {
                Some(Value::Bool(false)) => {
                    return fail(path, "property is not allowed");
                }
                Some(sub) => validate(sub, v, path, depth + 1)?,
                None => {}
            },
        }
        path.truncate(base);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> InputSchema {
        InputSchema::new(json!({
            "type": "object",
            "properties": {
                "q": {"type": "string", "minLength": 1, "maxLength": 5},
                "n": {"type": "integer", "minimum": 1, "maximum": 10},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
            },
            "required": ["q"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn accepts_conforming_input() {
        schema()
            .validate(&json!({"q": "abc", "n": 3, "tags": ["a"]}))
            .unwrap();
    }

    #[test]
    fn rejects_each_kind_of_violation() {
        let s = schema();
        for bad in [
            json!({}),
            json!({"q": ""}),
            json!({"q": "toolong"}),
            json!({"q": "a", "n": 11}),
            json!({"q": "a", "n": 1.5}),
            json!({"q": "a", "tags": ["c"]}),
            json!({"q": "a", "tags": ["a", "b", "a"]}),
            json!({"q": "a", "extra": 1}),
            json!("q"),
        ] {
            assert!(s.validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_unknown_keywords() {
        assert!(InputSchema::new(json!({"type": "string", "pattern": "^a"})).is_err());
        assert!(InputSchema::new(json!({"oneOf": []})).is_err());
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!({ "a": v });
        }
        let s = InputSchema::new(json!({"additionalProperties": {}})).unwrap();
        assert!(s.validate(&v).is_err());
    }
}
