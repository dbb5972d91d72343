//! The kernel sandbox, attacked from inside, on the real kernel. Every
//! attack asserts the typed error or the blocked effect, and that nothing
//! outside the workspace changed.

mod fixture;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_core::*;
use tenant_tools::sandbox::{WaitStatus, DEFAULT_SYSTEM_PATHS, SANDBOX_WORKSPACE};
use tenant_tools::Error;
use tenant_tools::*;

use fixture::*;

fn sandbox_with(f: impl FnOnce(&mut SandboxConfig)) -> Sandbox {
    let mut config = SandboxConfig::default();
    f(&mut config);
    Sandbox::new(config).expect("this machine supports every sandbox layer")
}

struct Run {
    dir: tempfile::TempDir,
    issuer: ContextIssuer,
    root: WorkspaceRoot,
    ctx: TenantContext,
    ws: Workspace,
}

fn run_setup() -> Option<Run> {
    run_with_quota(WorkspaceQuota::new(32 << 20, 1024))
}

fn run_with_quota(quota: WorkspaceQuota) -> Option<Run> {
    if !sandbox_support() {
        return None;
    }
    let issuer = issuer();
    let (dir, root) = quota_root(&issuer, quota);
    let ctx = ctx_with_tools(&issuer, TenantId::random(), &[]);
    let ws = root.create(&ctx).unwrap();
    Some(Run {
        dir,
        issuer,
        root,
        ctx,
        ws,
    })
}

fn sh(script: &str) -> SandboxCommand {
    SandboxCommand::new("/bin/sh").args(["-c", script])
}

fn perl(script: &str) -> SandboxCommand {
    SandboxCommand::new("/usr/bin/perl").args(["-e", script])
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[test]
fn the_kernel_supports_and_enforces_every_layer() {
    if !sandbox_support() {
        return;
    }
    let s = SandboxSupport::detect();
    assert!(s.namespaces && s.minimal_root);
    assert!(s.landlock_abi.unwrap() >= 4);
    assert!(s.landlock_enforced && s.seccomp_enforced);
    assert!(s.cgroups.is_some());
}

#[test]
fn an_unavailable_isolation_level_is_an_error_not_a_downgrade() {
    let Some(r) = run_setup() else { return };
    let config = SandboxConfig {
        min_landlock_abi: 99,
        ..SandboxConfig::default()
    };
    assert!(matches!(
        Sandbox::new(config),
        Err(Error::SandboxUnavailable(_))
    ));
    // A workspace without a size quota is refused, and nothing runs.
    let (_d, plain) = workspace_root(&r.issuer);
    let ws = plain.create(&r.ctx).unwrap();
    let err = sandbox_with(|_| {})
        .run(&ws, &sh("echo ran > proof"))
        .unwrap_err();
    assert!(matches!(err, Error::SandboxUnavailable(_)), "{err}");
    assert!(ws.is_empty().unwrap());
}

#[test]
fn a_command_runs_as_an_unprivileged_pid_1_with_only_its_declared_environment() {
    let Some(r) = run_setup() else { return };
    let out = sandbox_with(|_| {})
        .run(
            &r.ws,
            &sh("id -u; echo $$; pwd; env | sort; echo hi > out.txt").env("GREETING", "hello"),
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(
        lines[1], "1",
        "the command is pid 1 of its own pid namespace"
    );
    assert_eq!(lines[2], SANDBOX_WORKSPACE);
    assert!(text.contains("GREETING=hello"));
    assert!(
        !text.contains("CARGO") && !text.contains("HOME="),
        "host environment leaked: {text}"
    );
    assert_eq!(r.ws.read("out.txt").unwrap(), b"hi\n");
}

fn expected_root_entries() -> Vec<String> {
    let mut names: Vec<String> = ["dev", "proc", "run", "tmp", "workspace"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for p in DEFAULT_SYSTEM_PATHS {
        if std::fs::symlink_metadata(p).is_ok() {
            names.push(p.trim_start_matches('/').to_owned());
        }
    }
    names.sort();
    names
}

#[test]
fn the_sandbox_sees_nothing_of_the_host_tree() {
    let Some(r) = run_setup() else { return };
    let marker = format!("/tmp/{}", unique("tenant-tools-host-marker"));
    std::fs::write(&marker, b"host").unwrap();
    let script = format!(
        "ls -A /; echo ---; ls -A /dev; echo ---; ls -A /tmp; echo ---; ls -A /run; echo ---; \
         for p in /etc /var /home /root /sys /boot /srv /opt /mnt /etc/passwd {marker} \
                  /run/systemd /var/run /dev/shm /dev/sda /dev/vda /dev/kmsg /dev/mem; do \
           [ -e $p ] && echo \"EXISTS $p\"; done; \
         echo ---; ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
         touch /pwned 2>/dev/null && echo WROTE_ROOT; mkdir /usr/pwned 2>/dev/null && echo WROTE_USR; \
         echo x > {marker} 2>/dev/null && echo TMP_IS_PRIVATE; true"
    );
    let out = sandbox_with(|_| {}).run(&r.ws, &sh(&script)).unwrap();
    let text = out.stdout_text();
    let parts: Vec<&str> = text.split("---\n").collect();
    assert_eq!(parts.len(), 6, "{text}\n{}", out.stderr_text());
    let root: Vec<&str> = parts[0].lines().collect();
    assert_eq!(
        root,
        expected_root_entries(),
        "the root holds more than declared"
    );
    let dev: Vec<&str> = parts[1].lines().collect();
    assert_eq!(
        dev,
        ["fd", "full", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"]
    );
    assert_eq!(parts[2], "", "host /tmp is visible");
    assert_eq!(parts[3], "tenant-tools\n", "host /run is visible");
    assert!(
        !parts[4].contains("EXISTS"),
        "host paths visible: {}",
        parts[4]
    );
    let procs: usize = parts[5].lines().next().unwrap().trim().parse().unwrap();
    assert!(procs <= 4, "{procs} processes visible in /proc");
    assert!(parts[5].contains("/bin/sh -c"), "pid 1 is not the command");
    for wrote in ["WROTE_ROOT", "WROTE_USR"] {
        assert!(!parts[5].lines().any(|l| l == wrote), "{}", parts[5]);
    }
    // The supervisor's tree is untouched.
    assert_eq!(std::fs::read(&marker).unwrap(), b"host");
    assert!(!Path::new("/pwned").exists() && !Path::new("/usr/pwned").exists());
    std::fs::remove_file(&marker).unwrap();
}

#[test]
fn host_unix_sockets_are_unreachable() {
    let Some(r) = run_setup() else { return };
    let tmp_sock = PathBuf::from(format!("/tmp/{}.sock", unique("tt-host")));
    let run_sock = PathBuf::from(format!("/run/{}.sock", unique("tt-host")));
    // A socket next to the workspace, where a run could name it by path.
    let near_sock = r.ws.path().parent().unwrap().join("near.sock");
    let abstract_name = unique("tt-abstract");
    let listeners: Vec<std::os::unix::net::UnixListener> = [&tmp_sock, &run_sock, &near_sock]
        .iter()
        .map(|p| {
            let l = std::os::unix::net::UnixListener::bind(p).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    };
    let script = format!(
        r#"use Socket;
        for my $p ("{}", "{}", "{}", "\0{}") {{
            socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
            if (connect($s, pack_sockaddr_un($p))) {{ print "CONNECTED\n" }} else {{ print "refused\n" }}
        }}"#,
        tmp_sock.display(),
        run_sock.display(),
        near_sock.display(),
        abstract_name
    );
    let out = sandbox_with(|_| {}).run(&r.ws, &perl(&script)).unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    assert_eq!(out.stdout_text(), "refused\n".repeat(4));
    for l in listeners.iter().chain([&abstract_listener]) {
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a host socket saw a connection"
        );
    }
    for p in [&tmp_sock, &run_sock] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn a_sandboxed_process_cannot_read_another_workspace() {
    let Some(r) = run_setup() else { return };
    let other_ctx = ctx_with_tools(&r.issuer, TenantId::random(), &[]);
    let other = r.root.create(&other_ctx).unwrap();
    other.write("secret.txt", b"tenant B's secret").unwrap();
    let sb = sandbox_with(|_| {});
    let script = format!(
        "cat {0}/secret.txt; ls {0}; ls {1}",
        other.path().display(),
        r.root.path().display()
    );
    let out = sb.run(&r.ws, &sh(&script)).unwrap();
    assert!(!out.success());
    assert!(!out.stdout_text().contains("secret"));
    assert_eq!(other.read("secret.txt").unwrap(), b"tenant B's secret");
}

#[test]
fn writes_outside_the_workspace_never_reach_the_host() {
    let Some(r) = run_setup() else { return };
    let name = unique("tenant-tools-escape");
    let parent_target = r.ws.path().parent().unwrap().join("escape");
    // /tmp is the run's own tmpfs: the write succeeds there and vanishes.
    let script = format!(
        "echo x > /tmp/{name} && echo TMP_OK; echo x > {} ; mkdir /usr/escape; echo x > /dev/shm/escape; \
         echo x > /proc/sys/kernel/hostname",
        parent_target.display()
    );
    let out = sandbox_with(|_| {}).run(&r.ws, &sh(&script)).unwrap();
    assert!(out.stdout_text().contains("TMP_OK"));
    assert!(!Path::new(&format!("/tmp/{name}")).exists());
    assert!(!parent_target.exists());
    assert!(!Path::new("/usr/escape").exists());
    assert!(!Path::new("/dev/shm/escape").exists());
}

#[test]
fn a_sandboxed_process_cannot_reach_a_listening_loopback_port() {
    let Some(r) = run_setup() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("echo GET > /dev/tcp/127.0.0.1/{port} && echo connected");
    let out = sandbox_with(|_| {})
        .run(
            &r.ws,
            &SandboxCommand::new("/bin/bash").args(["-c", &script]),
        )
        .unwrap();
    assert!(!out.success());
    assert!(!out.stdout_text().contains("connected"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the listener saw a connection"
    );
}

#[test]
fn every_socket_family_but_unix_is_refused() {
    let Some(r) = run_setup() else { return };
    // socket(domain, type, 0) for every family number the kernel knows
    // (AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK, AF_BLUETOOTH,
    // AF_ALG, AF_XDP, AF_KEY, AF_CAN, AF_TIPC, AF_RDS, AF_QIPCRTR, ...),
    // and socketpair for the same.
    let script = r#"
        for my $d (0..45) { for my $t (1, 2, 3, 5) {
            my $ok = socket(my $s, $d, $t, 0);
            print "$d $t ", ($ok ? "OPEN" : $!+0), "\n";
        } }
        for my $d (0, 2, 10, 16, 17, 40) {
            my $ok = socketpair(my $a, my $b, $d, 1, 0);
            print "pair $d ", ($ok ? "OPEN" : $!+0), "\n";
        }"#;
    let out = sandbox_with(|_| {}).run(&r.ws, &perl(script)).unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let mut unix_opened = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[0] == "pair" {
            assert_eq!(
                f[2], "1",
                "socketpair family {} not refused with EPERM",
                f[1]
            );
        } else if f[0] == "1" {
            unix_opened += usize::from(f[2] == "OPEN");
        } else {
            assert_eq!(
                f[2], "1",
                "family {} type {} not refused with EPERM",
                f[0], f[1]
            );
        }
    }
    // Stream, datagram, raw (a datagram socket for AF_UNIX) and seqpacket.
    assert_eq!(unix_opened, 4, "AF_UNIX stays usable");
    assert_eq!(text.lines().count(), 46 * 4 + 6);
}

#[cfg(target_arch = "x86_64")]
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
#[cfg(target_arch = "aarch64")]
const LD_SO: &str = "/lib/ld-linux-aarch64.so.1";

/// Code from the workspace or `/tmp` never runs: directly, through the
/// dynamic loader, as a script, or from an anonymous memory file (by
/// `execveat`, by `/proc/self/fd`, or created executable).
#[test]
fn workspace_code_cannot_be_executed_by_any_path() {
    let Some(r) = run_setup() else { return };
    std::fs::copy("/bin/true", r.ws.path().join("true")).unwrap();
    r.ws.write("script.sh", b"#!/bin/sh\necho SCRIPT_RAN\n")
        .unwrap();
    for f in ["true", "script.sh"] {
        let p = r.ws.path().join(f);
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    }
    let before = r.ws.read("true").unwrap();
    let script = format!(
        "./true && echo DIRECT_RAN; ./script.sh; {LD_SO} ./true && echo LDSO_RAN; \
         cp /bin/true /tmp/t && chmod +x /tmp/t && /tmp/t && echo TMP_RAN; \
         {LD_SO} /tmp/t && echo TMP_LDSO_RAN; true"
    );
    let sb = sandbox_with(|_| {});
    let out = sb.run(&r.ws, &sh(&script)).unwrap();
    let text = out.stdout_text();
    for ran in [
        "DIRECT_RAN",
        "SCRIPT_RAN",
        "LDSO_RAN",
        "TMP_RAN",
        "TMP_LDSO_RAN",
    ] {
        assert!(!text.contains(ran), "{ran}: {text}\n{}", out.stderr_text());
    }
    // Anonymous memory files: memfd_create (319) then execveat(fd, "",
    // AT_EMPTY_PATH) (322), exec through /proc/self/fd, and MFD_EXEC.
    let memfd = r#"
        open(my $src, "<", "/bin/true") or die; binmode $src; local $/; my $elf = <$src>;
        my ($y, $z, $empty) = ("y", "z", "");
        my $fd2 = syscall(319, $y, 0); die "memfd: $!" if $fd2 < 0;
        open(my $m2, ">&=", $fd2) or die "fdopen: $!"; binmode $m2; print $m2 $elf; $m2->flush;
        my $r = syscall(322, $fd2, $empty, 0, 0, 0x1000); print "execveat $r ", $!+0, "\n";
        my $x = syscall(319, $z, 0x10); print "mfd_exec $x ", $!+0, "\n";
        exec("/proc/self/fd/$fd2") or print "procfd ", $!+0, "\n";
    "#;
    let out = sb.run(&r.ws, &perl(memfd)).unwrap();
    let text = out.stdout_text();
    assert!(
        text.contains("execveat -1 1\n"),
        "{text}{}",
        out.stderr_text()
    );
    assert!(text.contains("mfd_exec -1 "), "{text}");
    assert!(
        text.contains("procfd 13\n"),
        "exec of a memfd was not refused: {text}"
    );
    assert_eq!(r.ws.read("true").unwrap(), before);

    // The control: with workspace execution on, the same binary runs, so
    // the refusals above are the sandbox's doing.
    let exec_on = sandbox_with(|c| c.workspace_exec = true);
    let out = exec_on
        .run(&r.ws, &sh("./true && echo DIRECT_RAN"))
        .unwrap();
    assert_eq!(out.stdout_text(), "DIRECT_RAN\n", "{}", out.stderr_text());
}

#[test]
fn kernel_attack_surface_calls_are_refused_by_seccomp() {
    let Some(r) = run_setup() else { return };
    // x86-64 numbers: ptrace 101, io_uring_setup 425, bpf 321, unshare 272,
    // process_vm_readv 310, keyctl 250, perf_event_open 298, mount 165,
    // statmount 457, listmount 458, open_tree 428, kcmp 312.
    let script = r#"for my $nr (101, 425, 321, 272, 310, 250, 298, 165, 457, 458, 428, 312) {
        my $r = syscall($nr, 0, 0, 0, 0, 0); print "$nr $r ", $!+0, "\n" }"#;
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let out = sandbox_with(|_| {}).run(&r.ws, &perl(script)).unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    for line in text.lines() {
        assert!(line.ends_with(" -1 1"), "not refused with EPERM: {line}");
    }
    assert_eq!(text.lines().count(), 12);
}

/// Writes a `security.capability` xattr granting `cap` (effective +
/// permitted).
fn set_file_capability(path: &Path, cap: u32) {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // revision 2, effective
    v.extend_from_slice(&(1u32 << cap).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path and value buffers.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn no_capability_survives_and_a_file_capability_binary_gains_nothing() {
    let Some(r) = run_setup() else { return };
    // A copy of `cat` carrying CAP_DAC_READ_SEARCH (2) as a file
    // capability, in a directory declared as a system path.
    let bin_dir = PathBuf::from(format!("/var/tmp/{}", unique("tt-capbin")));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let cat = bin_dir.join("cat");
    std::fs::copy("/bin/cat", &cat).unwrap();
    set_file_capability(&cat, 2);
    let mut xattr = [0u8; 64];
    let p = std::ffi::CString::new(cat.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path and buffer.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            xattr.as_mut_ptr().cast(),
            xattr.len(),
        )
    };
    assert_eq!(n, 20, "the file capability was not set");
    let bin = bin_dir.clone();
    let sb = sandbox_with(move |c| c.system_paths.push(bin));
    let out = sb
        .run(
            &r.ws,
            &SandboxCommand::new(cat.to_str().unwrap()).arg("/proc/self/status"),
        )
        .unwrap();
    std::fs::remove_dir_all(&bin_dir).unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let status = out.stdout_text();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"));
    assert!(status.lines().any(|l| l == "Seccomp:\t2"));
}

#[test]
fn every_rlimit_is_set_explicitly() {
    let Some(r) = run_setup() else { return };
    let out = sandbox_with(|_| {})
        .run(
            &r.ws,
            &SandboxCommand::new("/bin/cat").arg("/proc/self/limits"),
        )
        .unwrap();
    let limits = out.stdout_text();
    let l = SandboxLimits::default();
    for (name, value) in [
        ("Max cpu time", l.cpu_seconds.to_string()),
        ("Max file size", l.file_size.to_string()),
        ("Max data size", l.address_space.to_string()),
        ("Max stack size", l.stack.to_string()),
        ("Max core file size", "0".into()),
        ("Max processes", l.processes.to_string()),
        ("Max open files", l.open_files.to_string()),
        ("Max locked memory", l.locked_memory.to_string()),
        ("Max address space", l.address_space.to_string()),
        ("Max file locks", l.file_locks.to_string()),
        ("Max pending signals", l.pending_signals.to_string()),
        ("Max msgqueue size", l.message_queues.to_string()),
        ("Max nice priority", "0".into()),
        ("Max realtime priority", "0".into()),
        ("Max realtime timeout", "0".into()),
    ] {
        let line = limits.lines().find(|x| x.starts_with(name)).unwrap();
        let fields: Vec<&str> = line[25..].split_whitespace().collect();
        assert_eq!(fields[0], value, "{line}");
        assert_eq!(fields[1], value, "{line}");
    }
}

#[test]
fn a_fork_bomb_is_capped_by_the_sandboxs_process_count() {
    const UID: u32 = 64_990;
    let Some(r) = run_setup() else { return };
    let sb = sandbox_with(|c| {
        c.host_uid = UID;
        c.host_gid = UID;
        // The per-user rlimit would not bite: the cgroup must.
        c.limits.processes = 100_000;
        c.limits.pids = Some(24);
        c.timeout = Duration::from_secs(5);
    });
    let started = Instant::now();
    let out = sb
        .run(
            &r.ws,
            &sh("bomb() { bomb | bomb & }; bomb; sleep 1; echo survived"),
        )
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        out.stderr_text().contains("fork") || out.stderr_text().contains("Resource"),
        "the limit did not bite: {}",
        out.stderr_text()
    );
    assert_eq!(
        wait_no_processes(UID, 10),
        0,
        "bomb processes survived the sandbox"
    );
    assert!(std::process::Command::new("/bin/true")
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_memory_hog_spread_over_processes_is_killed_by_the_sandboxs_memory_cap() {
    const UID: u32 = 64_992;
    let Some(r) = run_setup() else { return };
    let sb = sandbox_with(|c| {
        c.host_uid = UID;
        c.host_gid = UID;
        c.limits.memory = Some(64 << 20);
        c.timeout = Duration::from_secs(20);
    });
    // Four processes of 40 MB each: under every per-process limit,
    // together over the sandbox's 64 MiB.
    let hog = r#"perl -e '$x = "a" x 40_000_000; sleep 3; print "done\n"'"#;
    let script = format!("{hog} & {hog} & {hog} & {hog} & wait");
    let out = sb.run(&r.ws, &sh(&script)).unwrap();
    assert!(out.oom_kills >= 1, "no OOM kill: {}", out.stderr_text());
    assert!(out.stdout_text().matches("done").count() < 4);
    assert_eq!(wait_no_processes(UID, 10), 0);
}

fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    ["memory", "pids", "cpu"]
        .iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c).join(parent))
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

#[test]
fn per_sandbox_cgroups_carry_the_limits_and_are_removed_after() {
    let Some(r) = run_setup() else { return };
    if !matches!(
        SandboxSupport::detect().cgroups,
        Some(sandbox::CgroupLayout::V1 { .. })
    ) {
        eprintln!("SKIPPED: the limit files checked here are cgroup v1's");
        return;
    }
    let parent = unique("tenant-tools-test");
    let p = parent.clone();
    let sb = Arc::new(sandbox_with(move |c| {
        c.cgroup_parent = p;
        c.limits.memory = Some(96 << 20);
        c.limits.pids = Some(33);
        c.limits.cpu_millicores = Some(500);
    }));
    let ws = Arc::new(r.ws);
    let handle = {
        let (sb, ws) = (sb.clone(), ws.clone());
        std::thread::spawn(move || sb.run(&ws, &sh("sleep 2")).unwrap())
    };
    let read = |dirs: &[PathBuf], name: &str| -> String {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|f| f.exists())
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let dirs = loop {
        let dirs = cgroup_dirs(&parent);
        if dirs.len() == 3 && !read(&dirs, "cgroup.procs").is_empty() {
            break dirs;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox never joined its groups"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |name: &str| read(&dirs, name);
    assert_eq!(read("memory.limit_in_bytes"), (96u64 << 20).to_string());
    assert_eq!(read("pids.max"), "33");
    assert_eq!(read("cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu.cfs_period_us"), "100000");
    assert!(handle.join().unwrap().success());
    assert!(
        cgroup_dirs(&parent).is_empty(),
        "sandbox cgroups were left behind"
    );
    for c in ["memory", "pids", "cpu"] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(c).join(&parent));
    }
}

#[test]
fn a_writer_hits_the_workspace_quota_and_the_host_is_untouched() {
    let Some(r) = run_with_quota(WorkspaceQuota::new(4 << 20, 64)) else {
        return;
    };
    let out = sandbox_with(|_| {})
        .run(
            &r.ws,
            &sh("dd if=/dev/zero of=big bs=1M count=16 2>&1; \
                 i=0; while [ $i -lt 200 ]; do touch f$i 2>/dev/null || { echo INODES_FULL_AT $i; break; }; i=$((i+1)); done"),
        )
        .unwrap();
    let text = out.stdout_text();
    assert!(text.contains("No space left"), "{text}");
    assert!(text.contains("INODES_FULL_AT"), "{text}");
    let big = std::fs::metadata(r.ws.path().join("big")).unwrap().len();
    assert!(big <= 4 << 20, "{big} bytes written into a 4 MiB workspace");
    // The data went to the workspace's own tmpfs, not the host's file
    // system, and nothing appeared next to the workspace.
    let host_dev = std::fs::metadata(r.dir.path()).unwrap().dev();
    assert_ne!(
        std::fs::metadata(r.ws.path().join("big")).unwrap().dev(),
        host_dev
    );
    assert_eq!(
        std::fs::read_dir(r.ws.path().parent().unwrap())
            .unwrap()
            .count(),
        1
    );
    // The host's own writes hit the same wall, typed.
    assert!(matches!(
        r.ws.write("more", &vec![0u8; 4 << 20]),
        Err(Error::WorkspaceFull { .. })
    ));
}

#[test]
fn a_fifo_made_in_the_sandbox_cannot_block_the_host() {
    let Some(r) = run_setup() else { return };
    let out = sandbox_with(|_| {})
        .run(&r.ws, &sh("mkfifo pipe && echo made"))
        .unwrap();
    assert_eq!(out.stdout_text(), "made\n");
    let ws = Arc::new(r.ws);
    let (tx, rx) = std::sync::mpsc::channel();
    let w = ws.clone();
    std::thread::spawn(move || {
        let _ = tx.send((w.read("pipe"), w.write("pipe", b"x")));
    });
    let (read, write) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the host blocked on a tenant's FIFO");
    assert!(
        matches!(read, Err(Error::NotRegularFile { .. })),
        "{read:?}"
    );
    assert!(
        matches!(write, Err(Error::NotRegularFile { .. })),
        "{write:?}"
    );
}

#[test]
fn a_sleeping_process_is_killed_at_the_timeout_with_its_orphans() {
    const UID: u32 = 64_991;
    let Some(r) = run_setup() else { return };
    let sb = sandbox_with(|c| {
        c.host_uid = UID;
        c.host_gid = UID;
    });
    let started = Instant::now();
    let out = sb
        .run(
            &r.ws,
            &sh("sleep 100 & sleep 100 & (sleep 100 &) ; sleep 100")
                .timeout(Duration::from_millis(500)),
        )
        .unwrap();
    let elapsed = started.elapsed();
    assert!(out.timed_out);
    assert_eq!(out.status, WaitStatus::Signaled(9));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(
        wait_no_processes(UID, 10),
        0,
        "children survived the timeout"
    );
}

/// Run as a separate process by the test below: supervises one sandbox
/// that sleeps, until it is killed.
#[test]
#[ignore = "helper process of the_sandbox_dies_with_its_supervisor_process"]
fn helper_supervisor_that_gets_killed() {
    let Some(root) = std::env::var_os("TT_HELPER_ROOT") else {
        return;
    };
    let uid: u32 = std::env::var("TT_HELPER_UID").unwrap().parse().unwrap();
    let issuer = issuer();
    let root = WorkspaceRoot::new(PathBuf::from(root), &issuer.authority()).unwrap();
    let ws = root
        .create(&ctx_with_tools(&issuer, TenantId::random(), &[]))
        .unwrap();
    let sb = sandbox_with(|c| {
        c.host_uid = uid;
        c.host_gid = uid;
        c.require_workspace_quota = false;
        c.cgroup_parent = std::env::var("TT_HELPER_CGROUP").unwrap();
        c.timeout = Duration::from_secs(120);
    });
    // Started from a thread that ends at once: its end must not matter.
    let _ = std::thread::spawn(|| ()).join();
    let _ = sb.run(&ws, &sh("sleep 100 & (sleep 100 &); sleep 100"));
}

#[test]
fn the_sandbox_dies_with_its_supervisor_process() {
    const UID: u32 = 64_993;
    if !sandbox_support() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cgroup = unique("tenant-tools-death-test");
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_supervisor_that_gets_killed",
            "--nocapture",
        ])
        .env("TT_HELPER_ROOT", dir.path().join("ws"))
        .env("TT_HELPER_UID", UID.to_string())
        .env("TT_HELPER_CGROUP", &cgroup)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_of_uid(UID) < 3 {
        assert!(
            Instant::now() < deadline,
            "the helper's sandbox never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert_eq!(
        wait_no_processes(UID, 10),
        0,
        "sandbox processes outlived their supervisor"
    );
    // The dead supervisor could not remove its (now empty) groups.
    for c in ["memory", "pids", "cpu"] {
        let base = Path::new("/sys/fs/cgroup").join(c).join(&cgroup);
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

#[test]
fn out_of_range_durations_are_typed_errors_not_panics() {
    let Some(r) = run_setup() else { return };
    let sb = sandbox_with(|_| {});
    assert!(matches!(
        sb.run(&r.ws, &sh("true").timeout(Duration::MAX)),
        Err(Error::InvalidDuration { .. })
    ));
    assert!(matches!(
        Sandbox::new(SandboxConfig {
            timeout: Duration::MAX,
            ..SandboxConfig::default()
        }),
        Err(Error::InvalidDuration { .. })
    ));
    assert!(r.ws.is_empty().unwrap());
}

#[test]
fn system_paths_that_expose_the_host_or_a_workspace_are_refused() {
    let Some(r) = run_setup() else { return };
    for bad in [
        "/",
        "/tmp",
        "/proc",
        "/dev/shm",
        "/run",
        "usr",
        "/usr/../etc",
    ] {
        let result = Sandbox::new(SandboxConfig {
            system_paths: vec![PathBuf::from(bad)],
            ..SandboxConfig::default()
        });
        assert!(
            matches!(result, Err(Error::InvalidSystemPath { .. })),
            "{bad}: {result:?}"
        );
    }
    // A declared path covering the workspace root: the run is refused and
    // nothing runs.
    let outside_tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = WorkspaceRoot::with_quota(
        outside_tmp.path().join("ws"),
        &r.issuer.authority(),
        WorkspaceQuota::new(1 << 20, 64),
    )
    .unwrap();
    let ws = root.create(&r.ctx).unwrap();
    let covering = outside_tmp.path().to_path_buf();
    let sb = Arc::new(sandbox_with(move |c| c.system_paths.push(covering)));
    assert!(matches!(
        sb.run(&ws, &sh("echo ran > proof")),
        Err(Error::InvalidSystemPath { .. })
    ));
    assert!(ws.is_empty().unwrap());
    assert!(matches!(
        sb.check_workspace_root(root.path()),
        Err(Error::InvalidSystemPath { .. })
    ));
    let registry = ToolRegistry::new(&r.issuer.authority());
    let err = ToolExecutor::builder()
        .registry(&registry)
        .workspace_root(&root)
        .sandbox(&sb)
        .tenant(&r.ctx)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSystemPath { .. }), "{err}");
}

#[test]
fn a_relative_program_path_or_nul_byte_is_refused() {
    let Some(r) = run_setup() else { return };
    let sb = sandbox_with(|_| {});
    assert!(matches!(
        sb.run(&r.ws, &SandboxCommand::new("sh")),
        Err(Error::InvalidCommand(_))
    ));
    assert!(matches!(
        sb.run(&r.ws, &SandboxCommand::new("/bin/sh").arg("a\0b")),
        Err(Error::InvalidCommand(_))
    ));
}

#[test]
fn a_missing_program_reports_the_execve_error() {
    let Some(r) = run_setup() else { return };
    let err = sandbox_with(|_| {})
        .run(&r.ws, &SandboxCommand::new("/usr/bin/does-not-exist"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SandboxSetup {
                stage: "execve",
                ..
            }
        ),
        "{err}"
    );
}

/// Processes of `uid` whose command line mentions `name`.
fn processes_named(uid: u32, name: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
                == Some(uid)
        })
        .filter(|e| {
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .contains(name)
        })
        .count()
}

/// The host uid a sandboxed process maps to, read from inside.
fn host_uid_inside(out: &SandboxOutput) -> u32 {
    out.stdout_text()
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no uid map in {}", out.stdout_text()))
}

#[test]
fn a_warm_pool_recycles_only_verified_clean_sandboxes_across_tenants() {
    let Some(r) = run_setup() else { return };
    let sb = Arc::new(sandbox_with(|_| {}));
    let pool = WarmPool::builder()
        .sandbox(&sb)
        .workspace_root(&r.root)
        .size(2)
        .build()
        .unwrap();
    assert_eq!(pool.ready(), 2);
    let first_uid;
    {
        let mut warm = pool.acquire(&r.ctx).unwrap();
        assert_eq!(pool.ready(), 1);
        let ws = warm.workspace().unwrap();
        assert!(ws.belongs_to(&r.ctx));
        assert!(ws
            .path()
            .starts_with(r.root.path().join(r.ctx.tenant().to_string())));
        let out = warm
            .run(
                &sh("cat /proc/self/uid_map; echo leftover > file; sleep 100 &")
                    .env("RUN", "first"),
            )
            .unwrap();
        first_uid = host_uid_inside(&out);
        assert_eq!(
            warm.workspace().unwrap().read("file").unwrap(),
            b"leftover\n"
        );
        assert!(matches!(warm.run(&sh("true")), Err(Error::WipeFailed(_))));
    }
    // Recycled in the background: back in the pool, empty, nothing of the
    // run left (the slot's fresh child, waiting, is the uid's only
    // process).
    assert!(pool.wait_ready(2, Duration::from_secs(30)));
    assert!(processes_of_uid(first_uid) <= 1);
    assert_eq!(
        processes_named(first_uid, "sleep"),
        0,
        "the run's process survived"
    );
    let other = ctx_with_tools(&r.issuer, TenantId::random(), &[]);
    for ctx in [&other, &r.ctx] {
        let mut warm = pool.acquire(ctx).unwrap();
        assert!(warm.workspace().unwrap().is_empty().unwrap());
        let out = warm.run(&sh("ls -A; env; ls -A /tmp")).unwrap();
        assert!(out.success());
        assert!(!out.stdout_text().contains("leftover"));
        assert!(!out.stdout_text().contains("RUN=first"));
    }
    assert!(pool.wait_ready(2, Duration::from_secs(30)));
    let _a = pool.acquire(&r.ctx).unwrap();
    let _b = pool.acquire(&r.ctx).unwrap();
    assert!(matches!(pool.acquire(&r.ctx), Err(Error::PoolExhausted)));
    assert!(matches!(
        pool.acquire_within(&r.ctx, Duration::MAX),
        Err(Error::InvalidDuration { .. })
    ));
}

#[test]
fn pools_get_disjoint_uid_ranges_and_a_silo_tenant_a_dedicated_pool() {
    let Some(r) = run_setup() else { return };
    let sb = Arc::new(sandbox_with(|_| {}));
    let silo_tenant = TenantId::random();
    let tiers = StaticTiers::new(IsolationTier::Pool).with(silo_tenant, IsolationTier::Silo);
    let a = WarmPool::builder()
        .sandbox(&sb)
        .workspace_root(&r.root)
        .size(2)
        .tiers(tiers)
        .dedicated_size(1)
        .build()
        .unwrap();
    let b = WarmPool::builder()
        .sandbox(&sb)
        .workspace_root(&r.root)
        .size(2)
        .build()
        .unwrap();
    let uid_of = |pool: &WarmPool, ctx: &TenantContext| {
        let mut warm = pool.acquire_within(ctx, Duration::from_secs(30)).unwrap();
        host_uid_inside(&warm.run(&sh("cat /proc/self/uid_map")).unwrap())
    };
    let pooled = ctx_with_tools(&r.issuer, TenantId::random(), &[]);
    let silo = ctx_with_tools(&r.issuer, silo_tenant, &[]);
    let ua: Vec<u32> = (0..2).map(|_| uid_of(&a, &pooled)).collect();
    let ub: Vec<u32> = (0..2).map(|_| uid_of(&b, &pooled)).collect();
    let us = uid_of(&a, &silo);
    for x in &ua {
        assert!(!ub.contains(x), "two pools share host uid {x}");
        assert_ne!(*x, us, "the silo tenant ran in a shared slot");
    }
    assert!(!ub.contains(&us));
    // An explicit range overlapping another pool's is refused.
    let err = WarmPool::builder()
        .sandbox(&sb)
        .workspace_root(&r.root)
        .size(2)
        .uid_base(ua[0])
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::UidRangeUnavailable(_)), "{err}");
}

#[test]
fn a_warm_slot_prepared_on_a_thread_that_has_ended_still_runs() {
    let Some(r) = run_setup() else { return };
    let sb = Arc::new(sandbox_with(|_| {}));
    let root = r.root.clone();
    let pool = std::thread::spawn(move || {
        WarmPool::builder()
            .sandbox(&sb)
            .workspace_root(&root)
            .size(1)
            .build()
            .unwrap()
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut warm = pool.acquire(&r.ctx).unwrap();
    let out = warm.run(&sh("sleep 0.2; echo alive")).unwrap();
    assert_eq!(out.stdout_text(), "alive\n", "{}", out.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_tool_runs_in_the_sandbox_through_the_executor() {
    if !sandbox_support() {
        return;
    }
    let issuer = issuer();
    let (_d, root) = quota_root(&issuer, WorkspaceQuota::new(8 << 20, 256));
    let tenant = TenantId::random();
    let registry = ToolRegistry::new(&issuer.authority());
    registry
        .register(
            CommandTool::new("shell", "POSIX shell", "/bin/sh", ["-c"])
                .timeout(Duration::from_secs(5)),
        )
        .unwrap();
    let policies = ToolPolicies::new();
    policies.set(tenant, ToolPolicy::deny_all().allow_tools(["shell"]));
    let sandbox = Arc::new(sandbox_with(|_| {}));
    let ctx = ctx_with_tools(&issuer, tenant, &["shell"]);
    let tools = ToolExecutor::builder()
        .registry(&registry)
        .policies(&policies)
        .workspace_root(&root)
        .sandbox(&sandbox)
        .tenant(&ctx)
        .build()
        .unwrap();
    let out = tools
        .call(
            "shell",
            json!({"args": ["echo made > f; cat f; cat /etc/shadow"]}),
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], json!("made\n"));
    assert_eq!(out["exit_code"], json!(1));
}
