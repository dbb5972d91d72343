//! The seccomp filters every sandboxed process gets.
//!
//! A denylist (default allow): the goal is to close the kernel attack
//! surface and the escape hatches that namespaces and Landlock do not
//! cover, while leaving ordinary programs (shells, interpreters, compilers)
//! working. Three filters are stacked:
//! 1. x32-ABI system calls (numbers with bit 30 set share the x86-64 audit
//!    arch, a classic bypass of per-number rules) → `EPERM`;
//! 2. `clone3` → `ENOSYS` (its flags live in memory a filter cannot read;
//!    libc then falls back to `clone`, whose flags we can check);
//! 3. the denylist → `EPERM`, including `clone` with any namespace flag,
//!    `socket`/`socketpair` of any address family the run does not need
//!    (an allowlist: `AF_UNIX`, plus `AF_INET`/`AF_INET6` only when egress
//!    is routed through the run's proxy), `memfd_create` with `MFD_EXEC`,
//!    `execveat` of a descriptor (`AT_EMPTY_PATH`, how `fexecve` runs an
//!    anonymous file), and the mount-listing calls.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// System calls refused with `EPERM` inside the sandbox.
pub const DENIED_SYSCALLS: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "perf_event_open",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "personality",
    "syslog",
    "fanotify_init",
    "statmount",
    "listmount",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "uselib",
    "vhangup",
];

// The same number on x86-64 and aarch64 (the unified table of new calls).
const SYS_STATMOUNT: i64 = 457;
const SYS_LISTMOUNT: i64 = 458;
const MFD_EXEC: u64 = 0x10;

fn syscall_number(name: &str) -> Option<i64> {
    let n = match name {
        "ptrace" => libc::SYS_ptrace,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "bpf" => libc::SYS_bpf,
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "unshare" => libc::SYS_unshare,
        "setns" => libc::SYS_setns,
        "perf_event_open" => libc::SYS_perf_event_open,
        "pivot_root" => libc::SYS_pivot_root,
        "chroot" => libc::SYS_chroot,
        "move_mount" => libc::SYS_move_mount,
        "open_tree" => libc::SYS_open_tree,
        "fsopen" => libc::SYS_fsopen,
        "fsmount" => libc::SYS_fsmount,
        "fsconfig" => libc::SYS_fsconfig,
        "fspick" => libc::SYS_fspick,
        "mount_setattr" => libc::SYS_mount_setattr,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "userfaultfd" => libc::SYS_userfaultfd,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "reboot" => libc::SYS_reboot,
        "acct" => libc::SYS_acct,
        "quotactl" => libc::SYS_quotactl,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "personality" => libc::SYS_personality,
        "syslog" => libc::SYS_syslog,
        "fanotify_init" => libc::SYS_fanotify_init,
        "statmount" => SYS_STATMOUNT,
        "listmount" => SYS_LISTMOUNT,
        "kcmp" => libc::SYS_kcmp,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "process_madvise" => libc::SYS_process_madvise,
        #[cfg(target_arch = "x86_64")]
        "uselib" => libc::SYS_uselib,
        "vhangup" => libc::SYS_vhangup,
        _ => return None,
    };
    Some(n)
}

fn arch() -> Result<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(Error::SandboxUnavailable(
            "seccomp filters are built for x86_64 and aarch64 only".into(),
        ))
    }
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, on_match: SeccompAction) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, arch()?)
        .map_err(|e| Error::SandboxUnavailable(format!("seccomp filter: {e}")))?;
    BpfProgram::try_from(filter)
        .map_err(|e| Error::SandboxUnavailable(format!("seccomp filter: {e}")))
}

/// x86-64 only: refuse x32 system call numbers.
fn x32_filter() -> Vec<sock_filter> {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(BPF_JMP_JSET_K, 0, 1, X32_SYSCALL_BIT),
        ins(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

fn rule_err(e: impl std::fmt::Display) -> Error {
    Error::SandboxUnavailable(format!("seccomp rule: {e}"))
}

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, len, op, value).map_err(rule_err)
}

/// A rule matching a first argument (an address family) outside `allowed`.
fn family_outside(allowed: &[i32]) -> Result<Vec<SeccompRule>> {
    let conds = allowed
        .iter()
        .map(|&af| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, af as u64))
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![SeccompRule::new(conds).map_err(rule_err)?])
}

/// Address families a run may open sockets of.
pub(crate) fn socket_families(egress: bool) -> &'static [i32] {
    if egress {
        &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6]
    } else {
        &[libc::AF_UNIX]
    }
}

/// The filters, in installation order, for a run with or without routed
/// egress.
pub(crate) fn filters(egress: bool) -> Result<Vec<BpfProgram>> {
    let mut out = Vec::new();
    if cfg!(target_arch = "x86_64") {
        out.push(x32_filter());
    }
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    out.push(compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?);

    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in DENIED_SYSCALLS {
        if let Some(nr) = syscall_number(name) {
            deny.insert(nr, Vec::new());
        }
    }
    let ns_flags = [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ];
    let mut clone_rules = Vec::new();
    for flag in ns_flags {
        let flag = flag as u64;
        let c = cond(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?;
        clone_rules.push(SeccompRule::new(vec![c]).map_err(rule_err)?);
    }
    deny.insert(libc::SYS_clone, clone_rules);
    let families = socket_families(egress);
    deny.insert(libc::SYS_socket, family_outside(families)?);
    deny.insert(libc::SYS_socketpair, family_outside(families)?);
    let memfd_exec = cond(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(MFD_EXEC),
        MFD_EXEC,
    )?;
    deny.insert(
        libc::SYS_memfd_create,
        vec![SeccompRule::new(vec![memfd_exec]).map_err(rule_err)?],
    );
    let empty_path = libc::AT_EMPTY_PATH as u64;
    let fd_exec = cond(
        4,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(empty_path),
        empty_path,
    )?;
    deny.insert(
        libc::SYS_execveat,
        vec![SeccompRule::new(vec![fd_exec]).map_err(rule_err)?],
    );
    out.push(compile(deny, SeccompAction::Errno(libc::EPERM as u32))?);
    Ok(out)
}
