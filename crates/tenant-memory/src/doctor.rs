//! [`doctor`]: checks a database for the mistakes that quietly disable
//! row-level security, from the point of view of the role the pool uses.

use std::fmt;

use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::Result;
use crate::predicate;

/// The tenant column [`doctor`] looks for.
pub const DEFAULT_TENANT_COLUMN: &str = "tenant_id";

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look; isolation still holds.
    Warning,
    /// Isolation does not hold (or does not hold for this role).
    Error,
}

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A table with a tenant column does not `ENABLE ROW LEVEL SECURITY`.
    RlsNotEnabled,
    /// RLS is enabled but not `FORCE`d: the table owner bypasses it.
    RlsNotForced,
    /// RLS is on but the table has no policy (every row is hidden).
    NoPolicy,
    /// No policy restricts reads with `USING`.
    NoUsingPolicy,
    /// No policy checks writes with `WITH CHECK`.
    NoWithCheckPolicy,
    /// A permissive policy's predicate is not `tenant_id = <the SDK's
    /// verified tenant>` (possibly AND-ed with more conditions): keyed on a
    /// raw `current_setting` (which any role can set), on another function,
    /// or with an `OR` escape. Checked by parsing the predicate.
    PolicyNotKeyedOnSignedContext,
    /// A unique or foreign-key constraint does not lead with the tenant
    /// column: its violations reveal other tenants' values.
    ConstraintNotLedByTenant,
    /// The connected role may `TRUNCATE` a tenant table (TRUNCATE ignores
    /// row-level security).
    TruncateAllowed,
    /// The connected role may create temporary tables (session state that
    /// outlives a transaction on a pooled connection).
    TempAllowed,
    /// The connected role may create objects in the database or a schema
    /// (functions and operators that shadow built-ins, tables outside RLS).
    CreateAllowed,
    /// A role- or database-level default sets the context setting.
    ContextSettingDefault,
    /// A view runs with its owner's rights (no `security_invoker`), so
    /// selecting from it bypasses the callers' row-level security.
    ViewWithoutSecurityInvoker,
    /// A materialized view stores rows outside row-level security.
    MaterializedView,
    /// The connected role is a superuser: RLS does not apply to it.
    RoleIsSuperuser,
    /// The connected role has `BYPASSRLS`.
    RoleBypassesRls,
    /// The connected role owns tenant tables (and can disable RLS on them,
    /// and is not bound by it unless `FORCE`d).
    RoleOwnsTenantTables,
    /// The connected role can read the context verification keys.
    ContextKeysReadable,
}

/// One problem, on one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The object (`schema.table`, a view, or the role).
    pub object: String,
    /// What is wrong.
    pub problem: Problem,
}

/// The connected role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleReport {
    /// `current_user`.
    pub name: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolbypassrls`.
    pub bypass_rls: bool,
    /// Whether it owns (or is a member of the owner of) any tenant table.
    pub owns_tenant_tables: bool,
    /// Whether it can `SELECT` from `tenant_sdk.context_keys` (`None`: the
    /// table does not exist, migrations have not run).
    pub can_read_context_keys: Option<bool>,
    /// Whether it may create temporary tables in the database.
    pub can_create_temp: bool,
    /// Whether it may create schemas in the database.
    pub can_create_in_database: bool,
    /// Schemas it may create objects in.
    pub creatable_schemas: Vec<String>,
    /// Whether a role- or database-level default sets `tenant_sdk.*`.
    pub context_setting_default: bool,
}

/// A policy on a tenant table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    /// Its name.
    pub name: String,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Permissive (or restrictive).
    pub permissive: bool,
    /// The `USING` expression.
    pub using: Option<String>,
    /// The `WITH CHECK` expression.
    pub with_check: Option<String>,
}

/// A table with a tenant column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Owning role.
    pub owner: String,
    /// `ENABLE ROW LEVEL SECURITY`.
    pub rls_enabled: bool,
    /// `FORCE ROW LEVEL SECURITY`.
    pub rls_forced: bool,
    /// Its policies.
    pub policies: Vec<PolicyReport>,
}

/// A view or materialized view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViewReport {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Materialized.
    pub materialized: bool,
    /// `security_invoker` is set.
    pub security_invoker: bool,
}

/// What [`doctor`] found. Serialises to JSON for dashboards and CI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// The tenant column looked for.
    pub tenant_column: String,
    /// The connected role.
    pub role: RoleReport,
    /// Tables with the tenant column.
    pub tables: Vec<TableReport>,
    /// Views and materialized views outside the system schemas.
    pub views: Vec<ViewReport>,
    /// Everything wrong, errors first.
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    /// No finding of [`Severity::Error`].
    pub fn is_healthy(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Whether `object` has `problem`.
    pub fn has(&self, object: &str, problem: Problem) -> bool {
        self.findings
            .iter()
            .any(|f| f.object == object && f.problem == problem)
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "role {}: superuser={} bypassrls={} owns_tenant_tables={}",
            self.role.name, self.role.superuser, self.role.bypass_rls, self.role.owns_tenant_tables
        )?;
        writeln!(
            f,
            "{} table(s) with column {}",
            self.tables.len(),
            self.tenant_column
        )?;
        if self.findings.is_empty() {
            return writeln!(f, "no findings");
        }
        for finding in &self.findings {
            writeln!(
                f,
                "{:?}: {} {:?}",
                finding.severity, finding.object, finding.problem
            )?;
        }
        Ok(())
    }
}

const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

const ROLE_SQL: &str = "SELECT current_user::text AS name, r.rolsuper, r.rolbypassrls, \
        CASE WHEN to_regclass('tenant_sdk.context_keys') IS NULL THEN NULL \
             ELSE has_table_privilege('tenant_sdk.context_keys', 'SELECT') END AS keys_readable, \
        has_database_privilege(current_database(), 'TEMPORARY') AS temp, \
        has_database_privilege(current_database(), 'CREATE') AS create_db, \
        ARRAY(SELECT n.nspname::text FROM pg_namespace n \
               WHERE has_schema_privilege(n.oid, 'CREATE') \
                 AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \
               ORDER BY 1) AS create_schemas, \
        EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) AS c(setting) \
                 WHERE (s.setrole = 0 OR pg_has_role(current_user, s.setrole, 'MEMBER')) \
                   AND (s.setdatabase = 0 OR s.setdatabase = \
                        (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())) \
                   AND c.setting LIKE 'tenant\\_sdk.%') AS setting_default \
     FROM pg_roles r WHERE r.rolname = current_user";

const CONSTRAINTS_SQL: &str = "SELECT c.conname::text AS name \
     FROM pg_constraint c \
     WHERE c.conrelid = $1::oid AND c.contype IN ('p', 'u', 'f', 'x') \
       AND c.conkey[1] <> (SELECT a.attnum FROM pg_attribute a \
                            WHERE a.attrelid = $1::oid AND a.attname = $2) \
     UNION \
     SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
     WHERE x.indrelid = $1::oid AND x.indisunique AND x.indkey[0] <> \
           (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attname = $2) \
     ORDER BY 1";

const POLICIES_SQL: &str = "SELECT p.polname::text AS name, \
        CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' \
                      WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command, \
        p.polpermissive AS permissive, \
        pg_get_expr(p.polqual, p.polrelid) AS using_expr, \
        pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr \
     FROM pg_policy p WHERE p.polrelid = $1::oid ORDER BY p.polname";

fn tables_sql() -> String {
    format!(
        "SELECT c.oid::int8 AS oid, n.nspname::text AS schema, c.relname::text AS name, \
            pg_get_userbyid(c.relowner)::text AS owner, \
            c.relrowsecurity, c.relforcerowsecurity, \
            pg_has_role(current_user, c.relowner, 'USAGE') AS owned, \
            has_table_privilege(c.oid, 'TRUNCATE') AS truncate \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND {SYSTEM_SCHEMAS} \
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                       AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped) \
         ORDER BY 2, 3"
    )
}

fn views_sql() -> String {
    format!(
        "SELECT n.nspname::text AS schema, c.relname::text AS name, c.relkind = 'm' AS materialized, \
            coalesce(c.reloptions, '{{}}'::text[]) AS options \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('v', 'm') AND {SYSTEM_SCHEMAS} \
         ORDER BY 1, 2"
    )
}

/// [`doctor_with_column`] for the column [`DEFAULT_TENANT_COLUMN`].
///
/// # Errors
///
/// Database errors.
pub async fn doctor(pool: &PgPool) -> Result<DoctorReport> {
    doctor_with_column(pool, DEFAULT_TENANT_COLUMN).await
}

/// Reports, for the role `pool` connects as: every table with a column
/// named `tenant_column` that lacks `ENABLE` or `FORCE ROW LEVEL SECURITY`,
/// a `USING` policy, a `WITH CHECK` policy, or policies keyed on the signed
/// context; views without `security_invoker` (except the SDK's own
/// `tenant_sdk.verified_context`) and materialized views; and
/// whether the role is superuser, `BYPASSRLS`, a tenant-table owner, or
/// can read the context keys. Run it with the application pool in CI and
/// at start-up.
///
/// # Errors
///
/// Database errors.
pub async fn doctor_with_column(pool: &PgPool, tenant_column: &str) -> Result<DoctorReport> {
    let mut findings = Vec::new();
    // One transaction with a pinned path: pg_get_expr then qualifies every
    // name outside pg_catalog, so the predicate parser sees where it lives.
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("SET LOCAL search_path = pg_catalog")
        .execute(&mut *tx)
        .await?;
    let conn = &mut *tx;

    let row = sqlx::query(ROLE_SQL)
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    let mut role = RoleReport {
        name: row.try_get("name")?,
        superuser: row.try_get("rolsuper")?,
        bypass_rls: row.try_get("rolbypassrls")?,
        owns_tenant_tables: false,
        can_read_context_keys: row.try_get("keys_readable")?,
        can_create_temp: row.try_get("temp")?,
        can_create_in_database: row.try_get("create_db")?,
        creatable_schemas: row.try_get("create_schemas")?,
        context_setting_default: row.try_get("setting_default")?,
    };

    let mut tables = Vec::new();
    for row in sqlx::query(sqlx::AssertSqlSafe(tables_sql()))
        .persistent(false)
        .bind(tenant_column)
        .fetch_all(&mut *conn)
        .await?
    {
        let oid: i64 = row.try_get("oid")?;
        let owned: bool = row.try_get("owned")?;
        role.owns_tenant_tables |= owned;
        let unled: Vec<String> = sqlx::query_scalar(CONSTRAINTS_SQL)
            .persistent(false)
            .bind(oid)
            .bind(tenant_column)
            .fetch_all(&mut *conn)
            .await?;
        let truncate: bool = row.try_get("truncate")?;
        let policies = sqlx::query(POLICIES_SQL)
            .persistent(false)
            .bind(oid)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|p| {
                Ok(PolicyReport {
                    name: p.try_get("name")?,
                    command: p.try_get("command")?,
                    permissive: p.try_get("permissive")?,
                    using: p.try_get("using_expr")?,
                    with_check: p.try_get("check_expr")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let table = TableReport {
            schema: row.try_get("schema")?,
            name: row.try_get("name")?,
            owner: row.try_get("owner")?,
            rls_enabled: row.try_get("relrowsecurity")?,
            rls_forced: row.try_get("relforcerowsecurity")?,
            policies,
        };
        table_findings(&table, tenant_column, &mut findings);
        let object = format!("{}.{}", table.schema, table.name);
        for constraint in unled {
            findings.push(finding(
                Severity::Error,
                format!("{object} ({constraint})"),
                Problem::ConstraintNotLedByTenant,
            ));
        }
        if truncate {
            findings.push(finding(Severity::Error, object, Problem::TruncateAllowed));
        }
        tables.push(table);
    }

    let mut views = Vec::new();
    for row in sqlx::query(sqlx::AssertSqlSafe(views_sql()))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?
    {
        let options: Vec<String> = row.try_get("options")?;
        let view = ViewReport {
            schema: row.try_get("schema")?,
            name: row.try_get("name")?,
            materialized: row.try_get("materialized")?,
            security_invoker: options.iter().any(|o| is_security_invoker(o)),
        };
        let object = format!("{}.{}", view.schema, view.name);
        if view.materialized {
            findings.push(finding(
                Severity::Warning,
                object,
                Problem::MaterializedView,
            ));
        } else if !view.security_invoker && !is_sdk_verifier(&view) {
            findings.push(finding(
                Severity::Error,
                object,
                Problem::ViewWithoutSecurityInvoker,
            ));
        }
        views.push(view);
    }

    tx.rollback().await?;
    role_findings(&role, &mut findings);
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(DoctorReport {
        tenant_column: tenant_column.to_owned(),
        role,
        tables,
        views,
        findings,
    })
}

fn finding(severity: Severity, object: String, problem: Problem) -> Finding {
    Finding {
        severity,
        object,
        problem,
    }
}

fn table_findings(table: &TableReport, tenant_column: &str, findings: &mut Vec<Finding>) {
    let object = format!("{}.{}", table.schema, table.name);
    let mut add = |severity, problem| findings.push(finding(severity, object.clone(), problem));
    if !table.rls_enabled {
        add(Severity::Error, Problem::RlsNotEnabled);
        return;
    }
    if !table.rls_forced {
        add(Severity::Error, Problem::RlsNotForced);
    }
    if table.policies.is_empty() {
        add(Severity::Warning, Problem::NoPolicy);
        return;
    }
    // Permissive policies are OR-ed: every one that applies must be keyed on
    // the verified tenant. Restrictive ones can only narrow.
    let permissive = || table.policies.iter().filter(|p| p.permissive);
    let reads =
        |p: &&PolicyReport| matches!(p.command.as_str(), "ALL" | "SELECT" | "UPDATE" | "DELETE");
    let writes = |p: &&PolicyReport| matches!(p.command.as_str(), "ALL" | "INSERT" | "UPDATE");
    if !permissive().filter(reads).any(|p| p.using.is_some()) {
        add(Severity::Error, Problem::NoUsingPolicy);
    }
    // Without WITH CHECK, ALL and UPDATE policies check writes with USING.
    let check = |p: &PolicyReport| p.with_check.clone().or_else(|| p.using.clone());
    if !permissive().filter(writes).any(|p| check(p).is_some()) {
        add(Severity::Error, Problem::NoWithCheckPolicy);
    }
    let scoped = sdk_memory_table(table);
    let keyed = |e: Option<String>| {
        e.is_none_or(|e| predicate::keyed_on_verified_tenant(&e, tenant_column, scoped))
    };
    let all_keyed = permissive()
        .all(|p| (!reads(&p) || keyed(p.using.clone())) && (!writes(&p) || keyed(check(p))));
    if !all_keyed {
        add(Severity::Error, Problem::PolicyNotKeyedOnSignedContext);
    }
}

/// The SDK's own memory tables, whose policies may use the scope-key form.
fn sdk_memory_table(table: &TableReport) -> bool {
    crate::platform::MEMORY_TABLES
        .iter()
        .any(|(schema, name)| table.schema == *schema && table.name == *name)
}

fn role_findings(role: &RoleReport, findings: &mut Vec<Finding>) {
    let object = format!("role {}", role.name);
    if role.superuser {
        findings.push(finding(
            Severity::Error,
            object.clone(),
            Problem::RoleIsSuperuser,
        ));
    }
    if role.bypass_rls {
        findings.push(finding(
            Severity::Error,
            object.clone(),
            Problem::RoleBypassesRls,
        ));
    }
    let mut add = |problem| findings.push(finding(Severity::Error, object.clone(), problem));
    if role.owns_tenant_tables {
        add(Problem::RoleOwnsTenantTables);
    }
    if role.can_read_context_keys == Some(true) {
        add(Problem::ContextKeysReadable);
    }
    if role.can_create_temp {
        add(Problem::TempAllowed);
    }
    if role.context_setting_default {
        add(Problem::ContextSettingDefault);
    }
    if role.can_create_in_database {
        add(Problem::CreateAllowed);
    }
    for schema in &role.creatable_schemas {
        findings.push(finding(
            Severity::Error,
            format!("schema {schema}"),
            Problem::CreateAllowed,
        ));
    }
}

/// The SDK's own verifier views (migration 0001) run with their owner's
/// rights on purpose: to read the verification keys for the application
/// role. They read no tenant table, so they bypass no row-level security.
fn is_sdk_verifier(view: &ViewReport) -> bool {
    view.schema == "tenant_sdk"
        && matches!(view.name.as_str(), "verified_context" | "bound_tenant")
        && !view.materialized
}

fn is_security_invoker(option: &str) -> bool {
    let Some((name, value)) = option.split_once('=') else {
        return false;
    };
    name.eq_ignore_ascii_case("security_invoker")
        && matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "on" | "1" | "yes"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_invoker_option_spellings() {
        for yes in [
            "security_invoker=true",
            "security_invoker=on",
            "security_invoker=1",
        ] {
            assert!(is_security_invoker(yes), "{yes}");
        }
        for no in ["security_invoker=false", "security_barrier=true", "junk"] {
            assert!(!is_security_invoker(no), "{no}");
        }
    }
}
