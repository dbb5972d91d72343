//! Checks on what a remote server says about its tools, before any of it
//! enters the registry: a remote server is not trusted to be small, shallow
//! or well-formed.

use serde_json::Value;
use tenant_tools::{InputSchema, MAX_TOOL_NAME_LEN};

/// The largest serialized input schema accepted.
pub const MAX_REMOTE_SCHEMA_BYTES: usize = 32 * 1024;
/// The deepest nesting of arrays and objects in an input schema.
pub const MAX_REMOTE_SCHEMA_DEPTH: usize = 12;
/// The most JSON values an input schema may hold.
pub const MAX_REMOTE_SCHEMA_NODES: usize = 2048;
/// The longest tool description accepted.
pub const MAX_REMOTE_DESCRIPTION: usize = 4096;

/// Why a remote tool definition was refused.
pub(crate) type Refusal = String;

/// Checks a remote tool's schema for size and shape, then that the tool
/// layer can enforce it. Iterative, so a hostile nesting depth costs
/// nothing but its bytes.
pub(crate) fn check_schema(schema: &Value) -> Result<InputSchema, Refusal> {
    let mut nodes = 0usize;
    let mut stack = vec![(schema, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_REMOTE_SCHEMA_NODES {
            return Err(format!(
                "schema has more than {MAX_REMOTE_SCHEMA_NODES} values"
            ));
        }
        if depth > MAX_REMOTE_SCHEMA_DEPTH {
            return Err(format!(
                "schema nests deeper than {MAX_REMOTE_SCHEMA_DEPTH} levels"
            ));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    // Serialising recurses, so only after the depth is known to be small.
    let bytes =
        serde_json::to_vec(schema).map_err(|e| format!("schema does not serialize: {e}"))?;
    if bytes.len() > MAX_REMOTE_SCHEMA_BYTES {
        return Err(format!(
            "schema is {} bytes (at most {MAX_REMOTE_SCHEMA_BYTES})",
            bytes.len()
        ));
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        _ => return Err("an MCP tool's input schema must be of type `object`".into()),
    }
    InputSchema::new(schema.clone())
        .map_err(|reason| format!("schema is not enforceable: {reason}"))
}

/// Checks a remote tool name and description.
pub(crate) fn check_name_and_description(name: &str, description: &str) -> Result<(), Refusal> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TOOL_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err("tool names are 1 to 128 ASCII letters, digits, `_`, `-` or `.`".into());
    }
    if description.len() > MAX_REMOTE_DESCRIPTION {
        return Err(format!(
            "description is {} bytes (at most {MAX_REMOTE_DESCRIPTION})",
            description.len()
        ));
    }
    if description
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("description holds control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_schemas_pass() {
        check_schema(&json!({
            "type": "object",
            "properties": {"q": {"type": "string", "maxLength": 100}},
            "required": ["q"]
        }))
        .unwrap();
    }

    #[test]
    fn hostile_schemas_are_refused() {
        let mut deep = json!({"type": "string"});
        // Deserialisation stops at 128 levels; anything deeper than the
        // limit is refused alike.
        for _ in 0..100 {
            deep = json!({"type": "object", "properties": {"a": deep}});
        }
        let wide: serde_json::Map<String, Value> = (0..300)
            .map(|i| {
                let about = "x".repeat(200);
                (
                    format!("p{i}"),
                    json!({"type": "string", "description": about}),
                )
            })
            .collect();
        for (schema, why) in [
            (deep, "nests deeper"),
            (json!({"type": "object", "properties": wide}), "bytes"),
            (json!({"type": "object", "enum": vec![0; 3000]}), "values"),
            (json!({"type": "string"}), "type `object`"),
            (json!([]), "type `object`"),
            (json!({"type": "object", "$ref": "#/x"}), "not enforceable"),
            // Patterns run on a linear-time engine (a backtracking bomb
            // such as `(a+)+$` is harmless there); what it cannot run,
            // such as lookaround, is refused.
            (
                json!({"type": "object", "properties": {"a": {"pattern": "^(?=a)a$"}}}),
                "not enforceable",
            ),
        ] {
            let err = check_schema(&schema).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn names_and_descriptions_are_bounded() {
        check_name_and_description("search-v2.beta", "Finds things.\nFast.").unwrap();
        for name in ["", "a b", "a/b", "x:y", "ünï", &"a".repeat(129)] {
            assert!(check_name_and_description(name, "").is_err(), "{name}");
        }
        assert!(check_name_and_description("a", &"d".repeat(5000)).is_err());
        assert!(check_name_and_description("a", "ansi \u{1b}[2J").is_err());
    }
}
