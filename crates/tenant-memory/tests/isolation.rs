//! Isolation suite: three tenants, randomized operations (proptest), and
//! after every run each tenant sees exactly its own data through every API
//! and through the SQL tool, and nothing of the others'. The same suite runs
//! through PgBouncer (`pgbouncer.rs`) and on Citus (`citus.rs`).

mod support;

/// Randomized runs.
const ISOLATION_CASES: u32 = 12;

/// The application pool straight to PostgreSQL.
async fn fixture() -> Option<support::Fixture> {
    Some(support::Fixture::shared().await)
}

include!("suites/isolation.rs");
