//! `tenant-doctor`: checks a deployment's isolation set-up.
//!
//! ```text
//! tenant-doctor [--database-url URL] [--qdrant-path DIR] [--sandbox] [--json]
//! ```
//!
//! * `--database-url` (or `DATABASE_URL`): connects as the *application*
//!   role and reports tables with a tenant column lacking ENABLE/FORCE row
//!   level security or policies with USING and WITH CHECK, views without
//!   `security_invoker`, and whether the role is superuser, owner or
//!   BYPASSRLS.
//! * `--qdrant-path`: opens the root directory of an embedded qdrant-edge
//!   backend and checks that every collection indexes `tenant_id` with a
//!   keyword index marked `is_tenant`.
//! * `--sandbox`: probes the kernel for the namespaces, Landlock and seccomp
//!   the tool sandbox needs (it always runs when nothing else is asked).
//!
//! Exit status: 0 healthy, 1 problems found, 2 usage or connection error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{json, Value};

/// Checks a deployment's isolation set-up: the application role's
/// database, embedded qdrant-edge collections, the kernel's sandbox
/// support. With no option, checks the sandbox.
#[derive(Parser)]
#[command(name = "tenant-doctor", version)]
struct Args {
    /// PostgreSQL URL of the *application* role.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Root directory of an embedded qdrant-edge backend.
    #[arg(long, value_name = "DIR")]
    qdrant_path: Option<PathBuf>,
    /// Probe the kernel for the tool sandbox's layers.
    #[arg(long)]
    sandbox: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_args() -> Result<Args, clap::Error> {
    let mut args = Args::try_parse()?;
    if args.database_url.is_none() && args.qdrant_path.is_none() {
        args.sandbox = true;
    }
    Ok(args)
}

/// One section of the report: its JSON form, human lines and health.
struct Section {
    name: &'static str,
    healthy: bool,
    json: Value,
    lines: Vec<String>,
}

#[cfg(target_os = "linux")]
fn sandbox_section() -> Section {
    let s = tenant_sdk::tools::SandboxSupport::detect();
    let healthy = s.namespaces && s.landlock_enforced && s.seccomp_enforced;
    let mark = |ok: bool| if ok { "ok " } else { "MISSING" };
    let cgroups = s.cgroups.as_ref().map(|c| format!("{c:?}"));
    Section {
        name: "sandbox",
        healthy,
        json: json!({
            "namespaces": s.namespaces,
            "landlock_abi": s.landlock_abi,
            "landlock_enforced": s.landlock_enforced,
            "seccomp_enforced": s.seccomp_enforced,
            "minimal_root": s.minimal_root,
            "cgroups": cgroups,
        }),
        lines: vec![
            format!(
                "{} user/mount/pid/net/ipc/uts namespaces",
                mark(s.namespaces)
            ),
            format!(
                "{} Landlock enforced (ABI {})",
                mark(s.landlock_enforced),
                s.landlock_abi.map_or("none".into(), |v| v.to_string())
            ),
            format!("{} seccomp filter enforced", mark(s.seccomp_enforced)),
            format!(
                "{} minimal root (fresh root with read-only system binds)",
                mark(s.minimal_root)
            ),
            format!(
                "{} per-sandbox cgroups{}",
                mark(s.cgroups.is_some()),
                cgroups.map_or(String::new(), |c| format!(" ({c})"))
            ),
        ],
    }
}

#[cfg(not(target_os = "linux"))]
fn sandbox_section() -> Section {
    Section {
        name: "sandbox",
        healthy: false,
        json: json!({ "supported": false }),
        lines: vec!["MISSING the tool sandbox needs Linux (namespaces, Landlock, seccomp)".into()],
    }
}

fn qdrant_section(root: &std::path::Path) -> Result<Section, String> {
    if !root.join("collections").is_dir() {
        return Err(format!(
            "{} is not the root of an embedded qdrant-edge backend",
            root.display()
        ));
    }
    let backend = tenant_sdk::retrieval::EdgeBackend::open(root).map_err(|e| e.to_string())?;
    let collections = backend.inspect().map_err(|e| e.to_string())?;
    let lines = collections
        .iter()
        .map(|c| {
            format!(
                "{} {}: {} point(s), tenant_id index: {}, is_tenant: {}",
                if c.is_healthy() { "ok " } else { "BAD" },
                c.physical_name,
                c.points,
                c.tenant_index,
                c.tenant_index_is_tenant
            )
        })
        .collect();
    Ok(Section {
        name: "qdrant",
        healthy: collections.iter().all(|c| c.is_healthy()),
        json: serde_json::to_value(&collections).map_err(|e| e.to_string())?,
        lines,
    })
}

async fn database_section(url: &str) -> Result<Section, String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    let report = tenant_sdk::memory::doctor(&pool)
        .await
        .map_err(|e| format!("doctor query failed: {e}"))?;
    let mut lines = vec![format!(
        "role {}: superuser={} bypassrls={} owns tenant tables={}",
        report.role.name,
        report.role.superuser,
        report.role.bypass_rls,
        report.role.owns_tenant_tables
    )];
    lines.push(format!(
        "{} table(s) with a `{}` column, {} view(s)",
        report.tables.len(),
        report.tenant_column,
        report.views.len()
    ));
    for f in &report.findings {
        lines.push(format!("{:?}: {} — {:?}", f.severity, f.object, f.problem));
    }
    Ok(Section {
        name: "database",
        healthy: report.is_healthy(),
        json: serde_json::to_value(&report).map_err(|e| e.to_string())?,
        lines,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut sections = Vec::new();
    if let Some(url) = &args.database_url {
        match database_section(url).await {
            Ok(s) => sections.push(s),
            Err(e) => {
                eprintln!("tenant-doctor: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(path) = &args.qdrant_path {
        match qdrant_section(path) {
            Ok(s) => sections.push(s),
            Err(e) => {
                eprintln!("tenant-doctor: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if args.sandbox {
        sections.push(sandbox_section());
    }
    let healthy = sections.iter().all(|s| s.healthy);
    if args.json {
        let mut out = serde_json::Map::new();
        for s in &sections {
            out.insert(
                s.name.into(),
                json!({"healthy": s.healthy, "report": s.json}),
            );
        }
        out.insert("healthy".into(), json!(healthy));
        println!("{}", Value::Object(out));
    } else {
        for s in &sections {
            println!(
                "[{}] {}",
                s.name,
                if s.healthy { "healthy" } else { "PROBLEMS" }
            );
            for line in &s.lines {
                println!("  {line}");
            }
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
