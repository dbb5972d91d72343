//! [`protect_table`]: row-level security DDL for the application's own
//! tables, keyed on the same signed context as the memory tables.

/// The name of the policy [`protect_table`] creates.
pub const POLICY_NAME: &str = "tenant_sdk_isolation";

/// Quotes an SQL identifier: wraps it in double quotes and doubles any
/// double quote inside, so any string names exactly one identifier.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// DDL that puts the table `table` (in the search path; see
/// [`protect_table_in_schema`] for a schema) under row-level security keyed
/// on the signed context: `ENABLE` + `FORCE ROW LEVEL SECURITY` and one
/// policy with both `USING` and `WITH CHECK` comparing `tenant_column`
/// (type `uuid`) with the tenant of the verified signed context
/// (`tenant_sdk.verified_context`, as the SDK's own tables do). Run it as the table's
/// owner; it is idempotent. Identifiers are quoted, so the names are taken
/// literally (case-sensitive).
///
/// ```
/// let ddl = tenant_memory::protect_table("notes", "tenant_id");
/// assert!(ddl.contains(r#"ALTER TABLE "notes" FORCE ROW LEVEL SECURITY"#));
/// assert!(ddl.contains("WITH CHECK"));
/// ```
pub fn protect_table(table: &str, tenant_column: &str) -> String {
    protect(&quote_ident(table), tenant_column)
}

/// Like [`protect_table`] for `schema.table`.
pub fn protect_table_in_schema(schema: &str, table: &str, tenant_column: &str) -> String {
    protect(
        &format!("{}.{}", quote_ident(schema), quote_ident(table)),
        tenant_column,
    )
}

fn protect(table: &str, tenant_column: &str) -> String {
    let column = quote_ident(tenant_column);
    format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
         DROP POLICY IF EXISTS {POLICY_NAME} ON {table};\n\
         CREATE POLICY {POLICY_NAME} ON {table} FOR ALL\n    \
         USING ({column} = (SELECT tenant FROM tenant_sdk.verified_context))\n    \
         WITH CHECK ({column} = (SELECT tenant FROM tenant_sdk.verified_context));\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_with_quotes_cannot_break_out() {
        assert_eq!(
            quote_ident(r#"a"; DROP TABLE x; --"#),
            r#""a""; DROP TABLE x; --""#
        );
        let ddl = protect_table(r#"evil"name"#, r#"t"id"#);
        assert!(ddl.contains(r#"ALTER TABLE "evil""name" ENABLE"#));
        assert!(ddl.contains(r#"USING ("t""id" = "#));
    }

    #[test]
    fn schema_qualified_names_are_quoted_separately() {
        let ddl = protect_table_in_schema("app", "notes", "tenant_id");
        assert!(ddl.contains(r#"ON "app"."notes" FOR ALL"#));
    }
}
