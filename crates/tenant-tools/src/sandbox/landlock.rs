//! The Landlock ruleset a sandboxed process restricts itself with, on top
//! of its minimal root: its workspace and `/tmp` read-write (executable
//! only when workspace execution is on), the declared system paths read-only
//! and executable, `/proc` and the run's own files read-only, a handful of
//! device files, and nothing else; TCP connect only to the egress proxy's
//! port and no TCP bind (ABI ≥ 4); no signals or abstract UNIX sockets
//! outside the sandbox (ABI ≥ 6).
//!
//! The rules name paths of the sandbox's own root, so the child builds the
//! ruleset itself after `pivot_root` (see `sys.rs`).

use std::ffi::CString;

use super::root::{RUN_FILES, SANDBOX_TMP, SANDBOX_WORKSPACE};
use super::sys::{LandlockPlan, LandlockRule};
use crate::error::{Error, Result};

pub(crate) const EXECUTE: u64 = 1 << 0;
pub(crate) const WRITE_FILE: u64 = 1 << 1;
pub(crate) const READ_FILE: u64 = 1 << 2;
pub(crate) const READ_DIR: u64 = 1 << 3;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
pub(crate) const NET_BIND_TCP: u64 = 1 << 0;
pub(crate) const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// Every file-system right the kernel's ABI knows.
pub(crate) fn fs_rights(abi: u32) -> u64 {
    let mut rights = (1 << 13) - 1; // ABI 1: execute .. make_sym
    if abi >= 2 {
        rights |= REFER;
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

/// System directories a sandboxed program may read and execute from.
pub const DEFAULT_SYSTEM_PATHS: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin"];

/// Device files bound into the sandbox's `/dev`, with their Landlock rights.
pub(crate) const DEVICES: &[(&str, u64)] = &[
    ("/dev/null", READ_FILE | WRITE_FILE | TRUNCATE),
    ("/dev/zero", READ_FILE),
    ("/dev/full", READ_FILE | WRITE_FILE),
    ("/dev/random", READ_FILE),
    ("/dev/urandom", READ_FILE),
];

fn cstring(path: &str) -> Result<CString> {
    CString::new(path).map_err(|_| Error::InvalidCommand("path contains a NUL byte".into()))
}

/// The ruleset for one sandbox run. `system_paths` are the declared paths
/// as they appear inside the sandbox; `connect_ports` the TCP ports it may
/// connect to (the egress proxy's, when routed).
pub(crate) fn plan(
    abi: u32,
    workspace_exec: bool,
    system_paths: &[String],
    connect_ports: &[u16],
) -> Result<LandlockPlan> {
    let all = fs_rights(abi);
    let handled_net = if abi >= 4 {
        NET_BIND_TCP | NET_CONNECT_TCP
    } else {
        0
    };
    if handled_net == 0 && !connect_ports.is_empty() {
        return Err(Error::SandboxUnavailable(
            "routed egress needs Landlock ABI 4 (TCP rules)".into(),
        ));
    }
    let scoped = if abi >= 6 {
        SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL
    } else {
        0
    };
    let rw = if workspace_exec { all } else { all & !EXECUTE };
    let file_rights = (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV) & all;
    let mut rules = vec![
        LandlockRule {
            path: cstring("/")?,
            access: READ_DIR,
        },
        LandlockRule {
            path: cstring(SANDBOX_WORKSPACE)?,
            access: rw,
        },
        LandlockRule {
            path: cstring(SANDBOX_TMP)?,
            access: rw,
        },
        LandlockRule {
            path: cstring("/proc")?,
            access: READ_FILE | READ_DIR,
        },
        LandlockRule {
            path: cstring(RUN_FILES)?,
            access: READ_FILE | READ_DIR,
        },
    ];
    for path in system_paths {
        rules.push(LandlockRule {
            path: cstring(path)?,
            access: (EXECUTE | READ_FILE | READ_DIR) & all,
        });
    }
    for (dev, rights) in DEVICES {
        rules.push(LandlockRule {
            path: cstring(dev)?,
            access: rights & file_rights,
        });
    }
    Ok(LandlockPlan {
        abi,
        handled_fs: all,
        handled_net,
        scoped,
        rules,
        connect_ports: connect_ports.to_vec(),
    })
}
