//! The Landlock ruleset of a sandboxed process: its workspace read-write,
//! a few system directories read-only and executable, a handful of device
//! files, and nothing else; no TCP bind or connect (ABI ≥ 4); no signals or
//! abstract UNIX sockets outside the sandbox (ABI ≥ 6).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::sys;
use crate::error::{Error, Result};

pub(crate) const EXECUTE: u64 = 1 << 0;
pub(crate) const WRITE_FILE: u64 = 1 << 1;
pub(crate) const READ_FILE: u64 = 1 << 2;
pub(crate) const READ_DIR: u64 = 1 << 3;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
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

/// Device files a sandboxed program may read (and, for `/dev/null`, write).
const DEVICES: &[(&str, u64)] = &[
    ("/dev/null", READ_FILE | WRITE_FILE | TRUNCATE),
    ("/dev/zero", READ_FILE),
    ("/dev/urandom", READ_FILE),
];

fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(Into::into)
}

/// Builds the ruleset for one sandbox run.
pub(crate) fn ruleset(
    abi: u32,
    workspace: &Path,
    workspace_exec: bool,
    system_paths: &[PathBuf],
) -> Result<OwnedFd> {
    let all = fs_rights(abi);
    let net = if abi >= 4 {
        NET_BIND_TCP | NET_CONNECT_TCP
    } else {
        0
    };
    let scoped = if abi >= 6 {
        SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL
    } else {
        0
    };
    let rs = sys::landlock_create(all, net, scoped, abi)
        .map_err(|e| Error::setup("landlock_create_ruleset", e))?;
    let file_rights = (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV) & all;
    for dir in system_paths {
        match open_path(dir) {
            Ok(fd) => sys::landlock_allow(&rs, &fd, (EXECUTE | READ_FILE | READ_DIR) & all)
                .map_err(|e| Error::setup("landlock_add_rule", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::setup("landlock path", e)),
        }
    }
    for (dev, rights) in DEVICES {
        if let Ok(fd) = open_path(Path::new(dev)) {
            sys::landlock_allow(&rs, &fd, rights & file_rights)
                .map_err(|e| Error::setup("landlock_add_rule", e))?;
        }
    }
    let ws_rights = if workspace_exec { all } else { all & !EXECUTE };
    let ws = open_path(workspace).map_err(|e| Error::setup("open workspace", e))?;
    sys::landlock_allow(&rs, &ws, ws_rights).map_err(|e| Error::setup("landlock_add_rule", e))?;
    Ok(rs)
}
