//! The subprocess sandbox.
//!
//! A sandboxed command runs as pid 1 of fresh user, mount, pid, network,
//! IPC, UTS and cgroup namespaces, inside a minimal root of its own (see
//! [`SANDBOX_WORKSPACE`] and the layout in `root.rs`: read-only system
//! paths, its workspace, a private `/tmp`, `/proc` and a minimal `/dev`;
//! nothing else of the host), as an unprivileged user with every
//! capability set and the bounding set empty, with every rlimit set,
//! `no_new_privs`, a Landlock ruleset on top, stacked seccomp filters
//! ([`DENIED_SYSCALLS`] and an address-family allowlist), per-sandbox
//! control groups capping memory, processes and CPU together, an empty
//! environment plus the variables it declares, stdin from `/dev/null`,
//! and a wall-clock timeout that kills pid 1 — and with it, by the
//! kernel's pid-namespace rules, every process of the sandbox. It dies
//! with the supervisor process, whichever thread started it.
//!
//! [`SandboxSupport::detect`] probes each layer once (and checks that
//! Landlock, seccomp and the minimal root actually work, not just that
//! they are present); [`Sandbox::new`] refuses a configuration the kernel
//! cannot honour with [`Error::SandboxUnavailable`] instead of running
//! with less.

mod cgroup;
pub(crate) mod landlock;
mod pool;
pub(crate) mod root;
mod seccomp;
mod spawner;
mod sys;
mod uids;

use std::ffi::CString;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::pipe::PipeFlags;

pub use cgroup::CgroupLayout;
pub use landlock::DEFAULT_SYSTEM_PATHS;
pub use pool::{WarmPool, WarmPoolBuilder, WarmSandbox};
pub use root::SANDBOX_WORKSPACE;
pub use seccomp::DENIED_SYSCALLS;
pub use sys::WaitStatus;
pub use uids::DEFAULT_POOL_UID_BASE;

use crate::egress::EgressProxy;
use crate::error::{Error, Result};
use crate::redaction::Redactor;
use crate::workspace::{grant, Workspace};
use cgroup::{CgroupLimits, SandboxCgroup};
use root::SystemPath;

/// The longest timeout a command or configuration may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The loopback port of a run's egress proxy, inside the run's network
/// namespace (`HTTP_PROXY=http://127.0.0.1:3128`).
pub const PROXY_PORT: u16 = 3128;

/// What the kernel offers, probed once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxSupport {
    /// User, mount, pid, net, IPC, UTS and cgroup namespaces can be
    /// created.
    pub namespaces: bool,
    /// The Landlock ABI version (`None`: absent or disabled).
    pub landlock_abi: Option<u32>,
    /// A probe process restricted by Landlock was really refused access.
    pub landlock_enforced: bool,
    /// A probe process under our seccomp filter was really refused
    /// `ptrace`.
    pub seccomp_enforced: bool,
    /// A probe process built and entered a minimal root (tmpfs,
    /// `open_tree` binds, a private `/proc`, `pivot_root`) and made
    /// anonymous memory files non-executable (`vm.memfd_noexec`).
    pub minimal_root: bool,
    /// The control-group layout per-sandbox limits use (`None`: no
    /// writable cgroups).
    pub cgroups: Option<CgroupLayout>,
    root_failure: Option<&'static str>,
}

fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

impl SandboxSupport {
    /// The probe result (computed on first use).
    pub fn detect() -> &'static SandboxSupport {
        static SUPPORT: OnceLock<SandboxSupport> = OnceLock::new();
        SUPPORT.get_or_init(Self::probe)
    }

    fn probe() -> SandboxSupport {
        let namespaces = sys::probe_in_child(sys::NAMESPACES, || 0).is_ok_and(|c| c == 0);
        let landlock_abi = sys::landlock_abi().ok().filter(|&v| v >= 1);
        let landlock_enforced = landlock_abi.is_some_and(|abi| {
            sys::probe_in_child(0, || {
                sys::landlock_denies_open(abi, landlock::READ_FILE, c"/dev/null")
            })
            .is_ok_and(|c| c == 0)
        });
        let seccomp_enforced = seccomp::filters(false).is_ok_and(|filters| {
            let Some(deny) = filters.last() else {
                return false;
            };
            sys::probe_in_child(0, || sys::seccomp_denies_ptrace(deny)).is_ok_and(|c| c == 0)
        });
        let root_failure = if namespaces {
            probe_minimal_root()
        } else {
            Some("namespaces")
        };
        let support = SandboxSupport {
            namespaces,
            landlock_abi,
            landlock_enforced,
            seccomp_enforced,
            minimal_root: root_failure.is_none(),
            cgroups: cgroup::detect().cloned(),
            root_failure,
        };
        tracing::debug!(?support, "probed sandbox support");
        support
    }

    /// `Ok` when every layer `config` asks for is available and enforced.
    pub fn check(&self, config: &SandboxConfig) -> Result<()> {
        if !self.namespaces {
            return Err(Error::SandboxUnavailable(
                "user/mount/pid/net/ipc/uts/cgroup namespaces cannot be created".into(),
            ));
        }
        if !self.minimal_root {
            return Err(Error::SandboxUnavailable(format!(
                "a minimal root cannot be built here (failed at: {})",
                self.root_failure.unwrap_or("unknown")
            )));
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
        cgroup::check(&config.limits.cgroup_limits())
    }
}

/// Prepares a throw-away sandbox the way every run is prepared (minimal
/// root, privileges dropped, confinement) without cgroups, Landlock or
/// seccomp, which are probed on their own. `None` when it worked, else
/// the failing step.
fn probe_minimal_root() -> Option<&'static str> {
    let dir = std::env::temp_dir().join(format!("tenant-tools-root-probe-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return Some("probe directory");
    }
    let config = SandboxConfig {
        limits: SandboxLimits {
            memory: None,
            pids: None,
            cpu_millicores: None,
            ..SandboxLimits::default()
        },
        ..SandboxConfig::default()
    };
    let probe = root::system_paths(&config.system_paths).map(|system| Sandbox {
        abi: 0,
        system,
        devices: root::host_devices(),
        filters: Vec::new(),
        filters_routed: Vec::new(),
        cap_last: cap_last(),
        config,
    });
    let result = match probe {
        Ok(sandbox) => match sandbox.prepare(&dir, 65534, 65534, None) {
            Ok(_prepared) => None,
            Err(Error::SandboxSetup { stage, .. }) => Some(stage),
            Err(_) => Some("prepare"),
        },
        Err(_) => Some("system paths"),
    };
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Resource limits of a sandbox: rlimits per process, and control-group
/// limits for the whole sandbox together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// `RLIMIT_CPU`, seconds of CPU time per process.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS` (and `RLIMIT_DATA`), bytes of address space per process.
    pub address_space: u64,
    /// `RLIMIT_NPROC`, processes of the sandbox user.
    pub processes: u64,
    /// `RLIMIT_NOFILE`, open descriptors.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`, bytes of the largest file written.
    pub file_size: u64,
    /// `RLIMIT_STACK`, bytes of stack.
    pub stack: u64,
    /// `RLIMIT_MEMLOCK`, bytes of locked memory.
    pub locked_memory: u64,
    /// `RLIMIT_SIGPENDING`, queued signals.
    pub pending_signals: u64,
    /// `RLIMIT_MSGQUEUE`, bytes of POSIX message queues.
    pub message_queues: u64,
    /// `RLIMIT_LOCKS`, file locks.
    pub file_locks: u64,
    /// Memory of the whole sandbox, in bytes (cgroup; `None`: unlimited).
    pub memory: Option<u64>,
    /// Processes and threads of the whole sandbox (cgroup `pids.max`).
    pub pids: Option<u64>,
    /// CPU of the whole sandbox, in thousandths of a core (cgroup).
    pub cpu_millicores: Option<u32>,
    /// Bytes of the sandbox's private `/tmp` (a tmpfs, charged to the
    /// sandbox's memory).
    pub tmp_bytes: u64,
    /// Inodes of the sandbox's private `/tmp`.
    pub tmp_inodes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            cpu_seconds: 30,
            address_space: 2 << 30,
            processes: 64,
            open_files: 256,
            file_size: 64 << 20,
            stack: 8 << 20,
            locked_memory: 64 << 10,
            pending_signals: 256,
            message_queues: 0,
            file_locks: 64,
            memory: Some(512 << 20),
            pids: Some(128),
            cpu_millicores: Some(1000),
            tmp_bytes: 64 << 20,
            tmp_inodes: 4096,
        }
    }
}

impl SandboxLimits {
    fn cgroup_limits(&self) -> CgroupLimits {
        CgroupLimits {
            memory: self.memory,
            pids: self.pids,
            cpu_millicores: self.cpu_millicores,
        }
    }

    /// Every rlimit, set explicitly: nothing is inherited from the
    /// supervisor.
    fn rlimits(&self) -> Vec<(u32, u64)> {
        vec![
            (libc::RLIMIT_CPU, self.cpu_seconds),
            (libc::RLIMIT_FSIZE, self.file_size),
            (libc::RLIMIT_DATA, self.address_space),
            (libc::RLIMIT_STACK, self.stack),
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_RSS, self.address_space),
            (libc::RLIMIT_NPROC, self.processes),
            (libc::RLIMIT_NOFILE, self.open_files),
            (libc::RLIMIT_MEMLOCK, self.locked_memory),
            (libc::RLIMIT_AS, self.address_space),
            (libc::RLIMIT_LOCKS, self.file_locks),
            (libc::RLIMIT_SIGPENDING, self.pending_signals),
            (libc::RLIMIT_MSGQUEUE, self.message_queues),
            (libc::RLIMIT_NICE, 0),
            (libc::RLIMIT_RTPRIO, 0),
            (libc::RLIMIT_RTTIME, 0),
        ]
    }
}

/// How sandboxes are made. Defaults are safe; loosen deliberately.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The lowest Landlock ABI accepted (default 4, which adds TCP rules).
    pub min_landlock_abi: u32,
    /// rlimits and cgroup limits.
    pub limits: SandboxLimits,
    /// Default wall-clock timeout of a command (at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Host uid the sandbox user of a cold run maps to (default 65534,
    /// `nobody`). Warm pools use their own ranges.
    pub host_uid: u32,
    /// Host gid the sandbox group of a cold run maps to (default 65534).
    pub host_gid: u32,
    /// Paths bound read-only (and executable) into the sandbox's root at
    /// the same place. Absolute; not `/`, not overlapping `/workspace`,
    /// `/tmp`, `/proc`, `/dev` or `/run`, and never covering a workspace.
    pub system_paths: Vec<PathBuf>,
    /// Whether files in the workspace and `/tmp` may be executed (default
    /// false: both are mounted `noexec`).
    pub workspace_exec: bool,
    /// Bytes of stdout and of stderr kept (the rest is drained and dropped).
    pub max_output: usize,
    /// Refuse workspaces without a size quota (default true): without one
    /// a sandbox can fill the host's disk.
    pub require_workspace_quota: bool,
    /// Name of the control group under which per-sandbox groups are made.
    pub cgroup_parent: String,
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
            require_workspace_quota: true,
            cgroup_parent: "tenant-tools".into(),
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

/// Environment variables that point clients at a run's egress proxy; a
/// command cannot set them itself.
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Variables naming the CA bundle of a run's egress proxy.
const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
];

impl SandboxCommand {
    /// Runs `program` (an absolute path inside the sandbox).
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

    /// Overrides the sandbox's default timeout (at most [`MAX_TIMEOUT`];
    /// longer is [`Error::InvalidDuration`] when run).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same command with the environment of a routed run: every proxy
    /// variable points at the run's proxy, and CA variables at its bundle.
    fn routed(&self, ca_bundle: bool) -> Self {
        let mut out = self.clone();
        out.env.retain(|(k, _)| {
            let k = k.as_str();
            !(PROXY_VARS.contains(&k) || ca_bundle && CA_VARS.contains(&k))
        });
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        for k in PROXY_VARS {
            let v = if k.eq_ignore_ascii_case("no_proxy") {
                String::new()
            } else {
                proxy.clone()
            };
            out.env.push(((*k).to_owned(), v));
        }
        if ca_bundle {
            for k in CA_VARS {
                out.env
                    .push(((*k).to_owned(), format!("{}/ca.pem", root::RUN_FILES)));
            }
        }
        out
    }

    /// `u32 len ‖ u32 argc ‖ u32 envc ‖ NUL-terminated strings`.
    fn encode(&self) -> Result<Vec<u8>> {
        if !self.program.starts_with('/') {
            return Err(Error::InvalidCommand(
                "program must be an absolute path".into(),
            ));
        }
        if self.timeout.is_some_and(|t| t > MAX_TIMEOUT) {
            return Err(Error::InvalidDuration {
                what: "command timeout",
                max: MAX_TIMEOUT,
            });
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
#[non_exhaustive]
pub struct SandboxOutput {
    /// How pid 1 ended.
    pub status: WaitStatus,
    /// Captured stdout (capped, secrets redacted when the run had a
    /// redactor).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped, redacted likewise).
    pub stderr: Vec<u8>,
    /// Whether the wall-clock timeout killed it.
    pub timed_out: bool,
    /// Processes the sandbox's memory limit killed.
    pub oom_kills: u64,
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

/// Per-run options of [`Sandbox::run_with`].
#[derive(Debug, Default)]
pub struct RunOptions {
    egress: Option<EgressProxy>,
    redactor: Option<Redactor>,
}

impl RunOptions {
    /// No egress, no redaction (what [`Sandbox::run`] uses).
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes the run's network through `proxy`: the only destination the
    /// process can reach is the proxy, on [`PROXY_PORT`] of its own
    /// loopback, and `AF_INET`/`AF_INET6` sockets are allowed.
    pub fn egress(mut self, proxy: EgressProxy) -> Self {
        self.egress = Some(proxy);
        self
    }

    /// Scrubs every secret `redactor` knows from stdout and stderr as they
    /// stream in.
    pub fn redactor(mut self, redactor: &Redactor) -> Self {
        self.redactor = Some(redactor.clone());
        self
    }
}

/// A sandbox child that has been cloned into its namespaces, built its
/// root, dropped its privileges and restricted itself, and is waiting for
/// its command.
pub(crate) struct Prepared {
    pid: i32,
    pidfd: OwnedFd,
    cmd_w: Option<OwnedFd>,
    err_r: OwnedFd,
    out_r: OwnedFd,
    errout_r: OwnedFd,
    cgroup: Option<SandboxCgroup>,
    listener: Option<std::net::TcpListener>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // A prepared child that never ran (or is still running when
        // abandoned) is killed and reaped; its groups go with it.
        if self.pid > 0 {
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
            let _ = sys::wait_exit(self.pid);
        }
        drop(self.cgroup.take());
    }
}

/// Runs commands in kernel sandboxes. Platform-wide; cheap to share in an
/// `Arc`.
pub struct Sandbox {
    config: SandboxConfig,
    abi: u32,
    system: Vec<SystemPath>,
    devices: Vec<&'static str>,
    filters: Vec<seccompiler::BpfProgram>,
    filters_routed: Vec<seccompiler::BpfProgram>,
    cap_last: u32,
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

/// How long a child may take to build its root and confine itself.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

impl Sandbox {
    /// A sandbox with `config`, after checking the kernel supports every
    /// layer it asks for ([`Error::SandboxUnavailable`] otherwise) and that
    /// the configuration is sound ([`Error::InvalidSystemPath`],
    /// [`Error::InvalidDuration`]).
    pub fn new(config: SandboxConfig) -> Result<Self> {
        if config.timeout > MAX_TIMEOUT {
            return Err(Error::InvalidDuration {
                what: "sandbox timeout",
                max: MAX_TIMEOUT,
            });
        }
        let support = SandboxSupport::detect();
        support.check(&config)?;
        let system = root::system_paths(&config.system_paths)?;
        Ok(Self {
            abi: support.landlock_abi.unwrap_or(0),
            system,
            devices: root::host_devices(),
            filters: seccomp::filters(false)?,
            filters_routed: seccomp::filters(true)?,
            cap_last: cap_last(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Refuses a workspace root that a declared system path covers or
    /// contains.
    pub fn check_workspace_root(&self, root: &Path) -> Result<()> {
        root::check_workspace_root(&self.system, root)
    }

    /// Clones a child for the workspace directory `workspace` (on the
    /// host), mapped to `host_uid`/`host_gid`, and waits until it is
    /// confined and ready for its command.
    pub(crate) fn prepare(
        &self,
        workspace: &Path,
        host_uid: u32,
        host_gid: u32,
        egress: Option<&EgressProxy>,
    ) -> Result<Prepared> {
        root::check_workspace_root(&self.system, workspace)?;
        grant(workspace, host_uid, host_gid)?;
        let run_files: Vec<(String, Vec<u8>)> = egress
            .and_then(EgressProxy::ca_bundle_pem)
            .map(|pem| vec![("ca.pem".to_owned(), pem)])
            .unwrap_or_default();
        let spec = root::RootSpec {
            system: &self.system,
            devices: &self.devices,
            workspace,
            workspace_exec: self.config.workspace_exec,
            tmp_bytes: self.config.limits.tmp_bytes,
            tmp_inodes: self.config.limits.tmp_inodes,
            run_files: &run_files,
            loopback: egress.is_some(),
        };
        let (ops, slots) = root::ops(&spec)?;
        let ports: &[u16] = if egress.is_some() { &[PROXY_PORT] } else { &[] };
        // Always present in a real sandbox (`SandboxSupport::check`); only
        // the support probe runs without.
        let landlock = if self.abi > 0 {
            Some(landlock::plan(
                self.abi,
                self.config.workspace_exec,
                &root::bound_paths(&self.system),
                ports,
            )?)
        } else {
            None
        };
        let cgroup = SandboxCgroup::create(
            &self.config.cgroup_parent,
            &self.config.limits.cgroup_limits(),
        )?;
        let (cmd_r, cmd_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (errout_r, errout_w) = pipe()?;
        let devnull =
            rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::setup("open /dev/null", e))?;
        let mut plan = Box::new(sys::ChildPlan::new());
        plan.cmd_read = sys::raw_fd(&cmd_r);
        plan.err_write = sys::raw_fd(&err_w);
        plan.stdin = sys::raw_fd(&devnull);
        plan.stdout = sys::raw_fd(&out_w);
        plan.stderr = sys::raw_fd(&errout_w);
        plan.uid = SANDBOX_UID;
        plan.gid = SANDBOX_UID;
        plan.rlimits = self.config.limits.rlimits();
        plan.root = ops;
        plan.slots = vec![-1; slots];
        plan.cwd = CString::new(SANDBOX_WORKSPACE)
            .map_err(|_| Error::InvalidCommand("workspace path".into()))?;
        plan.landlock = landlock;
        plan.cap_last = self.cap_last;
        plan.seccomp = if egress.is_some() {
            self.filters_routed.clone()
        } else {
            self.filters.clone()
        };
        let (pid, pidfd) = spawner::clone_child(plan).map_err(|e| Error::setup("clone", e))?;
        let mut prepared = Prepared {
            pid,
            pidfd,
            cmd_w: Some(cmd_w),
            err_r,
            out_r,
            errout_r,
            cgroup,
            listener: None,
        };
        // The child's ends; ours are closed when these drop.
        drop((cmd_r, err_w, out_w, errout_w, devnull));
        write_id_maps(pid, host_uid, host_gid)?;
        let go = prepared
            .cmd_w
            .as_ref()
            .ok_or_else(|| Error::setup("release child", std::io::Error::other("no pipe")))?;
        rustix::io::write(go, &[1]).map_err(|e| Error::setup("release child", e))?;
        // Joining a cgroup costs the kernel a grace period (milliseconds
        // on cgroup v1), so it overlaps the child building its root. The
        // child runs nothing of the tenant's until its command arrives,
        // which is sent only after both have finished.
        if let Some(cg) = &prepared.cgroup {
            cg.add(pid)?;
        }
        wait_ready(&prepared)?;
        if egress.is_some() {
            prepared.listener = Some(listen_in_netns(&prepared.pidfd)?);
        }
        Ok(prepared)
    }

    /// Sends `cmd` to a prepared child and supervises it to the end.
    pub(crate) fn start(
        &self,
        p: &mut Prepared,
        cmd: &SandboxCommand,
        redactor: Option<&Redactor>,
    ) -> Result<SandboxOutput> {
        let msg = cmd.encode()?;
        let timeout = cmd.timeout.unwrap_or(self.config.timeout);
        let started = Instant::now();
        let cmd_w = p
            .cmd_w
            .take()
            .ok_or_else(|| Error::WipeFailed("this sandbox has already run".into()))?;
        std::fs::File::from(cmd_w)
            .write_all(&msg)
            .map_err(|e| Error::setup("send command", e))?;
        // EOF on the error pipe: execve succeeded (the pipe is CLOEXEC).
        let mut report = Vec::with_capacity(8);
        std::fs::File::from(p.err_r.try_clone().map_err(|e| Error::setup("dup", e))?)
            .read_to_end(&mut report)
            .map_err(|e| Error::setup("read child status", e))?;
        if let Some(e) = child_error(&report) {
            return Err(e);
        }
        supervise(p, started, timeout, self.config.max_output, redactor)
    }

    /// Runs `cmd` in a fresh sandbox whose only writable directories are
    /// `workspace` (at [`SANDBOX_WORKSPACE`]) and its private `/tmp`.
    pub fn run(&self, workspace: &Workspace, cmd: &SandboxCommand) -> Result<SandboxOutput> {
        self.run_with(workspace, cmd, RunOptions::new())
    }

    /// [`run`](Self::run) with per-run options: an egress proxy and a
    /// redactor.
    pub fn run_with(
        &self,
        workspace: &Workspace,
        cmd: &SandboxCommand,
        options: RunOptions,
    ) -> Result<SandboxOutput> {
        let span = tracing::info_span!(
            target: tenant_core::telemetry::SPAN_TARGET,
            "sandbox.run",
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let _entered = span.enter();
        let started = Instant::now();
        let result = self.run_checked(workspace, cmd, options);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => {
                tenant_core::telemetry::record_error(&span, e);
                "error"
            }
        };
        metrics::histogram!(tenant_core::telemetry::metric::SANDBOX_SPAWN, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    fn run_checked(
        &self,
        workspace: &Workspace,
        cmd: &SandboxCommand,
        options: RunOptions,
    ) -> Result<SandboxOutput> {
        cmd.encode()?;
        if self.config.require_workspace_quota && !workspace.has_quota() {
            return Err(Error::SandboxUnavailable(
                "the workspace has no size quota (use WorkspaceRoot::with_quota, or set \
                 SandboxConfig::require_workspace_quota to false)"
                    .into(),
            ));
        }
        if uids::UidRange::is_taken(self.config.host_uid) {
            return Err(Error::UidRangeUnavailable(format!(
                "host uid {} belongs to a warm pool",
                self.config.host_uid
            )));
        }
        let egress = options.egress.as_ref();
        let mut p = self.prepare(
            workspace.path(),
            self.config.host_uid,
            self.config.host_gid,
            egress,
        )?;
        let (cmd, _proxy) = match (egress, p.listener.take()) {
            (Some(proxy), Some(listener)) => (
                cmd.routed(proxy.ca_bundle_pem().is_some()),
                Some(proxy.serve(listener)?),
            ),
            _ => (cmd.clone(), None),
        };
        self.start(&mut p, &cmd, options.redactor.as_ref())
    }

    /// [`run_with`](Self::run_with) on a blocking thread, off the async
    /// workers.
    pub async fn run_async(
        self: &Arc<Self>,
        workspace: Arc<Workspace>,
        cmd: SandboxCommand,
        options: RunOptions,
    ) -> Result<SandboxOutput> {
        let this = self.clone();
        let parent = tracing::Span::current();
        crate::workspace::off_worker(move || {
            parent.in_scope(|| this.run_with(&workspace, &cmd, options))
        })
        .await
    }
}

fn child_error(report: &[u8]) -> Option<Error> {
    let stage = u32::from_le_bytes(report.get(0..4)?.try_into().ok()?);
    let code = i32::from_le_bytes(report.get(4..8)?.try_into().ok()?);
    Some(Error::SandboxSetup {
        stage: sys::STAGE_NAMES
            .get(stage as usize)
            .copied()
            .unwrap_or("child"),
        source: std::io::Error::from_raw_os_error(code),
    })
}

/// Waits for the child's "ready" report (or its setup error).
fn wait_ready(p: &Prepared) -> Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::setup(
                "wait for child",
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let mut fds = [PollFd::new(&p.err_r, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::setup("poll", e)),
        }
        let Some(rest) = report.get_mut(got..) else {
            break;
        };
        match rustix::io::read(&p.err_r, rest) {
            Ok(0) => {
                return Err(Error::setup(
                    "child setup",
                    std::io::Error::other("the child exited during setup"),
                ))
            }
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(Error::setup("read child status", e)),
        }
    }
    if u32::from_le_bytes([report[0], report[1], report[2], report[3]]) == sys::ST_READY {
        return Ok(());
    }
    Err(child_error(&report)
        .unwrap_or_else(|| Error::setup("child", std::io::Error::other("bad report"))))
}

/// Creates the proxy's listening socket inside the child's network
/// namespace, from a short-lived thread (a network namespace switch is per
/// thread): the socket stays in that namespace, owned by the supervisor.
fn listen_in_netns(pidfd: &OwnedFd) -> Result<std::net::TcpListener> {
    let fd = pidfd.try_clone().map_err(|e| Error::setup("dup", e))?;
    std::thread::Builder::new()
        .name("tenant-tools-netns".into())
        .spawn(move || -> std::io::Result<std::net::TcpListener> {
            rustix::thread::move_into_thread_name_spaces(
                fd.as_fd(),
                rustix::thread::ThreadNameSpaceType::NETWORK,
            )?;
            let listener = std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .map_err(|e| Error::setup("proxy listener", e))?
        .join()
        .map_err(|_| Error::setup("proxy listener", std::io::Error::other("thread panicked")))?
        .map_err(|e| Error::setup("proxy listener", e))
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

/// One output stream of a run: raw bytes pass through the redactor (when
/// there is one) and are kept up to the cap.
struct Stream {
    fd_open: bool,
    kept: Vec<u8>,
    redact: Option<crate::redaction::RedactingStream>,
}

impl Stream {
    fn new(redactor: Option<&Redactor>) -> Self {
        Self {
            fd_open: true,
            kept: Vec::new(),
            redact: redactor.map(Redactor::stream),
        }
    }

    fn keep(&mut self, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.kept.len());
        self.kept
            .extend_from_slice(bytes.get(..bytes.len().min(room)).unwrap_or_default());
    }

    fn read_some(&mut self, fd: &OwnedFd, cap: usize) {
        let mut buf = [0u8; 16 * 1024];
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => self.fd_open = false,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                match &mut self.redact {
                    Some(r) => {
                        let out = r.push(chunk);
                        self.keep(&out, cap);
                    }
                    None => self.keep(chunk, cap),
                }
            }
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
            Err(_) => self.fd_open = false,
        }
    }

    fn finish(mut self, cap: usize) -> Vec<u8> {
        if let Some(r) = self.redact.take() {
            let tail = r.finish();
            self.keep(&tail, cap);
        }
        self.kept
    }
}

/// Collects output until pid 1 has exited and the pipes are closed,
/// killing the tree at the deadline.
fn supervise(
    p: &mut Prepared,
    started: Instant,
    timeout: Duration,
    cap: usize,
    redactor: Option<&Redactor>,
) -> Result<SandboxOutput> {
    let deadline = started
        .checked_add(timeout)
        .unwrap_or(started + MAX_TIMEOUT);
    let (mut out, mut err) = (Stream::new(redactor), Stream::new(redactor));
    let (mut exited, mut timed_out) = (false, false);
    let mut grace_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if !exited && now >= deadline && !timed_out {
            let _ = rustix::process::pidfd_send_signal(&p.pidfd, rustix::process::Signal::KILL);
            timed_out = true;
        }
        if exited && (!out.fd_open && !err.fd_open || grace_until.is_some_and(|g| now >= g)) {
            break;
        }
        let until = grace_until.unwrap_or(deadline).max(now);
        let wait = if timed_out && !exited {
            Duration::from_millis(50)
        } else {
            until - now
        };
        let ts = rustix::event::Timespec {
            tv_sec: wait.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: wait.subsec_nanos() as i64,
        };
        let mut fds = Vec::with_capacity(3);
        if !exited {
            fds.push(PollFd::new(&p.pidfd, PollFlags::IN));
        }
        if out.fd_open {
            fds.push(PollFd::new(&p.out_r, PollFlags::IN));
        }
        if err.fd_open {
            fds.push(PollFd::new(&p.errout_r, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::setup("poll", e)),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        if !exited && ready.next().unwrap_or(false) {
            exited = true;
            grace_until = Some(Instant::now() + Duration::from_secs(2));
        }
        if out.fd_open && ready.next().unwrap_or(false) {
            out.read_some(&p.out_r, cap);
        }
        if err.fd_open && ready.next().unwrap_or(false) {
            err.read_some(&p.errout_r, cap);
        }
    }
    let status = sys::wait_exit(p.pid).map_err(|e| Error::setup("wait", e))?;
    // Reaped: make Drop a no-op on the pid.
    p.pid = -1;
    let oom_kills = p.cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills);
    Ok(SandboxOutput {
        status,
        stdout: out.finish(cap),
        stderr: err.finish(cap),
        timed_out,
        oom_kills,
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
