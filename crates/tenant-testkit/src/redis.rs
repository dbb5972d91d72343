//! Ephemeral `redis-server` instances.
//!
//! [`TestRedis::start`] runs the machine's `redis-server` on a free port of
//! 127.0.0.1 with persistence disabled (`--save '' --appendonly no`) in a
//! fresh temporary directory, under the stdin-pipe watchdog (see the crate
//! docs, "Teardown"). Redis may run as root, so no privileges are dropped.
//!
//! [`TestRedis::stop`] and [`TestRedis::restart`] simulate an outage: the
//! server comes back on the same port, empty.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::error::TestkitError;
use crate::process::{self, RunAs, WaitOutcome, Watchdog, WatchdogSpec};

/// Environment variable naming the `redis-server` executable to use; it is
/// tried before `$PATH`.
pub const REDIS_SERVER_ENV: &str = "TENANT_TESTKIT_REDIS_SERVER";

/// Directories searched after `$PATH` (Debian installs to `/usr/bin`).
const FALLBACK_DIRS: [&str; 3] = ["/usr/bin", "/usr/local/bin", "/usr/sbin"];
/// How long to wait for `PING` to succeed.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a graceful shutdown before escalating.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Name of the server log inside the run's temp dir.
const LOG_FILE: &str = "redis.log";

/// Finds `redis-server`: the path in [`REDIS_SERVER_ENV`], then `$PATH`, then
/// `/usr/bin`, `/usr/local/bin`, `/usr/sbin`.
///
/// # Errors
///
/// [`TestkitError::RedisNotFound`] listing every candidate inspected.
pub fn locate_redis_server() -> Result<PathBuf, TestkitError> {
    process::find_executable(REDIS_SERVER_ENV, "redis-server", &FALLBACK_DIRS)
        .map_err(|searched| TestkitError::RedisNotFound { searched })
}

/// One server run: the watchdog and the directory it works in.
#[derive(Debug)]
struct Run {
    watchdog: Watchdog,
    // Declared last: removed after the server has stopped.
    temp: TempDir,
}

/// A private `redis-server` that lives as long as this value (or, for
/// [`TestRedis::shared`], as long as the process).
///
/// Dropping it stops the server (`SIGTERM`) and deletes its directory; if the
/// process ends without running `Drop`, the watchdog does the same.
#[derive(Debug)]
pub struct TestRedis {
    executable: PathBuf,
    port: u16,
    /// Extra `redis-server` arguments.
    extra_args: Vec<String>,
    run: Option<Run>,
}

static SHARED: OnceLock<Result<TestRedis, TestkitError>> = OnceLock::new();

impl TestRedis {
    /// Locates `redis-server` ([`locate_redis_server`]) and starts it on a
    /// free port; returns once it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::RedisNotFound`] when there is no `redis-server`, and
    /// the other variants when it fails to start.
    pub fn start() -> Result<TestRedis, TestkitError> {
        let executable = locate_redis_server()?;
        Self::start_with(&executable)
    }

    /// Starts the given `redis-server` executable on a free port.
    ///
    /// # Errors
    ///
    /// As [`TestRedis::start`], except for the lookup.
    pub fn start_with(executable: &Path) -> Result<TestRedis, TestkitError> {
        process::retry_on_port_conflict("redis-server", || {
            Self::start_on(executable, process::free_port()?, Vec::new())
        })
    }

    /// Starts `executable` on `port` with extra arguments (kept for
    /// [`TestRedis::restart`]); one attempt.
    pub(crate) fn start_on(
        executable: &Path,
        port: u16,
        extra_args: Vec<String>,
    ) -> Result<TestRedis, TestkitError> {
        let run = spawn(executable, port, &extra_args)?;
        Ok(TestRedis {
            executable: executable.to_path_buf(),
            port,
            extra_args,
            run: Some(run),
        })
    }

    /// One server per process, started on first use and never dropped: the
    /// watchdog stops it when the process exits. It cannot be stopped or
    /// restarted (that needs `&mut`); start a private one for outage tests.
    ///
    /// # Panics
    ///
    /// Panics with the startup error if the server cannot be started; use
    /// [`TestRedis::try_shared`] to handle that case.
    pub fn shared() -> &'static TestRedis {
        match Self::try_shared() {
            Ok(server) => server,
            Err(e) => panic!("tenant-testkit: cannot start the shared Redis: {e}"),
        }
    }

    /// Like [`TestRedis::shared`] but returns the startup error (the same one
    /// on every call: startup is attempted once per process).
    ///
    /// # Errors
    ///
    /// The error [`TestRedis::start`] returned on the first call.
    pub fn try_shared() -> Result<&'static TestRedis, &'static TestkitError> {
        SHARED.get_or_init(TestRedis::start).as_ref()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port on 127.0.0.1 (unchanged by [`TestRedis::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, or `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.run.as_ref().map(|run| run.watchdog.server_pid())
    }

    /// Whether the server is running (it has not been stopped, and has not
    /// exited on its own).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process::pid_alive)
    }

    /// The server log of the current run, or `None` while stopped.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.run.as_ref().map(|run| run.temp.path().join(LOG_FILE))
    }

    /// The executable this server runs.
    pub fn executable(&self) -> &Path {
        &self.executable
    }

    /// Stops the server (graceful `SIGTERM`, escalating if needed) and
    /// deletes its directory. New connections are refused until
    /// [`TestRedis::restart`]. Stopping a stopped server does nothing.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] if the process cannot be waited for.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        if let Some(mut run) = self.run.take() {
            run.watchdog.shutdown(STOP_GRACE)?;
        }
        Ok(())
    }

    /// Stops the server if it is running, then starts a new, empty one on
    /// the same port and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::StartFailed`] if the port has been taken by another
    /// process in the meantime, and the errors of [`TestRedis::start`].
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop()?;
        self.run = Some(spawn(&self.executable, self.port, &self.extra_args)?);
        Ok(())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `redis-server` on `port` (with `extra_args` after the standard
/// ones) and waits until it answers `PING`.
fn spawn(executable: &Path, port: u16, extra_args: &[String]) -> Result<Run, TestkitError> {
    let temp = tempfile::Builder::new()
        .prefix("tenant-testkit-redis-")
        .tempdir()
        .map_err(|e| TestkitError::io("creating the Redis temp dir", e))?;
    let log = temp.path().join(LOG_FILE);
    let mut args: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--daemonize".into(),
        "no".into(),
        "--dir".into(),
        temp.path().into(),
        "--logfile".into(),
        "".into(),
    ];
    args.extend(extra_args.iter().map(Into::into));
    let mut watchdog = Watchdog::spawn(WatchdogSpec {
        program: executable,
        args,
        run_as: &RunAs::CurrentUser,
        cwd: temp.path(),
        log_file: &log,
        stop_signal: "TERM",
        cleanup_dir: Some(temp.path()),
        env: Vec::new(),
    })?;
    match process::wait_until_ready(
        &mut watchdog,
        START_TIMEOUT,
        Duration::from_millis(10),
        || ping(port),
    )? {
        WaitOutcome::Ready => Ok(Run { watchdog, temp }),
        WaitOutcome::Exited(status) => Err(TestkitError::StartFailed {
            service: "redis-server",
            status: status.to_string(),
            log: process::tail_file(&log, 8192),
        }),
        WaitOutcome::TimedOut => {
            // Read the log first: a requested stop deletes the directory.
            let log = process::tail_file(&log, 8192);
            let _ = watchdog.shutdown(STOP_GRACE);
            Err(TestkitError::Timeout {
                service: "redis-server",
                waited: START_TIMEOUT,
                log,
            })
        }
    }
}

/// Whether a server on `port` answers an inline `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_executable_is_a_typed_error() {
        let empty = tempfile::tempdir().expect("tempdir");
        let candidates = vec![empty.path().join("redis-server")];
        assert_eq!(
            process::first_executable(candidates.clone()),
            Err(candidates.clone())
        );
        let message = TestkitError::RedisNotFound {
            searched: candidates,
        }
        .to_string();
        assert!(message.contains("redis-server not found"), "{message}");
    }

    #[test]
    fn non_executable_file_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("redis-server");
        std::fs::write(&plain, b"not a program").expect("write");
        assert!(process::first_executable(vec![plain]).is_err());
    }
}
