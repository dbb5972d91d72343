//! Ephemeral Redis Clusters.
//!
//! [`TestRedisCluster::start`] runs three `redis-server` masters (no
//! replicas) with `cluster-enabled yes` on free ports of 127.0.0.1, each
//! with its own free cluster-bus port and throw-away directory, under the
//! stdin-pipe watchdog (see the crate docs, "Teardown"). It splits the
//! 16384 hash slots into contiguous ranges, one per master in node order
//! (`CLUSTER ADDSLOTSRANGE`), introduces the nodes to each other
//! (`CLUSTER MEET`) and returns once every node reports
//! `cluster_state:ok` and knows every other node.
//!
//! Clients connect to any node ([`TestRedisCluster::urls`]); a key sent to a
//! node that does not own its slot is answered with `MOVED`. Keys sharing a
//! hash tag (`{tenant}:a`, `{tenant}:b`) share a slot, hence a node:
//! [`key_slot`] and [`TestRedisCluster::node_for_key`] tell which.

use std::path::Path;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::TestkitError;
use crate::process;
use crate::redis::{self, TestRedis};
use crate::resp::{self, Reply};

/// The number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;
/// The number of masters [`TestRedisCluster::start`] runs.
pub const DEFAULT_MASTERS: usize = 3;

/// How long the cluster may take to reach `cluster_state:ok`.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one setup command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag
/// (the part between the first `{` and the next `}`, when non-empty), modulo
/// [`CLUSTER_SLOTS`].
///
/// ```
/// use tenant_testkit::redis_cluster::key_slot;
///
/// assert_eq!(key_slot(b"123456789"), 12739);
/// assert_eq!(key_slot(b"{tenant-a}:budget"), key_slot(b"{tenant-a}:holds"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % CLUSTER_SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot range `[first, last]` of master `index` of `masters`.
fn slot_range(index: usize, masters: usize) -> (u16, u16) {
    let slots = usize::from(CLUSTER_SLOTS);
    let first = index * slots / masters;
    let last = (index + 1) * slots / masters - 1;
    // Both are below CLUSTER_SLOTS, which fits in u16.
    (first as u16, last as u16)
}

/// A private Redis Cluster that lives as long as this value (or, for
/// [`TestRedisCluster::shared`], as long as the process).
///
/// ```no_run
/// use tenant_testkit::TestRedisCluster;
///
/// # fn demo() -> Result<(), tenant_testkit::TestkitError> {
/// let cluster = TestRedisCluster::start()?;
/// // redis::cluster::ClusterClient::new(cluster.urls()) ...
/// let owner = cluster.node_for_key(b"{tenant-a}:used");
/// println!("{{tenant-a}} lives on {}", cluster.url(owner));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestRedisCluster {
    nodes: Vec<TestRedis>,
    bus_ports: Vec<u16>,
}

static SHARED: OnceLock<Result<TestRedisCluster, TestkitError>> = OnceLock::new();

impl TestRedisCluster {
    /// Starts [`DEFAULT_MASTERS`] masters from the machine's `redis-server`
    /// ([`crate::locate_redis_server`]) and forms the cluster.
    ///
    /// # Errors
    ///
    /// [`TestkitError::RedisNotFound`] without `redis-server`,
    /// [`TestkitError::Timeout`] if the cluster does not reach
    /// `cluster_state:ok`, and the other variants when a node fails to start
    /// or a setup command fails.
    pub fn start() -> Result<TestRedisCluster, TestkitError> {
        Self::start_with(DEFAULT_MASTERS)
    }

    /// Like [`TestRedisCluster::start`] with `masters` masters (at least 1).
    ///
    /// # Errors
    ///
    /// As [`TestRedisCluster::start`].
    pub fn start_with(masters: usize) -> Result<TestRedisCluster, TestkitError> {
        let executable = redis::locate_redis_server()?;
        Self::start_binary(&executable, masters)
    }

    /// Forms a cluster of `masters` masters (at least 1) from the given
    /// `redis-server`.
    ///
    /// # Errors
    ///
    /// As [`TestRedisCluster::start`], except for the lookup.
    pub fn start_binary(
        executable: &Path,
        masters: usize,
    ) -> Result<TestRedisCluster, TestkitError> {
        let masters = masters.max(1);
        let mut cluster = TestRedisCluster {
            nodes: Vec::with_capacity(masters),
            bus_ports: Vec::with_capacity(masters),
        };
        for _ in 0..masters {
            let (node, bus_port) = start_node(executable)?;
            cluster.nodes.push(node);
            cluster.bus_ports.push(bus_port);
        }
        for (index, node) in cluster.nodes.iter().enumerate() {
            let (first, last) = slot_range(index, masters);
            expect_ok(
                node.port(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let first_port = cluster.nodes[0].port();
        for (node, bus_port) in cluster.nodes.iter().zip(&cluster.bus_ports).skip(1) {
            expect_ok(
                first_port,
                &[
                    "CLUSTER",
                    "MEET",
                    "127.0.0.1",
                    &node.port().to_string(),
                    &bus_port.to_string(),
                ],
            )?;
        }
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// One [`DEFAULT_MASTERS`]-master cluster per process, started on first
    /// use and never dropped: the watchdogs stop it when the process exits.
    ///
    /// # Panics
    ///
    /// Panics with the startup error; use [`TestRedisCluster::try_shared`]
    /// to handle it.
    pub fn shared() -> &'static TestRedisCluster {
        match Self::try_shared() {
            Ok(cluster) => cluster,
            Err(e) => panic!("tenant-testkit: cannot start the shared Redis Cluster: {e}"),
        }
    }

    /// Like [`TestRedisCluster::shared`] but returns the startup error (the
    /// same one on every call).
    ///
    /// # Errors
    ///
    /// The error [`TestRedisCluster::start`] returned on the first call.
    pub fn try_shared() -> Result<&'static TestRedisCluster, &'static TestkitError> {
        SHARED.get_or_init(TestRedisCluster::start).as_ref()
    }

    /// The number of masters.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `redis://127.0.0.1:<port>` of every master, by index: the seed list
    /// for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(TestRedis::url).collect()
    }

    /// `redis://127.0.0.1:<port>` of master `index`. Panics if
    /// `index >= len()`.
    pub fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }

    /// The client port of master `index`. Panics if `index >= len()`.
    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].port()
    }

    /// The cluster-bus port of master `index`. Panics if `index >= len()`.
    pub fn bus_port(&self, index: usize) -> u16 {
        self.bus_ports[index]
    }

    /// Master `index` (its pid, log, port). Panics if `index >= len()`.
    pub fn node(&self, index: usize) -> &TestRedis {
        &self.nodes[index]
    }

    /// The index of the master that owns `slot` (`slot < CLUSTER_SLOTS`;
    /// larger values wrap).
    pub fn node_for_slot(&self, slot: u16) -> usize {
        let masters = self.nodes.len();
        let slot = slot % CLUSTER_SLOTS;
        (0..masters)
            .find(|&index| slot <= slot_range(index, masters).1)
            .unwrap_or(masters - 1)
    }

    /// The index of the master that owns `key`'s slot ([`key_slot`]).
    pub fn node_for_key(&self, key: &[u8]) -> usize {
        self.node_for_slot(key_slot(key))
    }

    /// Waits until every node reports `cluster_state:ok`, every slot
    /// assigned and every node known.
    fn wait_until_ok(&self) -> Result<(), TestkitError> {
        let expected_nodes = format!("cluster_known_nodes:{}", self.nodes.len());
        let all_slots = format!("cluster_slots_assigned:{CLUSTER_SLOTS}");
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let formed = self.nodes.iter().all(|node| {
                match resp::command(node.port(), &["CLUSTER", "INFO"], COMMAND_TIMEOUT) {
                    Ok(reply) => reply.text().is_some_and(|info| {
                        let lines: Vec<&str> = info.lines().map(str::trim).collect();
                        lines.contains(&"cluster_state:ok")
                            && lines.contains(&expected_nodes.as_str())
                            && lines.contains(&all_slots.as_str())
                    }),
                    Err(_) => false,
                }
            });
            if formed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| {
                        let log = node
                            .log_path()
                            .map(|path| process::tail_file(&path, 4096))
                            .unwrap_or_default();
                        format!("--- node {i}:\n{log}")
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(TestkitError::Timeout {
                    service: "redis cluster",
                    waited: FORM_TIMEOUT,
                    log,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts one cluster-enabled node on free client and bus ports.
fn start_node(executable: &Path) -> Result<(TestRedis, u16), TestkitError> {
    process::retry_on_port_conflict("redis-server", || {
        let port = process::free_port()?;
        let bus_port = loop {
            let candidate = process::free_port()?;
            if candidate != port {
                break candidate;
            }
        };
        let args = vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-port".to_owned(),
            bus_port.to_string(),
            // Relative to --dir, the node's own temp dir.
            "--cluster-config-file".to_owned(),
            "nodes.conf".to_owned(),
            "--cluster-node-timeout".to_owned(),
            "5000".to_owned(),
        ];
        TestRedis::start_on(executable, port, args).map(|node| (node, bus_port))
    })
}

/// Sends a setup command and requires `+OK`.
fn expect_ok(port: u16, args: &[&str]) -> Result<(), TestkitError> {
    match resp::command(port, args, COMMAND_TIMEOUT)? {
        Reply::Simple(ok) if ok == "OK" => Ok(()),
        other => Err(TestkitError::CommandFailed {
            command: format!("{} (on 127.0.0.1:{port})", args.join(" ")),
            status: "unexpected reply".to_owned(),
            output: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_redis_reference() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % CLUSTER_SLOTS);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"bar"),
            "empty tag hashes the whole key"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn slot_ranges_cover_every_slot_once() {
        for masters in 1..=5 {
            let mut next = 0u32;
            for index in 0..masters {
                let (first, last) = slot_range(index, masters);
                assert_eq!(u32::from(first), next);
                next = u32::from(last) + 1;
            }
            assert_eq!(next, u32::from(CLUSTER_SLOTS));
        }
    }
}
