//! [`RedisRevocationStore`]: revocations shared by every replica through
//! Redis, pruned by expiry; [`RevocationFollower`] keeps a replica's local
//! registry in step with it.
//!
//! Layout (one hash tag, so it works on one node or in one Redis Cluster
//! slot): each revocation is a key `{ns}:rev:e:<what>` holding the entry
//! text, expiring when everything it covers has expired (`PXAT`); every
//! revocation is also appended to the stream `{ns}:rev:log`, trimmed to the
//! last [`STREAM_RETENTION`] by time. Both are written by one script, so a
//! reader that has seen the stream up to an entry also finds its key.
//!
//! A follower loads every key once (noting the stream's last id first),
//! then blocks on `XREAD` from that id: new revocations arrive as soon as
//! they are written (push, no polling interval), and each reply, empty or
//! not, proves the local view complete up to the moment the read was sent.
//! It records that moment with [`Revocations::mark_synced`]; the registry
//! refuses every context once it is older than the staleness bound. After
//! any error the follower reconnects and reloads everything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::error::{Error, Result};
use crate::revocation::{Revocation, RevocationStore, Revocations};

/// How long the stream keeps entries: far longer than any staleness bound,
/// so a follower that is merely slow never misses one (a follower cut off
/// for longer reloads everything).
pub const STREAM_RETENTION: Duration = Duration::from_secs(15 * 60);
/// The latest expiry written to Redis (year 9999), for entries kept
/// "forever" (`Revocations::revoke_id`).
const MAX_PXAT_MS: u64 = 253_402_300_799_999;
/// Entries read per `XREAD`, keys per `SCAN` step.
const BATCH: usize = 512;

const REVOKE_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
local cur_until = cur and tonumber(string.match(cur, '^1 %a (%d+)'))
if (not cur_until) or cur_until < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[2], 'MINID', '~', tostring(now_ms - tonumber(ARGV[3])), '*', 'e', ARGV[1])
return 1
"#;

/// Revocations shared through Redis by every process of the platform.
///
/// Made with a local registry: [`revoke`](RevocationStore::revoke) applies
/// the revocation to it at once (this process enforces it immediately) and
/// records it in Redis; [`follow`](Self::follow) keeps the registry in step
/// with what every other process records.
///
/// ```no_run
/// # async fn demo(master: tenant_core::MasterKey, ctx: tenant_core::TenantContext) -> tenant_core::Result<()> {
/// use std::time::Duration;
/// use tenant_core::*;
/// // A replica registry: fails closed when its view is older than 2 s.
/// let revocations = Revocations::replica(Duration::from_secs(2))?;
/// let store = RedisRevocationStore::connect("redis://127.0.0.1/", "acme", &revocations).await?;
/// let _follower = store.follow().await?; // keep it alive as long as the issuer
/// let issuer = ContextIssuer::builder(master).revocations(revocations).build()?;
/// // Anywhere on the platform:
/// store.revoke(&Revocation::context(&ctx)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRevocationStore {
    client: redis::Client,
    conn: ConnectionManager,
    script: Script,
    entry_prefix: String,
    stream_key: String,
    local: Revocations,
}

impl std::fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocationStore")
            .field("stream", &self.stream_key)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::revocation_store(e.to_string(), e)
}

impl RedisRevocationStore {
    /// Connects to Redis at `url`, keeping entries under namespace `ns`
    /// (1–64 characters from `[A-Za-z0-9._-]`; the platforms sharing a
    /// namespace share revocations), and applying revocations made through
    /// it to `local`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] for a bad URL or namespace,
    /// [`Error::RevocationStore`] when Redis cannot be reached.
    pub async fn connect(url: &str, ns: &str, local: &Revocations) -> Result<Self> {
        let valid_ns = !ns.is_empty()
            && ns.len() <= 64
            && ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_ns {
            return Err(Error::InvalidConfiguration(
                "the revocation namespace must be 1-64 characters from [A-Za-z0-9._-]".into(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidConfiguration(format!("bad Redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            conn,
            script: Script::new(REVOKE_SCRIPT),
            entry_prefix: format!("{{{ns}}}:rev:e:"),
            stream_key: format!("{{{ns}}}:rev:log"),
            local: local.clone(),
        })
    }

    /// Loads every revocation into the local registry, then keeps it in
    /// step with Redis until the returned follower is dropped. Returns once
    /// the first load is complete, so the registry is fresh from then on.
    ///
    /// The follower reads with a blocking `XREAD` of a quarter of the
    /// registry's staleness bound (between 10 ms and 5 s), so a healthy
    /// follower refreshes the view well within the bound.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfiguration`] when the local registry is not a
    /// replica ([`Revocations::replica`]); [`Error::RevocationStore`] when
    /// the first load fails.
    pub async fn follow(&self) -> Result<RevocationFollower> {
        let bound = self.local.max_staleness().ok_or_else(|| {
            Error::InvalidConfiguration(
                "a followed registry must be a replica (Revocations::replica)".into(),
            )
        })?;
        let block = (bound / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(block + Duration::from_secs(2)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(unavailable)?;
        let stats = Arc::new(FollowerStats::default());
        let mut reader = Reader {
            store: self.clone(),
            conn,
            block,
            last_id: String::new(),
            stats: stats.clone(),
        };
        reader.reload().await?;
        let task = tokio::spawn(reader.run());
        Ok(RevocationFollower { task, stats })
    }

    fn entry_key(&self, r: &Revocation) -> String {
        format!("{}{}", self.entry_prefix, r.key())
    }

    /// Every entry key and its text, in batches.
    async fn scan_all(&self, conn: &mut ConnectionManager) -> Result<Vec<Revocation>> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        let pattern = format!("{}*", self.entry_prefix);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                let texts: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(conn)
                    .await
                    .map_err(unavailable)?;
                // A key that expired between SCAN and MGET covers nothing
                // live any more.
                for text in texts.into_iter().flatten() {
                    out.push(Revocation::from_text(&text)?);
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

impl RevocationStore for RedisRevocationStore {
    /// Applies `revocation` locally, then records it in Redis (entry key
    /// with `PXAT` its expiry, plus a stream record). An error means other
    /// replicas may not learn it: retry.
    async fn revoke(&self, revocation: &Revocation) -> Result<()> {
        self.local.apply(revocation);
        if revocation.is_expired() {
            return Ok(());
        }
        let until = revocation.until_ms.min(MAX_PXAT_MS);
        let retention = u64::try_from(STREAM_RETENTION.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .script
            .key(self.entry_key(revocation))
            .key(&self.stream_key)
            .arg(revocation.to_text())
            .arg(until)
            .arg(retention)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<Revocation>> {
        let mut conn = self.conn.clone();
        self.scan_all(&mut conn).await
    }
}

/// Counters of a running follower.
#[derive(Default)]
struct FollowerStats {
    applied: AtomicU64,
    reloads: AtomicU64,
    errors: AtomicU64,
}

/// Keeps a replica registry in step with a [`RedisRevocationStore`]; stops
/// when dropped (the registry then goes stale and fails closed).
pub struct RevocationFollower {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<FollowerStats>,
}

impl RevocationFollower {
    /// Revocations applied from Redis so far (loads and stream).
    pub fn applied(&self) -> u64 {
        self.stats.applied.load(Ordering::Relaxed)
    }

    /// Full reloads so far (the first load included).
    pub fn reloads(&self) -> u64 {
        self.stats.reloads.load(Ordering::Relaxed)
    }

    /// Failed reads so far (each followed by a reconnect and a reload).
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }
}

impl Drop for RevocationFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for RevocationFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFollower")
            .field("applied", &self.applied())
            .field("reloads", &self.reloads())
            .field("errors", &self.errors())
            .finish()
    }
}

/// The follower's loop state.
struct Reader {
    store: RedisRevocationStore,
    conn: ConnectionManager,
    block: Duration,
    /// The last stream id applied ("0-0" for an empty stream).
    last_id: String,
    stats: Arc<FollowerStats>,
}

impl Reader {
    async fn run(mut self) {
        let retention_half = STREAM_RETENTION / 2;
        loop {
            let sent = Instant::now();
            match self.read_once().await {
                Ok(()) => {
                    // Suspended for long enough that the stream may have
                    // been trimmed past our position: start over.
                    if sent.elapsed() > retention_half {
                        self.reload_until_ok().await;
                    }
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target: crate::AUDIT_TARGET,
                        error = %e,
                        "revocation follower lost Redis; the registry fails closed once stale"
                    );
                    self.reload_until_ok().await;
                }
            }
        }
    }

    async fn reload_until_ok(&mut self) {
        loop {
            tokio::time::sleep(self.block.min(Duration::from_millis(250))).await;
            match self.reload().await {
                Ok(()) => return,
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Notes the stream's last id, loads every key, marks the view fresh as
    /// of the moment the id was read: every revocation recorded before then
    /// is in a key (or has expired), every later one is in the stream.
    async fn reload(&mut self) -> Result<()> {
        let started = Instant::now();
        let last: Value = redis::cmd("XREVRANGE")
            .arg(&self.store.stream_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        let last_id = stream_entries(&last)?
            .last()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        let entries = self.store.scan_all(&mut self.conn).await?;
        for r in &entries {
            self.store.local.apply(r);
        }
        self.stats
            .applied
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        self.last_id = last_id;
        self.store.local.mark_synced(started);
        Ok(())
    }

    /// One blocking read from the stream. A reply shorter than the batch
    /// means we have caught up to when the read was sent.
    async fn read_once(&mut self) -> Result<()> {
        let sent = Instant::now();
        let block_ms = u64::try_from(self.block.as_millis()).unwrap_or(u64::MAX);
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.store.stream_key)
            .arg(&self.last_id)
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        let entries = match &reply {
            Value::Nil => Vec::new(),
            Value::Array(streams) => match streams.first() {
                Some(Value::Array(pair)) if pair.len() == 2 => stream_entries(&pair[1])?,
                _ => return Err(malformed()),
            },
            Value::Map(streams) => match streams.first() {
                Some((_, entries)) => stream_entries(entries)?,
                None => Vec::new(),
            },
            _ => return Err(malformed()),
        };
        let caught_up = entries.len() < BATCH;
        for (id, text) in &entries {
            self.store.local.apply(&Revocation::from_text(text)?);
            self.last_id.clone_from(id);
        }
        self.stats
            .applied
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        if caught_up {
            self.store.local.mark_synced(sent);
        }
        Ok(())
    }
}

fn malformed() -> Error {
    Error::RevocationStore {
        reason: "unexpected reply shape from Redis".into(),
        source: None,
    }
}

/// `[[id, [field, value, ...]], ...]` → `(id, value of field "e")`.
fn stream_entries(v: &Value) -> Result<Vec<(String, String)>> {
    let items = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(malformed()),
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| malformed()),
        Value::SimpleString(s) => Ok(s.clone()),
        _ => Err(malformed()),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(malformed());
        };
        let [id, Value::Array(fields)] = pair.as_slice() else {
            return Err(malformed());
        };
        let mut entry = None;
        for kv in fields.chunks(2) {
            if let [k, v] = kv {
                if text(k)? == "e" {
                    entry = Some(text(v)?);
                }
            }
        }
        out.push((text(id)?, entry.ok_or_else(malformed)?));
    }
    Ok(out)
}
