//! Attacks on tenant isolation. Each asserts the specific error (or zero
//! rows where that is the promise) AND that no tenant's data changed. The
//! same suite runs through PgBouncer (`pgbouncer.rs`) and on Citus
//! (`citus.rs`).

mod support;

/// The application pool straight to PostgreSQL.
async fn fixture() -> Option<support::Fixture> {
    Some(support::Fixture::shared().await)
}

include!("suites/attacks.rs");
