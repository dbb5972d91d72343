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

use std::ffi::{c_int, c_long, CStr, CString};
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
    "landlock",
    "close_range",
    "seccomp",
    "execve",
    "ready",
    "make mounts private",
    "open_tree",
    "mount_setattr",
    "mount tmpfs",
    "mkdir",
    "create mount point",
    "move_mount",
    "symlink",
    "mount proc",
    "write file",
    "pivot_root",
    "read-only root",
    "loopback up",
    "securebits",
    "capability bounding set",
    "ambient capabilities",
    "capset",
    "parent-death signal",
    "memfd_noexec",
    "setfsuid",
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
/// Not a failure: the child is set up and waits for its command.
pub(crate) const ST_READY: u32 = 13;
const ST_PRIVATE: u32 = 14;
const ST_OPEN_TREE: u32 = 15;
const ST_SETATTR: u32 = 16;
const ST_TMPFS: u32 = 17;
const ST_MKDIR: u32 = 18;
const ST_TOUCH: u32 = 19;
const ST_MOVE_MOUNT: u32 = 20;
const ST_SYMLINK: u32 = 21;
const ST_PROC: u32 = 22;
const ST_WRITE: u32 = 23;
const ST_PIVOT: u32 = 24;
const ST_RDONLY_ROOT: u32 = 25;
const ST_LOOPBACK: u32 = 26;
const ST_SECUREBITS: u32 = 27;
const ST_BOUNDING: u32 = 28;
const ST_AMBIENT: u32 = 29;
const ST_CAPSET: u32 = 30;
const ST_PDEATHSIG: u32 = 31;
const ST_MEMFD_NOEXEC: u32 = 32;
const ST_FSIDS: u32 = 33;

/// Most argv + envp entries a command may have.
pub(crate) const MAX_ENTRIES: usize = 512;
/// Largest serialized command.
pub(crate) const MAX_MESSAGE: usize = 256 * 1024;

// Mount API constants (not all in the `libc` crate).
const OPEN_TREE_CLONE: usize = 1;
const OPEN_TREE_CLOEXEC: usize = libc::O_CLOEXEC as usize;
const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_EMPTY_PATH: usize = libc::AT_EMPTY_PATH as usize;
const AT_RECURSIVE: usize = 0x8000;
#[cfg(target_arch = "x86_64")]
const SYS_OPEN_TREE: c_long = 428;
#[cfg(target_arch = "x86_64")]
const SYS_MOVE_MOUNT: c_long = 429;
#[cfg(target_arch = "x86_64")]
const SYS_MOUNT_SETATTR: c_long = 442;
#[cfg(not(target_arch = "x86_64"))]
const SYS_OPEN_TREE: c_long = libc::SYS_open_tree;
#[cfg(not(target_arch = "x86_64"))]
const SYS_MOVE_MOUNT: c_long = libc::SYS_move_mount;
#[cfg(not(target_arch = "x86_64"))]
const SYS_MOUNT_SETATTR: c_long = libc::SYS_mount_setattr;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// One step of building the sandbox's root, executed in order by the
/// child. Paths are relative to the child's working directory except
/// where noted; the parent prepares every string.
pub(crate) enum RootOp {
    /// Detaches the child's mount tree from the host's propagation.
    MakePrivate,
    /// `open_tree(src, CLONE | RECURSIVE)` into `slot`, then sets `attrs`.
    CloneTree {
        src: CString,
        slot: usize,
        attrs: u64,
    },
    /// Mounts a tmpfs on `target`.
    Tmpfs {
        target: CString,
        flags: u64,
        data: CString,
    },
    /// `chdir(path)`.
    Chdir(CString),
    /// `mkdir(path, 0755)`.
    Mkdir(CString),
    /// Creates an empty file (a mount point for a bind-mounted file).
    Touch(CString),
    /// Attaches the tree in `slot` on `target`.
    Attach { slot: usize, target: CString },
    /// `symlink(target, link)`.
    Symlink { target: CString, link: CString },
    /// Mounts the pid namespace's `/proc` on `target`.
    Proc(CString),
    /// Writes `data` to the existing file `path` (a sysctl of the run's
    /// namespaces).
    Sysctl { path: CString, data: Vec<u8> },
    /// Creates `path` (mode 0444) holding `data`.
    WriteFile { path: CString, data: Vec<u8> },
    /// `pivot_root(".", ".")`, then detaches the old root.
    PivotHere,
    /// Remounts `/` read-only.
    ReadOnlyRoot,
    /// Brings the network namespace's loopback interface up.
    LoopbackUp,
    /// Creates files from here on as the in-namespace user `id`:
    /// files made by an unmapped host root would be refused.
    SetFsIds(u32),
}

/// A Landlock rule the child adds after entering its root.
pub(crate) struct LandlockRule {
    pub(crate) path: CString,
    pub(crate) access: u64,
}

/// The Landlock ruleset the child builds for itself.
pub(crate) struct LandlockPlan {
    pub(crate) abi: u32,
    pub(crate) handled_fs: u64,
    pub(crate) handled_net: u64,
    pub(crate) scoped: u64,
    pub(crate) rules: Vec<LandlockRule>,
    /// TCP ports the sandbox may connect to.
    pub(crate) connect_ports: Vec<u16>,
}

/// Everything the child needs, prepared by the parent before `clone`.
pub(crate) struct ChildPlan {
    pub(crate) cmd_read: RawFd,
    pub(crate) err_write: RawFd,
    pub(crate) stdin: RawFd,
    pub(crate) stdout: RawFd,
    pub(crate) stderr: RawFd,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `(resource, limit)` pairs applied with `prlimit64` (lowered to the
    /// inherited hard limit where that is lower).
    pub(crate) rlimits: Vec<(u32, u64)>,
    pub(crate) root: Vec<RootOp>,
    /// Mount trees held between `CloneTree` and `Attach`.
    pub(crate) slots: Vec<RawFd>,
    pub(crate) cwd: CString,
    pub(crate) landlock: Option<LandlockPlan>,
    /// Highest capability number to drop from the bounding set.
    pub(crate) cap_last: u32,
    /// BPF programs, installed in order.
    pub(crate) seccomp: Vec<Vec<seccompiler::sock_filter>>,
    /// Scratch space the child reads the command into.
    pub(crate) buf: Vec<u8>,
    /// Scratch space for argv and envp pointers (addresses, NULL-terminated
    /// each); plain integers so that the plan can be sent to the spawner
    /// thread.
    pub(crate) ptrs: Vec<usize>,
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
            root: Vec::new(),
            slots: Vec::new(),
            cwd: CString::default(),
            landlock: None,
            cap_last: 40,
            seccomp: Vec::new(),
            buf: vec![0u8; MAX_MESSAGE],
            ptrs: vec![0; MAX_ENTRIES + 2],
        }
    }
}

fn raw(nr: c_long, a: usize, b: usize, c: usize, d: usize, e: usize) -> c_long {
    // SAFETY: `syscall` is a thin trampoline into the kernel; each caller
    // passes arguments valid for `nr` (pointers into memory it owns, or 0).
    unsafe { libc::syscall(nr, a, b, c, d, e) }
}

fn raw6(nr: c_long, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> c_long {
    // SAFETY: as in `raw`.
    unsafe { libc::syscall(nr, a, b, c, d, e, f) }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn ptr(s: &CStr) -> usize {
    s.as_ptr() as usize
}

fn report(err_fd: RawFd, stage: u32, code: i32) {
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
}

fn report_and_exit(err_fd: RawFd, stage: u32, code: i32) -> ! {
    report(err_fd, stage, code);
    exit_now(127)
}

fn exit_now(code: i32) -> ! {
    raw(libc::SYS_exit_group, code as usize, 0, 0, 0, 0);
    // exit_group does not return; spin defensively without touching memory.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Moves `len` bytes at `addr` through `read` or `write` (`nr`) on `fd`,
/// retrying interrupted calls; `false` on end-of-file or error.
fn transfer_all(nr: c_long, fd: RawFd, addr: usize, len: usize) -> bool {
    let mut done = 0;
    while done < len {
        let n = raw(nr, fd as usize, addr + done, len - done, 0, 0);
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

fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    transfer_all(libc::SYS_read, fd, buf.as_mut_ptr() as usize, buf.len())
}

fn write_all(fd: RawFd, data: &[u8]) -> bool {
    transfer_all(libc::SYS_write, fd, data.as_ptr() as usize, data.len())
}

/// Opens `path` (relative to the working directory) with `flags`, writes
/// `data` and closes it; the errno of the first failure.
fn write_file(path: &CStr, flags: c_int, mode: usize, data: &[u8]) -> Result<(), i32> {
    let fd = raw(
        libc::SYS_openat,
        libc::AT_FDCWD as usize,
        ptr(path),
        (flags | libc::O_CLOEXEC) as usize,
        mode,
        0,
    );
    if fd < 0 {
        return Err(errno());
    }
    let ok = write_all(fd as RawFd, data);
    let e = errno();
    raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
    if ok {
        Ok(())
    } else {
        Err(e)
    }
}

/// Parses `argc u32 ‖ envc u32 ‖ NUL-terminated strings` into `ptrs`:
/// argv, NULL, envp, NULL. Returns the index where envp starts.
fn parse_command(buf: &[u8], ptrs: &mut [usize]) -> Option<usize> {
    let argc = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let envc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?) as usize;
    if argc == 0 || argc + envc > MAX_ENTRIES || ptrs.len() < argc + envc + 2 {
        return None;
    }
    let mut pos = 8;
    let mut slot = 0;
    for i in 0..argc + envc {
        if i == argc {
            *ptrs.get_mut(slot)? = 0;
            slot += 1;
        }
        let start = pos;
        while *buf.get(pos)? != 0 {
            pos += 1;
        }
        *ptrs.get_mut(slot)? = buf.get(start)? as *const u8 as usize;
        slot += 1;
        pos += 1;
    }
    if envc == 0 {
        *ptrs.get_mut(slot)? = 0;
        slot += 1;
    }
    *ptrs.get_mut(slot)? = 0;
    Some(argc + 1)
}

/// Closes every descriptor the child inherited but does not need: other
/// runs' pipes must not be held open by a child waiting for its command.
fn close_others(plan: &ChildPlan) {
    let keep = [
        plan.cmd_read,
        plan.err_write,
        plan.stdin,
        plan.stdout,
        plan.stderr,
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

fn mount(src: usize, target: usize, fstype: usize, flags: u64, data: usize) -> bool {
    raw(libc::SYS_mount, src, target, fstype, flags as usize, data) == 0
}

/// Runs the root-building steps. Returns `(stage, errno)` of the first
/// failure.
fn run_root_ops(ops: &[RootOp], slots: &mut [RawFd]) -> Result<(), (u32, i32)> {
    const TMPFS: &CStr = c"tmpfs";
    const PROC: &CStr = c"proc";
    const DOT: &CStr = c".";
    const SLASH: &CStr = c"/";
    const EMPTY: &CStr = c"";
    for op in ops {
        match op {
            RootOp::MakePrivate => {
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if !mount(0, ptr(SLASH), 0, flags, 0) {
                    return Err((ST_PRIVATE, errno()));
                }
            }
            RootOp::CloneTree { src, slot, attrs } => {
                let fd = raw(
                    SYS_OPEN_TREE,
                    libc::AT_FDCWD as usize,
                    ptr(src),
                    OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE,
                    0,
                    0,
                );
                if fd < 0 {
                    return Err((ST_OPEN_TREE, errno()));
                }
                let Some(s) = slots.get_mut(*slot) else {
                    return Err((ST_OPEN_TREE, libc::EINVAL));
                };
                *s = fd as RawFd;
                let attr = MountAttr {
                    attr_set: *attrs,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                if raw(
                    SYS_MOUNT_SETATTR,
                    fd as usize,
                    ptr(EMPTY),
                    AT_EMPTY_PATH | AT_RECURSIVE,
                    &attr as *const MountAttr as usize,
                    std::mem::size_of::<MountAttr>(),
                ) != 0
                {
                    return Err((ST_SETATTR, errno()));
                }
            }
            RootOp::Tmpfs {
                target,
                flags,
                data,
            } => {
                if !mount(ptr(TMPFS), ptr(target), ptr(TMPFS), *flags, ptr(data)) {
                    return Err((ST_TMPFS, errno()));
                }
            }
            RootOp::Chdir(path) => {
                if raw(libc::SYS_chdir, ptr(path), 0, 0, 0, 0) != 0 {
                    return Err((ST_CHDIR, errno()));
                }
            }
            RootOp::Mkdir(path) => {
                if raw(
                    libc::SYS_mkdirat,
                    libc::AT_FDCWD as usize,
                    ptr(path),
                    0o755,
                    0,
                    0,
                ) != 0
                {
                    return Err((ST_MKDIR, errno()));
                }
            }
            RootOp::Touch(path) => {
                let fd = raw(
                    libc::SYS_openat,
                    libc::AT_FDCWD as usize,
                    ptr(path),
                    (libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC) as usize,
                    0o644,
                    0,
                );
                if fd < 0 {
                    return Err((ST_TOUCH, errno()));
                }
                raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            }
            RootOp::Attach { slot, target } => {
                let Some(&fd) = slots.get(*slot) else {
                    return Err((ST_MOVE_MOUNT, libc::EINVAL));
                };
                if raw6(
                    SYS_MOVE_MOUNT,
                    fd as usize,
                    ptr(EMPTY),
                    libc::AT_FDCWD as usize,
                    ptr(target),
                    MOVE_MOUNT_F_EMPTY_PATH,
                    0,
                ) != 0
                {
                    return Err((ST_MOVE_MOUNT, errno()));
                }
                raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            }
            RootOp::Symlink { target, link } => {
                if raw(
                    libc::SYS_symlinkat,
                    ptr(target),
                    libc::AT_FDCWD as usize,
                    ptr(link),
                    0,
                    0,
                ) != 0
                {
                    return Err((ST_SYMLINK, errno()));
                }
            }
            RootOp::Proc(target) => {
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                if !mount(ptr(PROC), ptr(target), ptr(PROC), flags, 0) {
                    return Err((ST_PROC, errno()));
                }
            }
            RootOp::Sysctl { path, data } => {
                write_file(path, libc::O_WRONLY, 0, data).map_err(|e| (ST_MEMFD_NOEXEC, e))?
            }
            RootOp::WriteFile { path, data } => {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                write_file(path, flags, 0o444, data).map_err(|e| (ST_WRITE, e))?
            }
            RootOp::PivotHere => {
                // The old root is stacked under the new one and detached
                // at once: nothing of the host's tree stays reachable.
                if raw(libc::SYS_pivot_root, ptr(DOT), ptr(DOT), 0, 0, 0) != 0 {
                    return Err((ST_PIVOT, errno()));
                }
                if raw(
                    libc::SYS_umount2,
                    ptr(DOT),
                    libc::MNT_DETACH as usize,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err((ST_PIVOT, errno()));
                }
                if raw(libc::SYS_chdir, ptr(SLASH), 0, 0, 0, 0) != 0 {
                    return Err((ST_PIVOT, errno()));
                }
            }
            RootOp::ReadOnlyRoot => {
                let flags = libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC;
                if !mount(0, ptr(SLASH), 0, flags, 0) {
                    return Err((ST_RDONLY_ROOT, errno()));
                }
            }
            RootOp::LoopbackUp => loopback_up().map_err(|e| (ST_LOOPBACK, e))?,
            RootOp::SetFsIds(id) => {
                raw(libc::SYS_setfsgid, *id as usize, 0, 0, 0, 0);
                raw(libc::SYS_setfsuid, *id as usize, 0, 0, 0, 0);
                // Both calls return the previous id; asking again with an
                // invalid id reports the current one.
                let uid = raw(libc::SYS_setfsuid, u32::MAX as usize, 0, 0, 0, 0);
                let gid = raw(libc::SYS_setfsgid, u32::MAX as usize, 0, 0, 0, 0);
                if uid != *id as c_long || gid != *id as c_long {
                    return Err((ST_FSIDS, libc::EPERM));
                }
            }
        }
    }
    Ok(())
}

fn loopback_up() -> Result<(), i32> {
    let sock = raw(
        libc::SYS_socket,
        libc::AF_INET as usize,
        (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
        0,
        0,
        0,
    );
    if sock < 0 {
        return Err(errno());
    }
    // struct ifreq: 16 bytes of name, then a union whose first member we
    // use is `short ifr_flags`.
    let mut ifr = [0u8; 40];
    ifr[..2].copy_from_slice(b"lo");
    let flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    let r = raw(
        libc::SYS_ioctl,
        sock as usize,
        libc::SIOCSIFFLAGS as usize,
        ifr.as_mut_ptr() as usize,
        0,
        0,
    );
    let e = errno();
    raw(libc::SYS_close, sock as usize, 0, 0, 0, 0);
    if r != 0 {
        return Err(e);
    }
    Ok(())
}

fn prctl(option: c_int, a: usize, b: usize, c: usize, d: usize) -> bool {
    raw(libc::SYS_prctl, option as usize, a, b, c, d) == 0
}

/// Gives up every privilege: securebits locked, bounding and ambient sets
/// emptied, groups dropped, the unprivileged in-namespace user taken, and
/// the effective, permitted and inheritable sets cleared.
fn drop_privileges(plan: &ChildPlan) -> Result<(), (u32, i32)> {
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    if !prctl(libc::PR_SET_SECUREBITS, bits as usize, 0, 0, 0) {
        return Err((ST_SECUREBITS, errno()));
    }
    for cap in 0..=plan.cap_last {
        if !prctl(libc::PR_CAPBSET_DROP, cap as usize, 0, 0, 0) && errno() != libc::EINVAL {
            return Err((ST_BOUNDING, errno()));
        }
    }
    if !prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as usize,
        0,
        0,
        0,
    ) {
        return Err((ST_AMBIENT, errno()));
    }
    if raw(libc::SYS_setgroups, 0, 0, 0, 0, 0) != 0 {
        return Err((ST_SETGROUPS, errno()));
    }
    let (u, g) = (plan.uid as usize, plan.gid as usize);
    if raw(libc::SYS_setresgid, g, g, g, 0, 0) != 0 {
        return Err((ST_SETRESGID, errno()));
    }
    if raw(libc::SYS_setresuid, u, u, u, 0, 0) != 0 {
        return Err((ST_SETRESUID, errno()));
    }
    // _LINUX_CAPABILITY_VERSION_3: a header and two 32-bit data triples.
    let header: [u32; 2] = [0x2008_0522, 0];
    let data = [0u32; 6];
    if raw(
        libc::SYS_capset,
        header.as_ptr() as usize,
        data.as_ptr() as usize,
        0,
        0,
        0,
    ) != 0
    {
        return Err((ST_CAPSET, errno()));
    }
    // Set only now: a credential change clears the parent-death signal.
    // The parent is the spawner thread, which lives as long as the
    // supervisor process. Had the supervisor died before this point, it
    // can never send the command this child waits for: the read below
    // then sees end-of-file and the child exits.
    if !prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize, 0, 0, 0) {
        return Err((ST_PDEATHSIG, errno()));
    }
    Ok(())
}

fn set_rlimits(plan: &ChildPlan) -> Result<(), (u32, i32)> {
    // prlimit64(self, resource, new or NULL, old or NULL).
    let prlimit = |resource: u32, new: usize, old: usize| {
        raw(libc::SYS_prlimit64, 0, resource as usize, new, old, 0) == 0
    };
    for &(resource, limit) in &plan.rlimits {
        let mut old = [0u64; 2];
        if !prlimit(resource, 0, old.as_mut_ptr() as usize) {
            return Err((ST_RLIMIT, errno()));
        }
        let value = limit.min(old[1]);
        let lim = [value, value];
        if !prlimit(resource, lim.as_ptr() as usize, 0) {
            return Err((ST_RLIMIT, errno()));
        }
    }
    Ok(())
}

#[repr(C, packed)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const LANDLOCK_RULE_NET_PORT: usize = 2;

fn restrict_landlock(plan: &LandlockPlan) -> Result<(), i32> {
    let attr = RulesetAttr {
        handled_access_fs: plan.handled_fs,
        handled_access_net: plan.handled_net,
        scoped: plan.scoped,
    };
    let size = ruleset_attr_size(plan.abi);
    let rs = raw(
        libc::SYS_landlock_create_ruleset,
        &attr as *const RulesetAttr as usize,
        size,
        0,
        0,
        0,
    );
    if rs < 0 {
        return Err(errno());
    }
    let result = (|| {
        for rule in &plan.rules {
            let fd = raw(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                ptr(&rule.path),
                (libc::O_PATH | libc::O_CLOEXEC) as usize,
                0,
                0,
            );
            if fd < 0 {
                return Err(errno());
            }
            let pb = PathBeneathAttr {
                allowed_access: rule.access,
                parent_fd: fd as i32,
            };
            let r = raw(
                libc::SYS_landlock_add_rule,
                rs as usize,
                LANDLOCK_RULE_PATH_BENEATH,
                &pb as *const PathBeneathAttr as usize,
                0,
                0,
            );
            let e = errno();
            raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            if r != 0 {
                return Err(e);
            }
        }
        for &port in &plan.connect_ports {
            let np = NetPortAttr {
                allowed_access: crate::sandbox::landlock::NET_CONNECT_TCP,
                port: port as u64,
            };
            if raw(
                libc::SYS_landlock_add_rule,
                rs as usize,
                LANDLOCK_RULE_NET_PORT,
                &np as *const NetPortAttr as usize,
                0,
                0,
            ) != 0
            {
                return Err(errno());
            }
        }
        if raw(libc::SYS_landlock_restrict_self, rs as usize, 0, 0, 0, 0) != 0 {
            return Err(errno());
        }
        Ok(())
    })();
    raw(libc::SYS_close, rs as usize, 0, 0, 0, 0);
    result
}

fn install_seccomp(filters: &[Vec<seccompiler::sock_filter>]) -> Result<(), i32> {
    for prog in filters {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        if !prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as usize,
            &fprog as *const libc::sock_fprog as usize,
            0,
            0,
        ) {
            return Err(errno());
        }
    }
    Ok(())
}

/// The child, from `clone` to `execve`. Never returns.
fn child_main(plan: &mut ChildPlan) -> ! {
    let err = plan.err_write;
    close_others(plan);

    // Wait until the parent has written the id maps and placed us in our
    // cgroups.
    let mut go = [0u8; 1];
    if !read_exact(plan.cmd_read, &mut go) {
        exit_now(127);
    }
    if let Err((stage, code)) = run_root_ops(&plan.root, &mut plan.slots) {
        report_and_exit(err, stage, code);
    }
    if let Err((stage, code)) = drop_privileges(plan) {
        report_and_exit(err, stage, code);
    }
    for (from, to) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
        if raw(libc::SYS_dup3, from as usize, to, 0, 0, 0) < 0 {
            report_and_exit(err, ST_STDIO, errno());
        }
    }
    if raw(libc::SYS_chdir, ptr(&plan.cwd), 0, 0, 0, 0) != 0 {
        report_and_exit(err, ST_CHDIR, errno());
    }
    if !prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) {
        report_and_exit(err, ST_NNP, errno());
    }
    if let Some(ll) = &plan.landlock {
        if let Err(code) = restrict_landlock(ll) {
            report_and_exit(err, ST_LANDLOCK, code);
        }
    }
    if let Err((stage, code)) = set_rlimits(plan) {
        report_and_exit(err, stage, code);
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
    if let Err(code) = install_seccomp(&plan.seccomp) {
        report_and_exit(err, ST_SECCOMP, code);
    }
    report(err, ST_READY, 0);

    // Fully confined: wait for the command.
    let mut len = [0u8; 4];
    if !read_exact(plan.cmd_read, &mut len) {
        exit_now(127);
    }
    let len = u32::from_le_bytes(len) as usize;
    let Some(msg) = plan.buf.get_mut(..len) else {
        report_and_exit(err, ST_PARSE, libc::E2BIG);
    };
    if !read_exact(plan.cmd_read, msg) {
        report_and_exit(err, ST_READ, libc::EPIPE);
    }
    let Some(env_start) = plan
        .buf
        .get(..len)
        .and_then(|b| parse_command(b, &mut plan.ptrs))
    else {
        report_and_exit(err, ST_PARSE, libc::EINVAL);
    };
    let Some(&program) = plan.ptrs.first() else {
        report_and_exit(err, ST_PARSE, libc::EINVAL);
    };
    let argv = plan.ptrs.as_ptr() as usize;
    let Some(envp) = plan.ptrs.get(env_start..) else {
        report_and_exit(err, ST_PARSE, libc::EINVAL);
    };
    raw(
        libc::SYS_execve,
        program,
        argv,
        envp.as_ptr() as usize,
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
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Clones the sandbox child into fresh namespaces. Returns its pid and a
/// pidfd. The child runs [`child_main`] and never returns here. Called on
/// the spawner thread only (see `spawner.rs`): the child's parent-death
/// signal is tied to the thread that cloned it.
///
/// Hand-written rather than `std::process::Command` plus `unshare` in
/// `pre_exec` (or a `bwrap` child): one `clone` enters every namespace and
/// returns a pidfd at once, and the child sets up its root, Landlock and
/// seccomp with raw system calls on memory the parent prepared, so nothing
/// allocates or takes a lock after the clone. Measured against `bwrap`
/// with the same namespaces in `benches/spawn.rs` (see
/// `docs/benchmarks.md`).
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

/// Forks a child (in `namespaces`, possibly none) that runs `check` and
/// exits with its result; returns that exit code. Used by the support
/// probes.
pub(crate) fn probe_in_child<F: FnOnce() -> i32>(namespaces: c_int, check: F) -> io::Result<i32> {
    // SAFETY: fork-like clone as above; the child runs `check`, which makes
    // only raw system calls, then exits.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (namespaces | libc::SIGCHLD) as usize,
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
            exit_now(code)
        }
        pid => wait_exit(pid as i32).map(|s| match s {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(_) => -1,
        }),
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

fn ruleset_attr_size(abi: u32) -> usize {
    match abi {
        0..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    }
}

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

/// In a probe child: restricts itself with a ruleset that handles
/// `handled` and allows nothing, and returns 0 when opening `path` is then
/// refused with EACCES.
pub(crate) fn landlock_denies_open(abi: u32, handled: u64, path: &CStr) -> i32 {
    if !prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) {
        return 10;
    }
    let plan = LandlockPlan {
        abi,
        handled_fs: handled,
        handled_net: 0,
        scoped: 0,
        rules: Vec::new(),
        connect_ports: Vec::new(),
    };
    if restrict_landlock(&plan).is_err() {
        return 11;
    }
    let fd = raw(
        libc::SYS_openat,
        libc::AT_FDCWD as usize,
        ptr(path),
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
    if !prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) {
        return 20;
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    if !prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER as usize,
        &fprog as *const libc::sock_fprog as usize,
        0,
        0,
    ) {
        return 21;
    }
    let r = raw(libc::SYS_ptrace, libc::PTRACE_TRACEME as usize, 0, 0, 0, 0);
    if r < 0 && errno() == libc::EPERM {
        0
    } else {
        22
    }
}

/// Sends `sig` to every pid in `pids` (host pids of a sandbox's cgroup).
pub(crate) fn kill_pids(pids: &[i32], sig: i32) {
    for &pid in pids {
        if pid > 1 {
            raw(libc::SYS_kill, pid as usize, sig as usize, 0, 0, 0);
        }
    }
}

/// The raw descriptor of `fd`, for building plans.
pub(crate) fn raw_fd(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
