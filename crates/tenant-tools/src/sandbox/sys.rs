//! Every `unsafe` line of the crate: the raw `clone(2)` of the sandbox
//! child, what that child does before `execve(2)`, and the Landlock and
//! seccomp system calls.
//!
//! Between `clone` and `execve` the child is a copy of a possibly
//! multi-threaded process, so it may only make async-signal-safe calls. It
//! therefore uses nothing but raw `syscall(2)`s on memory the parent
//! prepared (no allocation, no locks, no glibc wrappers such as `setresuid`
//! that broadcast to threads which do not exist in the child), and reports
//! failures as `(stage, errno)` over a close-on-exec pipe.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_long, CStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Failure stages reported by the child (index into [`STAGE_NAMES`]).
pub(crate) const STAGE_NAMES: &[&str] = &[
    "read command",
    "parse command",
    "setgroups",
    "setresgid",
    "setresuid",
    "rlimit",
    "stdio",
    "chdir",
    "no_new_privs",
    "landlock_restrict_self",
    "close_range",
    "seccomp",
    "execve",
];
const ST_READ: u32 = 0;
const ST_PARSE: u32 = 1;
const ST_SETGROUPS: u32 = 2;
const ST_SETRESGID: u32 = 3;
const ST_SETRESUID: u32 = 4;
const ST_RLIMIT: u32 = 5;
const ST_STDIO: u32 = 6;
const ST_CHDIR: u32 = 7;
const ST_NNP: u32 = 8;
const ST_LANDLOCK: u32 = 9;
const ST_CLOSE_RANGE: u32 = 10;
const ST_SECCOMP: u32 = 11;
const ST_EXEC: u32 = 12;

/// Most argv + envp entries a command may have.
pub(crate) const MAX_ENTRIES: usize = 512;
/// Largest serialized command.
pub(crate) const MAX_MESSAGE: usize = 256 * 1024;

/// Everything the child needs, prepared by the parent before `clone`.
pub(crate) struct ChildPlan {
    pub(crate) cmd_read: RawFd,
    pub(crate) err_write: RawFd,
    pub(crate) stdin: RawFd,
    pub(crate) stdout: RawFd,
    pub(crate) stderr: RawFd,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `(resource, limit)` pairs applied with `prlimit64`.
    pub(crate) rlimits: Vec<(u32, u64)>,
    pub(crate) cwd: std::ffi::CString,
    pub(crate) landlock: Option<RawFd>,
    /// BPF programs, installed in order.
    pub(crate) seccomp: Vec<Vec<seccompiler::sock_filter>>,
    /// Scratch space the child reads the command into.
    pub(crate) buf: Vec<u8>,
    /// Scratch space for argv and envp pointers (NULL-terminated each).
    pub(crate) ptrs: Vec<*const c_char>,
}

impl ChildPlan {
    pub(crate) fn new() -> Self {
        Self {
            cmd_read: -1,
            err_write: -1,
            stdin: -1,
            stdout: -1,
            stderr: -1,
            uid: 0,
            gid: 0,
            rlimits: Vec::new(),
            cwd: std::ffi::CString::default(),
            landlock: None,
            seccomp: Vec::new(),
            buf: vec![0u8; MAX_MESSAGE],
            ptrs: vec![std::ptr::null(); MAX_ENTRIES + 2],
        }
    }
}

fn raw(nr: c_long, a: usize, b: usize, c: usize, d: usize, e: usize) -> c_long {
    // SAFETY: `syscall` is a thin trampoline into the kernel; each caller
    // passes arguments valid for `nr` (pointers into memory it owns, or 0).
    unsafe { libc::syscall(nr, a, b, c, d, e) }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn report_and_exit(err_fd: RawFd, stage: u32, code: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&stage.to_le_bytes());
    msg[4..].copy_from_slice(&code.to_le_bytes());
    raw(
        libc::SYS_write,
        err_fd as usize,
        msg.as_ptr() as usize,
        8,
        0,
        0,
    );
    raw(libc::SYS_exit_group, 127, 0, 0, 0, 0);
    // exit_group does not return; spin defensively without touching memory.
    #[allow(clippy::empty_loop)]
    loop {}
}

fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let n = raw(
            libc::SYS_read,
            fd as usize,
            buf[done..].as_mut_ptr() as usize,
            buf.len() - done,
            0,
            0,
        );
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// Parses `argc u32 ‖ envc u32 ‖ NUL-terminated strings` into `ptrs`:
/// argv, NULL, envp, NULL. Returns the index where envp starts.
fn parse_command(buf: &[u8], ptrs: &mut [*const c_char]) -> Option<usize> {
    let argc = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let envc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?) as usize;
    if argc == 0 || argc + envc > MAX_ENTRIES || ptrs.len() < argc + envc + 2 {
        return None;
    }
    let mut pos = 8;
    let mut slot = 0;
    for i in 0..argc + envc {
        if i == argc {
            *ptrs.get_mut(slot)? = std::ptr::null();
            slot += 1;
        }
        let start = pos;
        while *buf.get(pos)? != 0 {
            pos += 1;
        }
        *ptrs.get_mut(slot)? = buf.get(start)? as *const u8 as *const c_char;
        slot += 1;
        pos += 1;
    }
    if envc == 0 {
        *ptrs.get_mut(slot)? = std::ptr::null();
        slot += 1;
    }
    *ptrs.get_mut(slot)? = std::ptr::null();
    Some(argc + 1)
}

/// Closes every descriptor the child inherited but does not need: other
/// threads' pipes must not be held open by a child waiting for its command.
fn close_others(plan: &ChildPlan) {
    let keep = [
        plan.cmd_read,
        plan.err_write,
        plan.stdin,
        plan.stdout,
        plan.stderr,
        plan.landlock.unwrap_or(-1),
    ];
    let max = keep.iter().copied().max().unwrap_or(2).max(2);
    for fd in 3..=max {
        if !keep.contains(&fd) {
            raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
        }
    }
    raw(
        libc::SYS_close_range,
        (max + 1) as usize,
        u32::MAX as usize,
        0,
        0,
        0,
    );
}

/// The child, from `clone` to `execve`. Never returns.
fn child_main(plan: &mut ChildPlan) -> ! {
    let err = plan.err_write;
    // Die with the supervisor: as pid 1 of the namespace, taking every
    // process of the sandbox with it.
    raw(
        libc::SYS_prctl,
        libc::PR_SET_PDEATHSIG as usize,
        libc::SIGKILL as usize,
        0,
        0,
        0,
    );
    close_others(plan);

    // Wait for the parent to write the id maps and send the command.
    let mut len = [0u8; 4];
    if !read_exact(plan.cmd_read, &mut len) {
        report_and_exit(err, ST_READ, libc::EPIPE);
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > plan.buf.len() {
        report_and_exit(err, ST_PARSE, libc::E2BIG);
    }
    let Some(msg) = plan.buf.get_mut(..len) else {
        report_and_exit(err, ST_PARSE, libc::E2BIG);
    };
    if !read_exact(plan.cmd_read, msg) {
        report_and_exit(err, ST_READ, libc::EPIPE);
    }
    let Some(env_start) = parse_command(&plan.buf[..len], &mut plan.ptrs) else {
        report_and_exit(err, ST_PARSE, libc::EINVAL);
    };

    // Drop host root's supplementary groups, then become the unprivileged
    // in-namespace user (which also clears every capability).
    if raw(libc::SYS_setgroups, 0, 0, 0, 0, 0) != 0 {
        report_and_exit(err, ST_SETGROUPS, errno());
    }
    let (u, g) = (plan.uid as usize, plan.gid as usize);
    if raw(libc::SYS_setresgid, g, g, g, 0, 0) != 0 {
        report_and_exit(err, ST_SETRESGID, errno());
    }
    if raw(libc::SYS_setresuid, u, u, u, 0, 0) != 0 {
        report_and_exit(err, ST_SETRESUID, errno());
    }
    for &(resource, limit) in &plan.rlimits {
        let lim = [limit, limit];
        if raw(
            libc::SYS_prlimit64,
            0,
            resource as usize,
            lim.as_ptr() as usize,
            0,
            0,
        ) != 0
        {
            report_and_exit(err, ST_RLIMIT, errno());
        }
    }
    for (from, to) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
        if raw(libc::SYS_dup3, from as usize, to, 0, 0, 0) < 0 {
            report_and_exit(err, ST_STDIO, errno());
        }
    }
    if raw(libc::SYS_chdir, plan.cwd.as_ptr() as usize, 0, 0, 0, 0) != 0 {
        report_and_exit(err, ST_CHDIR, errno());
    }
    if raw(
        libc::SYS_prctl,
        libc::PR_SET_NO_NEW_PRIVS as usize,
        1,
        0,
        0,
        0,
    ) != 0
    {
        report_and_exit(err, ST_NNP, errno());
    }
    if let Some(ruleset) = plan.landlock {
        if raw(
            libc::SYS_landlock_restrict_self,
            ruleset as usize,
            0,
            0,
            0,
            0,
        ) != 0
        {
            report_and_exit(err, ST_LANDLOCK, errno());
        }
    }
    // Nothing but stdio survives execve (the error pipe is already CLOEXEC).
    if raw(
        libc::SYS_close_range,
        3,
        u32::MAX as usize,
        libc::CLOSE_RANGE_CLOEXEC as usize,
        0,
        0,
    ) != 0
    {
        report_and_exit(err, ST_CLOSE_RANGE, errno());
    }
    for prog in &plan.seccomp {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        if raw(
            libc::SYS_prctl,
            libc::PR_SET_SECCOMP as usize,
            libc::SECCOMP_MODE_FILTER as usize,
            &fprog as *const libc::sock_fprog as usize,
            0,
            0,
        ) != 0
        {
            report_and_exit(err, ST_SECCOMP, errno());
        }
    }
    let argv = plan.ptrs.as_ptr();
    let envp = plan.ptrs[env_start..].as_ptr();
    raw(
        libc::SYS_execve,
        plan.ptrs[0] as usize,
        argv as usize,
        envp as usize,
        0,
        0,
    );
    report_and_exit(err, ST_EXEC, errno())
}

/// The namespaces every sandbox gets.
pub(crate) const NAMESPACES: c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// Clones the sandbox child into fresh namespaces. Returns its pid and a
/// pidfd. The child runs [`child_main`] and never returns here.
pub(crate) fn spawn_child(plan: &mut ChildPlan) -> io::Result<(i32, OwnedFd)> {
    let mut pidfd: c_int = -1;
    let flags = (NAMESPACES | libc::CLONE_PIDFD | libc::SIGCHLD) as usize;
    // SAFETY: a fork-like clone (no CLONE_VM, null stack: the child gets a
    // copy-on-write copy of this stack). In the child we call only
    // `child_main`, which makes raw system calls on memory prepared by the
    // parent and ends in execve or exit_group, never returning into Rust
    // frames that the copy shares with the parent.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut c_int,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => child_main(plan),
        pid => {
            // SAFETY: CLONE_PIDFD stored a new, owned descriptor in `pidfd`.
            let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok((pid as i32, fd))
        }
    }
}

/// Forks a plain child (no new namespaces) that runs `check` and exits
/// with its result; returns that exit code. Used by the support probe.
pub(crate) fn probe_in_child<F: FnOnce() -> i32>(check: F) -> io::Result<i32> {
    // SAFETY: fork-like clone as above; the child runs `check`, which makes
    // only raw system calls, then exits.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as usize,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = check();
            raw(libc::SYS_exit_group, code as usize, 0, 0, 0, 0);
            #[allow(clippy::empty_loop)]
            loop {}
        }
        pid => wait_exit(pid as i32).map(|s| match s {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(_) => -1,
        }),
    }
}

/// Clones a child into the sandbox namespaces that exits at once: proves
/// the kernel lets us create them.
pub(crate) fn probe_namespaces() -> io::Result<()> {
    // SAFETY: as in `spawn_child`; the child exits immediately.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (NAMESPACES | libc::SIGCHLD) as usize,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            raw(libc::SYS_exit_group, 0, 0, 0, 0, 0);
            #[allow(clippy::empty_loop)]
            loop {}
        }
        pid => wait_exit(pid as i32).map(|_| ()),
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Reaps `pid`.
pub(crate) fn wait_exit(pid: i32) -> io::Result<WaitStatus> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(WaitStatus::Exited(libc::WEXITSTATUS(status)))
    } else {
        Ok(WaitStatus::Signaled(libc::WTERMSIG(status)))
    }
}

// ---- Landlock ----------------------------------------------------------

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_CREATE_RULESET_VERSION: usize = 1;
const LANDLOCK_RULE_PATH_BENEATH: usize = 1;

/// The Landlock ABI version, or the errno (ENOSYS/EOPNOTSUPP: absent or
/// disabled).
pub(crate) fn landlock_abi() -> io::Result<u32> {
    let r = raw(
        libc::SYS_landlock_create_ruleset,
        0,
        0,
        LANDLOCK_CREATE_RULESET_VERSION,
        0,
        0,
    );
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u32)
    }
}

/// Creates a ruleset. `abi` decides which attribute fields the kernel
/// understands (net from 4, scoped from 6).
pub(crate) fn landlock_create(fs: u64, net: u64, scoped: u64, abi: u32) -> io::Result<OwnedFd> {
    let attr = RulesetAttr {
        handled_access_fs: fs,
        handled_access_net: net,
        scoped,
    };
    let size = match abi {
        0..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    };
    let r = raw(
        libc::SYS_landlock_create_ruleset,
        &attr as *const RulesetAttr as usize,
        size,
        0,
        0,
        0,
    );
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Allows `access` beneath the file or directory `path_fd`.
pub(crate) fn landlock_allow(ruleset: &OwnedFd, path_fd: &OwnedFd, access: u64) -> io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: path_fd.as_raw_fd(),
    };
    let r = raw(
        libc::SYS_landlock_add_rule,
        ruleset.as_raw_fd() as usize,
        LANDLOCK_RULE_PATH_BENEATH,
        &attr as *const PathBeneathAttr as usize,
        0,
        0,
    );
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// In a probe child: restricts itself with `ruleset` (no rules) and
/// returns 0 when opening `path` is then refused with EACCES.
pub(crate) fn landlock_denies_open(ruleset: RawFd, path: &CStr) -> i32 {
    if raw(
        libc::SYS_prctl,
        libc::PR_SET_NO_NEW_PRIVS as usize,
        1,
        0,
        0,
        0,
    ) != 0
    {
        return 10;
    }
    if raw(
        libc::SYS_landlock_restrict_self,
        ruleset as usize,
        0,
        0,
        0,
        0,
    ) != 0
    {
        return 11;
    }
    let fd = raw(
        libc::SYS_openat,
        libc::AT_FDCWD as usize,
        path.as_ptr() as usize,
        libc::O_RDONLY as usize,
        0,
        0,
    );
    if fd >= 0 {
        12
    } else if errno() == libc::EACCES {
        0
    } else {
        13
    }
}

/// In a probe child: installs `prog` and returns 0 when `ptrace` is then
/// refused with EPERM.
pub(crate) fn seccomp_denies_ptrace(prog: &[seccompiler::sock_filter]) -> i32 {
    if raw(
        libc::SYS_prctl,
        libc::PR_SET_NO_NEW_PRIVS as usize,
        1,
        0,
        0,
        0,
    ) != 0
    {
        return 20;
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    if raw(
        libc::SYS_prctl,
        libc::PR_SET_SECCOMP as usize,
        libc::SECCOMP_MODE_FILTER as usize,
        &fprog as *const libc::sock_fprog as usize,
        0,
        0,
    ) != 0
    {
        return 21;
    }
    let r = raw(libc::SYS_ptrace, libc::PTRACE_TRACEME as usize, 0, 0, 0, 0);
    if r < 0 && errno() == libc::EPERM {
        0
    } else {
        22
    }
}
