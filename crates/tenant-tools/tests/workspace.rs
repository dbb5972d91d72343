//! Workspace jail: every in-process path resolves beneath the workspace.

mod fixture;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenant_core::*;
use tenant_tools::Error;
use tenant_tools::*;

use fixture::*;

fn setup() -> (tempfile::TempDir, WorkspaceRoot, Workspace) {
    let issuer = issuer();
    let (dir, root) = workspace_root(&issuer);
    let ctx = ctx_with_tools(&issuer, TenantId::random(), &[]);
    let ws = root.create(&ctx).unwrap();
    (dir, root, ws)
}

fn assert_escape<T: std::fmt::Debug>(r: std::result::Result<T, Error>) {
    assert!(matches!(r, Err(Error::PathEscape { .. })), "{r:?}");
}

#[test]
fn files_round_trip_inside_the_workspace() {
    let (_d, _r, ws) = setup();
    ws.create_dir("src").unwrap();
    ws.write("src/main.py", b"print(1)").unwrap();
    assert_eq!(ws.read("src/main.py").unwrap(), b"print(1)");
    assert_eq!(ws.read("src/../src/./main.py").unwrap(), b"print(1)");
    assert_eq!(ws.list("").unwrap(), vec!["src"]);
    ws.remove("src/main.py").unwrap();
    ws.remove("src").unwrap();
    assert!(ws.is_empty().unwrap());
}

#[test]
fn dot_dot_and_absolute_paths_are_refused() {
    let (_d, _r, ws) = setup();
    let before = std::fs::read("/etc/passwd").unwrap();
    assert_escape(ws.read("../../../../../../etc/passwd"));
    assert_escape(ws.read("/etc/passwd"));
    assert_escape(ws.write("/etc/passwd", b"x"));
    assert_escape(ws.write("../escaped", b"x"));
    assert_escape(ws.create_dir("../escaped_dir"));
    assert_escape(ws.list(".."));
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
    assert!(!ws.path().parent().unwrap().join("escaped").exists());
    assert!(!ws.path().parent().unwrap().join("escaped_dir").exists());
}

#[test]
fn a_symlink_to_etc_is_not_followed_out() {
    let (_d, _r, ws) = setup();
    std::os::unix::fs::symlink("/etc", ws.path().join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ws.path().join("passwd")).unwrap();
    std::os::unix::fs::symlink("../../..", ws.path().join("up")).unwrap();
    assert_escape(ws.read("etc/passwd"));
    assert_escape(ws.read("passwd"));
    assert_escape(ws.read("up/etc/passwd"));
    assert_escape(ws.write("etc/tenant_tools_pwned", b"x"));
    assert!(!std::path::Path::new("/etc/tenant_tools_pwned").exists());
    // A symlink that stays inside is fine.
    ws.write("real", b"ok").unwrap();
    std::os::unix::fs::symlink("real", ws.path().join("alias")).unwrap();
    assert_eq!(ws.read("alias").unwrap(), b"ok");
}

#[test]
fn a_symlink_swap_race_never_reads_outside() {
    let (_d, _r, ws) = setup();
    let dir = ws.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("passwd"), b"inside").unwrap();
    let link = ws.path().join("d_link");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, ws_path) = (stop.clone(), ws.path().to_path_buf());
        std::thread::spawn(move || {
            let (a, b, tmp) = (
                ws_path.join("d"),
                ws_path.join("d_link"),
                ws_path.join("tmp"),
            );
            while !stop.load(Ordering::Relaxed) {
                // Swap the real directory and the symlink to /etc.
                let _ = std::fs::rename(&a, &tmp);
                let _ = std::fs::rename(&b, &a);
                let _ = std::fs::rename(&tmp, &b);
            }
        })
    };
    let mut inside = 0;
    for _ in 0..20_000 {
        match ws.read("d/passwd") {
            Ok(bytes) => {
                assert_eq!(bytes, b"inside", "read a file outside the workspace");
                inside += 1;
            }
            Err(Error::PathEscape { .. }) | Err(Error::Io(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(inside > 0, "the race loop never hit the real directory");
}

#[test]
fn a_hard_link_to_a_file_outside_is_refused_and_left_untouched() {
    let (dir, _r, ws) = setup();
    // A file outside the workspace on the same file system.
    let outside = dir.path().join("outside_secret");
    std::fs::write(&outside, b"top secret").unwrap();
    std::fs::hard_link(&outside, ws.path().join("innocent")).unwrap();
    assert_escape(ws.read("innocent"));
    assert_escape(ws.write("innocent", b"clobbered"));
    assert_eq!(std::fs::read(&outside).unwrap(), b"top secret");
    // And the API cannot make one from outside.
    assert_escape(ws.hard_link("../../outside_secret", "again"));
    assert_escape(ws.hard_link("/etc/passwd", "again"));
    assert!(!ws.path().join("again").exists());
}

#[test]
fn a_workspace_is_removed_on_drop_and_on_panic() {
    let (_d, _r, ws) = setup();
    ws.write("f", b"x").unwrap();
    let path = ws.path().to_path_buf();
    drop(ws);
    assert!(!path.exists());

    let (_d, _r, ws) = setup();
    let path = ws.path().to_path_buf();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        ws.write("f", b"x").unwrap();
        panic!("tool crashed");
    }));
    assert!(result.is_err());
    assert!(!path.exists());
}

#[test]
fn the_stale_sweep_removes_only_the_callers_tenants_dead_runs() {
    let issuer = issuer();
    let (_d, root) = workspace_root(&issuer);
    let (a, b) = (TenantId::random(), TenantId::random());
    let ctx_a = ctx_with_tools(&issuer, a, &[]);
    let ctx_b = ctx_with_tools(&issuer, b, &[]);
    // Crashed runs: directories without a live Workspace.
    let stale_a = root.path().join(a.to_string()).join("crashed-run");
    let stale_b = root.path().join(b.to_string()).join("crashed-run");
    std::fs::create_dir_all(&stale_a).unwrap();
    std::fs::create_dir_all(&stale_b).unwrap();
    let live_a = root.create(&ctx_a).unwrap();
    assert_eq!(root.sweep_stale(&ctx_a, Duration::ZERO).unwrap(), 1);
    assert!(!stale_a.exists());
    assert!(live_a.path().exists(), "a live run is never swept");
    assert!(stale_b.exists(), "another tenant's runs are not touched");
    // A recent stale run is kept until it is old enough.
    std::fs::create_dir_all(&stale_a).unwrap();
    assert_eq!(
        root.sweep_stale(&ctx_a, Duration::from_secs(3600)).unwrap(),
        0
    );
    assert_eq!(root.sweep_stale(&ctx_b, Duration::ZERO).unwrap(), 1);
}

#[test]
fn workspaces_of_two_tenants_live_in_separate_directories() {
    let issuer = issuer();
    let (_d, root) = workspace_root(&issuer);
    let ctx_a = ctx_with_tools(&issuer, TenantId::random(), &[]);
    let ctx_b = ctx_with_tools(&issuer, TenantId::random(), &[]);
    let wa = root.create(&ctx_a).unwrap();
    let wb = root.create(&ctx_b).unwrap();
    assert_ne!(wa.path().parent(), wb.path().parent());
    assert!(wa.belongs_to(&ctx_a) && !wa.belongs_to(&ctx_b));
    wb.write("b_secret", b"b").unwrap();
    let rel = format!("../../{}/{}/b_secret", ctx_b.tenant(), wb.run_id());
    assert_escape(wa.read(&rel));
}

fn nix_mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// a (generous) bound: the host must never block on tenant-made files.
fn must_return<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a workspace call blocked on a tenant-made file")
}

#[test]
fn a_fifo_socket_or_directory_is_refused_without_blocking() {
    let (_d, _r, ws) = setup();
    let ws = Arc::new(ws);
    nix_mkfifo(&ws.path().join("fifo"));
    let _sock = std::os::unix::net::UnixListener::bind(ws.path().join("sock")).unwrap();
    ws.create_dir("dir").unwrap();
    for name in ["fifo", "sock", "dir"] {
        let w = ws.clone();
        let read = must_return(move || w.read(name));
        assert!(
            matches!(read, Err(Error::NotRegularFile { .. }) | Err(Error::Io(_))),
            "{name}: {read:?}"
        );
        let w = ws.clone();
        let write = must_return(move || w.write(name, b"x"));
        assert!(
            matches!(write, Err(Error::NotRegularFile { .. }) | Err(Error::Io(_))),
            "{name}: {write:?}"
        );
    }
    // A FIFO with a reader attached still is not written to.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(ws.path().join("fifo"))
        .unwrap();
    let w = ws.clone();
    assert!(matches!(
        must_return(move || w.write("fifo", b"x")),
        Err(Error::NotRegularFile { .. })
    ));
    let mut buf = [0u8; 1];
    assert!(matches!(
        std::io::Read::read(&mut &reader, &mut buf),
        Ok(0) | Err(_)
    ));
    // Everything is where it was.
    assert_eq!(ws.list("").unwrap(), vec!["dir", "fifo", "sock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reads_and_writes_run_off_the_async_workers() {
    let (_d, _r, ws) = setup();
    let ws = Arc::new(ws);
    nix_mkfifo(&ws.path().join("fifo"));
    ws.write_async("a.txt", b"hello".to_vec()).await.unwrap();
    assert_eq!(ws.read_async("a.txt").await.unwrap(), b"hello");
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(20), ws.read_async("fifo"))
            .await
            .expect("blocked"),
        Err(Error::NotRegularFile { .. })
    ));
}

#[test]
fn a_host_write_past_the_quota_is_a_typed_error_and_stays_inside() {
    let issuer = issuer();
    let (dir, root) = quota_root(&issuer, WorkspaceQuota::new(1 << 20, 16));
    let ws = root
        .create(&ctx_with_tools(&issuer, TenantId::random(), &[]))
        .unwrap();
    assert!(ws.has_quota());
    ws.write("small", &[1u8; 1000]).unwrap();
    let err = ws.write("big", &vec![7u8; 2 << 20]).unwrap_err();
    assert!(matches!(err, Error::WorkspaceFull { .. }), "{err}");
    let size = std::fs::metadata(ws.path().join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size <= 1 << 20, "wrote {size} bytes past a 1 MiB quota");
    // Inodes: the 16th file cannot be made.
    let mut full = None;
    for i in 0..32 {
        if let Err(e) = ws.write(&format!("f{i}"), b"x") {
            full = Some(e);
            break;
        }
    }
    assert!(
        matches!(full, Some(Error::WorkspaceFull { .. })),
        "{full:?}"
    );
    // The workspace is its own file system, not the host's.
    let host_dev = std::fs::metadata(dir.path()).unwrap().dev();
    assert_ne!(std::fs::metadata(ws.path()).unwrap().dev(), host_dev);
    let path = ws.path().to_path_buf();
    drop(ws);
    assert!(!path.exists(), "the tmpfs was not removed");
}
