//! Ephemeral PostgreSQL clusters built from the machine's own binaries.
//!
//! [`TestPostgres::start`] runs `initdb` into a fresh temporary directory,
//! starts `postgres` on a free port of 127.0.0.1 under the stdin-pipe
//! watchdog (see the crate docs, "Teardown"), waits until it accepts connections and
//! provisions the roles and the database the SDK expects:
//!
//! | role                         | attributes                                                        |
//! |------------------------------|-------------------------------------------------------------------|
//! | [`SUPERUSER`] (`postgres`)   | bootstrap superuser                                               |
//! | [`OWNER_ROLE`] (`tenant_owner`) | `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB`; owns each database and its `public` schema (so it has `CREATE` on both) |
//! | [`APP_ROLE`] (`tenant_app`)  | `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB`; owns nothing |
//!
//! In every database created by the testkit ([`DEFAULT_DATABASE`] and those
//! from [`TestPostgres::create_database`]):
//!
//! * `CONNECT` is revoked from `PUBLIC` and granted to the application role
//!   (the owner has it as owner);
//! * all privileges on schema `public` are revoked from `PUBLIC`; the
//!   application role gets `USAGE` only, never `CREATE`;
//! * the `pgcrypto` extension is created up front by the superuser, so the
//!   owner's migrations can say `CREATE EXTENSION IF NOT EXISTS pgcrypto`;
//! * **no default privileges** are set: tables created by the owner are not
//!   accessible to the application role until the owner's migrations `GRANT`
//!   exactly what the application needs. This keeps least-privilege tests
//!   honest.
//!
//! Authentication is `trust` on 127.0.0.1, but the owner and application
//! roles also have passwords (equal to their names) and the URLs carry them,
//! so the URLs keep working if password authentication is switched on.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tempfile::TempDir;

use crate::error::TestkitError;
use crate::process::{self, RunAs, WaitOutcome, Watchdog, WatchdogSpec};

/// Environment variable naming a directory that holds `initdb` and
/// `postgres`; it is searched before `$PATH`.
pub const PG_BIN_DIR_ENV: &str = "TENANT_TESTKIT_PG_BIN_DIR";
/// The bootstrap superuser created by `initdb`.
pub const SUPERUSER: &str = "postgres";
/// The role that owns the databases and runs migrations.
pub const OWNER_ROLE: &str = "tenant_owner";
/// Password of [`OWNER_ROLE`] (only checked if password auth is enabled).
pub const OWNER_PASSWORD: &str = "tenant_owner";
/// The least-privileged role the application connects as.
pub const APP_ROLE: &str = "tenant_app";
/// Password of [`APP_ROLE`] (only checked if password auth is enabled).
pub const APP_PASSWORD: &str = "tenant_app";
/// The database created by [`TestPostgres::start`].
pub const DEFAULT_DATABASE: &str = "tenant_sdk";

/// System account the server runs as when the tests run as root.
const SERVICE_USER: &str = "postgres";
/// How long to wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often to start over on a new port when the chosen one was taken.
const PORT_ATTEMPTS: usize = 5;
/// Time allowed for a fast shutdown before escalating.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Name of the server log inside the temp dir.
const LOG_FILE: &str = "postgres.log";
/// Where Debian-style multi-version installs keep their binaries.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// The `initdb` and `postgres` executables of one PostgreSQL installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresBinaries {
    bin_dir: PathBuf,
}

impl PostgresBinaries {
    /// Finds an installation, searching in order: the directory named by
    /// [`PG_BIN_DIR_ENV`], every directory of `$PATH`, then
    /// `/usr/lib/postgresql/<version>/bin` from the highest version down.
    /// The first directory containing both `initdb` and `postgres` wins.
    ///
    /// # Errors
    ///
    /// [`TestkitError::PostgresNotFound`] listing every directory searched.
    pub fn locate() -> Result<PostgresBinaries, TestkitError> {
        let mut dirs: Vec<PathBuf> = std::env::var_os(PG_BIN_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .collect();
        dirs.extend(process::path_dirs());
        dirs.extend(versioned_bin_dirs(Path::new(VERSIONED_ROOT)));
        Self::locate_in(dirs)
    }

    /// Like [`PostgresBinaries::locate`] but searches only `dirs`, in order.
    ///
    /// # Errors
    ///
    /// [`TestkitError::PostgresNotFound`] listing every directory searched.
    pub fn locate_in(
        dirs: impl IntoIterator<Item = PathBuf>,
    ) -> Result<PostgresBinaries, TestkitError> {
        let mut searched = Vec::new();
        for dir in dirs {
            if searched.contains(&dir) {
                continue;
            }
            if process::is_executable(&dir.join("initdb"))
                && process::is_executable(&dir.join("postgres"))
            {
                return Ok(PostgresBinaries { bin_dir: dir });
            }
            searched.push(dir);
        }
        Err(TestkitError::PostgresNotFound { searched })
    }

    /// The directory holding the executables.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Path of `initdb`.
    pub fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }

    /// Path of `postgres`.
    pub fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }
}

/// `<root>/<version>/bin` directories, highest numeric version first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name
                .split('.')
                .map(|part| part.parse::<u64>().unwrap_or(0))
                .collect();
            (key, entry.path().join("bin"))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Connection URLs for one database of a [`TestPostgres`] cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDatabase {
    name: String,
    superuser_url: String,
    owner_url: String,
    app_url: String,
}

impl TestDatabase {
    pub(crate) fn new(port: u16, name: &str) -> TestDatabase {
        TestDatabase {
            name: name.to_owned(),
            superuser_url: format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{name}{NO_TLS}"),
            owner_url: format!(
                "postgres://{OWNER_ROLE}:{OWNER_PASSWORD}@127.0.0.1:{port}/{name}{NO_TLS}"
            ),
            app_url: format!(
                "postgres://{APP_ROLE}:{APP_PASSWORD}@127.0.0.1:{port}/{name}{NO_TLS}"
            ),
        }
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL connecting as the superuser [`SUPERUSER`].
    pub fn superuser_url(&self) -> &str {
        &self.superuser_url
    }

    /// URL connecting as the owner role [`OWNER_ROLE`] (run migrations).
    pub fn owner_url(&self) -> &str {
        &self.owner_url
    }

    /// URL connecting as the application role [`APP_ROLE`].
    pub fn app_url(&self) -> &str {
        &self.app_url
    }
}

/// A private PostgreSQL cluster that lives as long as this value (or, for
/// [`TestPostgres::shared`], as long as the process).
///
/// Dropping it performs a fast shutdown (`SIGINT` to the postmaster), waits
/// for the server to exit and deletes its data directory. If the process
/// ends without running `Drop`, the watchdog does the same when it sees its
/// stdin pipe close.
#[derive(Debug)]
pub struct TestPostgres {
    watchdog: Watchdog,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    database: TestDatabase,
    binaries: PostgresBinaries,
    // Declared last: removed after the server has stopped.
    temp: TempDir,
}

static SHARED: OnceLock<Result<TestPostgres, TestkitError>> = OnceLock::new();

impl TestPostgres {
    /// Locates the binaries ([`PostgresBinaries::locate`]) and starts a new
    /// cluster with [`DEFAULT_DATABASE`] provisioned.
    ///
    /// Blocks for about a second or two. It is safe to call from inside an
    /// async runtime (the SQL work runs on a helper thread); in async code
    /// prefer `tokio::task::spawn_blocking` if other tasks must keep running.
    ///
    /// # Errors
    ///
    /// [`TestkitError::PostgresNotFound`] when no installation is found,
    /// [`TestkitError::UserNotFound`] when running as root and the `postgres`
    /// system user does not exist, and the other variants when `initdb`,
    /// startup or provisioning fails.
    pub fn start() -> Result<TestPostgres, TestkitError> {
        let binaries = PostgresBinaries::locate()?;
        Self::start_with(&binaries)
    }

    /// Starts a new cluster from the given installation.
    ///
    /// # Errors
    ///
    /// As [`TestPostgres::start`], except for the binary lookup.
    pub fn start_with(binaries: &PostgresBinaries) -> Result<TestPostgres, TestkitError> {
        Self::start_configured(binaries, &[])
    }

    /// Starts a new cluster with extra server settings (`name=value`, passed
    /// as `-c name=value`).
    pub(crate) fn start_configured(
        binaries: &PostgresBinaries,
        settings: &[String],
    ) -> Result<TestPostgres, TestkitError> {
        let run_as = RunAs::unprivileged(SERVICE_USER)?;
        let temp = tempfile::Builder::new()
            .prefix("tenant-testkit-pg-")
            .tempdir_in(run_as.temp_base())
            .map_err(|e| TestkitError::io("creating the PostgreSQL temp dir", e))?;
        run_as.chown(temp.path())?;
        let data_dir = temp.path().join("data");
        let socket_dir = temp.path().join("sock");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| TestkitError::io(format!("creating {}", socket_dir.display()), e))?;
        run_as.chown(&socket_dir)?;

        let mut initdb = Command::new(binaries.initdb());
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "--auth=trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(temp.path())
            .env("LC_ALL", "C");
        process::run_to_completion(initdb, &run_as)?;

        let (mut watchdog, port) = spawn_server(
            binaries,
            &run_as,
            temp.path(),
            &data_dir,
            &socket_dir,
            settings,
        )?;
        let log = temp.path().join(LOG_FILE);
        with_runtime(|rt| rt.block_on(wait_ready(port, &mut watchdog, &log)))?;
        let server = TestPostgres {
            watchdog,
            port,
            data_dir,
            socket_dir,
            database: TestDatabase::new(port, DEFAULT_DATABASE),
            binaries: binaries.clone(),
            temp,
        };
        with_runtime(|rt| rt.block_on(create_roles(port)))?;
        server.provision(DEFAULT_DATABASE)?;
        Ok(server)
    }

    /// One cluster per process, started on first use and never dropped: the
    /// watchdog stops it and deletes its files when the process exits.
    ///
    /// Tests that need isolation from each other should call
    /// [`TestPostgres::fresh_database`] on it.
    ///
    /// # Panics
    ///
    /// Panics with the startup error if the cluster cannot be started; use
    /// [`TestPostgres::try_shared`] to handle that case.
    pub fn shared() -> &'static TestPostgres {
        match Self::try_shared() {
            Ok(server) => server,
            Err(e) => panic!("tenant-testkit: cannot start the shared PostgreSQL: {e}"),
        }
    }

    /// Like [`TestPostgres::shared`] but returns the startup error (the same
    /// one on every call: startup is attempted once per process).
    ///
    /// # Errors
    ///
    /// The error [`TestPostgres::start`] returned on the first call.
    pub fn try_shared() -> Result<&'static TestPostgres, &'static TestkitError> {
        SHARED.get_or_init(TestPostgres::start).as_ref()
    }

    /// URL of [`DEFAULT_DATABASE`] as the superuser.
    pub fn superuser_url(&self) -> &str {
        self.database.superuser_url()
    }

    /// URL of [`DEFAULT_DATABASE`] as the owner role.
    pub fn owner_url(&self) -> &str {
        self.database.owner_url()
    }

    /// URL of [`DEFAULT_DATABASE`] as the application role.
    pub fn app_url(&self) -> &str {
        self.database.app_url()
    }

    /// The URLs of [`DEFAULT_DATABASE`].
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix-domain socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log (stdout and stderr of the postmaster).
    pub fn log_path(&self) -> PathBuf {
        self.temp.path().join(LOG_FILE)
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.watchdog.server_pid()
    }

    /// The installation this cluster runs from.
    pub fn binaries(&self) -> &PostgresBinaries {
        &self.binaries
    }

    /// Creates database `name` owned by [`OWNER_ROLE`] with the same
    /// privilege setup as [`DEFAULT_DATABASE`] (see the module docs).
    ///
    /// # Errors
    ///
    /// [`TestkitError::InvalidDatabaseName`] unless `name` matches
    /// `[a-z_][a-z0-9_]{0,62}`; [`TestkitError::Sql`] if it already exists or
    /// provisioning fails.
    pub fn create_database(&self, name: &str) -> Result<TestDatabase, TestkitError> {
        validate_database_name(name)?;
        self.provision(name)?;
        Ok(TestDatabase::new(self.port, name))
    }

    /// Creates a database with a unique generated name (see
    /// [`TestPostgres::create_database`]).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Sql`] if provisioning fails.
    pub fn fresh_database(&self) -> Result<TestDatabase, TestkitError> {
        let name = format!("{DEFAULT_DATABASE}_{}", uuid::Uuid::new_v4().simple());
        self.create_database(&name)
    }

    /// Drops database `name` if it exists, terminating its sessions.
    ///
    /// # Errors
    ///
    /// [`TestkitError::InvalidDatabaseName`] for an invalid name or one of the
    /// system databases; [`TestkitError::Sql`] if the drop fails.
    pub fn drop_database(&self, name: &str) -> Result<(), TestkitError> {
        validate_database_name(name)?;
        let port = self.port;
        let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        with_runtime(|rt| {
            rt.block_on(async {
                let mut conn = connect(&admin_url(port, "postgres")).await?;
                execute(&mut conn, &statement).await?;
                let _ = conn.close().await;
                Ok(())
            })
        })
    }

    fn provision(&self, name: &str) -> Result<(), TestkitError> {
        let port = self.port;
        with_runtime(|rt| rt.block_on(provision_database(port, name)))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Fast shutdown; the watchdog removes the directory afterwards and
        // `temp` cleans up whatever is left.
        let _ = self.watchdog.shutdown(STOP_GRACE);
    }
}

/// Starts the postmaster, retrying on a new port if the chosen one was
/// taken in the meantime.
fn spawn_server(
    binaries: &PostgresBinaries,
    run_as: &RunAs,
    temp: &Path,
    data_dir: &Path,
    socket_dir: &Path,
    settings: &[String],
) -> Result<(Watchdog, u16), TestkitError> {
    let log = temp.join(LOG_FILE);
    let postgres = binaries.postgres();
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = process::free_port()?;
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            data_dir.into(),
            "-p".into(),
            port.to_string().into(),
            "-k".into(),
            socket_dir.into(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "synchronous_commit=off".into(),
            "-c".into(),
            "full_page_writes=off".into(),
            "-c".into(),
            "max_connections=200".into(),
        ];
        for setting in settings {
            args.push("-c".into());
            args.push(setting.into());
        }
        let mut watchdog = Watchdog::spawn(WatchdogSpec {
            program: &postgres,
            args,
            run_as,
            cwd: temp,
            log_file: &log,
            stop_signal: "INT",
            cleanup_dir: Some(temp),
            // libpq inside the server (extensions such as Citus connect to
            // other nodes) reads $HOME/.postgresql: not root's home.
            env: vec![("HOME".to_owned(), temp.to_string_lossy().into_owned())],
        })?;
        // Port conflicts surface within milliseconds as an early exit.
        match process::wait_until_ready(
            &mut watchdog,
            Duration::from_millis(300),
            Duration::from_millis(20),
            || false,
        )? {
            WaitOutcome::Exited(status) => {
                let text = process::tail_file(&log, 8192);
                let error = TestkitError::StartFailed {
                    service: "postgres",
                    status: status.to_string(),
                    log: text.clone(),
                };
                if text.contains("already in use")
                    || text.contains("could not create any TCP/IP sockets")
                {
                    last_error = Some(error);
                    continue;
                }
                return Err(error);
            }
            WaitOutcome::Ready | WaitOutcome::TimedOut => return Ok((watchdog, port)),
        }
    }
    Err(last_error.unwrap_or_else(|| TestkitError::StartFailed {
        service: "postgres",
        status: "no free port found".to_owned(),
        log: process::tail_file(&log, 8192),
    }))
}

/// Waits until the superuser can connect, the server exits, or
/// [`START_TIMEOUT`] elapses.
async fn wait_ready(port: u16, watchdog: &mut Watchdog, log: &Path) -> Result<(), TestkitError> {
    let url = admin_url(port, "postgres");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = watchdog.try_status()? {
            return Err(TestkitError::StartFailed {
                service: "postgres",
                status: status.to_string(),
                log: process::tail_file(log, 8192),
            });
        }
        let attempt = tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(&url));
        if let Ok(Ok(conn)) = attempt.await {
            let _ = conn.close().await;
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            // Read the log first: a requested stop deletes the directory.
            let log = process::tail_file(log, 8192);
            let _ = watchdog.shutdown(STOP_GRACE);
            return Err(TestkitError::Timeout {
                service: "postgres",
                waited: START_TIMEOUT,
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn create_roles(port: u16) -> Result<(), TestkitError> {
    let mut conn = connect(&admin_url(port, "postgres")).await?;
    let attributes = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION";
    execute(
        &mut conn,
        &format!("CREATE ROLE {OWNER_ROLE} {attributes} PASSWORD '{OWNER_PASSWORD}'"),
    )
    .await?;
    execute(
        &mut conn,
        &format!("CREATE ROLE {APP_ROLE} {attributes} PASSWORD '{APP_PASSWORD}'"),
    )
    .await?;
    let _ = conn.close().await;
    Ok(())
}

async fn provision_database(port: u16, name: &str) -> Result<(), TestkitError> {
    let mut conn = connect(&admin_url(port, "postgres")).await?;
    for statement in [
        format!("CREATE DATABASE \"{name}\" OWNER {OWNER_ROLE} TEMPLATE template0 ENCODING 'UTF8'"),
        format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE \"{name}\" TO {APP_ROLE}"),
    ] {
        execute(&mut conn, &statement).await?;
    }
    let _ = conn.close().await;

    let mut conn = connect(&admin_url(port, name)).await?;
    for statement in [
        format!("ALTER SCHEMA public OWNER TO {OWNER_ROLE}"),
        "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE ON SCHEMA public TO {APP_ROLE}"),
        "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public".to_owned(),
    ] {
        execute(&mut conn, &statement).await?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// Loopback servers are reached without TLS. With the SDK's default `tls`
/// feature, sqlx would otherwise try TLS on every server that offers it,
/// and Citus turns TLS on with a self-signed X.509 v1 certificate, which
/// rustls refuses to parse.
pub(crate) const NO_TLS: &str = "?sslmode=disable";

pub(crate) fn admin_url(port: u16, database: &str) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}{NO_TLS}")
}

pub(crate) async fn connect(url: &str) -> Result<PgConnection, TestkitError> {
    PgConnection::connect(url)
        .await
        .map_err(|e| TestkitError::sql(format!("connecting to {url}"), e))
}

pub(crate) async fn execute(conn: &mut PgConnection, statement: &str) -> Result<(), TestkitError> {
    sqlx::raw_sql(AssertSqlSafe(statement.to_owned()))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| TestkitError::sql(format!("executing `{statement}`"), e))
}

fn validate_database_name(name: &str) -> Result<(), TestkitError> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let reserved = matches!(name, "postgres" | "template0" | "template1");
    if valid_start && valid_rest && name.len() <= 63 && !reserved {
        Ok(())
    } else {
        Err(TestkitError::InvalidDatabaseName {
            name: name.to_owned(),
        })
    }
}

/// Runs `work` on a helper thread with its own single-threaded Tokio
/// runtime, so that the blocking API works both from plain threads and from
/// inside another runtime (where `block_on` would panic).
pub(crate) fn with_runtime<T, F>(work: F) -> Result<T, TestkitError>
where
    T: Send,
    F: FnOnce(&tokio::runtime::Runtime) -> Result<T, TestkitError> + Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TestkitError::io("building a Tokio runtime", e))?;
            work(&runtime)
        });
        match handle.join() {
            Ok(result) => result,
            // Only reachable through a bug in this crate or sqlx: re-raise.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_validated() {
        for good in ["tenant_sdk", "_x", "a1", &"a".repeat(63)] {
            assert!(validate_database_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Upper",
            "with-dash",
            "quote\"",
            "semi;colon",
            "postgres",
            "template1",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    validate_database_name(bad),
                    Err(TestkitError::InvalidDatabaseName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_binaries_are_a_typed_error() {
        let empty = tempfile::tempdir().expect("tempdir");
        let dirs = vec![empty.path().to_path_buf(), empty.path().join("nope")];
        match PostgresBinaries::locate_in(dirs.clone()) {
            Err(TestkitError::PostgresNotFound { searched }) => assert_eq!(searched, dirs),
            other => panic!("unexpected: {other:?}"),
        }
        let message = PostgresBinaries::locate_in(Vec::new())
            .expect_err("nothing to search")
            .to_string();
        assert!(message.contains("not found"), "{message}");
    }

    #[test]
    fn versioned_dirs_sort_highest_first() {
        let root = tempfile::tempdir().expect("tempdir");
        for version in ["9.6", "15", "13"] {
            std::fs::create_dir_all(root.path().join(version).join("bin")).expect("mkdir");
        }
        let dirs = versioned_bin_dirs(root.path());
        let names: Vec<_> = dirs
            .iter()
            .filter_map(|d| d.parent()?.file_name()?.to_str())
            .collect();
        assert_eq!(names, ["15", "13", "9.6"]);
    }

    #[test]
    fn urls_name_the_right_roles() {
        let db = TestDatabase::new(5433, "x");
        assert_eq!(
            db.superuser_url(),
            "postgres://postgres@127.0.0.1:5433/x?sslmode=disable"
        );
        assert_eq!(
            db.owner_url(),
            "postgres://tenant_owner:tenant_owner@127.0.0.1:5433/x?sslmode=disable"
        );
        assert_eq!(
            db.app_url(),
            "postgres://tenant_app:tenant_app@127.0.0.1:5433/x?sslmode=disable"
        );
    }
}
