//! Ephemeral Qdrant servers: a single node ([`TestQdrant`]) and a local
//! cluster ([`TestQdrantCluster`]).
//!
//! # The binary
//!
//! [`locate_qdrant`] looks, in order, for
//!
//! 1. the executable named by [`QDRANT_BIN_ENV`];
//! 2. a gzip `bin/qdrant-<version>.gz` (the highest version) in the shared
//!    directory: the one named by [`SHARED_DIR_ENV`], else `../shared` next to
//!    the workspace root, else `/work/shared`. It is unpacked once per machine
//!    into `<temp dir>/tenant-testkit-qdrant/<sha256 of the gzip>/qdrant`
//!    (written to a private file and renamed into place, so concurrent test
//!    binaries never see a partial executable);
//! 3. `qdrant` on `$PATH`.
//!
//! Nothing found is [`TestkitError::QdrantNotFound`]: suites that have a
//! server half print that it was skipped and carry on.
//!
//! # The servers
//!
//! Every node listens on 127.0.0.1 only, on free REST and gRPC ports (and a
//! free peer-to-peer port in a cluster), with storage and snapshots in a
//! throw-away directory, telemetry off, and runs under the stdin-pipe
//! watchdog (see the crate docs, "Teardown"). A node is ready when its REST
//! `/readyz` answers 200; a cluster is ready when, in addition, every node's
//! `/cluster` lists all peers and knows the Raft leader.
//!
//! [`QdrantOptions`] switches on an API key and JWT RBAC
//! (`QDRANT__SERVICE__API_KEY`, `QDRANT__SERVICE__JWT_RBAC`).
//!
//! # Crashes
//!
//! [`TestQdrant::kill`] and [`TestQdrantCluster::kill_node`] end a node with
//! `SIGKILL`, as a crash would; [`TestQdrant::restart`] and
//! [`TestQdrantCluster::restart_node`] start it again on the same ports and
//! the same storage. While a node is down its directory is kept for the
//! restart, and still deleted if the test process ends.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::error::TestkitError;
use crate::http;
use crate::process::{self, RunAs, WaitOutcome, Watchdog, WatchdogSpec};

/// Environment variable naming a Qdrant executable to use; it is tried
/// before the shared directory.
pub const QDRANT_BIN_ENV: &str = "TENANT_TESTKIT_QDRANT_BIN";
/// Environment variable naming the shared directory that holds
/// `bin/qdrant-<version>.gz`.
pub const SHARED_DIR_ENV: &str = "TENANT_SDK_SHARED_DIR";
/// The number of nodes [`TestQdrantCluster::start`] and
/// [`TestQdrantCluster::shared`] run.
pub const DEFAULT_CLUSTER_SIZE: usize = 3;

/// The shared directory of the machine this crate was built on.
const FALLBACK_SHARED_DIR: &str = "/work/shared";
/// How long a single node may take to answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cluster may take to form, or a node to rejoin.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(90);
/// Time allowed for a graceful shutdown before escalating.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Timeout of one health request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between readiness polls.
const POLL: Duration = Duration::from_millis(50);

/// Options for the servers: authentication.
///
/// ```
/// use tenant_testkit::QdrantOptions;
///
/// let plain = QdrantOptions::new();
/// assert_eq!(plain.api_key_value(), None);
/// let rbac = QdrantOptions::new().jwt_rbac("signing-key");
/// assert_eq!(rbac.api_key_value(), Some("signing-key"));
/// assert!(rbac.jwt_rbac_enabled());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QdrantOptions {
    api_key: Option<String>,
    read_only_api_key: Option<String>,
    jwt_rbac: bool,
}

impl QdrantOptions {
    /// No authentication.
    pub fn new() -> QdrantOptions {
        QdrantOptions::default()
    }

    /// Requires `key` (header `api-key`, or gRPC metadata `api-key`) on
    /// every request except the health endpoints.
    pub fn api_key(mut self, key: impl Into<String>) -> QdrantOptions {
        self.api_key = Some(key.into());
        self
    }

    /// Also accepts `key` for read-only requests.
    pub fn read_only_api_key(mut self, key: impl Into<String>) -> QdrantOptions {
        self.read_only_api_key = Some(key.into());
        self
    }

    /// Sets the API key to `signing_key` and enables JWT RBAC: requests may
    /// then carry, instead of the key, a JWT signed with it (HS256) whose
    /// claims restrict access (for example to one collection, read-only).
    pub fn jwt_rbac(mut self, signing_key: impl Into<String>) -> QdrantOptions {
        self.api_key = Some(signing_key.into());
        self.jwt_rbac = true;
        self
    }

    /// The API key, if one is required.
    pub fn api_key_value(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The read-only API key, if one is set.
    pub fn read_only_api_key_value(&self) -> Option<&str> {
        self.read_only_api_key.as_deref()
    }

    /// Whether JWT RBAC is enabled.
    pub fn jwt_rbac_enabled(&self) -> bool {
        self.jwt_rbac
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(key) = &self.api_key {
            env.push(("QDRANT__SERVICE__API_KEY".to_owned(), key.clone()));
        }
        if let Some(key) = &self.read_only_api_key {
            env.push(("QDRANT__SERVICE__READ_ONLY_API_KEY".to_owned(), key.clone()));
        }
        if self.jwt_rbac {
            env.push(("QDRANT__SERVICE__JWT_RBAC".to_owned(), "true".to_owned()));
        }
        env
    }
}

/// Finds a Qdrant executable, unpacking the shared gzip if needed (see the
/// module docs for the search order).
///
/// # Errors
///
/// [`TestkitError::QdrantNotFound`] listing every place searched;
/// [`TestkitError::Io`] if a gzip was found but could not be unpacked.
pub fn locate_qdrant() -> Result<PathBuf, TestkitError> {
    let explicit = std::env::var_os(QDRANT_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    locate_in(explicit, shared_dirs(), process::path_dirs())
}

/// [`locate_qdrant`] over explicit search places.
fn locate_in(
    explicit: Option<PathBuf>,
    shared_dirs: Vec<PathBuf>,
    path_dirs: Vec<PathBuf>,
) -> Result<PathBuf, TestkitError> {
    let mut searched = Vec::new();
    if let Some(path) = explicit {
        if process::is_executable(&path) {
            return Ok(path);
        }
        searched.push(path);
    }
    for dir in shared_dirs {
        let bin_dir = dir.join("bin");
        if searched.contains(&bin_dir) {
            continue;
        }
        if let Some(gz) = newest_gzip(&bin_dir) {
            return unpack_cached(&gz);
        }
        searched.push(bin_dir);
    }
    for dir in path_dirs {
        let candidate = dir.join("qdrant");
        if process::is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    Err(TestkitError::QdrantNotFound { searched })
}

/// The shared directories, in search order.
fn shared_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(SHARED_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    // crates/tenant-testkit -> workspace root -> its parent.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(parent) = manifest.ancestors().nth(3) {
        dirs.push(parent.join("shared"));
    }
    dirs.push(PathBuf::from(FALLBACK_SHARED_DIR));
    dirs
}

/// The `qdrant-<version>.gz` in `dir` with the highest version.
fn newest_gzip(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let version = name.strip_prefix("qdrant-")?.strip_suffix(".gz")?;
            let key: Vec<u64> = version
                .split('.')
                .map(|part| part.parse().unwrap_or(0))
                .collect();
            entry.path().is_file().then(|| (key, entry.path()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, path)| path)
}

/// Executables already unpacked by this process, by gzip path.
static UNPACKED: Mutex<Option<HashMap<PathBuf, PathBuf>>> = Mutex::new(None);

/// Unpacks `gz` into the per-machine cache (once) and returns the
/// executable's path.
fn unpack_cached(gz: &Path) -> Result<PathBuf, TestkitError> {
    let mut unpacked = UNPACKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = unpacked.get_or_insert_with(HashMap::new).get(gz) {
        return Ok(path.clone());
    }
    let digest = sha256_hex(gz)?;
    let dir = std::env::temp_dir()
        .join("tenant-testkit-qdrant")
        .join(&digest[..32]);
    let executable = dir.join("qdrant");
    if !process::is_executable(&executable) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))?;
        let partial = dir.join(format!(
            ".qdrant.{}.{}.partial",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let result = gunzip_executable(gz, &partial).and_then(|()| {
            std::fs::rename(&partial, &executable).map_err(|e| {
                TestkitError::io(
                    format!("moving the unpacked Qdrant to {}", executable.display()),
                    e,
                )
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result?;
    }
    unpacked
        .get_or_insert_with(HashMap::new)
        .insert(gz.to_path_buf(), executable.clone());
    Ok(executable)
}

fn sha256_hex(path: &Path) -> Result<String, TestkitError> {
    let context = || format!("hashing {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| TestkitError::io(context(), e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| TestkitError::io(context(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn gunzip_executable(gz: &Path, target: &Path) -> Result<(), TestkitError> {
    use std::os::unix::fs::OpenOptionsExt;
    let context = || format!("unpacking {} to {}", gz.display(), target.display());
    let input = std::fs::File::open(gz).map_err(|e| TestkitError::io(context(), e))?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(target)
        .map_err(|e| TestkitError::io(context(), e))?;
    let mut decoder = flate2::read::GzDecoder::new(BufReader::new(input));
    std::io::copy(&mut decoder, &mut output).map_err(|e| TestkitError::io(context(), e))?;
    output.flush().map_err(|e| TestkitError::io(context(), e))?;
    output
        .sync_all()
        .map_err(|e| TestkitError::io(context(), e))
}

/// The ports one node listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    http: u16,
    grpc: u16,
    /// Peer-to-peer (Raft and shard transfer) port, in a cluster only.
    p2p: Option<u16>,
}

impl Ports {
    fn free(cluster: bool) -> Result<Ports, TestkitError> {
        Ok(Ports {
            http: process::free_port()?,
            grpc: process::free_port()?,
            p2p: if cluster {
                Some(process::free_port()?)
            } else {
                None
            },
        })
    }
}

/// What a node is doing.
#[derive(Debug)]
enum NodeState {
    /// The server runs under this watchdog.
    Running(Watchdog),
    /// The server was killed; a placeholder process under this watchdog
    /// deletes the node's directory if the test process ends before the
    /// restart.
    Down(Watchdog),
}

/// One Qdrant process and its directory.
#[derive(Debug)]
struct Node {
    executable: PathBuf,
    ports: Ports,
    /// Command-line arguments (cluster URIs).
    args: Vec<String>,
    env: Vec<(String, String)>,
    api_key: Option<String>,
    state: NodeState,
    runs: u32,
    // Declared last: removed after the server has stopped.
    temp: TempDir,
}

impl Node {
    fn new(
        executable: &Path,
        ports: Ports,
        args: Vec<String>,
        options: &QdrantOptions,
    ) -> Result<Node, TestkitError> {
        let temp = tempfile::Builder::new()
            .prefix("tenant-testkit-qdrant-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the Qdrant temp dir", e))?;
        let storage = temp.path().join("storage");
        let snapshots = temp.path().join("snapshots");
        let mut env = vec![
            ("QDRANT__SERVICE__HOST".to_owned(), "127.0.0.1".to_owned()),
            (
                "QDRANT__SERVICE__HTTP_PORT".to_owned(),
                ports.http.to_string(),
            ),
            (
                "QDRANT__SERVICE__GRPC_PORT".to_owned(),
                ports.grpc.to_string(),
            ),
            (
                "QDRANT__SERVICE__ENABLE_STATIC_CONTENT".to_owned(),
                "false".to_owned(),
            ),
            (
                "QDRANT__STORAGE__STORAGE_PATH".to_owned(),
                storage.to_string_lossy().into_owned(),
            ),
            (
                "QDRANT__STORAGE__SNAPSHOTS_PATH".to_owned(),
                snapshots.to_string_lossy().into_owned(),
            ),
            ("QDRANT__TELEMETRY_DISABLED".to_owned(), "true".to_owned()),
            // The test machines are small and shared.
            (
                "QDRANT__STORAGE__PERFORMANCE__MAX_OPTIMIZATION_THREADS".to_owned(),
                "1".to_owned(),
            ),
        ];
        if let Some(p2p) = ports.p2p {
            env.push(("QDRANT__CLUSTER__ENABLED".to_owned(), "true".to_owned()));
            env.push(("QDRANT__CLUSTER__P2P__PORT".to_owned(), p2p.to_string()));
        }
        env.extend(options.env());
        let state = NodeState::Running(spawn_qdrant(executable, temp.path(), &args, &env, 0)?);
        Ok(Node {
            executable: executable.to_path_buf(),
            ports,
            args,
            env,
            api_key: options.api_key.clone(),
            state,
            runs: 1,
            temp,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.temp.path().join(log_name(self.runs.saturating_sub(1)))
    }

    fn watchdog_mut(&mut self) -> Option<&mut Watchdog> {
        match &mut self.state {
            NodeState::Running(watchdog) => Some(watchdog),
            NodeState::Down(_) => None,
        }
    }

    fn pid(&self) -> Option<u32> {
        match &self.state {
            NodeState::Running(watchdog) => Some(watchdog.server_pid()),
            NodeState::Down(_) => None,
        }
    }

    /// `/readyz` answers 200.
    fn ready(&self) -> bool {
        http::get(self.ports.http, "/readyz", None, PROBE_TIMEOUT).is_some_and(|r| r.status == 200)
    }

    /// Fails if the server process has ended.
    fn check_alive(&mut self, service: &'static str) -> Result<(), TestkitError> {
        let log = self.log_path();
        match self.watchdog_mut() {
            None => Err(TestkitError::NotRunning { service }),
            Some(watchdog) => match watchdog.try_status()? {
                None => Ok(()),
                Some(status) => Err(TestkitError::StartFailed {
                    service,
                    status: status.to_string(),
                    log: process::tail_file(&log, 8192),
                }),
            },
        }
    }

    /// Waits until `/readyz` answers 200.
    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let port = self.ports.http;
        let log = self.log_path();
        let Some(watchdog) = self.watchdog_mut() else {
            return Err(TestkitError::NotRunning { service: "qdrant" });
        };
        let ready =
            || http::get(port, "/readyz", None, PROBE_TIMEOUT).is_some_and(|r| r.status == 200);
        match process::wait_until_ready(watchdog, START_TIMEOUT, POLL, ready)? {
            WaitOutcome::Ready => Ok(()),
            WaitOutcome::Exited(status) => Err(TestkitError::StartFailed {
                service: "qdrant",
                status: status.to_string(),
                log: process::tail_file(&log, 8192),
            }),
            WaitOutcome::TimedOut => Err(TestkitError::Timeout {
                service: "qdrant",
                waited: START_TIMEOUT,
                log: process::tail_file(&log, 8192),
            }),
        }
    }

    /// This node's view of the cluster (`GET /cluster`), if it answers.
    fn cluster_view(&self) -> Option<ClusterView> {
        let response = http::get(
            self.ports.http,
            "/cluster",
            self.api_key.as_deref(),
            PROBE_TIMEOUT,
        )?;
        if response.status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        let result = json.get("result")?;
        Some(ClusterView {
            peer_id: result.get("peer_id")?.as_u64()?,
            peers: result.get("peers")?.as_object()?.len(),
            has_leader: result
                .get("raft_info")
                .and_then(|raft| raft.get("leader"))
                .is_some_and(|leader| !leader.is_null()),
        })
    }

    /// Kills the server with `SIGKILL`, keeping its storage.
    fn kill(&mut self) -> Result<(), TestkitError> {
        if let NodeState::Running(watchdog) = &mut self.state {
            watchdog.kill()?;
            let custodian = Watchdog::spawn(WatchdogSpec {
                program: Path::new("/bin/sleep"),
                args: vec!["2147483647".into()],
                run_as: &RunAs::CurrentUser,
                cwd: self.temp.path(),
                log_file: &self.temp.path().join("custodian.log"),
                stop_signal: "TERM",
                cleanup_dir: Some(self.temp.path()),
                env: Vec::new(),
            })?;
            self.state = NodeState::Down(custodian);
        }
        Ok(())
    }

    /// Starts the server again on the same ports and storage (after
    /// [`Node::kill`]); does not wait for readiness.
    fn restart(&mut self) -> Result<(), TestkitError> {
        if let NodeState::Down(custodian) = &mut self.state {
            // SIGKILL ends the placeholder without deleting the directory.
            custodian.kill()?;
            let watchdog = spawn_qdrant(
                &self.executable,
                self.temp.path(),
                &self.args,
                &self.env,
                self.runs,
            )?;
            self.runs += 1;
            self.state = NodeState::Running(watchdog);
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        match &mut self.state {
            NodeState::Running(watchdog) => {
                let _ = watchdog.shutdown(STOP_GRACE);
            }
            NodeState::Down(custodian) => {
                let _ = custodian.shutdown(STOP_GRACE);
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What `GET /cluster` told about one node.
#[derive(Debug, Clone, Copy)]
struct ClusterView {
    peer_id: u64,
    peers: usize,
    has_leader: bool,
}

fn log_name(run: u32) -> String {
    if run == 0 {
        "qdrant.log".to_owned()
    } else {
        format!("qdrant.restart-{run}.log")
    }
}

fn spawn_qdrant(
    executable: &Path,
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    run: u32,
) -> Result<Watchdog, TestkitError> {
    Watchdog::spawn(WatchdogSpec {
        program: executable,
        args: args.iter().map(Into::into).collect(),
        run_as: &RunAs::CurrentUser,
        cwd: dir,
        log_file: &dir.join(log_name(run)),
        stop_signal: "TERM",
        cleanup_dir: Some(dir),
        env: env.to_vec(),
    })
}

/// Starts a node on fresh ports, retrying on a port conflict, and waits for
/// `/readyz`. `args` builds the command line from the node's ports.
fn start_node(
    executable: &Path,
    cluster: bool,
    options: &QdrantOptions,
    args: impl Fn(&Ports) -> Vec<String>,
) -> Result<Node, TestkitError> {
    process::retry_on_port_conflict("qdrant", || {
        let ports = Ports::free(cluster)?;
        let mut node = Node::new(executable, ports, args(&ports), options)?;
        node.wait_ready()?;
        Ok(node)
    })
}

/// A private single-node Qdrant server that lives as long as this value (or,
/// for [`TestQdrant::shared`], as long as the process).
///
/// ```no_run
/// use tenant_testkit::{TestQdrant, TestkitError};
///
/// match TestQdrant::start() {
///     Ok(qdrant) => println!("gRPC at {}, REST at {}", qdrant.grpc_url(), qdrant.rest_url()),
///     Err(TestkitError::QdrantNotFound { .. }) => println!("no Qdrant binary: server tests skipped"),
///     Err(e) => panic!("{e}"),
/// }
/// ```
#[derive(Debug)]
pub struct TestQdrant {
    node: Node,
    options: QdrantOptions,
}

static SHARED: OnceLock<Result<TestQdrant, TestkitError>> = OnceLock::new();

impl TestQdrant {
    /// Locates the binary ([`locate_qdrant`]) and starts a server without
    /// authentication; returns once `/readyz` answers.
    ///
    /// # Errors
    ///
    /// [`TestkitError::QdrantNotFound`] when there is no binary, and the other
    /// variants when it fails to start.
    pub fn start() -> Result<TestQdrant, TestkitError> {
        Self::start_with(&QdrantOptions::new())
    }

    /// Like [`TestQdrant::start`] with authentication options.
    ///
    /// # Errors
    ///
    /// As [`TestQdrant::start`].
    pub fn start_with(options: &QdrantOptions) -> Result<TestQdrant, TestkitError> {
        let executable = locate_qdrant()?;
        Self::start_binary(&executable, options)
    }

    /// Starts the given Qdrant executable.
    ///
    /// # Errors
    ///
    /// As [`TestQdrant::start`], except for the lookup.
    pub fn start_binary(
        executable: &Path,
        options: &QdrantOptions,
    ) -> Result<TestQdrant, TestkitError> {
        let node = start_node(executable, false, options, |_| Vec::new())?;
        Ok(TestQdrant {
            node,
            options: options.clone(),
        })
    }

    /// One server per process (no authentication), started on first use and
    /// never dropped: the watchdog stops it when the process exits.
    ///
    /// # Panics
    ///
    /// Panics with the startup error; use [`TestQdrant::try_shared`] to
    /// handle it (for example to skip when the binary is absent).
    pub fn shared() -> &'static TestQdrant {
        match Self::try_shared() {
            Ok(server) => server,
            Err(e) => panic!("tenant-testkit: cannot start the shared Qdrant: {e}"),
        }
    }

    /// Like [`TestQdrant::shared`] but returns the startup error (the same
    /// one on every call: startup is attempted once per process).
    ///
    /// # Errors
    ///
    /// The error [`TestQdrant::start`] returned on the first call;
    /// [`TestkitError::QdrantNotFound`] means "skip the server tests".
    pub fn try_shared() -> Result<&'static TestQdrant, &'static TestkitError> {
        SHARED.get_or_init(TestQdrant::start).as_ref()
    }

    /// The REST URL, `http://127.0.0.1:<http port>`.
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.node.ports.http)
    }

    /// The gRPC URL for `qdrant-client`, `http://127.0.0.1:<grpc port>`.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.node.ports.grpc)
    }

    /// The REST port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.node.ports.http
    }

    /// The gRPC port on 127.0.0.1.
    pub fn grpc_port(&self) -> u16 {
        self.node.ports.grpc
    }

    /// The API key the server requires, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.options.api_key_value()
    }

    /// The options the server was started with.
    pub fn options(&self) -> &QdrantOptions {
        &self.options
    }

    /// The storage directory (kept across [`TestQdrant::restart`]).
    pub fn storage_dir(&self) -> PathBuf {
        self.node.temp.path().join("storage")
    }

    /// The log of the current run.
    pub fn log_path(&self) -> PathBuf {
        self.node.log_path()
    }

    /// The server's process id, or `None` while killed.
    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process::pid_alive)
    }

    /// Whether `/readyz` answers 200 right now.
    pub fn is_ready(&self) -> bool {
        self.node.ready()
    }

    /// The executable the server runs.
    pub fn executable(&self) -> &Path {
        &self.node.executable
    }

    /// Kills the server with `SIGKILL` (a crash: no flush, no goodbye).
    /// Killing a killed server does nothing.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] if the process cannot be waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.node.kill()
    }

    /// Starts a killed server again on the same ports and storage and waits
    /// until `/readyz` answers. Does nothing to a running server.
    ///
    /// # Errors
    ///
    /// [`TestkitError::StartFailed`] if it fails to start (for example a port
    /// was taken meanwhile), [`TestkitError::Timeout`] if it does not become
    /// ready.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.node.restart()?;
        self.node.wait_ready()
    }
}

/// A private Qdrant cluster of several nodes on 127.0.0.1 that lives as
/// long as this value (or, for [`TestQdrantCluster::shared`], as long as the
/// process).
///
/// Node 0 starts the cluster (`--uri`); the others join it (`--bootstrap`).
/// Nodes are addressed by index, `0..len()`.
///
/// ```no_run
/// use tenant_testkit::TestQdrantCluster;
///
/// # fn demo() -> Result<(), tenant_testkit::TestkitError> {
/// let mut cluster = TestQdrantCluster::start()?;
/// let urls = cluster.grpc_urls();
/// // ... create a collection with custom sharding through urls[0] ...
/// cluster.kill_node(2)?;
/// // ... read while node 2 is down ...
/// cluster.restart_node(2)?; // waits until it has rejoined
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestQdrantCluster {
    nodes: Vec<Node>,
    peer_ids: Vec<u64>,
    options: QdrantOptions,
}

static SHARED_CLUSTER: OnceLock<Result<TestQdrantCluster, TestkitError>> = OnceLock::new();

impl TestQdrantCluster {
    /// Starts a [`DEFAULT_CLUSTER_SIZE`]-node cluster without authentication;
    /// returns once every node sees every peer.
    ///
    /// # Errors
    ///
    /// [`TestkitError::QdrantNotFound`] when there is no binary,
    /// [`TestkitError::Timeout`] when the cluster does not form, and the
    /// other variants when a node fails to start.
    pub fn start() -> Result<TestQdrantCluster, TestkitError> {
        Self::start_with(DEFAULT_CLUSTER_SIZE, &QdrantOptions::new())
    }

    /// Starts a cluster of `nodes` nodes (at least 1) with the given options.
    ///
    /// # Errors
    ///
    /// As [`TestQdrantCluster::start`].
    pub fn start_with(
        nodes: usize,
        options: &QdrantOptions,
    ) -> Result<TestQdrantCluster, TestkitError> {
        let executable = locate_qdrant()?;
        Self::start_binary(&executable, nodes, options)
    }

    /// Starts a cluster from the given executable.
    ///
    /// # Errors
    ///
    /// As [`TestQdrantCluster::start`], except for the lookup.
    pub fn start_binary(
        executable: &Path,
        nodes: usize,
        options: &QdrantOptions,
    ) -> Result<TestQdrantCluster, TestkitError> {
        let first = start_node(executable, true, options, |ports| {
            vec![
                "--uri".to_owned(),
                format!("http://127.0.0.1:{}", ports.p2p.unwrap_or_default()),
            ]
        })?;
        let bootstrap = format!("http://127.0.0.1:{}", first.ports.p2p.unwrap_or_default());
        let mut cluster = TestQdrantCluster {
            nodes: vec![first],
            peer_ids: Vec::new(),
            options: options.clone(),
        };
        // Joins go through consensus one at a time: start each node once the
        // previous one has been admitted.
        for _ in 1..nodes.max(1) {
            let node = start_node(executable, true, options, |ports| {
                vec![
                    "--bootstrap".to_owned(),
                    bootstrap.clone(),
                    "--uri".to_owned(),
                    format!("http://127.0.0.1:{}", ports.p2p.unwrap_or_default()),
                ]
            })?;
            cluster.nodes.push(node);
            cluster.wait_until_formed()?;
        }
        cluster.wait_until_formed()?;
        Ok(cluster)
    }

    /// One [`DEFAULT_CLUSTER_SIZE`]-node cluster per process, started on
    /// first use and never dropped. Its nodes cannot be killed (that needs
    /// `&mut`); start a private cluster for crash tests.
    ///
    /// # Panics
    ///
    /// Panics with the startup error; use [`TestQdrantCluster::try_shared`]
    /// to handle it.
    pub fn shared() -> &'static TestQdrantCluster {
        match Self::try_shared() {
            Ok(cluster) => cluster,
            Err(e) => panic!("tenant-testkit: cannot start the shared Qdrant cluster: {e}"),
        }
    }

    /// Like [`TestQdrantCluster::shared`] but returns the startup error (the
    /// same one on every call).
    ///
    /// # Errors
    ///
    /// The error [`TestQdrantCluster::start`] returned on the first call.
    pub fn try_shared() -> Result<&'static TestQdrantCluster, &'static TestkitError> {
        SHARED_CLUSTER
            .get_or_init(TestQdrantCluster::start)
            .as_ref()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// REST URL of node `index`. Panics if `index >= len()`.
    pub fn rest_url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[index].ports.http)
    }

    /// gRPC URL of node `index` for `qdrant-client`. Panics if
    /// `index >= len()`.
    pub fn grpc_url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[index].ports.grpc)
    }

    /// REST URLs of every node, by index.
    pub fn rest_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.rest_url(i)).collect()
    }

    /// gRPC URLs of every node, by index.
    pub fn grpc_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.grpc_url(i)).collect()
    }

    /// REST port of node `index`. Panics if `index >= len()`.
    pub fn http_port(&self, index: usize) -> u16 {
        self.nodes[index].ports.http
    }

    /// gRPC port of node `index`. Panics if `index >= len()`.
    pub fn grpc_port(&self, index: usize) -> u16 {
        self.nodes[index].ports.grpc
    }

    /// Qdrant's peer id of node `index` (as used in shard placement and
    /// `/cluster`). Panics if `index >= len()`.
    pub fn peer_id(&self, index: usize) -> u64 {
        self.peer_ids[index]
    }

    /// The API key the nodes require, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.options.api_key_value()
    }

    /// The process id of node `index`, or `None` while it is killed. Panics
    /// if `index >= len()`.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].pid()
    }

    /// Whether node `index` is running. Panics if `index >= len()`.
    pub fn is_running(&self, index: usize) -> bool {
        self.pid(index).is_some_and(process::pid_alive)
    }

    /// The log of node `index`'s current run. Panics if `index >= len()`.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.nodes[index].log_path()
    }

    /// Kills node `index` with `SIGKILL`, keeping its ports and storage for
    /// [`TestQdrantCluster::restart_node`]. Killing a killed node does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NoSuchNode`] for an index out of range;
    /// [`TestkitError::Io`] if the process cannot be waited for.
    pub fn kill_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.node_mut(index)?.kill()
    }

    /// Starts killed node `index` again on the same ports and storage and
    /// waits until it has rejoined ([`TestQdrantCluster::wait_until_formed`]).
    /// Does nothing but wait for a running node.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NoSuchNode`], [`TestkitError::StartFailed`] if it
    /// fails to start, [`TestkitError::Timeout`] if it does not rejoin.
    pub fn restart_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.node_mut(index)?.restart()?;
        self.wait_until_formed()
    }

    /// Waits until every running node answers `/readyz`, lists every node as
    /// a peer in `/cluster` and knows the Raft leader.
    ///
    /// # Errors
    ///
    /// [`TestkitError::StartFailed`] if a running node exits,
    /// [`TestkitError::Timeout`] after a generous limit.
    pub fn wait_until_formed(&mut self) -> Result<(), TestkitError> {
        let expected = self.nodes.len();
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let mut peer_ids = Vec::with_capacity(expected);
            let mut formed = true;
            for node in &mut self.nodes {
                if node.pid().is_none() {
                    continue;
                }
                node.check_alive("qdrant")?;
                let view = node.cluster_view();
                match view {
                    Some(view) if view.peers == expected && view.has_leader && node.ready() => {
                        peer_ids.push(view.peer_id);
                    }
                    _ => formed = false,
                }
            }
            if formed {
                if self.peer_ids.len() != expected && peer_ids.len() == expected {
                    self.peer_ids = peer_ids;
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| {
                        format!(
                            "--- node {i}:\n{}",
                            process::tail_file(&node.log_path(), 4096)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(TestkitError::Timeout {
                    service: "qdrant cluster",
                    waited: CLUSTER_TIMEOUT,
                    log,
                });
            }
            thread::sleep(POLL * 4);
        }
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut Node, TestkitError> {
        let nodes = self.nodes.len();
        self.nodes
            .get_mut(index)
            .ok_or(TestkitError::NoSuchNode { index, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_gzip_wins_by_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "qdrant-1.9.0.gz",
            "qdrant-1.18.3.gz",
            "qdrant-1.18.10.gz",
            "other.gz",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let newest = newest_gzip(dir.path()).expect("found");
        assert_eq!(
            newest.file_name().and_then(|n| n.to_str()),
            Some("qdrant-1.18.10.gz")
        );
        assert_eq!(newest_gzip(&dir.path().join("missing")), None);
    }

    #[test]
    fn gzip_is_unpacked_once_into_an_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gz = dir
            .path()
            .join(format!("qdrant-0.0.{}.gz", std::process::id()));
        let file = std::fs::File::create(&gz).expect("create");
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let script = format!("#!/bin/sh\necho {}\n", uuid::Uuid::new_v4());
        encoder.write_all(script.as_bytes()).expect("write");
        encoder.finish().expect("finish");
        let first = unpack_cached(&gz).expect("unpack");
        assert!(process::is_executable(&first));
        assert_eq!(std::fs::read_to_string(&first).expect("read"), script);
        assert_eq!(unpack_cached(&gz).expect("again"), first);
        let _ = std::fs::remove_dir_all(first.parent().expect("cache dir"));
    }

    #[test]
    fn nothing_found_is_a_typed_error_listing_every_place() {
        let empty = tempfile::tempdir().expect("tempdir");
        let explicit = empty.path().join("not-executable");
        std::fs::write(&explicit, b"x").expect("write");
        let result = locate_in(
            Some(explicit.clone()),
            vec![empty.path().join("shared")],
            vec![empty.path().to_path_buf()],
        );
        match result {
            Err(TestkitError::QdrantNotFound { searched }) => assert_eq!(
                searched,
                [
                    explicit,
                    empty.path().join("shared").join("bin"),
                    empty.path().join("qdrant")
                ]
            ),
            other => panic!("unexpected: {other:?}"),
        }
        let message = locate_in(None, Vec::new(), Vec::new())
            .expect_err("nothing to search")
            .to_string();
        assert!(
            message.contains("Qdrant server binary not found"),
            "{message}"
        );
    }

    #[test]
    fn rbac_options_set_the_key_and_the_flag() {
        let env = QdrantOptions::new().jwt_rbac("k").env();
        assert!(env.contains(&("QDRANT__SERVICE__API_KEY".to_owned(), "k".to_owned())));
        assert!(env.contains(&("QDRANT__SERVICE__JWT_RBAC".to_owned(), "true".to_owned())));
        assert!(QdrantOptions::new().env().is_empty());
    }
}
