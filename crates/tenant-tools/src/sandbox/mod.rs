//! The subprocess sandbox.
//!
//! A sandboxed command runs as pid 1 of fresh user, mount, pid, network,
//! IPC and UTS namespaces, as an unprivileged user (host uid
//! [`SandboxConfig::host_uid`], no capabilities, no supplementary groups),
//! with rlimits, `no_new_privs`, a Landlock ruleset (its workspace
//! read-write, system directories read-only, nothing else; no TCP), stacked
//! seccomp filters ([`DENIED_SYSCALLS`]), an empty environment plus the
//! variables it declares, stdin from `/dev/null`, and a wall-clock timeout
//! that kills pid 1 — and with it, by the kernel's pid-namespace rules,
//! every process of the sandbox.
//!
//! [`SandboxSupport::detect`] probes each layer once (and checks that
//! Landlock and seccomp are actually *enforced*, not just present);
//! [`Sandbox::new`] refuses a configuration the kernel cannot honour with
//! [`Error::SandboxUnavailable`] instead of running with less.

mod landlock;
mod pool;
mod seccomp;
mod sys;

use std::ffi::CString;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::pipe::PipeFlags;

pub use landlock::DEFAULT_SYSTEM_PATHS;
pub use pool::{WarmPool, WarmPoolBuilder, WarmSandbox};
pub use seccomp::DENIED_SYSCALLS;
pub use sys::WaitStatus;

use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// What the kernel offers, probed once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSupport {
    /// User, mount, pid, net, IPC and UTS namespaces can be created.
    pub namespaces: bool,
    /// The Landlock ABI version (`None`: absent or disabled).
    pub landlock_abi: Option<u32>,
    /// A probe process restricted by Landlock was really refused access.
    pub landlock_enforced: bool,
    /// A probe process under our seccomp filter was really refused
    /// `ptrace`.
    pub seccomp_enforced: bool,
}

impl SandboxSupport {
    /// The probe result (computed on first use).
    pub fn detect() -> &'static SandboxSupport {
        static SUPPORT: OnceLock<SandboxSupport> = OnceLock::new();
        SUPPORT.get_or_init(Self::probe)
    }

    fn probe() -> SandboxSupport {
        let namespaces = sys::probe_namespaces().is_ok();
        let landlock_abi = sys::landlock_abi().ok().filter(|&v| v >= 1);
        let landlock_enforced = landlock_abi.is_some_and(|abi| {
            let Ok(rs) = sys::landlock_create(landlock::READ_FILE, 0, 0, abi) else {
                return false;
            };
            let fd = rs.as_raw_fd();
            let path = c"/dev/null";
            sys::probe_in_child(|| sys::landlock_denies_open(fd, path)).is_ok_and(|c| c == 0)
        });
        let seccomp_enforced = seccomp::filters().is_ok_and(|filters| {
            let Some(deny) = filters.last() else {
                return false;
            };
            sys::probe_in_child(|| sys::seccomp_denies_ptrace(deny)).is_ok_and(|c| c == 0)
        });
        let support = SandboxSupport {
            namespaces,
            landlock_abi,
            landlock_enforced,
            seccomp_enforced,
        };
        tracing::debug!(?support, "probed sandbox support");
        support
    }

    /// `Ok` when every layer `config` asks for is available and enforced.
    pub fn check(&self, config: &SandboxConfig) -> Result<()> {
        if !self.namespaces {
            return Err(Error::SandboxUnavailable(
                "user/mount/pid/net/ipc/uts namespaces cannot be created".into(),
            ));
        }
        match self.landlock_abi {
            None => {
                return Err(Error::SandboxUnavailable(
                    "Landlock is not available".into(),
                ))
            }
            Some(abi) if abi < config.min_landlock_abi => {
                return Err(Error::SandboxUnavailable(format!(
                    "Landlock ABI {abi} is below the required {}",
                    config.min_landlock_abi
                )))
            }
            Some(_) => {}
        }
        if !self.landlock_enforced {
            return Err(Error::SandboxUnavailable(
                "Landlock is present but a probe was not restricted".into(),
            ));
        }
        if !self.seccomp_enforced {
            return Err(Error::SandboxUnavailable(
                "seccomp filters are not enforced".into(),
            ));
        }
        Ok(())
    }
}

/// Resource limits of a sandboxed process tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// `RLIMIT_CPU`, seconds of CPU time.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS`, bytes of address space.
    pub address_space: u64,
    /// `RLIMIT_NPROC`, processes of the sandbox user (contains fork bombs).
    pub processes: u64,
    /// `RLIMIT_NOFILE`, open descriptors.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`, bytes of the largest file written.
    pub file_size: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            cpu_seconds: 30,
            address_space: 2 << 30,
            processes: 64,
            open_files: 256,
            file_size: 64 << 20,
        }
    }
}

/// How sandboxes are made. Defaults are safe; loosen deliberately.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The lowest Landlock ABI accepted (default 4, which adds TCP rules).
    pub min_landlock_abi: u32,
    /// rlimits.
    pub limits: SandboxLimits,
    /// Default wall-clock timeout of a command.
    pub timeout: Duration,
    /// Host uid the sandbox user maps to (default 65534, `nobody`).
    pub host_uid: u32,
    /// Host gid the sandbox group maps to (default 65534).
    pub host_gid: u32,
    /// Directories readable and executable inside the sandbox.
    pub system_paths: Vec<PathBuf>,
    /// Whether files in the workspace may be executed (default false).
    pub workspace_exec: bool,
    /// Bytes of stdout and of stderr kept (the rest is drained and dropped).
    pub max_output: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            min_landlock_abi: 4,
            limits: SandboxLimits::default(),
            timeout: Duration::from_secs(30),
            host_uid: 65534,
            host_gid: 65534,
            system_paths: DEFAULT_SYSTEM_PATHS.iter().map(PathBuf::from).collect(),
            workspace_exec: false,
            max_output: 1 << 20,
        }
    }
}

/// The uid and gid a sandboxed process has inside its user namespace.
pub const SANDBOX_UID: u32 = 1000;

/// A command to run in the sandbox: an absolute program path, arguments,
/// and the only environment variables the process will see.
#[derive(Clone, Default)]
pub struct SandboxCommand {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
}

impl fmt::Debug for SandboxCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may hold credentials: show names only.
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SandboxCommand")
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("env", &env)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SandboxCommand {
    /// Runs `program` (an absolute path).
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Declares an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Overrides the sandbox's default timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `u32 len ‖ u32 argc ‖ u32 envc ‖ NUL-terminated strings`.
    fn encode(&self) -> Result<Vec<u8>> {
        if !self.program.starts_with('/') {
            return Err(Error::InvalidCommand(
                "program must be an absolute path".into(),
            ));
        }
        let entries = 1 + self.args.len() + self.env.len();
        if entries > sys::MAX_ENTRIES {
            return Err(Error::InvalidCommand(
                "too many arguments and variables".into(),
            ));
        }
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(&((1 + self.args.len()) as u32).to_le_bytes());
        body.extend_from_slice(&(self.env.len() as u32).to_le_bytes());
        let mut push = |s: &str| -> Result<()> {
            if s.as_bytes().contains(&0) {
                return Err(Error::InvalidCommand(
                    "NUL byte in argument or variable".into(),
                ));
            }
            body.extend_from_slice(s.as_bytes());
            body.push(0);
            Ok(())
        };
        push(&self.program)?;
        for a in &self.args {
            push(a)?;
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') {
                return Err(Error::InvalidCommand(
                    "invalid environment variable name".into(),
                ));
            }
            push(&format!("{k}={v}"))?;
        }
        if body.len() > sys::MAX_MESSAGE {
            return Err(Error::InvalidCommand("command is too large".into()));
        }
        let mut msg = Vec::with_capacity(body.len() + 4);
        msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
        msg.extend_from_slice(&body);
        Ok(msg)
    }
}

/// What a sandboxed command did.
#[derive(Clone, Debug)]
pub struct SandboxOutput {
    /// How pid 1 ended.
    pub status: WaitStatus,
    /// Captured stdout (capped).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped).
    pub stderr: Vec<u8>,
    /// Whether the wall-clock timeout killed it.
    pub timed_out: bool,
    /// Wall-clock time from the command being sent to pid 1 being reaped.
    pub elapsed: Duration,
}

impl SandboxOutput {
    /// Exited with status 0 before the timeout.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status == WaitStatus::Exited(0)
    }

    /// stdout, lossily decoded.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr, lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A sandbox child that has been cloned into its namespaces and is waiting
/// for its command.
pub(crate) struct Prepared {
    pid: i32,
    pidfd: OwnedFd,
    cmd_w: OwnedFd,
    err_r: OwnedFd,
    out_r: OwnedFd,
    errout_r: OwnedFd,
    // Keeps the ruleset alive until the child has restricted itself.
    _landlock: Option<OwnedFd>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // A prepared child that never ran (or is still running when
        // abandoned) is killed and reaped.
        if self.pid > 0 {
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
            let _ = sys::wait_exit(self.pid);
        }
    }
}

/// Runs commands in kernel sandboxes. Platform-wide; cheap to share in an
/// `Arc`.
pub struct Sandbox {
    config: SandboxConfig,
    abi: u32,
    filters: Vec<seccompiler::BpfProgram>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .field("landlock_abi", &self.abi)
            .finish_non_exhaustive()
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::setup("pipe", e))
}

impl Sandbox {
    /// A sandbox with `config`, after checking the kernel supports every
    /// layer it asks for ([`Error::SandboxUnavailable`] otherwise).
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let support = SandboxSupport::detect();
        support.check(&config)?;
        let abi = support.landlock_abi.unwrap_or(0);
        Ok(Self {
            config,
            abi,
            filters: seccomp::filters()?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Clones a child for `workspace`, mapped to `host_uid`/`host_gid`,
    /// waiting for its command.
    pub(crate) fn prepare(
        &self,
        workspace: &Workspace,
        host_uid: u32,
        host_gid: u32,
    ) -> Result<Prepared> {
        workspace.grant_to(host_uid, host_gid)?;
        let ruleset = landlock::ruleset(
            self.abi,
            workspace.path(),
            self.config.workspace_exec,
            &self.config.system_paths,
        )?;
        let (cmd_r, cmd_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (errout_r, errout_w) = pipe()?;
        let devnull =
            rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::setup("open /dev/null", e))?;
        let cwd = CString::new(workspace.path().as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidCommand("workspace path contains NUL".into()))?;
        let l = &self.config.limits;
        let mut plan = sys::ChildPlan::new();
        plan.cmd_read = cmd_r.as_raw_fd();
        plan.err_write = err_w.as_raw_fd();
        plan.stdin = devnull.as_raw_fd();
        plan.stdout = out_w.as_raw_fd();
        plan.stderr = errout_w.as_raw_fd();
        plan.uid = SANDBOX_UID;
        plan.gid = SANDBOX_UID;
        plan.rlimits = vec![
            (libc::RLIMIT_CPU, l.cpu_seconds),
            (libc::RLIMIT_AS, l.address_space),
            (libc::RLIMIT_NPROC, l.processes),
            (libc::RLIMIT_NOFILE, l.open_files),
            (libc::RLIMIT_FSIZE, l.file_size),
            (libc::RLIMIT_CORE, 0),
        ];
        plan.cwd = cwd;
        plan.landlock = Some(ruleset.as_raw_fd());
        plan.seccomp = self.filters.clone();
        let (pid, pidfd) = sys::spawn_child(&mut plan).map_err(|e| Error::setup("clone", e))?;
        let prepared = Prepared {
            pid,
            pidfd,
            cmd_w,
            err_r,
            out_r,
            errout_r,
            _landlock: Some(ruleset),
        };
        // The child's ends; ours are closed when these drop.
        drop((cmd_r, err_w, out_w, errout_w, devnull));
        write_id_maps(pid, host_uid, host_gid)?;
        Ok(prepared)
    }

    /// Sends `cmd` to a prepared child and supervises it to the end.
    pub(crate) fn start(&self, mut p: Prepared, cmd: &SandboxCommand) -> Result<SandboxOutput> {
        let msg = cmd.encode()?;
        let started = Instant::now();
        let mut cmd_w =
            std::fs::File::from(p.cmd_w.try_clone().map_err(|e| Error::setup("dup", e))?);
        cmd_w
            .write_all(&msg)
            .map_err(|e| Error::setup("send command", e))?;
        drop(cmd_w);
        // EOF on the error pipe: execve succeeded (the pipe is CLOEXEC).
        let mut report = Vec::with_capacity(8);
        std::fs::File::from(p.err_r.try_clone().map_err(|e| Error::setup("dup", e))?)
            .read_to_end(&mut report)
            .map_err(|e| Error::setup("read child status", e))?;
        if report.len() >= 8 {
            let stage = u32::from_le_bytes([report[0], report[1], report[2], report[3]]) as usize;
            let code = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
            return Err(Error::SandboxSetup {
                stage: sys::STAGE_NAMES.get(stage).copied().unwrap_or("child"),
                source: std::io::Error::from_raw_os_error(code),
            });
        }
        let timeout = cmd.timeout.unwrap_or(self.config.timeout);
        let out = supervise(&mut p, started, timeout, self.config.max_output)?;
        Ok(out)
    }

    /// Runs `cmd` in a fresh sandbox whose only writable directory is
    /// `workspace`.
    pub fn run(&self, workspace: &Workspace, cmd: &SandboxCommand) -> Result<SandboxOutput> {
        cmd.encode()?;
        let p = self.prepare(workspace, self.config.host_uid, self.config.host_gid)?;
        self.start(p, cmd)
    }

    /// [`run`](Self::run) on a blocking thread.
    pub async fn run_async(
        self: &Arc<Self>,
        workspace: Arc<Workspace>,
        cmd: SandboxCommand,
    ) -> Result<SandboxOutput> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.run(&workspace, &cmd))
            .await
            .map_err(|e| Error::setup("supervisor task", std::io::Error::other(e.to_string())))?
    }
}

fn write_id_maps(pid: i32, host_uid: u32, host_gid: u32) -> Result<()> {
    let uid_map = format!("{SANDBOX_UID} {host_uid} 1\n");
    let gid_map = format!("{SANDBOX_UID} {host_gid} 1\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)
        .map_err(|e| Error::setup("uid_map", e))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)
        .map_err(|e| Error::setup("gid_map", e))?;
    Ok(())
}

fn read_some(fd: &OwnedFd, into: &mut Vec<u8>, cap: usize) -> bool {
    let mut buf = [0u8; 16 * 1024];
    match rustix::io::read(fd, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            let room = cap.saturating_sub(into.len());
            into.extend_from_slice(&buf[..n.min(room)]);
            true
        }
        Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => true,
        Err(_) => false,
    }
}

/// Collects output until pid 1 has exited and the pipes are closed,
/// killing the tree at the deadline.
fn supervise(
    p: &mut Prepared,
    started: Instant,
    timeout: Duration,
    cap: usize,
) -> Result<SandboxOutput> {
    let deadline = started + timeout;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open, mut exited, mut timed_out) = (true, true, false, false);
    let mut grace_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if !exited && now >= deadline {
            let _ = rustix::process::pidfd_send_signal(&p.pidfd, rustix::process::Signal::KILL);
            timed_out = true;
        }
        if exited && (!out_open && !err_open || grace_until.is_some_and(|g| now >= g)) {
            break;
        }
        let until = grace_until.unwrap_or(deadline).max(now);
        let wait = if timed_out && !exited {
            Duration::from_millis(50)
        } else {
            until - now
        };
        let ts = rustix::event::Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: wait.subsec_nanos() as i64,
        };
        let mut fds = Vec::with_capacity(3);
        if !exited {
            fds.push(PollFd::new(&p.pidfd, PollFlags::IN));
        }
        if out_open {
            fds.push(PollFd::new(&p.out_r, PollFlags::IN));
        }
        if err_open {
            fds.push(PollFd::new(&p.errout_r, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::setup("poll", e)),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 0;
        if !exited {
            if ready[i] {
                exited = true;
                grace_until = Some(Instant::now() + Duration::from_secs(2));
            }
            i += 1;
        }
        if out_open {
            if ready[i] {
                out_open = read_some(&p.out_r, &mut stdout, cap);
            }
            i += 1;
        }
        if err_open && ready[i] {
            err_open = read_some(&p.errout_r, &mut stderr, cap);
        }
    }
    let status = sys::wait_exit(p.pid).map_err(|e| Error::setup("wait", e))?;
    // Reaped: make Drop a no-op on the pid.
    p.pid = -1;
    Ok(SandboxOutput {
        status,
        stdout,
        stderr,
        timed_out,
        elapsed: started.elapsed(),
    })
}

/// Host processes (by `/proc`) whose real uid is `uid`.
pub(crate) fn processes_of_uid(uid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
                == Some(uid)
        })
        .count()
}

impl AsFd for Prepared {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}
