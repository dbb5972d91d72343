//! Ephemeral Citus clusters: a coordinator and workers, each a
//! [`TestPostgres`] with `shared_preload_libraries = 'citus'`.
//!
//! [`TestCitus::start`] starts three PostgreSQL servers in parallel (the
//! coordinator and two workers) on free ports of 127.0.0.1, each provisioned
//! like a [`TestPostgres`]: the roles [`OWNER_ROLE`](crate::OWNER_ROLE) and
//! [`APP_ROLE`](crate::APP_ROLE) exist
//! on **every** node (created on each before the nodes are joined, so they
//! never depend on propagation), and every database is created on every
//! node with the same privileges and `pgcrypto`. In each database, Citus is
//! then set up: `CREATE EXTENSION citus` on every node, then on the
//! coordinator `citus_set_coordinator_host('127.0.0.1', <port>)` and
//! `citus_add_node('127.0.0.1', <worker port>)` for each worker.
//!
//! Clients connect to the coordinator ([`TestCitus::app_url`],
//! [`TestCitus::owner_url`]); workers are reachable directly
//! ([`TestCitus::worker_database`]) to look at shards and check what arrived
//! where.
//!
//! Databases: [`TestCitus::fresh_database`] is the equivalent of
//! [`TestPostgres::fresh_database`]: a new database on every node, joined
//! into its own Citus metadata, so tests can share one cluster
//! ([`TestCitus::shared`]) and still not see each other's tables.
//!
//! # Availability
//!
//! Citus is not part of Debian's PostgreSQL packages. `.ci/setup-services.sh`
//! installs it from `<shared>/pg/citus-<version>-pg15.tar.gz` when the shared
//! directory has it, and checks that the server loads it: an extension built
//! against newer point-release headers than the server needs symbols the
//! server lacks (the shared Citus 13.2.2 build needs PostgreSQL 15.20, not
//! 15.18), so the script then takes Debian's current `postgresql-15`, and
//! removes the extension again if it still does not load. Without the
//! extension files, every constructor returns [`TestkitError::CitusNotFound`]
//! (before starting anything), and suites skip their Citus half saying so.
//!
//! # Facts worth knowing
//!
//! * Roles created on the coordinator propagate to the workers (checked by
//!   this crate's tests); the testkit's own roles exist on every node anyway.
//! * `pgcrypto` is created up front by the superuser in every database on
//!   every node, as [`TestPostgres`] does. A non-owner's
//!   `CREATE EXTENSION IF NOT EXISTS pgcrypto` on the coordinator is still
//!   propagated by Citus and fails on the workers ("must be owner of
//!   extension pgcrypto"): migrations must not re-issue it there.
//! * Citus hides shard tables from `pg_class` on workers; set
//!   `citus.override_table_visibility = off` in a worker session to list
//!   them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::error::TestkitError;
use crate::postgres::{self, PostgresBinaries, TestDatabase, TestPostgres, DEFAULT_DATABASE};

/// The number of workers [`TestCitus::start`] runs.
pub const DEFAULT_WORKERS: usize = 2;

/// Server settings of every node. Each database with the extension runs a
/// Citus maintenance daemon (a background worker), so fresh databases need
/// more background workers than PostgreSQL's default of 8.
const NODE_SETTINGS: [&str; 3] = [
    "shared_preload_libraries=citus",
    "max_worker_processes=64",
    // Keep the shared machine quiet: no telemetry, no update checks.
    "citus.enable_statistics_collection=off",
];

/// Checks that the Citus extension is installed for `binaries`: its
/// library in the package library directory and its control file in the
/// extension directory (as reported by `pg_config` next to the real
/// `postgres`).
///
/// # Errors
///
/// [`TestkitError::CitusNotFound`] naming the missing files.
pub fn check_citus_installed(binaries: &PostgresBinaries) -> Result<(), TestkitError> {
    let (lib_dir, extension_dir) = extension_dirs(binaries);
    let missing: Vec<PathBuf> = [
        lib_dir.join("citus.so"),
        extension_dir.join("citus.control"),
    ]
    .into_iter()
    .filter(|path| !path.is_file())
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TestkitError::CitusNotFound {
            bin_dir: binaries.bin_dir().to_path_buf(),
            missing,
        })
    }
}

/// The package library and extension directories of an installation.
fn extension_dirs(binaries: &PostgresBinaries) -> (PathBuf, PathBuf) {
    // `postgres` may be a symlink (e.g. from /usr/local/bin); its real
    // directory holds pg_config.
    let real_bin = std::fs::canonicalize(binaries.postgres())
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| binaries.bin_dir().to_path_buf());
    let pg_config = real_bin.join("pg_config");
    let query = |flag: &str| -> Option<PathBuf> {
        let output = Command::new(&pg_config)
            .arg(flag)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let path = text.trim();
        (output.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    };
    let lib_dir = query("--pkglibdir").unwrap_or_else(|| real_bin.join("../lib"));
    let extension_dir = query("--sharedir")
        .map(|dir| dir.join("extension"))
        .unwrap_or_else(|| {
            // Debian layout: /usr/lib/postgresql/<major>/bin.
            let major = real_bin
                .parent()
                .and_then(Path::file_name)
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            PathBuf::from(format!("/usr/share/postgresql/{major}/extension"))
        });
    (lib_dir, extension_dir)
}

/// A private Citus cluster (coordinator and workers) that lives as long as
/// this value (or, for [`TestCitus::shared`], as long as the process).
///
/// ```no_run
/// use sqlx::{Connection, PgConnection};
/// use tenant_testkit::{TestCitus, TestkitError};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let citus = match TestCitus::try_shared() {
///     Ok(citus) => citus,
///     Err(TestkitError::CitusNotFound { .. }) => {
///         eprintln!("Citus not installed: Citus tests skipped");
///         return Ok(());
///     }
///     Err(e) => panic!("{e}"),
/// };
/// let db = citus.fresh_database()?;
/// let mut owner = PgConnection::connect(db.owner_url()).await?;
/// sqlx::raw_sql(
///     "CREATE TABLE notes (tenant_id uuid NOT NULL, body text);
///      SELECT create_distributed_table('notes', 'tenant_id')",
/// )
/// .execute(&mut owner)
/// .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestCitus {
    coordinator: TestPostgres,
    workers: Vec<TestPostgres>,
    /// Joining databases one at a time: `citus_add_node` propagates the
    /// (cluster-wide) roles to the workers, and two databases doing so at
    /// once conflict ("failure on connection marked as essential").
    join: Mutex<()>,
}

static SHARED: OnceLock<Result<TestCitus, TestkitError>> = OnceLock::new();

impl TestCitus {
    /// Starts a coordinator and [`DEFAULT_WORKERS`] workers from the
    /// machine's PostgreSQL ([`PostgresBinaries::locate`]) with
    /// [`DEFAULT_DATABASE`] distributed across them. Blocks for a few
    /// seconds.
    ///
    /// # Errors
    ///
    /// [`TestkitError::PostgresNotFound`], [`TestkitError::CitusNotFound`]
    /// when the extension is not installed, and the errors of
    /// [`TestPostgres::start`] or of the Citus setup statements.
    pub fn start() -> Result<TestCitus, TestkitError> {
        Self::start_with(DEFAULT_WORKERS)
    }

    /// Like [`TestCitus::start`] with `workers` workers (0 runs a
    /// coordinator alone, which also holds shards).
    ///
    /// # Errors
    ///
    /// As [`TestCitus::start`].
    pub fn start_with(workers: usize) -> Result<TestCitus, TestkitError> {
        let binaries = PostgresBinaries::locate()?;
        Self::start_binaries(&binaries, workers)
    }

    /// Starts a cluster from the given installation.
    ///
    /// # Errors
    ///
    /// As [`TestCitus::start`], except for the lookup.
    pub fn start_binaries(
        binaries: &PostgresBinaries,
        workers: usize,
    ) -> Result<TestCitus, TestkitError> {
        check_citus_installed(binaries)?;
        let settings: Vec<String> = NODE_SETTINGS.iter().map(|s| (*s).to_owned()).collect();
        // initdb and startup dominate: run the nodes' in parallel.
        let mut nodes = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..=workers)
                .map(|_| scope.spawn(|| TestPostgres::start_configured(binaries, &settings)))
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle.join() {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let coordinator = nodes.remove(0);
        let cluster = TestCitus {
            coordinator,
            workers: nodes,
            join: Mutex::new(()),
        };
        cluster.join_database(DEFAULT_DATABASE)?;
        Ok(cluster)
    }

    /// One cluster per process, started on first use and never dropped: the
    /// watchdogs stop every node when the process exits. Tests that need
    /// isolation call [`TestCitus::fresh_database`] on it.
    ///
    /// # Panics
    ///
    /// Panics with the startup error; use [`TestCitus::try_shared`] to
    /// handle it (for example to skip on [`TestkitError::CitusNotFound`]).
    pub fn shared() -> &'static TestCitus {
        match Self::try_shared() {
            Ok(cluster) => cluster,
            Err(e) => panic!("tenant-testkit: cannot start the shared Citus cluster: {e}"),
        }
    }

    /// Like [`TestCitus::shared`] but returns the startup error (the same
    /// one on every call).
    ///
    /// # Errors
    ///
    /// The error [`TestCitus::start`] returned on the first call.
    pub fn try_shared() -> Result<&'static TestCitus, &'static TestkitError> {
        SHARED.get_or_init(TestCitus::start).as_ref()
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &TestPostgres {
        &self.coordinator
    }

    /// The workers, in the order they were added.
    pub fn workers(&self) -> &[TestPostgres] {
        &self.workers
    }

    /// The URLs of [`DEFAULT_DATABASE`] on the coordinator.
    pub fn database(&self) -> &TestDatabase {
        self.coordinator.database()
    }

    /// URL of [`DEFAULT_DATABASE`] on the coordinator as the superuser.
    pub fn superuser_url(&self) -> &str {
        self.coordinator.superuser_url()
    }

    /// URL of [`DEFAULT_DATABASE`] on the coordinator as the owner role.
    pub fn owner_url(&self) -> &str {
        self.coordinator.owner_url()
    }

    /// URL of [`DEFAULT_DATABASE`] on the coordinator as the application
    /// role.
    pub fn app_url(&self) -> &str {
        self.coordinator.app_url()
    }

    /// The URLs of `database` on worker `index` (for looking at shards).
    ///
    /// # Errors
    ///
    /// [`TestkitError::NoSuchNode`] if there is no such worker.
    pub fn worker_database(
        &self,
        index: usize,
        database: &TestDatabase,
    ) -> Result<TestDatabase, TestkitError> {
        let worker = self.workers.get(index).ok_or(TestkitError::NoSuchNode {
            index,
            nodes: self.workers.len(),
        })?;
        Ok(TestDatabase::new(worker.port(), database.name()))
    }

    /// Creates database `name` on every node with the privilege setup of
    /// [`TestPostgres::create_database`], creates the extension in it on
    /// every node and joins the workers; returns its coordinator URLs.
    ///
    /// # Errors
    ///
    /// [`TestkitError::InvalidDatabaseName`], or [`TestkitError::Sql`] if it
    /// exists or a setup statement fails.
    pub fn create_database(&self, name: &str) -> Result<TestDatabase, TestkitError> {
        let database = self.coordinator.create_database(name)?;
        for worker in &self.workers {
            worker.create_database(name)?;
        }
        self.join_database(name)?;
        Ok(database)
    }

    /// Creates a database with a unique generated name (see
    /// [`TestCitus::create_database`]).
    ///
    /// # Errors
    ///
    /// As [`TestCitus::create_database`].
    pub fn fresh_database(&self) -> Result<TestDatabase, TestkitError> {
        let name = format!("{DEFAULT_DATABASE}_{}", uuid::Uuid::new_v4().simple());
        self.create_database(&name)
    }

    /// Drops database `name` on every node (coordinator first).
    ///
    /// # Errors
    ///
    /// As [`TestPostgres::drop_database`].
    pub fn drop_database(&self, name: &str) -> Result<(), TestkitError> {
        self.coordinator.drop_database(name)?;
        for worker in &self.workers {
            worker.drop_database(name)?;
        }
        Ok(())
    }

    /// `CREATE EXTENSION citus` in `name` on every node, then registers the
    /// coordinator and the workers in the coordinator's metadata.
    fn join_database(&self, name: &str) -> Result<(), TestkitError> {
        let _one_at_a_time = self.join.lock().unwrap_or_else(|e| e.into_inner());
        let coordinator_port = self.coordinator.port();
        let worker_ports: Vec<u16> = self.workers.iter().map(TestPostgres::port).collect();
        postgres::with_runtime(|rt| {
            rt.block_on(async {
                for port in std::iter::once(coordinator_port).chain(worker_ports.iter().copied()) {
                    let mut conn = postgres::connect(&postgres::admin_url(port, name)).await?;
                    postgres::execute(&mut conn, "CREATE EXTENSION IF NOT EXISTS citus").await?;
                    let _ = sqlx::Connection::close(conn).await;
                }
                let mut conn =
                    postgres::connect(&postgres::admin_url(coordinator_port, name)).await?;
                postgres::execute(
                    &mut conn,
                    &format!("SELECT citus_set_coordinator_host('127.0.0.1', {coordinator_port})"),
                )
                .await?;
                for port in &worker_ports {
                    postgres::execute(
                        &mut conn,
                        &format!("SELECT citus_add_node('127.0.0.1', {port})"),
                    )
                    .await?;
                }
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_extension_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        for name in ["initdb", "postgres"] {
            let path = bin.join(name);
            std::fs::write(&path, b"#!/bin/sh\n").expect("write");
            let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(&path, executable).expect("chmod");
        }
        let binaries = PostgresBinaries::locate_in(vec![bin]).expect("fake install");
        match check_citus_installed(&binaries) {
            Err(TestkitError::CitusNotFound { missing, .. }) => {
                assert_eq!(missing.len(), 2, "{missing:?}");
                assert!(missing[0].ends_with("citus.so"));
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
}
