//! Real, throw-away PostgreSQL (alone, behind PgBouncer, or as a Citus
//! cluster), Redis (single and cluster) and Qdrant (single and cluster)
//! servers for the tenant SDK's tests, examples and benches.
//!
//! * [`TestPostgres`] runs `initdb` + `postgres` (PostgreSQL 15 from the
//!   machine: `$PATH` or `/usr/lib/postgresql/*/bin`) in a temp dir on a free
//!   127.0.0.1 port, and provisions database [`DEFAULT_DATABASE`] with an
//!   owner role ([`OWNER_ROLE`], runs migrations) and a least-privileged
//!   application role ([`APP_ROLE`], no `SUPERUSER`, no `BYPASSRLS`, owns
//!   nothing). When the tests run as root the server runs as the `postgres`
//!   system user, because PostgreSQL refuses to run as root.
//! * [`TestCitus`] runs a Citus cluster: a coordinator and two workers,
//!   each a [`TestPostgres`] with `shared_preload_libraries = 'citus'`, the
//!   testkit's roles on every node, and [`TestCitus::fresh_database`]
//!   creating a database on every node joined into its own Citus metadata.
//!   Citus is installed by `.ci/setup-services.sh` from the shared
//!   directory; without it [`TestkitError::CitusNotFound`]. See [`citus`].
//! * [`TestRedis`] runs `redis-server` without persistence on a free port, and
//!   can be [stopped](TestRedis::stop) and [restarted](TestRedis::restart) on
//!   the same port to test outages.
//! * [`TestRedisCluster`] runs three `redis-server` masters with
//!   `cluster-enabled yes`, assigns the hash slots and returns once every
//!   node reports `cluster_state:ok`; [`redis_cluster::key_slot`] and
//!   [`TestRedisCluster::node_for_key`] tell where a key lives.
//! * [`TestPgBouncer`] runs Debian's `pgbouncer` in front of a
//!   [`TestPostgres`], in transaction pooling mode with two server
//!   connections per database and role by default ([`PgBouncerOptions`]);
//!   [`TestPgBouncer::database`] gives a database's URLs through it. See
//!   [`pgbouncer`] for what transaction pooling means for sqlx clients.
//! * [`TestQdrant`] runs a Qdrant server (the executable named by
//!   `TENANT_TESTKIT_QDRANT_BIN`, or the `bin/qdrant-<version>.gz` of the
//!   shared directory, unpacked once per machine) on free REST and gRPC
//!   ports with throw-away storage, optionally with an API key and JWT RBAC
//!   ([`QdrantOptions`]). [`TestQdrantCluster`] runs several nodes (three by
//!   default) in cluster mode, the setting custom shard keys need, and can
//!   [kill](TestQdrantCluster::kill_node) a node with `SIGKILL` and
//!   [restart](TestQdrantCluster::restart_node) it on the same ports and
//!   storage. See [`qdrant`].
//!
//! Install the servers with `.ci/setup-services.sh` (Debian). A missing
//! installation is reported as a typed error ([`TestkitError::PostgresNotFound`],
//! [`TestkitError::RedisNotFound`], [`TestkitError::PgBouncerNotFound`],
//! [`TestkitError::CitusNotFound`], [`TestkitError::QdrantNotFound`]), never
//! as a panic (except from the `shared()` conveniences, which document it).
//! Neither the Qdrant binary nor Citus is a Debian package: suites with a
//! Qdrant-server or Citus half skip it, saying so, on
//! [`TestkitError::QdrantNotFound`] or [`TestkitError::CitusNotFound`]:
//!
//! ```no_run
//! use tenant_testkit::{TestQdrant, TestkitError};
//!
//! let qdrant = match TestQdrant::try_shared() {
//!     Ok(qdrant) => qdrant,
//!     Err(TestkitError::QdrantNotFound { .. }) => {
//!         eprintln!("no Qdrant server binary: server half skipped");
//!         return;
//!     }
//!     Err(e) => panic!("{e}"),
//! };
//! println!("qdrant-client URL: {}", qdrant.grpc_url());
//! ```
//!
//! # Teardown
//!
//! Servers stop when their value is dropped. They also stop when the process
//! ends without dropping them (values in a `static`, such as
//! [`TestPostgres::shared`], or a process killed with `SIGKILL`): each server
//! is the child of a small shell watchdog reading a pipe from this process,
//! and the kernel closes that pipe when the process ends, which makes the
//! watchdog stop the server and delete its temp dir.
//!
//! # Example
//!
//! ```no_run
//! use sqlx::{Connection, PgConnection};
//! use tenant_testkit::{TestPostgres, TestRedis};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // One cluster per test binary; each test gets its own database.
//! let pg = TestPostgres::shared();
//! let db = pg.fresh_database()?;
//!
//! // Migrations run as the owner, the code under test as the app role.
//! let mut owner = PgConnection::connect(db.owner_url()).await?;
//! sqlx::raw_sql("CREATE TABLE notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
//!                GRANT SELECT, INSERT ON notes TO tenant_app")
//!     .execute(&mut owner)
//!     .await?;
//! let mut app = PgConnection::connect(db.app_url()).await?;
//! sqlx::raw_sql("INSERT INTO notes DEFAULT VALUES").execute(&mut app).await?;
//!
//! // A private Redis that can go down and come back.
//! let mut redis = TestRedis::start()?;
//! println!("redis at {}", redis.url());
//! redis.stop()?;
//! redis.restart()?;
//! # Ok(())
//! # }
//! ```
//!
//! The constructors block (for a second or two for PostgreSQL); they can be
//! called from synchronous tests and from inside an async runtime alike.

#![deny(missing_docs)]

pub mod bench_ratio;
pub mod citus;
mod error;
mod http;
pub mod pgbouncer;
pub mod postgres;
mod process;
pub mod qdrant;
pub mod redis;
pub mod redis_cluster;
mod resp;

pub use citus::TestCitus;
pub use error::TestkitError;
pub use pgbouncer::{PgBouncerOptions, PoolMode, TestPgBouncer};
pub use postgres::{
    PostgresBinaries, TestDatabase, TestPostgres, APP_PASSWORD, APP_ROLE, DEFAULT_DATABASE,
    OWNER_PASSWORD, OWNER_ROLE, SUPERUSER,
};
pub use qdrant::{locate_qdrant, QdrantOptions, TestQdrant, TestQdrantCluster};
pub use redis::{locate_redis_server, TestRedis};
pub use redis_cluster::TestRedisCluster;
