//! The error type returned by every fallible operation of the testkit.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, configuring or stopping a
/// test service.
///
/// Each variant carries enough context (paths searched, log excerpts, the
/// command that failed) to diagnose a broken test environment without
/// re-running anything. Run `.ci/setup-services.sh` to install the missing
/// pieces on a Debian machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// No directory containing both `initdb` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries (initdb + postgres) not found; searched: {}; \
         install PostgreSQL 15 (e.g. run .ci/setup-services.sh) or set {}",
        display_paths(searched),
        crate::postgres::PG_BIN_DIR_ENV
    )]
    PostgresNotFound {
        /// Every directory that was inspected, in search order.
        searched: Vec<PathBuf>,
    },

    /// No `redis-server` executable was found.
    #[error(
        "redis-server not found; searched: {}; install the Debian package \
         `redis-server` (e.g. run .ci/setup-services.sh) or set {}",
        display_paths(searched),
        crate::redis::REDIS_SERVER_ENV
    )]
    RedisNotFound {
        /// Every candidate path that was inspected, in search order.
        searched: Vec<PathBuf>,
    },

    /// No Qdrant executable was found (see `tenant_testkit::qdrant`).
    ///
    /// Suites with a Qdrant-server half skip it on this error.
    #[error(
        "Qdrant server binary not found; searched: {}; set {} to an executable \
         or {} to a directory holding bin/qdrant-<version>.gz",
        display_paths(searched),
        crate::qdrant::QDRANT_BIN_ENV,
        crate::qdrant::SHARED_DIR_ENV
    )]
    QdrantNotFound {
        /// Every path that was inspected, in search order.
        searched: Vec<PathBuf>,
    },

    /// No `pgbouncer` executable was found.
    #[error(
        "pgbouncer not found; searched: {}; install the Debian package \
         `pgbouncer` (e.g. run .ci/setup-services.sh) or set {}",
        display_paths(searched),
        crate::pgbouncer::PGBOUNCER_ENV
    )]
    PgBouncerNotFound {
        /// Every candidate path that was inspected, in search order.
        searched: Vec<PathBuf>,
    },

    /// The Citus extension is not installed into the PostgreSQL
    /// installation the testkit uses.
    ///
    /// Suites with a Citus half skip it on this error.
    #[error(
        "the Citus extension is not installed for PostgreSQL in {}; missing: {}; \
         run .ci/setup-services.sh (it installs Citus from <shared>/pg/citus-*-pg15.tar.gz)",
        bin_dir.display(),
        display_paths(missing)
    )]
    CitusNotFound {
        /// The PostgreSQL binaries directory the extension was looked up for.
        bin_dir: PathBuf,
        /// The extension files that are missing.
        missing: Vec<PathBuf>,
    },

    /// A node index beyond the cluster's size.
    #[error("no node {index}: the cluster has {nodes} nodes")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// The number of nodes.
        nodes: usize,
    },

    /// The unprivileged system user a service must run as does not exist.
    ///
    /// PostgreSQL refuses to run as root, so when the tests run as root the
    /// server is started as this user instead.
    #[error(
        "system user `{user}` not found; it is needed to run the service when \
         the tests run as root (create it with `useradd --system {user}` or run \
         .ci/setup-services.sh)"
    )]
    UserNotFound {
        /// The user name that was looked up.
        user: String,
    },

    /// An operating-system level operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A helper command (such as `initdb`) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line that was run.
        command: String,
        /// How the command ended.
        status: String,
        /// Its combined standard output and standard error.
        output: String,
    },

    /// The service process exited before it became ready.
    #[error("{service} exited during startup ({status}); log:\n{log}")]
    StartFailed {
        /// Which service (`postgres`, `redis-server`).
        service: &'static str,
        /// How the process ended.
        status: String,
        /// The tail of the service's log.
        log: String,
    },

    /// The service did not become ready within the allowed time.
    #[error("{service} did not accept connections within {waited:?}; log:\n{log}")]
    Timeout {
        /// Which service (`postgres`, `redis-server`).
        service: &'static str,
        /// How long the testkit waited.
        waited: Duration,
        /// The tail of the service's log.
        log: String,
    },

    /// A SQL statement used to provision roles or databases failed.
    #[error("{context}: {source}")]
    Sql {
        /// What the testkit was doing.
        context: String,
        /// The underlying driver error.
        #[source]
        source: sqlx::Error,
    },

    /// A database name that is not a plain lower-case SQL identifier.
    #[error(
        "invalid database name {name:?}: use 1-63 characters from [a-z0-9_], \
         not starting with a digit"
    )]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },

    /// The operation needs a running service, but it has been stopped.
    #[error("{service} is not running")]
    NotRunning {
        /// Which service (`redis-server`).
        service: &'static str,
    },
}

impl TestkitError {
    /// Builds an [`TestkitError::Io`] with a description of what failed.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds a [`TestkitError::Sql`] with a description of what failed.
    pub(crate) fn sql(context: impl Into<String>, source: sqlx::Error) -> Self {
        TestkitError::Sql {
            context: context.into(),
            source,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(nothing)".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
