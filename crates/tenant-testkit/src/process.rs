//! Process plumbing shared by the services: locating executables, dropping
//! root privileges, picking free ports and the stdin-pipe watchdog that
//! guarantees a server never outlives the process that started it.
//!
//! # The watchdog
//!
//! Every server is started as the child of a tiny `/bin/sh` script (see
//! [`WATCHDOG_SCRIPT`]) whose standard input is a pipe whose only write end
//! lives in this process. The script starts the server in the background,
//! prints its pid, and blocks reading the pipe. The read returns (EOF) when:
//!
//! * [`Watchdog::shutdown`] (or `Drop`) closes the write end, or
//! * this process exits for *any* reason (normal exit without running
//!   destructors, as happens for values held in a `static`; a panic; a
//!   `SIGKILL`) because the kernel closes all of its descriptors.
//!
//! In both cases the script signals the server with its graceful stop
//! signal, waits for it, and (when asked to) deletes the service's temporary
//! directory. If the server dies on its own, the script exits with the
//! server's status and leaves the directory in place so that the log can be
//! read.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::TestkitError;

/// The watchdog script, run as `sh -c WATCHDOG_SCRIPT watchdog SIGNAL
/// CLEANUP_DIR PROGRAM ARGS...`.
///
/// * `SIGNAL` – the server's graceful stop signal (`INT`, `TERM`).
/// * `CLEANUP_DIR` – a directory to delete once the server has stopped
///   because of EOF on stdin, or an empty string.
///
/// Standard output carries exactly one line: the server's pid. The server's
/// own output goes to the script's standard error (the service log).
const WATCHDOG_SCRIPT: &str = r#"
sig=$1
cleanup=$2
shift 2
exec 3<&0 </dev/null
"$@" >&2 3<&- &
p=$!
echo "$p"
(
    read -r _ <&3
    if [ -n "$cleanup" ]; then : >"$cleanup/.testkit-stopping" 2>/dev/null; fi
    kill -s "$sig" "$p" 2>/dev/null
) &
r=$!
exec 3<&-
wait "$p"
st=$?
if [ -n "$cleanup" ] && [ -e "$cleanup/.testkit-stopping" ]; then
    rm -rf -- "$cleanup" 2>/dev/null
fi
kill "$r" 2>/dev/null
exit "$st"
"#;

/// How long [`Watchdog::shutdown`] polls between checks.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// An unprivileged system account resolved through the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceUser {
    /// The login name.
    pub(crate) name: String,
    /// Its user id.
    pub(crate) uid: u32,
    /// Its primary group id.
    pub(crate) gid: u32,
}

/// Which identity a service process runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// The identity of the current process (not root).
    CurrentUser,
    /// Drop from root to this account before `exec`.
    User(ServiceUser),
}

impl RunAs {
    /// The identity a server that refuses to run as root must use: `user`
    /// when the effective uid is 0, the current user otherwise.
    pub(crate) fn unprivileged(user: &str) -> Result<RunAs, TestkitError> {
        if is_root() {
            lookup_user(user).map(RunAs::User)
        } else {
            Ok(RunAs::CurrentUser)
        }
    }

    /// Applies the identity to a command that has not been spawned yet.
    pub(crate) fn apply(&self, command: &mut Command) {
        if let RunAs::User(user) = self {
            // std performs setgid, setgroups(0, NULL) (as we are root) and
            // setuid in the child, in that order, before exec.
            command.uid(user.uid).gid(user.gid);
        }
    }

    /// Gives ownership of `path` to the service identity (no-op for the
    /// current user).
    pub(crate) fn chown(&self, path: &Path) -> Result<(), TestkitError> {
        match self {
            RunAs::CurrentUser => Ok(()),
            RunAs::User(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| {
                    TestkitError::io(format!("chown {} to {}", path.display(), user.name), e)
                }),
        }
    }

    /// A directory under which a temp dir for this identity can be created
    /// such that the identity can traverse every parent.
    pub(crate) fn temp_base(&self) -> PathBuf {
        let base = std::env::temp_dir();
        match self {
            RunAs::CurrentUser => base,
            RunAs::User(_) if world_traversable(&base) => base,
            // /tmp is world-writable and sticky on every Unix.
            RunAs::User(_) => PathBuf::from("/tmp"),
        }
    }
}

/// Whether the effective user of this process is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Resolves `name` through `getpwnam_r` (thread-safe).
pub(crate) fn lookup_user(name: &str) -> Result<ServiceUser, TestkitError> {
    let not_found = || TestkitError::UserNotFound {
        user: name.to_owned(),
    };
    let c_name = CString::new(name).map_err(|_| not_found())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `passwd` is a plain C struct for which all-zero is a valid
        // (if meaningless) bit pattern; getpwnam_r overwrites it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call and
        // `buf.len()` is the real size of the buffer.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(TestkitError::io(
                format!("looking up system user `{name}`"),
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        if result.is_null() {
            return Err(not_found());
        }
        return Ok(ServiceUser {
            name: name.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// There is an unavoidable window between releasing the probe socket and the
/// server binding it; callers retry with a new port when the server reports
/// that the address is in use.
pub(crate) fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("reading the probe socket's address", e))?
        .port();
    Ok(port)
}

/// How often a service is started over on new ports when a chosen one was
/// taken in the meantime (see [`retry_on_port_conflict`]).
const PORT_ATTEMPTS: usize = 5;

/// Whether a startup failure was caused by a port being taken.
pub(crate) fn is_port_conflict(error: &TestkitError) -> bool {
    matches!(error, TestkitError::StartFailed { log, .. }
        if log.contains("already in use") || log.contains("AddrInUse"))
}

/// Runs `attempt` (which picks fresh ports each time) until it succeeds,
/// fails for another reason than a port conflict, or has failed on ports
/// [`PORT_ATTEMPTS`] times.
pub(crate) fn retry_on_port_conflict<T>(
    service: &'static str,
    mut attempt: impl FnMut() -> Result<T, TestkitError>,
) -> Result<T, TestkitError> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        match attempt() {
            Err(e) if is_port_conflict(&e) => last_error = Some(e),
            other => return other,
        }
    }
    Err(last_error.unwrap_or_else(|| TestkitError::StartFailed {
        service,
        status: "no free port found".to_owned(),
        log: String::new(),
    }))
}

/// The executable to use for a program: the path in environment variable
/// `env_var` if set, else the first `name` in `$PATH`, else in
/// `fallback_dirs`. On failure, every candidate inspected, in order.
pub(crate) fn find_executable(
    env_var: &str,
    name: &str,
    fallback_dirs: &[&str],
) -> Result<PathBuf, Vec<PathBuf>> {
    let mut candidates: Vec<PathBuf> = std::env::var_os(env_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.extend(
        path_dirs()
            .into_iter()
            .chain(fallback_dirs.iter().map(PathBuf::from))
            .map(|dir| dir.join(name)),
    );
    first_executable(candidates)
}

/// The first executable among `candidates`; on failure, every distinct
/// candidate inspected, in order.
pub(crate) fn first_executable(
    candidates: impl IntoIterator<Item = PathBuf>,
) -> Result<PathBuf, Vec<PathBuf>> {
    let mut searched = Vec::new();
    for candidate in candidates {
        if searched.contains(&candidate) {
            continue;
        }
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    Err(searched)
}

/// The directories listed in `$PATH`, in order.
pub(crate) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// Whether `path` is a regular file with an execute bit set.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether `pid` names a live (non-zombie) process.
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => match libc::pid_t::try_from(pid) {
            // SAFETY: signal 0 only checks for existence and permission.
            Ok(pid) => unsafe { libc::kill(pid, 0) == 0 },
            Err(_) => false,
        },
    }
}

/// Sends `signal` to `pid`, ignoring errors (the process may be gone).
fn send_signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill has no memory-safety preconditions; pid is > 0 so
            // it never addresses a process group.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// Whether every ancestor of `path` (and `path` itself) has the
/// "others may search" bit.
fn world_traversable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors().all(|dir| {
        std::fs::metadata(dir)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// The last `max_bytes` of a log file, lossily decoded (empty if unreadable).
pub(crate) fn tail_file(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(log {} unreadable)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max_bytes {
        let _ = file.seek(SeekFrom::Start(len - max_bytes));
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs a short-lived helper command to completion, capturing its output.
pub(crate) fn run_to_completion(mut command: Command, run_as: &RunAs) -> Result<(), TestkitError> {
    run_as.apply(&mut command);
    let description = describe(&command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::io(format!("running `{description}`"), e))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(TestkitError::CommandFailed {
        command: description,
        status: output.status.to_string(),
        output: text,
    })
}

/// A printable form of a command line.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the watchdog should start and how.
pub(crate) struct WatchdogSpec<'a> {
    /// The server executable.
    pub(crate) program: &'a Path,
    /// Its arguments.
    pub(crate) args: Vec<OsString>,
    /// The identity to run the watchdog and the server under.
    pub(crate) run_as: &'a RunAs,
    /// Working directory (must be accessible to `run_as`).
    pub(crate) cwd: &'a Path,
    /// File that receives the server's stdout and stderr.
    pub(crate) log_file: &'a Path,
    /// Graceful stop signal name understood by `kill -s` (`INT`, `TERM`).
    pub(crate) stop_signal: &'static str,
    /// Directory the watchdog deletes after a requested stop, if any.
    pub(crate) cleanup_dir: Option<&'a Path>,
    /// Extra environment variables for the server.
    pub(crate) env: Vec<(String, String)>,
}

/// A running server under the stdin-pipe watchdog (see the module docs).
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
    server_pid: u32,
    status: Option<ExitStatus>,
}

impl Watchdog {
    /// Starts the server described by `spec` under a new watchdog.
    pub(crate) fn spawn(spec: WatchdogSpec<'_>) -> Result<Watchdog, TestkitError> {
        let log = File::create(spec.log_file).map_err(|e| {
            TestkitError::io(format!("creating log {}", spec.log_file.display()), e)
        })?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("testkit-watchdog")
            .arg(spec.stop_signal)
            .arg(spec.cleanup_dir.map(Path::as_os_str).unwrap_or_default())
            .arg(spec.program)
            .args(&spec.args)
            .current_dir(spec.cwd)
            .env("LC_ALL", "C")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Own process group: a terminal's Ctrl-C reaches only the test
            // process, whose exit then stops the server through the pipe.
            .process_group(0);
        spec.run_as.apply(&mut command);
        let mut child = command.spawn().map_err(|e| {
            TestkitError::io(
                format!("spawning the watchdog for {}", spec.program.display()),
                e,
            )
        })?;
        let stdin = child.stdin.take();
        let pid_line = match child.stdout.take() {
            Some(stdout) => {
                let mut line = String::new();
                BufReader::new(stdout)
                    .read_line(&mut line)
                    .map(|_| line)
                    .map_err(|e| TestkitError::io("reading the server pid from the watchdog", e))
            }
            None => Ok(String::new()),
        };
        let mut watchdog = Watchdog {
            child,
            stdin,
            server_pid: 0,
            status: None,
        };
        match pid_line.map(|l| l.trim().parse::<u32>()) {
            Ok(Ok(pid)) if pid > 0 => {
                watchdog.server_pid = pid;
                Ok(watchdog)
            }
            Ok(_) => {
                let _ = watchdog.shutdown(Duration::from_secs(5));
                Err(TestkitError::StartFailed {
                    service: "watchdog",
                    status: "did not report a server pid".to_owned(),
                    log: tail_file(spec.log_file, 8192),
                })
            }
            Err(e) => {
                let _ = watchdog.shutdown(Duration::from_secs(5));
                Err(e)
            }
        }
    }

    /// The pid of the server process itself (not of the watchdog shell).
    pub(crate) fn server_pid(&self) -> u32 {
        self.server_pid
    }

    /// The watchdog's exit status if it has ended (which happens exactly
    /// when the server has ended), without blocking.
    pub(crate) fn try_status(&mut self) -> Result<Option<ExitStatus>, TestkitError> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| TestkitError::io("polling the watchdog process", e))?;
        }
        Ok(self.status)
    }

    /// Stops the server: closes the pipe (graceful stop signal), waits up to
    /// `grace`, then escalates to `SIGQUIT` and `SIGKILL`. Idempotent.
    pub(crate) fn shutdown(&mut self, grace: Duration) -> Result<ExitStatus, TestkitError> {
        if let Some(status) = self.try_status()? {
            self.stdin = None;
            return Ok(status);
        }
        // Closing our (only) write end makes the watchdog's `read` see EOF.
        self.stdin = None;
        if let Some(status) = self.wait_for(grace)? {
            return Ok(status);
        }
        // The watchdog is alive, so it has not reaped the server yet and the
        // pid cannot have been reused.
        if self.server_pid > 0 {
            send_signal(self.server_pid, libc::SIGQUIT);
            if let Some(status) = self.wait_for(Duration::from_secs(3))? {
                return Ok(status);
            }
            send_signal(self.server_pid, libc::SIGKILL);
            if let Some(status) = self.wait_for(Duration::from_secs(3))? {
                return Ok(status);
            }
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| TestkitError::io("waiting for the watchdog process", e))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Kills the server with `SIGKILL` (no graceful stop, as in a crash) and
    /// waits for the watchdog to end. The watchdog does not delete the
    /// cleanup directory in this case, so a new server can be started on the
    /// same files. Idempotent.
    pub(crate) fn kill(&mut self) -> Result<ExitStatus, TestkitError> {
        if let Some(status) = self.try_status()? {
            self.stdin = None;
            return Ok(status);
        }
        // The watchdog is alive, so it has not reaped the server yet and the
        // pid cannot have been reused.
        if self.server_pid > 0 {
            send_signal(self.server_pid, libc::SIGKILL);
            if let Some(status) = self.wait_for(Duration::from_secs(10))? {
                self.stdin = None;
                return Ok(status);
            }
        }
        self.shutdown(Duration::from_secs(5))
    }

    fn wait_for(&mut self, limit: Duration) -> Result<Option<ExitStatus>, TestkitError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.shutdown(Duration::from_secs(15));
    }
}

/// How [`wait_until_ready`] ended.
pub(crate) enum WaitOutcome {
    /// `ready` returned true.
    Ready,
    /// The server exited first.
    Exited(ExitStatus),
    /// Time ran out.
    TimedOut,
}

/// Polls `ready` every `interval` until it returns `true`, the watchdog
/// reports that the server ended, or `timeout` elapses.
pub(crate) fn wait_until_ready(
    watchdog: &mut Watchdog,
    timeout: Duration,
    interval: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<WaitOutcome, TestkitError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = watchdog.try_status()? {
            return Ok(WaitOutcome::Exited(status));
        }
        if ready() {
            return Ok(WaitOutcome::Ready);
        }
        if Instant::now() >= deadline {
            return Ok(WaitOutcome::TimedOut);
        }
        thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_user_is_a_typed_error() {
        match lookup_user("tenant-testkit-no-such-user") {
            Err(TestkitError::UserNotFound { user }) => {
                assert_eq!(user, "tenant-testkit-no-such-user")
            }
            other => panic!("unexpected result: {other:?}"),
        }
        assert!(matches!(
            lookup_user("nul\0byte"),
            Err(TestkitError::UserNotFound { .. })
        ));
    }

    #[test]
    fn root_user_resolves() {
        let root = lookup_user("root").expect("root exists");
        assert_eq!(root.uid, 0);
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().expect("port"), 0);
    }

    #[test]
    fn watchdog_stops_child_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cleanup = dir.path().join("scratch");
        std::fs::create_dir(&cleanup).expect("mkdir");
        let mut watchdog = Watchdog::spawn(WatchdogSpec {
            program: Path::new("/bin/sleep"),
            args: vec!["30".into()],
            run_as: &RunAs::CurrentUser,
            cwd: dir.path(),
            log_file: &dir.path().join("log"),
            stop_signal: "TERM",
            cleanup_dir: Some(&cleanup),
            env: Vec::new(),
        })
        .expect("spawn");
        let pid = watchdog.server_pid();
        assert!(pid_alive(pid));
        assert!(watchdog.try_status().expect("status").is_none());
        let started = Instant::now();
        watchdog.shutdown(Duration::from_secs(5)).expect("shutdown");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!pid_alive(pid));
        assert!(
            !cleanup.exists(),
            "cleanup dir removed after requested stop"
        );
    }

    #[test]
    fn watchdog_reports_server_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut watchdog = Watchdog::spawn(WatchdogSpec {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), "echo boom >&2; exit 3".into()],
            run_as: &RunAs::CurrentUser,
            cwd: dir.path(),
            log_file: &dir.path().join("log"),
            stop_signal: "TERM",
            cleanup_dir: Some(dir.path()),
            env: Vec::new(),
        })
        .expect("spawn");
        let outcome = wait_until_ready(
            &mut watchdog,
            Duration::from_secs(5),
            Duration::from_millis(10),
            || false,
        )
        .expect("wait");
        match outcome {
            WaitOutcome::Exited(status) => assert_eq!(status.code(), Some(3)),
            _ => panic!("expected the server to exit"),
        }
        // Not a requested stop: the directory (and log) are kept.
        assert!(tail_file(&dir.path().join("log"), 100).contains("boom"));
    }
}
