//! Per-sandbox control groups: memory, process count and CPU capped for
//! the whole sandbox, not per process.
//!
//! Both layouts are supported:
//! - **v2** (unified hierarchy at `/sys/fs/cgroup` with the `memory`,
//!   `pids` and `cpu` controllers): one directory per sandbox under
//!   `<parent>/`, `memory.max` + `memory.swap.max = 0`, `pids.max`,
//!   `cpu.max`; killed through `cgroup.kill`.
//! - **v1** (one hierarchy per controller under `/sys/fs/cgroup/<name>`):
//!   one directory per sandbox and controller, `memory.limit_in_bytes`
//!   (and `memory.memsw.limit_in_bytes` where swap is accounted),
//!   `pids.max`, `cpu.cfs_quota_us`; killed by signalling every member.
//!
//! The directories are created before the sandbox's first process runs
//! (the supervisor moves the child in before releasing it) and removed
//! after the last one is gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::sys;
use crate::error::{Error, Result};

const V1_ROOT: &str = "/sys/fs/cgroup";
const CPU_PERIOD_US: u64 = 100_000;

/// Which control-group layout the host offers (see [`SandboxSupport`](super::SandboxSupport)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CgroupLayout {
    /// The unified hierarchy with memory, pids and cpu controllers.
    V2,
    /// Per-controller hierarchies; the flags say which are mounted and
    /// writable.
    V1 {
        /// `memory` controller.
        memory: bool,
        /// `pids` controller.
        pids: bool,
        /// `cpu` controller.
        cpu: bool,
    },
}

impl CgroupLayout {
    fn has(&self, controller: Controller) -> bool {
        match self {
            CgroupLayout::V2 => true,
            CgroupLayout::V1 { memory, pids, cpu } => match controller {
                Controller::Memory => *memory,
                Controller::Pids => *pids,
                Controller::Cpu => *cpu,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// The aggregate limits of one sandbox. `None`: not limited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupLimits {
    pub(crate) memory: Option<u64>,
    pub(crate) pids: Option<u64>,
    pub(crate) cpu_millicores: Option<u32>,
}

impl CgroupLimits {
    pub(crate) fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none() && self.cpu_millicores.is_none()
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
}

fn parent_dir(layout: &CgroupLayout, controller: Controller, parent: &str) -> PathBuf {
    match layout {
        CgroupLayout::V2 => Path::new(V1_ROOT).join(parent),
        CgroupLayout::V1 { .. } => Path::new(V1_ROOT).join(controller.name()).join(parent),
    }
}

/// Probes the host once.
pub(crate) fn detect() -> Option<&'static CgroupLayout> {
    static LAYOUT: OnceLock<Option<CgroupLayout>> = OnceLock::new();
    LAYOUT.get_or_init(probe).as_ref()
}

fn probe() -> Option<CgroupLayout> {
    let root = Path::new(V1_ROOT);
    if let Ok(controllers) = fs::read_to_string(root.join("cgroup.controllers")) {
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("memory") && has("pids") && has("cpu") {
            return Some(CgroupLayout::V2);
        }
        return None;
    }
    let layout = CgroupLayout::V1 {
        memory: v1_writable("memory", "memory.limit_in_bytes"),
        pids: v1_writable("pids", "pids.max"),
        cpu: v1_writable("cpu", "cpu.cfs_quota_us"),
    };
    match layout {
        CgroupLayout::V1 {
            memory: false,
            pids: false,
            cpu: false,
        } => None,
        l => Some(l),
    }
}

/// Creating a child group (and finding `file` in it) proves a v1
/// controller is mounted and writable.
fn v1_writable(controller: &str, file: &str) -> bool {
    let probe = Path::new(V1_ROOT)
        .join(controller)
        .join(format!("tenant-tools-probe-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok() && probe.join(file).exists();
    let _ = fs::remove_dir(&probe);
    ok
}

/// `Ok` when the host can enforce every limit in `limits`.
pub(crate) fn check(limits: &CgroupLimits) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let Some(layout) = detect() else {
        return Err(Error::SandboxUnavailable(
            "per-sandbox limits need control groups (v2 with memory, pids and cpu, \
             or the v1 controllers), and none are writable"
                .into(),
        ));
    };
    for (wanted, c) in [
        (limits.memory.is_some(), Controller::Memory),
        (limits.pids.is_some(), Controller::Pids),
        (limits.cpu_millicores.is_some(), Controller::Cpu),
    ] {
        if wanted && !layout.has(c) {
            return Err(Error::SandboxUnavailable(format!(
                "the {} controller is not available",
                c.name()
            )));
        }
    }
    Ok(())
}

/// One sandbox's control groups. Killed and removed on drop.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    layout: &'static CgroupLayout,
    /// One directory per controller (v1) or a single one (v2).
    dirs: Vec<(Controller, PathBuf)>,
}

impl SandboxCgroup {
    /// Creates and configures the groups of a new sandbox.
    pub(crate) fn create(parent: &str, limits: &CgroupLimits) -> Result<Option<Self>> {
        if limits.is_empty() {
            return Ok(None);
        }
        check(limits)?;
        let layout = detect().ok_or_else(|| Error::SandboxUnavailable("no cgroups".into()))?;
        let name = format!("sb-{}", uuid::Uuid::new_v4().simple());
        let fail = |e: io::Error| Error::setup("cgroup", e);
        let mut cg = SandboxCgroup {
            layout,
            dirs: Vec::new(),
        };
        match layout {
            CgroupLayout::V2 => {
                let base = parent_dir(layout, Controller::Memory, parent);
                ensure_v2_parent(&base).map_err(fail)?;
                let dir = base.join(&name);
                fs::create_dir(&dir).map_err(fail)?;
                cg.dirs.push((Controller::Memory, dir.clone()));
                if let Some(m) = limits.memory {
                    write(&dir.join("memory.max"), &m.to_string()).map_err(fail)?;
                    let _ = write(&dir.join("memory.swap.max"), "0");
                }
                if let Some(p) = limits.pids {
                    write(&dir.join("pids.max"), &p.to_string()).map_err(fail)?;
                }
                if let Some(c) = limits.cpu_millicores {
                    let quota = u64::from(c) * CPU_PERIOD_US / 1000;
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
                        .map_err(fail)?;
                }
            }
            CgroupLayout::V1 { .. } => {
                for (wanted, c) in [
                    (limits.memory, Controller::Memory),
                    (limits.pids, Controller::Pids),
                    (limits.cpu_millicores.map(u64::from), Controller::Cpu),
                ] {
                    let Some(value) = wanted else { continue };
                    let base = parent_dir(layout, c, parent);
                    fs::create_dir_all(&base).map_err(fail)?;
                    let dir = base.join(&name);
                    fs::create_dir(&dir).map_err(fail)?;
                    cg.dirs.push((c, dir.clone()));
                    match c {
                        Controller::Memory => {
                            write(&dir.join("memory.limit_in_bytes"), &value.to_string())
                                .map_err(fail)?;
                            let memsw = dir.join("memory.memsw.limit_in_bytes");
                            if memsw.exists() {
                                write(&memsw, &value.to_string()).map_err(fail)?;
                            }
                        }
                        Controller::Pids => {
                            write(&dir.join("pids.max"), &value.to_string()).map_err(fail)?
                        }
                        Controller::Cpu => {
                            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())
                                .map_err(fail)?;
                            let quota = value * CPU_PERIOD_US / 1000;
                            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
                                .map_err(fail)?;
                        }
                    }
                }
            }
        }
        Ok(Some(cg))
    }

    /// Moves `pid` (a host pid) into every group.
    pub(crate) fn add(&self, pid: i32) -> Result<()> {
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())
                .map_err(|e| Error::setup("cgroup join", e))?;
        }
        Ok(())
    }

    fn members(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for (_, dir) in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How many processes the memory limit's OOM killer has killed.
    pub(crate) fn oom_kills(&self) -> u64 {
        let Some((_, dir)) = self.dirs.iter().find(|(c, _)| *c == Controller::Memory) else {
            return 0;
        };
        let file = match self.layout {
            CgroupLayout::V2 => "memory.events",
            CgroupLayout::V1 { .. } => "memory.oom_control",
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Kills every member (the pid namespace normally has already).
    pub(crate) fn kill_all(&self) {
        if matches!(self.layout, CgroupLayout::V2) {
            if let Some((_, dir)) = self.dirs.first() {
                let _ = write(&dir.join("cgroup.kill"), "1");
            }
        }
        for _ in 0..50 {
            let pids = self.members();
            if pids.is_empty() {
                return;
            }
            sys::kill_pids(&pids, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn ensure_v2_parent(base: &Path) -> io::Result<()> {
    if !base.exists() {
        fs::create_dir_all(base)?;
    }
    let root = Path::new(V1_ROOT);
    for dir in [root, base] {
        let control = dir.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).unwrap_or_default();
        for c in ["memory", "pids", "cpu"] {
            if !enabled.split_whitespace().any(|x| x == c) {
                write(&control, &format!("+{c}"))?;
            }
        }
    }
    Ok(())
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for (_, dir) in &self.dirs {
            for attempt in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 49 => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a sandbox cgroup");
                    }
                }
            }
        }
    }
}
