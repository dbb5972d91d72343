//! Per-run workspaces (`<root>/<tenant>/<run>`) and file access that cannot
//! leave them, hang on them, or fill the host's disk through them.
//!
//! Every in-process file operation resolves its path with `openat2(2)`
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to the workspace's
//! directory descriptor: the kernel refuses `..` above the workspace,
//! absolute paths, and symlinks (absolute or relative) that lead out — also
//! when the link is swapped in during the lookup. A hard link cannot be
//! detected by path resolution, so files with more than one link are
//! refused for reading and writing. Files are opened non-blocking and must
//! be regular files: a FIFO, socket or device a tenant planted is refused
//! instead of blocking the host thread.
//!
//! With a [`WorkspaceQuota`], every workspace is its own size- and
//! inode-limited tmpfs: a writer — the host through this API or a
//! sandboxed process — runs out of room inside its workspace, never on the
//! host's file system.

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
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use tenant_core::{PlatformAuthority, TenantContext, TenantId};

use crate::error::{Error, Result};

/// Size and inode limits of each workspace (a tmpfs per workspace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceQuota {
    /// Bytes of file data.
    pub bytes: u64,
    /// Files and directories.
    pub inodes: u64,
}

impl Default for WorkspaceQuota {
    /// 256 MiB and 65 536 inodes.
    fn default() -> Self {
        Self {
            bytes: 256 << 20,
            inodes: 65_536,
        }
    }
}

impl WorkspaceQuota {
    /// A quota of `bytes` and `inodes`.
    pub fn new(bytes: u64, inodes: u64) -> Self {
        Self { bytes, inodes }
    }

    fn mount_data(&self) -> String {
        format!(
            "size={},nr_inodes={},mode=0700",
            self.bytes.max(4096),
            self.inodes.max(4)
        )
    }
}

struct RootInner {
    path: PathBuf,
    authority: PlatformAuthority,
    quota: Option<WorkspaceQuota>,
    /// Whether we made `path` a private bind mount (undone on drop).
    private_bind: bool,
    live: Mutex<HashSet<PathBuf>>,
}

impl Drop for RootInner {
    fn drop(&mut self) {
        if self.private_bind {
            let _ = rustix::mount::unmount(&self.path, UnmountFlags::DETACH);
        }
    }
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
            .field("quota", &self.inner.quota)
            .finish_non_exhaustive()
    }
}

fn mkdir_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn is_mount_point(path: &Path) -> bool {
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

fn unmount_and_remove(path: &Path) -> std::io::Result<()> {
    if is_mount_point(path) {
        rustix::mount::unmount(path, UnmountFlags::DETACH)?;
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl WorkspaceRoot {
    /// Uses (creating if needed) `path` as the root of workspaces for
    /// contexts issued under `authority`. It must be an absolute path that
    /// only the platform can write. Workspaces are plain directories; see
    /// [`with_quota`](Self::with_quota).
    pub fn new(path: impl Into<PathBuf>, authority: &PlatformAuthority) -> Result<Self> {
        Self::build(path.into(), authority, None)
    }

    /// Like [`new`](Self::new), but every workspace is a tmpfs limited to
    /// `quota` (needs `CAP_SYS_ADMIN`, i.e. a root supervisor). The root
    /// becomes a private bind mount of itself so that workspace mounts
    /// never propagate to other mount namespaces.
    ///
    /// Errors: [`Error::SandboxUnavailable`] when the mounts cannot be
    /// made.
    pub fn with_quota(
        path: impl Into<PathBuf>,
        authority: &PlatformAuthority,
        quota: WorkspaceQuota,
    ) -> Result<Self> {
        Self::build(path.into(), authority, Some(quota))
    }

    fn build(
        path: PathBuf,
        authority: &PlatformAuthority,
        quota: Option<WorkspaceQuota>,
    ) -> Result<Self> {
        if !path.is_absolute() {
            return Err(Error::PathEscape {
                path: path.display().to_string(),
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&path)?;
        let mut private_bind = false;
        if quota.is_some() {
            let unavailable = |e: Errno| {
                Error::SandboxUnavailable(format!(
                    "workspace quotas need tmpfs mounts under {}: {e}",
                    path.display()
                ))
            };
            if !is_mount_point(&path) {
                rustix::mount::mount_bind(&path, &path).map_err(unavailable)?;
                private_bind = true;
            }
            rustix::mount::mount_change(&path, MountPropagationFlags::PRIVATE)
                .map_err(unavailable)?;
            mkdir_mode(&path.join(POOL_DIR), 0o700)?;
        }
        Ok(Self {
            inner: Arc::new(RootInner {
                path,
                authority: authority.clone(),
                quota,
                private_bind,
                live: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The authority whose contexts this root serves.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.inner.authority
    }

    /// The per-workspace quota, if any.
    pub fn quota(&self) -> Option<WorkspaceQuota> {
        self.inner.quota
    }

    fn mount_quota(&self, path: &Path) -> Result<()> {
        let Some(quota) = self.inner.quota else {
            return Ok(());
        };
        let data = std::ffi::CString::new(quota.mount_data())
            .map_err(|_| Error::InvalidCommand("quota".into()))?;
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(data.as_c_str()),
        )
        .map_err(|e| Error::SandboxUnavailable(format!("workspace tmpfs: {e}")))
    }

    /// Creates a fresh workspace for a new run of `ctx`'s tenant.
    ///
    /// Errors: [`Error::Context`] for a context this root's authority does
    /// not admit.
    pub fn create(&self, ctx: &TenantContext) -> Result<Workspace> {
        self.inner.authority.admit(ctx)?;
        let (run, path) = self.new_run_dir(ctx.tenant())?;
        if let Err(e) = self.mount_quota(&path) {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        let ws = self.open(ctx, run, path)?;
        ctx.audit_allowed("workspace.create", &run.to_string());
        Ok(ws)
    }

    fn new_run_dir(&self, tenant: TenantId) -> Result<(uuid::Uuid, PathBuf)> {
        let tenant_dir = self.inner.path.join(tenant.to_string());
        mkdir_mode(&tenant_dir, 0o711)?;
        let run = uuid::Uuid::new_v4();
        let path = tenant_dir.join(run.to_string());
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok((run, path))
    }

    fn open(&self, ctx: &TenantContext, run: uuid::Uuid, path: PathBuf) -> Result<Workspace> {
        let dir = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from);
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                let _ = unmount_and_remove(&path);
                return Err(e.into());
            }
        };
        self.live().insert(path.clone());
        Ok(Workspace {
            root: self.clone(),
            tenant: ctx.tenant(),
            run,
            path,
            dir,
            quota: self.inner.quota.is_some(),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `ctx`'s tenant's runs last modified more than `older_than`
    /// ago that no live [`Workspace`] of this process holds (left behind by
    /// a crash or a killed process), unmounting their tmpfs first. Other
    /// tenants' runs are not looked at. Returns how many runs were removed.
    pub fn sweep_stale(&self, ctx: &TenantContext, older_than: Duration) -> Result<usize> {
        self.inner.authority.admit(ctx)?;
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
                unmount_and_remove(&path)?;
                removed += 1;
            }
        }
        ctx.audit_allowed("workspace.sweep", &removed.to_string());
        Ok(removed)
    }

    /// A tmpfs workspace not yet given to any tenant (a warm-pool slot),
    /// under `<root>/.pool/`.
    pub(crate) fn unassigned(&self) -> Result<Unassigned> {
        if self.inner.quota.is_none() {
            return Err(Error::SandboxUnavailable(
                "warm pools need a workspace root with a quota (WorkspaceRoot::with_quota)".into(),
            ));
        }
        let path = self
            .inner
            .path
            .join(POOL_DIR)
            .join(uuid::Uuid::new_v4().to_string());
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let slot = Unassigned {
            root: self.clone(),
            path,
            moved: false,
        };
        self.mount_quota(&slot.path)?;
        Ok(slot)
    }
}

const POOL_DIR: &str = ".pool";

/// A fresh, empty tmpfs workspace that belongs to no tenant yet.
pub(crate) struct Unassigned {
    root: WorkspaceRoot,
    path: PathBuf,
    moved: bool,
}

impl Unassigned {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the tmpfs holds nothing at all.
    pub(crate) fn is_empty(&self) -> Result<bool> {
        Ok(std::fs::read_dir(&self.path)?.next().is_none())
    }

    /// Hands the workspace to `ctx`'s tenant: its mount moves to
    /// `<root>/<tenant>/<run>`.
    pub(crate) fn assign(mut self, ctx: &TenantContext) -> Result<Workspace> {
        let (run, path) = self.root.new_run_dir(ctx.tenant())?;
        if let Err(e) = rustix::mount::mount_move(&self.path, &path) {
            let _ = std::fs::remove_dir(&path);
            return Err(Error::setup("move workspace", e));
        }
        self.moved = true;
        let _ = std::fs::remove_dir(&self.path);
        self.root.open(ctx, run, path)
    }
}

impl Drop for Unassigned {
    fn drop(&mut self) {
        if !self.moved {
            let _ = unmount_and_remove(&self.path);
        }
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
    quota: bool,
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("tenant", &self.tenant)
            .field("run", &self.run)
            .field("path", &self.path)
            .field("quota", &self.quota)
            .finish()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = unmount_and_remove(&self.path) {
            tracing::warn!(run = %self.run, error = %e, "could not remove workspace");
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

    /// Whether the workspace is a quota-limited tmpfs.
    pub fn has_quota(&self) -> bool {
        self.quota
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
            // ENXIO: a FIFO without a reader or a socket, opened
            // non-blocking.
            Errno::NXIO => Error::NotRegularFile {
                path: path.to_owned(),
            },
            Errno::NOSPC | Errno::DQUOT => Error::WorkspaceFull {
                path: path.to_owned(),
            },
            other => Error::Io(other.into()),
        }
    }

    fn map_io(path: &str, e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::WorkspaceFull {
                path: path.to_owned(),
            },
            _ => Error::Io(e),
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

    /// Opens a regular, singly linked file: never blocks on a FIFO (the
    /// open is non-blocking), refuses every other file type, and refuses a
    /// hard link that may lead outside.
    fn open_regular(&self, path: &str, flags: OFlags, mode: Mode) -> Result<File> {
        let fd = self.open_beneath(path, flags | OFlags::NONBLOCK | OFlags::NOCTTY, mode)?;
        let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Error::NotRegularFile {
                path: path.to_owned(),
            });
        }
        if st.st_nlink > 1 {
            return Err(Self::escape(path));
        }
        Ok(File::from(fd))
    }

    /// Reads a whole regular file. Blocking: from async code use
    /// [`read_async`](Self::read_async).
    ///
    /// Errors: [`Error::PathEscape`], [`Error::NotRegularFile`],
    /// [`Error::Io`].
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut f = self.open_regular(path, OFlags::RDONLY, Mode::empty())?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(|e| Self::map_io(path, e))?;
        Ok(buf)
    }

    /// Creates or replaces a regular file (mode 0644). Blocking: from async
    /// code use [`write_async`](Self::write_async).
    ///
    /// Errors: [`Error::PathEscape`], [`Error::NotRegularFile`],
    /// [`Error::WorkspaceFull`] when the quota is exhausted, [`Error::Io`].
    pub fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        // Type and link checks happen before truncating: a hard link must
        // not let us clobber a file outside the workspace.
        let mut f = self.open_regular(
            path,
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        )?;
        f.set_len(0).map_err(|e| Self::map_io(path, e))?;
        f.write_all(data).map_err(|e| Self::map_io(path, e))?;
        Ok(())
    }

    /// [`read`](Self::read) on a blocking thread, off the async workers.
    pub async fn read_async(self: &Arc<Self>, path: &str) -> Result<Vec<u8>> {
        let (this, path) = (self.clone(), path.to_owned());
        off_worker(move || this.read(&path)).await
    }

    /// [`write`](Self::write) on a blocking thread, off the async workers.
    pub async fn write_async(self: &Arc<Self>, path: &str, data: Vec<u8>) -> Result<()> {
        let (this, path) = (self.clone(), path.to_owned());
        off_worker(move || this.write(&path, &data)).await
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
        let fd = self.open_beneath(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
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
}

/// `chown`s a workspace directory to a sandbox's host uid/gid.
pub(crate) fn grant(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    rustix::fs::fchown(
        &dir,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| Error::Io(e.into()))
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn off_worker<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    // The work stays in the caller's span and reaches the caller's
    // subscriber (audit events included).
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let span = tracing::Span::current();
    handle
        .spawn_blocking(move || tracing::dispatcher::with_default(&dispatch, || span.in_scope(f)))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}
