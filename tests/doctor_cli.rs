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
    let admin = MemoryAdmin::new(
        &owner,
        &issuer.subkey(Purpose::Postgres),
        &issuer.authority(),
    )
    .unwrap();
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
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("usage: tenant-doctor"), "{stderr}");
    assert!(stderr.contains("--bogus"), "{stderr}");
}

#[tokio::test]
async fn doctor_checks_the_tenant_index_of_embedded_collections() {
    use tenant_sdk::retrieval::{
        CollectionSpec, Document, EdgeBackend, Retrieval, RetrievalClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let retrieval = Retrieval::builder(EdgeBackend::open(dir.path()).unwrap())
        .authority(issuer.authority())
        .collection(CollectionSpec::new("docs", 8).unwrap())
        .keys(DerivedKeyProvider::new(MasterKey::generate(
            KeyId::new("d").unwrap(),
        )))
        .build()
        .await
        .unwrap();
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("p").unwrap())
        .capabilities(Capabilities::none().with_collections(["docs"]).unwrap())
        .issue()
        .unwrap();
    let client = RetrievalClient::builder()
        .backend(&retrieval)
        .collection("docs")
        .tenant(&ctx)
        .build()
        .unwrap();
    client
        .upsert([Document::new("a", vec![0.5; 8], "hello")])
        .await
        .unwrap();
    drop(client);
    drop(retrieval);
    let out = Command::new(env!("CARGO_BIN_EXE_tenant-doctor"))
        .args(["--qdrant-path", dir.path().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let collections = report["qdrant"]["report"].as_array().unwrap();
    assert!(!collections.is_empty(), "{report}");
    assert!(collections
        .iter()
        .all(|c| c["tenant_index_is_tenant"] == true));

    let not_a_backend = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tenant-doctor"))
        .args(["--qdrant-path", not_a_backend.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
