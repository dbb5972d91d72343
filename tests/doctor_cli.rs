//! `tenant-doctor` against a real PostgreSQL: healthy after the SDK's
//! migrations, unhealthy (exit 1) once an unprotected tenant table appears.
#![cfg(feature = "cli")]

use std::process::Command;

use sqlx::postgres::PgPoolOptions;
use tenant_sdk::memory::MemoryAdmin;
use tenant_sdk::*;
use tenant_testkit::{TestPostgres, APP_ROLE};

fn doctor(url: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenant-doctor"))
        .args(["--database-url", url, "--json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code().unwrap(), json)
}

#[tokio::test]
async fn doctor_flags_an_unprotected_tenant_table() {
    let pg = TestPostgres::start().unwrap();
    let owner = PgPoolOptions::new().connect(pg.owner_url()).await.unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let admin = MemoryAdmin::new(&owner, &issuer.subkey(Purpose::Postgres)).unwrap();
    admin.migrate(APP_ROLE).await.unwrap();

    let (code, report) = doctor(pg.app_url());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["database"]["healthy"], true);
    assert_eq!(report["database"]["report"]["role"]["bypass_rls"], false);

    sqlx::raw_sql(
        "CREATE TABLE public.invoices (tenant_id uuid NOT NULL, amount int);
         GRANT SELECT ON public.invoices TO tenant_app;",
    )
    .execute(&owner)
    .await
    .unwrap();
    let (code, report) = doctor(pg.app_url());
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["healthy"], false);
    let findings = report["database"]["report"]["findings"].to_string();
    assert!(findings.contains("invoices"), "{findings}");
}

#[test]
fn doctor_rejects_unknown_arguments_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenant-doctor"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: tenant-doctor"));
}
