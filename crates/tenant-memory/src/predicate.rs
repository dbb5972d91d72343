//! Policy predicates, understood through the PostgreSQL parser rather than
//! matched as text: [`keyed_on_verified_tenant`] accepts only
//! `<tenant column> = <the SDK's verified tenant>`, possibly AND-ed with
//! more conditions.

use serde_json::Value;

/// `BoolExprType::AndExpr` in libpg_query's protobuf.
const AND_EXPR: i64 = 1;
/// `SubLinkType::ExprSublink`.
const EXPR_SUBLINK: i64 = 5;
/// `AExprKind::AexprOp`.
const AEXPR_OP: i64 = 1;

/// Whether the policy expression `expr` (as `pg_get_expr` prints it, with
/// `search_path = pg_catalog`) requires `tenant_column` to equal the tenant
/// of the verified signed context in one of its top-level AND-ed terms:
/// `= (SELECT tenant FROM tenant_sdk.verified_context)` or
/// `= tenant_sdk.current_tenant()`. With `scope_keys`, the SDK's memory
/// tables' form `scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM
/// tenant_sdk.verified_context)` counts too (their scope keys all start with
/// the tenant). Anything with an `OR` or `NOT` around the tenant term fails.
pub(crate) fn keyed_on_verified_tenant(expr: &str, tenant_column: &str, scope_keys: bool) -> bool {
    let Ok(parsed) = pg_query::parse(&format!("SELECT 1 WHERE {expr}"), 0) else {
        return false;
    };
    if parsed.protobuf.stmts.len() != 1 {
        return false;
    }
    let Ok(tree) = serde_json::to_value(&parsed.protobuf) else {
        return false;
    };
    let Some(root) = tree.pointer("/stmts/0/stmt/node/SelectStmt/where_clause") else {
        return false;
    };
    conjuncts(root)
        .iter()
        .any(|term| verified_tenant_term(term, tenant_column, scope_keys))
}

/// The top-level AND-ed terms of a node.
fn conjuncts(node: &Value) -> Vec<&Value> {
    if let Some(b) = node.pointer("/node/BoolExpr") {
        if b.get("boolop").and_then(Value::as_i64) == Some(AND_EXPR) {
            return b
                .get("args")
                .and_then(Value::as_array)
                .map(|args| args.iter().flat_map(conjuncts).collect())
                .unwrap_or_default();
        }
    }
    vec![node]
}

fn strings(list: Option<&Value>) -> Vec<&str> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn is_column(node: &Value, column: &str) -> bool {
    strings(node.pointer("/node/ColumnRef/fields")) == [column]
}

fn verified_tenant_term(term: &Value, tenant_column: &str, scope_keys: bool) -> bool {
    let Some(a) = term.pointer("/node/AExpr") else {
        return false;
    };
    if a.get("kind").and_then(Value::as_i64) != Some(AEXPR_OP) {
        return false;
    }
    let (Some(l), Some(r)) = (a.get("lexpr"), a.get("rexpr")) else {
        return false;
    };
    let sides = [(l, r), (r, l)];
    match strings(a.get("name")).as_slice() {
        ["="] | ["pg_catalog", "="] => sides.iter().any(|(col, value)| {
            is_column(col, tenant_column)
                && (verifier_subquery(value, "tenant") || current_tenant_call(value))
        }),
        ["&&"] | ["pg_catalog", "&&"] | ["tenant_sdk", "&&"] if scope_keys => sides
            .iter()
            .any(|(col, value)| is_column(col, "scope_keys") && verifier_subquery(value, "grants")),
        _ => false,
    }
}

/// `(SELECT <column> FROM tenant_sdk.verified_context)` and nothing more.
fn verifier_subquery(node: &Value, column: &str) -> bool {
    let Some(link) = node.pointer("/node/SubLink") else {
        return false;
    };
    if link.get("sub_link_type").and_then(Value::as_i64) != Some(EXPR_SUBLINK) {
        return false;
    }
    let Some(select) = link.pointer("/subselect/node/SelectStmt") else {
        return false;
    };
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    };
    let plain = select.as_object().is_some_and(|fields| {
        fields.iter().all(|(k, v)| {
            matches!(
                k.as_str(),
                "target_list" | "from_clause" | "limit_option" | "op"
            ) || empty(v)
        })
    });
    let targets = select.get("target_list").and_then(Value::as_array);
    let from = select.get("from_clause").and_then(Value::as_array);
    let (Some([target]), Some([relation])) = (targets.map(Vec::as_slice), from.map(Vec::as_slice))
    else {
        return false;
    };
    let fields = strings(target.pointer("/node/ResTarget/val/node/ColumnRef/fields"));
    let target_ok = fields == [column] || fields == ["verified_context", column];
    let rel = relation.pointer("/node/RangeVar");
    let rel_ok = rel.is_some_and(|r| {
        r.get("schemaname").and_then(Value::as_str) == Some("tenant_sdk")
            && r.get("relname").and_then(Value::as_str) == Some("verified_context")
            && r.get("alias").is_none_or(Value::is_null)
    });
    plain && target_ok && rel_ok
}

/// `tenant_sdk.current_tenant()`.
fn current_tenant_call(node: &Value) -> bool {
    node.pointer("/node/FuncCall").is_some_and(|f| {
        strings(f.get("funcname")) == ["tenant_sdk", "current_tenant"]
            && f.get("args")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
    })
}

#[cfg(test)]
mod tests {
    use super::keyed_on_verified_tenant as keyed;

    const VIEW: &str = "( SELECT verified_context.tenant\n   FROM tenant_sdk.verified_context)";

    #[test]
    fn the_sdk_forms_pass() {
        assert!(keyed(&format!("(tenant_id = {VIEW})"), "tenant_id", false));
        assert!(keyed(
            &format!("((owner = 'x'::text) AND (tenant_id = {VIEW}))"),
            "tenant_id",
            false
        ));
        assert!(keyed(
            "(tenant_id = tenant_sdk.current_tenant())",
            "tenant_id",
            false
        ));
        assert!(keyed(
            "((tenant_id = ( SELECT bound_tenant.tenant FROM tenant_sdk.bound_tenant)) AND \
             (scope_keys OPERATOR(tenant_sdk.&&) ( SELECT verified_context.grants FROM tenant_sdk.verified_context)))",
            "tenant_id",
            true
        ));
    }

    #[test]
    fn escapes_and_lookalikes_fail() {
        for expr in [
            format!("((tenant_id = {VIEW}) OR true)"),
            format!("(NOT (tenant_id <> {VIEW}))"),
            "(tenant_id = (current_setting('app.tenant_id'::text))::uuid)".to_owned(),
            "(tenant_id = public.current_tenant())".to_owned(),
            "(tenant_id = tenant_sdk.current_tenant(1))".to_owned(),
            "(tenant_id = ( SELECT t.tenant FROM public.verified_context t))".to_owned(),
            "(tenant_id = ( SELECT verified_context.tenant FROM tenant_sdk.verified_context WHERE false OR true))".to_owned(),
            "(tenant_id OPERATOR(public.=) tenant_sdk.current_tenant())".to_owned(),
            "(other_id = tenant_sdk.current_tenant())".to_owned(),
            "true".to_owned(),
            "(scope_keys && ( SELECT verified_context.grants FROM tenant_sdk.verified_context))".to_owned(),
        ] {
            assert!(!keyed(&expr, "tenant_id", false), "{expr}");
        }
    }
}
