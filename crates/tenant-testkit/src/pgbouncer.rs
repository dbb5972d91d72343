//! PgBouncer in front of a [`TestPostgres`], in transaction pooling mode by
//! default.
//!
//! [`TestPgBouncer::start`] writes a configuration into a temp dir and runs
//! the machine's `pgbouncer` (Debian package `pgbouncer`) on a free port of
//! 127.0.0.1 under the stdin-pipe watchdog (see the crate docs, "Teardown").
//! As root it runs as the `postgres` system user, like the PostgreSQL
//! server. The generated configuration:
//!
//! * `[databases] * = host=127.0.0.1 port=<postgres port>`: every database
//!   of the cluster, including those made later by
//!   [`TestPostgres::fresh_database`], is reachable through the bouncer under
//!   its own name ([`TestPgBouncer::database`]);
//! * `pool_mode = transaction` ([`PoolMode`]), `default_pool_size = 2`
//!   ([`DEFAULT_POOL_SIZE`]) server connections per database and role, up to
//!   100 clients;
//! * client authentication by SCRAM-SHA-256 with the testkit's passwords for
//!   [`OWNER_ROLE`] and [`APP_ROLE`];
//!   `trust` for the superuser (as on the server), who is also admin of the
//!   bouncer's console ([`TestPgBouncer::admin_url`], `SHOW POOLS`);
//! * `ignore_startup_parameters = extra_float_digits, options` (sqlx sends
//!   the former);
//! * `max_prepared_statements = 100` when the installed PgBouncer supports
//!   it (1.21 and later; [`TestPgBouncer::supports_prepared_statements`]).
//!
//! # What transaction pooling means for clients
//!
//! Each transaction (and each statement outside one) runs on whichever
//! server connection is free, and server connections are **not reset**
//! between clients: a plain `SET` (without `LOCAL`), a `set_config(…,
//! false)`, a temporary table or a named prepared statement left by one
//! client is visible to the next client that gets the same server
//! connection. Only state scoped to a transaction (`SET LOCAL`,
//! `set_config(…, true)`) is safe.
//!
//! sqlx with PgBouncer **before 1.21** (Debian 12 ships 1.18), measured with
//! the tests of this crate:
//!
//! * sqlx's default named, cached prepared statements (`sqlx_s_1`, …) break:
//!   a second client preparing its own `sqlx_s_1` on the same server
//!   connection gets SQLSTATE `42P05` ("prepared statement already
//!   exists"); and a statement sqlx cached on the client may not exist on
//!   the server connection its next transaction gets (`26000`);
//! * what works: queries with `.persistent(false)` (an unnamed statement,
//!   never cached) **inside an explicit transaction** (`BEGIN` … `COMMIT`
//!   keeps the server connection between sqlx's parse and execute round
//!   trips), or `sqlx::raw_sql` (simple protocol, one round trip).
//!   `statement_cache_capacity(0)` alone is not enough: sqlx still names
//!   persistent statements, it only stops reusing them.
//!
//! With PgBouncer 1.21 or later, `max_prepared_statements` makes the bouncer
//! track named statements per client, and sqlx's defaults work.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::error::TestkitError;
use crate::postgres::{TestDatabase, TestPostgres, DEFAULT_DATABASE};
use crate::postgres::{APP_PASSWORD, APP_ROLE, OWNER_PASSWORD, OWNER_ROLE, SUPERUSER};
use crate::process::{self, RunAs, WaitOutcome, Watchdog, WatchdogSpec};

/// Environment variable naming the `pgbouncer` executable to use; it is
/// tried before `$PATH`.
pub const PGBOUNCER_ENV: &str = "TENANT_TESTKIT_PGBOUNCER";
/// Server connections per database and role unless
/// [`PgBouncerOptions::pool_size`] says otherwise.
pub const DEFAULT_POOL_SIZE: u32 = 2;
/// Clients accepted unless [`PgBouncerOptions::max_client_conn`] says
/// otherwise.
pub const DEFAULT_MAX_CLIENTS: u32 = 100;

/// Directories searched after `$PATH` (Debian installs to `/usr/sbin`).
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
/// System account the bouncer runs as when the tests run as root.
const SERVICE_USER: &str = "postgres";
/// How long to wait for the listening socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for a shutdown before escalating.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// File names inside the temp dir.
const CONFIG_FILE: &str = "pgbouncer.ini";
const USERLIST_FILE: &str = "userlist.txt";
const HBA_FILE: &str = "hba.conf";
const LOG_FILE: &str = "pgbouncer.log";

/// Finds `pgbouncer`: the path in [`PGBOUNCER_ENV`], then `$PATH`, then
/// `/usr/sbin`, `/usr/bin`, `/usr/local/sbin`, `/usr/local/bin`.
///
/// # Errors
///
/// [`TestkitError::PgBouncerNotFound`] listing every candidate inspected.
pub fn locate_pgbouncer() -> Result<PathBuf, TestkitError> {
    process::find_executable(PGBOUNCER_ENV, "pgbouncer", &FALLBACK_DIRS)
        .map_err(|searched| TestkitError::PgBouncerNotFound { searched })
}

/// When PgBouncer gives a client's server connection back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolMode {
    /// When the client disconnects (server state is reset with
    /// `DISCARD ALL` before the next client).
    Session,
    /// After each transaction (or statement outside a transaction); no
    /// reset between clients.
    Transaction,
    /// After each statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    fn as_ini(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Pool settings for [`TestPgBouncer::start_with`].
///
/// ```
/// use tenant_testkit::pgbouncer::{PgBouncerOptions, PoolMode};
///
/// let one_server = PgBouncerOptions::new().pool_size(1);
/// assert_eq!(one_server.pool_mode_value(), PoolMode::Transaction);
/// assert_eq!(one_server.pool_size_value(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBouncerOptions {
    pool_mode: PoolMode,
    pool_size: u32,
    max_client_conn: u32,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions {
            pool_mode: PoolMode::Transaction,
            pool_size: DEFAULT_POOL_SIZE,
            max_client_conn: DEFAULT_MAX_CLIENTS,
        }
    }
}

impl PgBouncerOptions {
    /// Transaction pooling, [`DEFAULT_POOL_SIZE`] server connections,
    /// [`DEFAULT_MAX_CLIENTS`] clients.
    pub fn new() -> PgBouncerOptions {
        PgBouncerOptions::default()
    }

    /// Sets the pooling mode.
    pub fn pool_mode(mut self, mode: PoolMode) -> PgBouncerOptions {
        self.pool_mode = mode;
        self
    }

    /// Sets the server connections per database and role (at least 1).
    pub fn pool_size(mut self, size: u32) -> PgBouncerOptions {
        self.pool_size = size.max(1);
        self
    }

    /// Sets the number of clients accepted (at least 1).
    pub fn max_client_conn(mut self, clients: u32) -> PgBouncerOptions {
        self.max_client_conn = clients.max(1);
        self
    }

    /// The pooling mode.
    pub fn pool_mode_value(&self) -> PoolMode {
        self.pool_mode
    }

    /// Server connections per database and role.
    pub fn pool_size_value(&self) -> u32 {
        self.pool_size
    }

    /// Clients accepted.
    pub fn max_client_conn_value(&self) -> u32 {
        self.max_client_conn
    }
}

/// A private PgBouncer in front of a [`TestPostgres`] that lives as long as
/// this value (or, for [`TestPgBouncer::shared`], as long as the process).
///
/// ```no_run
/// use sqlx::{Connection, PgConnection};
/// use tenant_testkit::{TestPgBouncer, TestPostgres};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pg = TestPostgres::shared();
/// let db = pg.fresh_database()?;
/// let bouncer = TestPgBouncer::shared();
/// let pooled = bouncer.database(&db);
/// let mut app = PgConnection::connect(pooled.app_url()).await?;
/// let mut tx = sqlx::Connection::begin(&mut app).await?;
/// let two: i32 = sqlx::query_scalar("SELECT $1::int + 1")
///     .bind(1)
///     .persistent(false) // PgBouncer before 1.21: unnamed statements only
///     .fetch_one(&mut *tx)
///     .await?;
/// tx.commit().await?;
/// assert_eq!(two, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestPgBouncer {
    watchdog: Watchdog,
    executable: PathBuf,
    port: u16,
    upstream_port: u16,
    version: String,
    prepared_statements: bool,
    options: PgBouncerOptions,
    database: TestDatabase,
    // Declared last: removed after the bouncer has stopped.
    temp: TempDir,
}

static SHARED: OnceLock<Result<TestPgBouncer, TestkitError>> = OnceLock::new();

impl TestPgBouncer {
    /// Locates `pgbouncer` ([`locate_pgbouncer`]) and starts it in front of
    /// `postgres` with the default options (transaction pooling, two server
    /// connections per database and role).
    ///
    /// # Errors
    ///
    /// [`TestkitError::PgBouncerNotFound`] when there is no `pgbouncer`,
    /// [`TestkitError::UserNotFound`] as root without the `postgres` system
    /// user, and the other variants when it fails to start.
    pub fn start(postgres: &TestPostgres) -> Result<TestPgBouncer, TestkitError> {
        Self::start_with(postgres, &PgBouncerOptions::new())
    }

    /// Like [`TestPgBouncer::start`] with the given pool settings.
    ///
    /// # Errors
    ///
    /// As [`TestPgBouncer::start`].
    pub fn start_with(
        postgres: &TestPostgres,
        options: &PgBouncerOptions,
    ) -> Result<TestPgBouncer, TestkitError> {
        let executable = locate_pgbouncer()?;
        Self::start_binary(&executable, postgres.port(), options)
    }

    /// Starts the given `pgbouncer` in front of the PostgreSQL server
    /// listening on `127.0.0.1:upstream_port` (a testkit server: roles
    /// [`OWNER_ROLE`] and [`APP_ROLE`], `trust` authentication).
    ///
    /// # Errors
    ///
    /// As [`TestPgBouncer::start`], except for the lookup.
    pub fn start_binary(
        executable: &Path,
        upstream_port: u16,
        options: &PgBouncerOptions,
    ) -> Result<TestPgBouncer, TestkitError> {
        let version = version_of(executable)?;
        let prepared_statements = supports_prepared_statements(&version);
        let run_as = RunAs::unprivileged(SERVICE_USER)?;
        let temp = tempfile::Builder::new()
            .prefix("tenant-testkit-pgbouncer-")
            .tempdir_in(run_as.temp_base())
            .map_err(|e| TestkitError::io("creating the PgBouncer temp dir", e))?;
        run_as.chown(temp.path())?;
        write_file(temp.path(), USERLIST_FILE, &userlist(), &run_as)?;
        write_file(temp.path(), HBA_FILE, &hba(), &run_as)?;

        process::retry_on_port_conflict("pgbouncer", || {
            let port = process::free_port()?;
            let config = config(
                temp.path(),
                port,
                upstream_port,
                options,
                prepared_statements,
            );
            write_file(temp.path(), CONFIG_FILE, &config, &run_as)?;
            let watchdog = spawn(executable, temp.path(), port, &run_as)?;
            Ok((watchdog, port))
        })
        .map(|(watchdog, port)| TestPgBouncer {
            watchdog,
            executable: executable.to_path_buf(),
            port,
            upstream_port,
            version,
            prepared_statements,
            options: options.clone(),
            database: TestDatabase::new(port, DEFAULT_DATABASE),
            temp,
        })
    }

    /// One bouncer per process in front of [`TestPostgres::shared`], with
    /// the default options, started on first use and never dropped.
    ///
    /// # Panics
    ///
    /// Panics with the startup error (of PostgreSQL or of the bouncer); use
    /// [`TestPgBouncer::try_shared`] to handle it.
    pub fn shared() -> &'static TestPgBouncer {
        match Self::try_shared() {
            Ok(bouncer) => bouncer,
            Err(e) => panic!("tenant-testkit: cannot start the shared PgBouncer: {e}"),
        }
    }

    /// Like [`TestPgBouncer::shared`] but returns the startup error (the
    /// same one on every call).
    ///
    /// # Errors
    ///
    /// [`TestPostgres::try_shared`]'s error, or the error
    /// [`TestPgBouncer::start`] returned on the first call.
    pub fn try_shared() -> Result<&'static TestPgBouncer, &'static TestkitError> {
        let postgres = TestPostgres::try_shared()?;
        SHARED
            .get_or_init(|| TestPgBouncer::start(postgres))
            .as_ref()
    }

    /// The URLs of `database` (a database of the PostgreSQL server behind
    /// this bouncer) through the bouncer.
    pub fn database(&self, database: &TestDatabase) -> TestDatabase {
        TestDatabase::new(self.port, database.name())
    }

    /// The URLs of [`DEFAULT_DATABASE`] through the bouncer.
    pub fn default_database(&self) -> &TestDatabase {
        &self.database
    }

    /// URL of [`DEFAULT_DATABASE`] through the bouncer as the owner role.
    pub fn owner_url(&self) -> &str {
        self.database.owner_url()
    }

    /// URL of [`DEFAULT_DATABASE`] through the bouncer as the application
    /// role.
    pub fn app_url(&self) -> &str {
        self.database.app_url()
    }

    /// URL of the bouncer's admin console (database `pgbouncer`, as the
    /// superuser): `SHOW POOLS`, `SHOW SERVERS`, … over the simple query
    /// protocol (`sqlx::raw_sql`).
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/pgbouncer{}",
            self.port,
            crate::postgres::NO_TLS
        )
    }

    /// The bouncer's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the PostgreSQL server behind it.
    pub fn upstream_port(&self) -> u16 {
        self.upstream_port
    }

    /// The pool settings.
    pub fn options(&self) -> &PgBouncerOptions {
        &self.options
    }

    /// The installed version, e.g. `1.18.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether this PgBouncer (1.21 or later) tracks named prepared
    /// statements in transaction mode (`max_prepared_statements` is then
    /// set). Without it, clients must use unnamed statements inside
    /// transactions (see the module docs).
    pub fn supports_prepared_statements(&self) -> bool {
        self.prepared_statements
    }

    /// The bouncer's process id.
    pub fn pid(&self) -> u32 {
        self.watchdog.server_pid()
    }

    /// The bouncer's log.
    pub fn log_path(&self) -> PathBuf {
        self.temp.path().join(LOG_FILE)
    }

    /// The generated configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.temp.path().join(CONFIG_FILE)
    }

    /// The executable the bouncer runs.
    pub fn executable(&self) -> &Path {
        &self.executable
    }
}

impl Drop for TestPgBouncer {
    fn drop(&mut self) {
        let _ = self.watchdog.shutdown(STOP_GRACE);
    }
}

/// `pgbouncer --version`'s version number (`1.18.0`).
fn version_of(executable: &Path) -> Result<String, TestkitError> {
    let output = Command::new(executable)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::io(format!("running {} --version", executable.display()), e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .next()
        .and_then(|line| line.strip_prefix("PgBouncer "))
        .map(|version| version.trim().to_owned())
        .ok_or_else(|| TestkitError::CommandFailed {
            command: format!("{} --version", executable.display()),
            status: output.status.to_string(),
            output: text.into_owned(),
        })
}

/// Whether `version` is 1.21 or later.
fn supports_prepared_statements(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (1, 21)
}

fn userlist() -> String {
    // Plain-text secrets: PgBouncer derives SCRAM from them. The superuser
    // is listed so that `trust` in the HBA file can admit it.
    format!(
        "\"{OWNER_ROLE}\" \"{OWNER_PASSWORD}\"\n\"{APP_ROLE}\" \"{APP_PASSWORD}\"\n\"{SUPERUSER}\" \"\"\n"
    )
}

fn hba() -> String {
    format!(
        "host all {SUPERUSER} 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n"
    )
}

fn config(
    dir: &Path,
    port: u16,
    upstream_port: u16,
    options: &PgBouncerOptions,
    prepared_statements: bool,
) -> String {
    let dir = dir.display();
    let mut ini = format!(
        "[databases]\n\
         * = host=127.0.0.1 port={upstream_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir = {dir}\n\
         auth_type = hba\n\
         auth_hba_file = {dir}/{HBA_FILE}\n\
         auth_file = {dir}/{USERLIST_FILE}\n\
         admin_users = {SUPERUSER}\n\
         pool_mode = {mode}\n\
         default_pool_size = {pool}\n\
         min_pool_size = 0\n\
         reserve_pool_size = 0\n\
         max_client_conn = {clients}\n\
         ignore_startup_parameters = extra_float_digits, options\n\
         server_login_retry = 1\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        mode = options.pool_mode.as_ini(),
        pool = options.pool_size,
        clients = options.max_client_conn,
    );
    if prepared_statements {
        let _ = writeln!(ini, "max_prepared_statements = 100");
    }
    ini
}

fn write_file(dir: &Path, name: &str, contents: &str, run_as: &RunAs) -> Result<(), TestkitError> {
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
    run_as.chown(&path)
}

/// Starts the bouncer and waits until its port accepts connections.
fn spawn(
    executable: &Path,
    dir: &Path,
    port: u16,
    run_as: &RunAs,
) -> Result<Watchdog, TestkitError> {
    let log = dir.join(LOG_FILE);
    let mut watchdog = Watchdog::spawn(WatchdogSpec {
        program: executable,
        args: vec![dir.join(CONFIG_FILE).into()],
        run_as,
        cwd: dir,
        log_file: &log,
        // SIGTERM: immediate shutdown before 1.23, waits for clients after
        // (the watchdog escalates to SIGQUIT, immediate shutdown there).
        stop_signal: "TERM",
        cleanup_dir: Some(dir),
        env: Vec::new(),
    })?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let accepting = || TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok();
    match process::wait_until_ready(
        &mut watchdog,
        START_TIMEOUT,
        Duration::from_millis(20),
        accepting,
    )? {
        WaitOutcome::Ready => Ok(watchdog),
        WaitOutcome::Exited(status) => Err(TestkitError::StartFailed {
            service: "pgbouncer",
            status: status.to_string(),
            log: process::tail_file(&log, 8192),
        }),
        WaitOutcome::TimedOut => {
            let text = process::tail_file(&log, 8192);
            let _ = watchdog.shutdown(STOP_GRACE);
            Err(TestkitError::Timeout {
                service: "pgbouncer",
                waited: START_TIMEOUT,
                log: text,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_statement_support_starts_at_1_21() {
        assert!(!supports_prepared_statements("1.18.0"));
        assert!(!supports_prepared_statements("1.20.1"));
        assert!(supports_prepared_statements("1.21.0"));
        assert!(supports_prepared_statements("1.24.1"));
        assert!(supports_prepared_statements("2.0"));
        assert!(!supports_prepared_statements("garbage"));
    }

    #[test]
    fn config_names_mode_pool_and_upstream() {
        let options = PgBouncerOptions::new()
            .pool_size(1)
            .pool_mode(PoolMode::Session);
        let ini = config(Path::new("/d"), 7000, 5432, &options, false);
        assert!(ini.contains("* = host=127.0.0.1 port=5432"));
        assert!(ini.contains("listen_port = 7000"));
        assert!(ini.contains("pool_mode = session"));
        assert!(ini.contains("default_pool_size = 1"));
        assert!(!ini.contains("max_prepared_statements"));
        assert!(config(Path::new("/d"), 1, 2, &options, true).contains("max_prepared_statements"));
    }
}
