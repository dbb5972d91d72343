//! The minimal root a sandboxed process sees.
//!
//! Each run pivots into a fresh tmpfs holding only:
//! - read-only, nosuid, nodev bind mounts of the declared system paths
//!   (symlinks among them, such as `/bin -> usr/bin`, are recreated as
//!   symlinks);
//! - the workspace at [`SANDBOX_WORKSPACE`] (nosuid, nodev, and noexec
//!   unless workspace execution is on);
//! - a private `/tmp` (a size- and inode-limited tmpfs, same exec rule);
//! - `/proc` of the run's own pid namespace;
//! - a `/dev` of five bind-mounted device files and the `fd`/`std*` links;
//! - `/run/tenant-tools`, read-only files the supervisor hands the run
//!   (the egress proxy's CA bundle).
//!
//! Nothing else of the host exists inside: no `/etc`, `/var`, `/run`,
//! `/tmp`, `/sys`, no host sockets or devices. The root itself is
//! remounted read-only.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use super::landlock::DEVICES;
use super::sys::{
    RootOp, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use super::SANDBOX_UID;
use crate::error::{Error, Result};

/// Where the workspace appears inside the sandbox (also the working
/// directory of every command).
pub const SANDBOX_WORKSPACE: &str = "/workspace";
pub(crate) const SANDBOX_TMP: &str = "/tmp";
/// Directory of files the supervisor hands a run.
pub(crate) const RUN_FILES: &str = "/run/tenant-tools";
/// Paths of the sandbox's own making that no system path may overlap.
const RESERVED: &[&str] = &["/workspace", "/tmp", "/proc", "/dev", "/run"];

/// A declared system path as found on the host.
#[derive(Clone, Debug)]
pub(crate) enum SystemPath {
    /// A directory or file, bind-mounted read-only at the same path.
    Bound { path: String, is_dir: bool },
    /// A symlink, recreated with the same target.
    Link { path: String, target: PathBuf },
}

impl SystemPath {
    fn path(&self) -> &str {
        match self {
            SystemPath::Bound { path, .. } | SystemPath::Link { path, .. } => path,
        }
    }
}

fn invalid(path: &Path, why: &str) -> Error {
    Error::InvalidSystemPath {
        path: path.display().to_string(),
        reason: why.to_owned(),
    }
}

/// `true` when `a` is `b` or an ancestor of it.
fn covers(a: &Path, b: &Path) -> bool {
    b.starts_with(a)
}

/// Validates the declared system paths and looks them up on the host.
/// Missing paths are skipped (so one default list fits merged-/usr and
/// split layouts).
pub(crate) fn system_paths(declared: &[PathBuf]) -> Result<Vec<SystemPath>> {
    let mut normal: Vec<PathBuf> = Vec::new();
    for p in declared {
        if !p.is_absolute() {
            return Err(invalid(p, "must be absolute"));
        }
        let mut clean = PathBuf::from("/");
        for c in p.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) => clean.push(n),
                _ => return Err(invalid(p, "must not contain `.` or `..`")),
            }
        }
        if clean == Path::new("/") {
            return Err(invalid(p, "the host's root would expose everything"));
        }
        for r in RESERVED {
            let r = Path::new(r);
            if covers(&clean, r) || covers(r, &clean) {
                return Err(invalid(
                    p,
                    &format!("overlaps {} of the sandbox's own making", r.display()),
                ));
            }
        }
        if clean.to_str().is_none() {
            return Err(invalid(p, "must be UTF-8"));
        }
        normal.push(clean);
    }
    normal.sort();
    normal.dedup();
    let mut out: Vec<SystemPath> = Vec::new();
    for p in &normal {
        // Beneath another declared directory: already visible.
        if out.iter().any(
            |o| matches!(o, SystemPath::Bound { path, is_dir: true } if covers(Path::new(path), p)),
        ) {
            continue;
        }
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::setup("system path", e)),
        };
        let path = p.to_string_lossy().into_owned();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(p).map_err(|e| Error::setup("system path", e))?;
            out.push(SystemPath::Link { path, target });
        } else if meta.is_dir() || meta.is_file() {
            out.push(SystemPath::Bound {
                path,
                is_dir: meta.is_dir(),
            });
        } else {
            return Err(invalid(p, "must be a directory, a file or a symlink"));
        }
    }
    Ok(out)
}

/// Refuses a workspace root that a declared system path covers (the
/// workspaces would be visible read-only to every run), or that contains
/// a system path.
pub(crate) fn check_workspace_root(system: &[SystemPath], root: &Path) -> Result<()> {
    for s in system {
        let p = Path::new(s.path());
        if covers(p, root) || covers(root, p) {
            return Err(Error::InvalidSystemPath {
                path: s.path().to_owned(),
                reason: format!("covers the workspace root {}", root.display()),
            });
        }
    }
    Ok(())
}

/// The paths, inside the sandbox, that Landlock grants read+exec.
pub(crate) fn bound_paths(system: &[SystemPath]) -> Vec<String> {
    system
        .iter()
        .filter_map(|s| match s {
            SystemPath::Bound { path, .. } => Some(path.clone()),
            SystemPath::Link { .. } => None,
        })
        .collect()
}

/// What one run's root is made of.
pub(crate) struct RootSpec<'a> {
    pub(crate) system: &'a [SystemPath],
    pub(crate) devices: &'a [&'static str],
    pub(crate) workspace: &'a Path,
    pub(crate) workspace_exec: bool,
    pub(crate) tmp_bytes: u64,
    pub(crate) tmp_inodes: u64,
    /// Files placed in [`RUN_FILES`], by name.
    pub(crate) run_files: &'a [(String, Vec<u8>)],
    pub(crate) loopback: bool,
}

fn c(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidCommand("path contains a NUL byte".into()))
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Devices present on this host, from [`DEVICES`].
pub(crate) fn host_devices() -> Vec<&'static str> {
    DEVICES
        .iter()
        .map(|(d, _)| *d)
        .filter(|d| Path::new(d).exists())
        .collect()
}

/// The steps, in order, and how many mount-tree slots they use.
pub(crate) fn ops(spec: &RootSpec<'_>) -> Result<(Vec<RootOp>, usize)> {
    let ws = spec
        .workspace
        .to_str()
        .ok_or_else(|| Error::InvalidCommand("workspace path is not UTF-8".into()))?;
    let exec = if spec.workspace_exec {
        0
    } else {
        MOUNT_ATTR_NOEXEC
    };
    // As host root, in the run's pid namespace: anonymous memory files of
    // this namespace can never be executed (the sysctl is per pid
    // namespace, and whoever writes it decides which).
    let mut ops = vec![
        RootOp::Sysctl {
            path: c("/proc/sys/vm/memfd_noexec")?,
            data: b"2".to_vec(),
        },
        RootOp::MakePrivate,
    ];
    // Phase 1: clone every source tree while the host's paths are still
    // reachable.
    let mut attach: Vec<(usize, String, bool)> = Vec::new();
    let mut slot = 0;
    let mut clone = |ops: &mut Vec<RootOp>, src: &str, attrs: u64| -> Result<usize> {
        ops.push(RootOp::CloneTree {
            src: c(src)?,
            slot,
            attrs,
        });
        slot += 1;
        Ok(slot - 1)
    };
    for s in spec.system {
        if let SystemPath::Bound { path, is_dir } = s {
            let i = clone(
                &mut ops,
                path,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            )?;
            attach.push((i, rel(path).to_owned(), *is_dir));
        }
    }
    let i = clone(&mut ops, ws, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | exec)?;
    attach.push((i, rel(SANDBOX_WORKSPACE).to_owned(), true));
    for dev in spec.devices {
        let i = clone(&mut ops, dev, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
        attach.push((i, rel(dev).to_owned(), false));
    }
    let slots = slot;

    // Phase 2: the new root, over the workspace's host path (its tree is
    // already cloned, and the path exists in every layout).
    ops.push(RootOp::Tmpfs {
        target: c(ws)?,
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: c(&format!(
            "mode=0755,size=4m,nr_inodes=4096,uid={SANDBOX_UID},gid={SANDBOX_UID}"
        ))?,
    });
    ops.push(RootOp::Chdir(c(ws)?));
    ops.push(RootOp::SetFsIds(SANDBOX_UID));
    let mut dirs: BTreeSet<String> = ["proc", "dev", "tmp", "run", "run/tenant-tools"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let parents = |p: &str, dirs: &mut BTreeSet<String>| {
        let mut acc = String::new();
        for part in Path::new(p).parent().into_iter().flat_map(|p| p.iter()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(&part.to_string_lossy());
            dirs.insert(acc.clone());
        }
    };
    for (_, target, is_dir) in &attach {
        parents(target, &mut dirs);
        if *is_dir {
            dirs.insert(target.clone());
        }
    }
    for s in spec.system {
        if let SystemPath::Link { path, .. } = s {
            parents(rel(path), &mut dirs);
        }
    }
    // BTreeSet order puts every parent before its children.
    for d in &dirs {
        ops.push(RootOp::Mkdir(c(d)?));
    }
    for (_, target, is_dir) in &attach {
        if !is_dir {
            ops.push(RootOp::Touch(c(target)?));
        }
    }
    for (i, target, _) in &attach {
        ops.push(RootOp::Attach {
            slot: *i,
            target: c(target)?,
        });
    }
    for s in spec.system {
        if let SystemPath::Link { path, target } = s {
            let target = target
                .to_str()
                .ok_or_else(|| Error::InvalidCommand("symlink target is not UTF-8".into()))?;
            ops.push(RootOp::Symlink {
                target: c(target)?,
                link: c(rel(path))?,
            });
        }
    }
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        ops.push(RootOp::Symlink {
            target: c(target)?,
            link: c(link)?,
        });
    }
    ops.push(RootOp::Proc(c("proc")?));
    let tmp_exec = if spec.workspace_exec {
        0
    } else {
        libc::MS_NOEXEC
    };
    ops.push(RootOp::Tmpfs {
        target: c("tmp")?,
        flags: libc::MS_NOSUID | libc::MS_NODEV | tmp_exec,
        data: c(&format!(
            "mode=1777,size={},nr_inodes={}",
            spec.tmp_bytes.max(4096),
            spec.tmp_inodes.max(16)
        ))?,
    });
    for (name, data) in spec.run_files {
        if name.contains('/') || name.starts_with('.') {
            return Err(Error::InvalidCommand("invalid run file name".into()));
        }
        ops.push(RootOp::WriteFile {
            path: c(&format!("{}/{name}", rel(RUN_FILES)))?,
            data: data.clone(),
        });
    }
    if spec.loopback {
        ops.push(RootOp::LoopbackUp);
    }
    ops.push(RootOp::PivotHere);
    ops.push(RootOp::ReadOnlyRoot);
    Ok((ops, slots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_that_overlap_the_sandboxs_own_tree_or_the_root_are_refused() {
        for bad in [
            "/",
            "/tmp",
            "/proc/self",
            "/dev",
            "/run",
            "relative",
            "/usr/../etc",
        ] {
            assert!(
                matches!(
                    system_paths(&[PathBuf::from(bad)]),
                    Err(Error::InvalidSystemPath { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_system_path_covering_the_workspace_root_is_refused() {
        let sys = system_paths(&[PathBuf::from("/usr")]).unwrap();
        assert!(check_workspace_root(&sys, Path::new("/usr/local/ws")).is_err());
        assert!(check_workspace_root(&sys, Path::new("/")).is_err());
        assert!(check_workspace_root(&sys, Path::new("/srv/ws")).is_ok());
    }
}
