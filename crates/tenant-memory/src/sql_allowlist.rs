//! What agent SQL may name: checked on the real PostgreSQL parse tree
//! (libpg_query), deny by default.
//!
//! A statement passes only if it is exactly one plain `SELECT` (with
//! `WITH`, set operations, joins, subqueries, `VALUES`) whose every parse
//! node is of an allowed kind, every relation is a visible CTE or a
//! schema-qualified table on the platform's list, every function is a pure
//! built-in on [`FUNCTIONS`], every cast names a plain type on [`TYPES`],
//! and every operator is a built-in. Everything else (catalog and
//! statistics views, signalling, admin, settings, cursor, large-object,
//! XML and sleep functions, sequences, locking clauses, `SELECT INTO`,
//! parameters) is refused naming the object.
//!
//! The SQL tool runs the statement with `search_path` empty, so unqualified
//! names can only resolve to `pg_catalog`, and the database layers (read-only
//! transaction, timeout, row-level security) stay underneath.

use serde_json::{Map, Value};

use crate::error::{Error, Result, SqlObjectKind};

/// The pure built-in functions agent SQL may call: arithmetic, string,
/// date/time, JSON, array, aggregate and window functions.
pub const FUNCTIONS: &[&str] = &[
    // arithmetic
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sqrt",
    "cbrt",
    "power",
    "pow",
    "exp",
    "ln",
    "log",
    "log10",
    "mod",
    "sign",
    "div",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "width_bucket",
    "gcd",
    "lcm",
    "scale",
    "numeric",
    "int4",
    "int8",
    "float8",
    "text",
    // string
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "substr",
    "substring",
    "left",
    "right",
    "btrim",
    "ltrim",
    "rtrim",
    "trim",
    "lpad",
    "rpad",
    "replace",
    "reverse",
    "repeat",
    "position",
    "strpos",
    "split_part",
    "concat",
    "concat_ws",
    "format",
    "starts_with",
    "translate",
    "md5",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_count",
    "regexp_like",
    "regexp_substr",
    "regexp_instr",
    "string_to_array",
    "array_to_string",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "quote_literal",
    "quote_ident",
    "quote_nullable",
    "similar_to_escape",
    "ascii",
    "chr",
    "normalize",
    "is_normalized",
    "unistr",
    // date and time
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "date_trunc",
    "date_part",
    "extract",
    "age",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "date_bin",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "timezone",
    "overlaps",
    // JSON
    "to_json",
    "to_jsonb",
    "row_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_array_length",
    "jsonb_array_length",
    "json_typeof",
    "jsonb_typeof",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "jsonb_pretty",
    "json_strip_nulls",
    "jsonb_strip_nulls",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    // arrays and sets
    "array_length",
    "array_lower",
    "array_upper",
    "array_ndims",
    "array_dims",
    "cardinality",
    "unnest",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "generate_series",
    "generate_subscripts",
    "num_nulls",
    "num_nonnulls",
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "bit_and",
    "bit_or",
    // window functions
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// The types agent SQL may cast to.
pub const TYPES: &[&str] = &[
    "bool",
    "int2",
    "int4",
    "int8",
    "numeric",
    "float4",
    "float8",
    "text",
    "varchar",
    "bpchar",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
    "json",
    "jsonb",
    "bytea",
];

/// Parse-tree nodes a plain query is built from. Anything else (cursors,
/// locking, XML, JSON_TABLE, TABLESAMPLE, parameters, DML, utility
/// statements, ...) is refused.
const NODES: &[&str] = &[
    "SelectStmt",
    "ResTarget",
    "ColumnRef",
    "AConst",
    "AExpr",
    "FuncCall",
    "RangeVar",
    "JoinExpr",
    "SubLink",
    "CaseExpr",
    "CaseWhen",
    "TypeCast",
    "BoolExpr",
    "NullTest",
    "BooleanTest",
    "CoalesceExpr",
    "MinMaxExpr",
    "AArrayExpr",
    "AIndirection",
    "AIndices",
    "AStar",
    "RowExpr",
    "SqlvalueFunction",
    "SortBy",
    "WindowDef",
    "RangeSubselect",
    "RangeFunction",
    "CommonTableExpr",
    "String",
    "Integer",
    "Float",
    "Boolean",
    "BitString",
    "List",
    "GroupingSet",
    "GroupingFunc",
    "CollateClause",
    "Alias",
];

/// `CURRENT_DATE`, `CURRENT_TIME[STAMP]`, `LOCALTIME[STAMP]` (not
/// `CURRENT_USER`, `CURRENT_SCHEMA` and friends).
const DATE_TIME_VALUE_FUNCTIONS: std::ops::RangeInclusive<i64> = 1..=9;

/// Checks `sql` against the allowlist; `table_allowed(schema, table)` says
/// which relations the platform exposes.
pub(crate) fn check(sql: &str, table_allowed: &dyn Fn(&str, &str) -> bool) -> Result<()> {
    let parsed = pg_query::parse(sql, 0)
        .map_err(|_| Error::SqlNotAllowed("the statement does not parse as PostgreSQL SQL"))?;
    let stmts = &parsed.protobuf.stmts;
    if stmts.len() != 1 {
        return Err(Error::SqlNotAllowed("exactly one statement is allowed"));
    }
    let tree = serde_json::to_value(&parsed.protobuf)
        .map_err(|_| Error::SqlNotAllowed("the statement could not be inspected"))?;
    let stmt = tree
        .pointer("/stmts/0/stmt/node")
        .and_then(Value::as_object)
        .ok_or(Error::SqlNotAllowed("empty statement"))?;
    let Some(select) = stmt.get("SelectStmt").and_then(Value::as_object) else {
        return Err(Error::SqlNotAllowed(
            "only queries (SELECT, WITH, VALUES, TABLE) are allowed",
        ));
    };
    Checker { table_allowed }.select(select, &[], 0)
}

struct Checker<'a> {
    table_allowed: &'a dyn Fn(&str, &str) -> bool,
}

/// Parse trees of agent SQL are bounded by the statement size; this bounds
/// the recursion further so no input can exhaust the stack.
const MAX_DEPTH: usize = 200;

fn refused(kind: SqlObjectKind, name: impl Into<String>) -> Error {
    Error::SqlObjectNotAllowed {
        kind,
        name: name.into(),
    }
}

/// The strings of a list of `String` nodes (`funcname`, `names`, ...).
fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A built-in name: unqualified or in `pg_catalog`; returns the bare name.
fn builtin(parts: &[String]) -> Option<&str> {
    match parts {
        [name] => Some(name),
        [schema, name] if schema == "pg_catalog" => Some(name),
        _ => None,
    }
}

impl Checker<'_> {
    /// A `SELECT` (top level, subquery, CTE body or set-operation arm) with
    /// the CTE names visible to it.
    fn select(&self, select: &Map<String, Value>, ctes: &[String], depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::SqlNotAllowed("the statement nests too deeply"));
        }
        if select.get("into_clause").is_some_and(|v| !v.is_null()) {
            return Err(refused(SqlObjectKind::Construct, "SELECT INTO"));
        }
        if select
            .get("locking_clause")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty())
        {
            return Err(refused(SqlObjectKind::Construct, "FOR UPDATE/SHARE"));
        }
        let mut visible = ctes.to_vec();
        if let Some(with) = select.get("with_clause").and_then(Value::as_object) {
            let recursive = with.get("recursive").and_then(Value::as_bool) == Some(true);
            let list = with.get("ctes").and_then(Value::as_array);
            for cte in list.into_iter().flatten() {
                let cte = cte
                    .pointer("/node/CommonTableExpr")
                    .and_then(Value::as_object)
                    .ok_or(Error::SqlNotAllowed("malformed WITH clause"))?;
                let name = cte
                    .get("ctename")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if cte.get("search_clause").is_some_and(|v| !v.is_null())
                    || cte.get("cycle_clause").is_some_and(|v| !v.is_null())
                {
                    return Err(refused(SqlObjectKind::Construct, "SEARCH/CYCLE"));
                }
                // A CTE body sees the CTEs before it (and itself when
                // RECURSIVE): never a name PostgreSQL would resolve to a table.
                let mut scope = visible.clone();
                if recursive {
                    scope.push(name.clone());
                }
                let body = cte
                    .get("ctequery")
                    .and_then(|q| q.pointer("/node/SelectStmt"))
                    .and_then(Value::as_object)
                    .ok_or_else(|| refused(SqlObjectKind::Construct, "data-modifying WITH"))?;
                self.select(body, &scope, depth + 1)?;
                visible.push(name);
            }
        }
        for arm in ["larg", "rarg"] {
            if let Some(arm) = select.get(arm).and_then(Value::as_object) {
                self.select(arm, &visible, depth + 1)?;
            }
        }
        for (field, value) in select {
            if matches!(
                field.as_str(),
                "with_clause" | "larg" | "rarg" | "into_clause" | "locking_clause"
            ) {
                continue;
            }
            self.value(value, &visible, depth + 1)?;
        }
        Ok(())
    }

    /// Any value: nodes are checked by kind, everything else is walked.
    fn value(&self, value: &Value, ctes: &[String], depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::SqlNotAllowed("the statement nests too deeply"));
        }
        match value {
            Value::Array(items) => items
                .iter()
                .try_for_each(|v| self.value(v, ctes, depth + 1)),
            Value::Object(map) => {
                for (field, inner) in map {
                    // A `Node` wrapper holds one key, the node kind (CamelCase);
                    // fields (snake_case, e.g. SortBy's `node`) are walked.
                    let wrapped = inner.as_object().filter(|node| {
                        field == "node"
                            && node
                                .keys()
                                .all(|k| k.starts_with(|c: char| c.is_ascii_uppercase()))
                    });
                    match wrapped {
                        Some(node) => {
                            for (kind, body) in node {
                                self.node(kind, body, ctes, depth + 1)?;
                            }
                        }
                        None => self.value(inner, ctes, depth + 1)?,
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn node(&self, kind: &str, body: &Value, ctes: &[String], depth: usize) -> Result<()> {
        if !NODES.contains(&kind) {
            return Err(refused(SqlObjectKind::Construct, kind));
        }
        let empty = Map::new();
        let fields = body.as_object().unwrap_or(&empty);
        match kind {
            "SelectStmt" => return self.select(fields, ctes, depth),
            "RangeVar" => self.relation(fields, ctes)?,
            "FuncCall" => {
                let parts = names(fields.get("funcname"));
                match builtin(&parts) {
                    Some(name) if FUNCTIONS.contains(&name) => {}
                    _ => return Err(refused(SqlObjectKind::Function, parts.join("."))),
                }
            }
            "TypeCast" => {
                let parts = names(body.pointer("/type_name/names"));
                match builtin(&parts) {
                    Some(name) if TYPES.contains(&name) => {}
                    _ => return Err(refused(SqlObjectKind::Type, parts.join("."))),
                }
            }
            "AExpr" => {
                let parts = names(fields.get("name"));
                if builtin(&parts).is_none() {
                    return Err(refused(SqlObjectKind::Operator, parts.join(".")));
                }
            }
            "SubLink" => {
                let parts = names(fields.get("oper_name"));
                if !parts.is_empty() && builtin(&parts).is_none() {
                    return Err(refused(SqlObjectKind::Operator, parts.join(".")));
                }
            }
            "SqlvalueFunction" => {
                let op = fields.get("op").and_then(Value::as_i64).unwrap_or(0);
                if !DATE_TIME_VALUE_FUNCTIONS.contains(&op) {
                    return Err(refused(
                        SqlObjectKind::Function,
                        "CURRENT_USER/CURRENT_SCHEMA",
                    ));
                }
            }
            _ => {}
        }
        self.value(body, ctes, depth)
    }

    fn relation(&self, fields: &Map<String, Value>, ctes: &[String]) -> Result<()> {
        let text = |f: &str| fields.get(f).and_then(Value::as_str).unwrap_or_default();
        let (catalog, schema, name) = (text("catalogname"), text("schemaname"), text("relname"));
        if !catalog.is_empty() {
            return Err(refused(
                SqlObjectKind::Relation,
                format!("{catalog}.{schema}.{name}"),
            ));
        }
        if schema.is_empty() {
            if ctes.iter().any(|c| c == name) {
                return Ok(());
            }
            return Err(refused(SqlObjectKind::Relation, name));
        }
        if (self.table_allowed)(schema, name) {
            Ok(())
        } else {
            Err(refused(SqlObjectKind::Relation, format!("{schema}.{name}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_only(schema: &str, table: &str) -> bool {
        schema == "tenant_memory" && ["threads", "messages", "kv", "checkpoints"].contains(&table)
    }

    fn verdict(sql: &str) -> Result<()> {
        check(sql, &memory_only)
    }

    fn refused_object(sql: &str) -> (SqlObjectKind, String) {
        match verdict(sql) {
            Err(Error::SqlObjectNotAllowed { kind, name }) => (kind, name),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn plain_queries_over_memory_tables_pass() {
        for sql in [
            "SELECT count(*) AS n FROM tenant_memory.messages",
            "select m.seq, m.content->>'text' from tenant_memory.messages m where m.seq > 3 order by 1 limit 5",
            "WITH t AS (SELECT id FROM tenant_memory.threads) SELECT count(*) FROM t",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
            "SELECT lower(key), jsonb_typeof(value) FROM tenant_memory.kv UNION SELECT 'a', 'b'",
            "SELECT date_trunc('day', created_at)::date, count(*) FROM tenant_memory.messages GROUP BY 1",
            "SELECT row_number() OVER (PARTITION BY thread_id ORDER BY seq) FROM tenant_memory.messages",
            "SELECT * FROM tenant_memory.threads t JOIN tenant_memory.messages m ON m.thread_id = t.id",
            "SELECT EXTRACT(year FROM now()), CURRENT_DATE, coalesce(NULL, 1), greatest(1, 2)",
            "SELECT x FROM generate_series(1, 3) AS g(x) WHERE x IN (SELECT 2)",
            "VALUES (1), (2)",
            "TABLE tenant_memory.kv",
            "SELECT 1 WHERE 'a' LIKE 'a%' AND 'b' ~ 'b' AND 1 BETWEEN 0 AND 2",
        ] {
            assert!(verdict(sql).is_ok(), "{sql}: {:?}", verdict(sql));
        }
    }

    #[test]
    fn catalogs_statistics_and_unlisted_tables_are_refused_by_name() {
        for (sql, name) in [
            ("SELECT query FROM pg_stat_activity", "pg_stat_activity"),
            (
                "SELECT * FROM pg_catalog.pg_stat_activity",
                "pg_catalog.pg_stat_activity",
            ),
            (
                "SELECT * FROM information_schema.tables",
                "information_schema.tables",
            ),
            (
                "SELECT * FROM tenant_sdk.context_keys",
                "tenant_sdk.context_keys",
            ),
            ("SELECT * FROM pg_sequences", "pg_sequences"),
            ("SELECT * FROM public.app_notes", "public.app_notes"),
            ("SELECT * FROM threads", "threads"),
            ("SELECT * FROM db.tenant_memory.kv", "db.tenant_memory.kv"),
            // A CTE name is only visible after its definition.
            (
                "WITH a AS (SELECT * FROM pg_class), pg_class AS (SELECT 1) SELECT * FROM a",
                "pg_class",
            ),
            (
                "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x",
                "x",
            ),
        ] {
            assert_eq!(
                refused_object(sql),
                (SqlObjectKind::Relation, name.into()),
                "{sql}"
            );
        }
    }

    #[test]
    fn server_wide_functions_are_refused_by_name() {
        for (sql, name) in [
            ("SELECT pg_cancel_backend(1)", "pg_cancel_backend"),
            ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
            ("SELECT pg_sleep(1)", "pg_sleep"),
            (
                "SELECT current_setting('tenant_sdk.ctx')",
                "current_setting",
            ),
            (
                "SELECT set_config('tenant_sdk.ctx', 'x', true)",
                "set_config",
            ),
            (
                "SELECT pg_catalog.set_config('a.b', 'x', false)",
                "pg_catalog.set_config",
            ),
            ("SELECT lo_import('/etc/passwd')", "lo_import"),
            ("SELECT lo_create(0)", "lo_create"),
            (
                "SELECT query_to_xml('select 1', true, true, '')",
                "query_to_xml",
            ),
            ("SELECT nextval('s')", "nextval"),
            ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
            ("SELECT pg_read_file('x')", "pg_read_file"),
            ("SELECT pg_notify('c', 'x')", "pg_notify"),
            ("SELECT dblink('x', 'y')", "dblink"),
            ("SELECT public.lower('x')", "public.lower"),
            (
                "SELECT count(*) FROM tenant_memory.kv WHERE pg_sleep(1) IS NULL",
                "pg_sleep",
            ),
        ] {
            assert_eq!(
                refused_object(sql),
                (SqlObjectKind::Function, name.into()),
                "{sql}"
            );
        }
        assert_eq!(
            refused_object("SELECT current_user").0,
            SqlObjectKind::Function
        );
    }

    #[test]
    fn cursors_locks_casts_and_other_constructs_are_refused() {
        for (sql, kind) in [
            ("SELECT 'pg_class'::regclass", SqlObjectKind::Type),
            ("SELECT '<a/>'::xml", SqlObjectKind::Type),
            ("SELECT 1 OPERATOR(public.+) 1", SqlObjectKind::Operator),
            (
                "SELECT * FROM tenant_memory.kv FOR UPDATE",
                SqlObjectKind::Construct,
            ),
            (
                "SELECT * INTO stash FROM tenant_memory.kv",
                SqlObjectKind::Construct,
            ),
            ("SELECT xmlelement(name a)", SqlObjectKind::Construct),
            ("SELECT $1", SqlObjectKind::Construct),
            (
                "SELECT * FROM tenant_memory.kv TABLESAMPLE SYSTEM (50)",
                SqlObjectKind::Construct,
            ),
            (
                "WITH d AS (DELETE FROM tenant_memory.kv RETURNING *) SELECT * FROM d",
                SqlObjectKind::Construct,
            ),
        ] {
            assert_eq!(refused_object(sql).0, kind, "{sql}");
        }
        for sql in [
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "DELETE FROM tenant_memory.kv",
            "SET tenant_sdk.ctx = 'x'",
            "LISTEN x",
            "SELECT 1; SELECT 2",
            "PREPARE p AS SELECT 1",
            "select from where",
            "",
        ] {
            assert!(
                matches!(verdict(sql), Err(Error::SqlNotAllowed(_))),
                "{sql}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let sql = format!("SELECT {}1{}", "(SELECT ".repeat(400), ")".repeat(400));
        assert!(verdict(&sql).is_err());
        let sql = format!("SELECT {}1{}", "(".repeat(2000), ")".repeat(2000));
        let _ = verdict(&sql);
    }
}
