//! Per-run workspaces (`<root>/<tenant>/<run>`) and file access that cannot
//! leave them.
//!
//! Every in-process file operation resolves its path with `openat2(2)`
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to the workspace's
//! directory descriptor: the kernel refuses `..` above the workspace,
//! absolute paths, and symlinks (absolute or relative) that lead out — also
//! when the link is swapped in during the lookup. A hard link cannot be
//! detected by path resolution, so files with more than one link are
//! refused for reading and writing.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tenant_core::{TenantContext, TenantId};

use crate::error::{Error, Result};

struct RootInner {
    path: PathBuf,
    live: Mutex<HashSet<PathBuf>>,
}

/// The directory under which every run's workspace is created. Platform
/// configuration; cheap to clone.
#[derive(Clone)]
pub struct WorkspaceRoot {
    inner: Arc<RootInner>,
}

impl fmt::Debug for WorkspaceRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkspaceRoot")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn mkdir_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

impl WorkspaceRoot {
    /// Uses (creating if needed) `path` as the root. It must be an absolute
    /// path that only the platform can write.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if !path.is_absolute() {
            return Err(Error::PathEscape {
                path: path.display().to_string(),
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&path)?;
        Ok(Self {
            inner: Arc::new(RootInner {
                path,
                live: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Creates a fresh workspace for a new run of `ctx`'s tenant.
    pub fn create(&self, ctx: &TenantContext) -> Result<Workspace> {
        ctx.check()?;
        let tenant = ctx.tenant();
        let tenant_dir = self.inner.path.join(tenant.to_string());
        mkdir_mode(&tenant_dir, 0o711)?;
        let run = uuid::Uuid::new_v4();
        let path = tenant_dir.join(run.to_string());
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        self.live().insert(path.clone());
        ctx.audit_allowed("workspace.create", &run.to_string());
        Ok(Workspace {
            root: self.clone(),
            tenant,
            run,
            path,
            dir,
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `ctx`'s tenant's runs last modified more than `older_than`
    /// ago that no live [`Workspace`] of this process holds (left behind by
    /// a crash or a killed process). Other tenants' runs are not looked at.
    /// Returns how many runs were removed.
    pub fn sweep_stale(&self, ctx: &TenantContext, older_than: Duration) -> Result<usize> {
        ctx.check()?;
        let tenant_dir = self.inner.path.join(ctx.tenant().to_string());
        let entries = match std::fs::read_dir(&tenant_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if !meta.is_dir() || self.live().contains(&path) {
                continue;
            }
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age >= older_than {
                std::fs::remove_dir_all(&path)?;
                removed += 1;
            }
        }
        ctx.audit_allowed("workspace.sweep", &removed.to_string());
        Ok(removed)
    }
}

/// One run's private directory, removed (with everything in it) when
/// dropped — also while unwinding from a panic.
pub struct Workspace {
    root: WorkspaceRoot,
    tenant: TenantId,
    run: uuid::Uuid,
    path: PathBuf,
    dir: OwnedFd,
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("tenant", &self.tenant)
            .field("run", &self.run)
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(run = %self.run, error = %e, "could not remove workspace");
            }
        }
        self.root.live().remove(&self.path);
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

impl Workspace {
    /// The workspace directory on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run id (last path component).
    pub fn run_id(&self) -> uuid::Uuid {
        self.run
    }

    /// Whether this workspace belongs to `ctx`'s tenant.
    pub fn belongs_to(&self, ctx: &TenantContext) -> bool {
        self.tenant == ctx.tenant()
    }

    fn escape(path: &str) -> Error {
        Error::PathEscape {
            path: path.to_owned(),
        }
    }

    fn map_errno(path: &str, e: Errno) -> Error {
        match e {
            // EXDEV: beneath violation; ELOOP: magic link or symlink loop.
            Errno::XDEV | Errno::LOOP => Self::escape(path),
            other => Error::Io(other.into()),
        }
    }

    /// `openat2` beneath the workspace, retrying the kernel's EAGAIN (a
    /// concurrent rename raced the lookup) a bounded number of times.
    fn open_beneath(&self, path: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let rel = if path.is_empty() { "." } else { path };
        if rel.starts_with('/') || rel.contains('\0') {
            return Err(Self::escape(path));
        }
        let mut attempts = 0;
        loop {
            match rustix::fs::openat2(&self.dir, rel, flags | OFlags::CLOEXEC, mode, RESOLVE) {
                Ok(fd) => return Ok(fd),
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                Err(Errno::AGAIN) => return Err(Self::escape(path)),
                Err(e) => return Err(Self::map_errno(path, e)),
            }
        }
    }

    /// Splits `path` into its parent (opened beneath the workspace) and a
    /// final component that is a plain name.
    fn parent_and_name<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str)> {
        let trimmed = path.trim_end_matches('/');
        let (parent, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(Self::escape(path));
        }
        let dir = self.open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((dir, name))
    }

    fn refuse_hardlinked(path: &str, fd: &OwnedFd) -> Result<()> {
        let st = rustix::fs::fstat(fd).map_err(std::io::Error::from)?;
        let is_file =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        if is_file && st.st_nlink > 1 {
            return Err(Self::escape(path));
        }
        Ok(())
    }

    /// Reads a whole file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let fd = self.open_beneath(path, OFlags::RDONLY, Mode::empty())?;
        Self::refuse_hardlinked(path, &fd)?;
        let mut buf = Vec::new();
        File::from(fd).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Creates or replaces a file (mode 0644).
    pub fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        let fd = self.open_beneath(
            path,
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        )?;
        // Check before truncating: a hard link must not let us clobber a
        // file outside the workspace.
        Self::refuse_hardlinked(path, &fd)?;
        let mut f = File::from(fd);
        f.set_len(0)?;
        f.write_all(data)?;
        Ok(())
    }

    /// Creates a directory (mode 0755).
    pub fn create_dir(&self, path: &str) -> Result<()> {
        let (parent, name) = self.parent_and_name(path)?;
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
            .map_err(|e| Self::map_errno(path, e))
    }

    /// Removes a file or an empty directory.
    pub fn remove(&self, path: &str) -> Result<()> {
        let (parent, name) = self.parent_and_name(path)?;
        match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
            Err(Errno::ISDIR) => rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)
                .map_err(|e| Self::map_errno(path, e)),
            other => other.map_err(|e| Self::map_errno(path, e)),
        }
    }

    /// Creates a hard link `dst` to `src`, both beneath the workspace.
    pub fn hard_link(&self, src: &str, dst: &str) -> Result<()> {
        let (sp, sn) = self.parent_and_name(src)?;
        let (dp, dn) = self.parent_and_name(dst)?;
        rustix::fs::linkat(&sp, sn, &dp, dn, AtFlags::empty()).map_err(|e| Self::map_errno(src, e))
    }

    /// The names in a directory (`""` is the workspace itself), sorted.
    pub fn list(&self, path: &str) -> Result<Vec<String>> {
        let fd = self.open_beneath(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut dir = rustix::fs::Dir::read_from(&fd).map_err(std::io::Error::from)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(std::io::Error::from)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes everything inside the workspace, keeping the directory.
    pub fn wipe(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Whether the workspace holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.list("")?.is_empty())
    }

    /// Hands the directory to the sandbox's host uid/gid so the sandboxed
    /// process (which is not host root) can write it.
    pub(crate) fn grant_to(&self, uid: u32, gid: u32) -> Result<()> {
        let meta = std::fs::metadata(&self.path)?;
        if meta.uid() == uid && meta.gid() == gid {
            return Ok(());
        }
        rustix::fs::fchown(
            self.dir_fd_for_chown()?,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| Error::Io(e.into()))
    }

    fn dir_fd_for_chown(&self) -> Result<OwnedFd> {
        // O_PATH descriptors cannot be fchown'ed; reopen the directory itself.
        self.open_beneath("", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
    }
}
