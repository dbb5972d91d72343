//! The connection a [`RedisLedger`](crate::RedisLedger) sends its script
//! calls over: one multiplexed connection to a single server (the `redis`
//! crate's `ConnectionManager`, which reconnects by itself), or a Redis
//! Cluster connection (which routes each call to the master of its key
//! group's slot, follows `MOVED`/`ASK`, and loads the script on every
//! master when one answers `NOSCRIPT`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where the ledger's connection comes from.
pub(crate) enum Connector {
    Single(ConnectionManager),
    /// Connected on first use (and again after a failed attempt).
    Cluster(Box<ClusterConnector>),
}

/// A cluster client and its connection, once made.
pub(crate) struct ClusterConnector {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

/// A connection for one call.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connector {
    /// A lazily connected single server.
    pub(crate) fn single(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        ConnectionManager::new_lazy_with_config(client, config)
            .map(Connector::Single)
            .map_err(|e| format!("redis: {e}"))
    }

    /// A cluster reached through any of `nodes`.
    pub(crate) fn cluster(nodes: &[String], timeout: Duration) -> Result<Self, String> {
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .build()
            .map_err(|e| format!("bad Redis Cluster nodes: {e}"))?;
        Ok(Connector::Cluster(Box::new(ClusterConnector {
            client,
            conn: OnceCell::new(),
        })))
    }

    /// The connection (connecting to the cluster the first time).
    pub(crate) async fn get(&self) -> Result<Conn, String> {
        match self {
            Connector::Single(c) => Ok(Conn::Single(c.clone())),
            Connector::Cluster(c) => c
                .conn
                .get_or_try_init(|| c.client.get_async_connection())
                .await
                .map(|c| Conn::Cluster(c.clone()))
                .map_err(|e| format!("redis cluster: {e}")),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
