//! Shared set-up: real backends (edge shards in temp dirs; Qdrant servers
//! started by the test kit from the shared binary: one node for the
//! collection-per-tenant and shared-collection layouts, a 3-node cluster
//! for the shard-key layout), real contexts, real keys.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, Once};

use tenant_core::{
    AgentId, Capabilities, ContextIssuer, DerivedKeyProvider, IsolationTier, KeyId, MasterKey,
    PrincipalId, StaticTiers, TenantContext, TenantId,
};
use tenant_retrieval::{
    CollectionSpec, Document, EdgeBackend, HashEmbedder, Retrieval, RetrievalClient,
};

/// A second, unrelated issuer: what an attacker (or a misconfigured
/// service) mints contexts with.
pub fn rogue_issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()))
}

pub const DIMS: usize = 32;
pub const DOCS: &str = "docs";
pub const SEALED: &str = "vault";
pub const NOTES: &str = "notes";

/// Which backend a conformance run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Embedded qdrant-edge.
    Edge,
    /// One Qdrant node, a collection per tier.
    Server,
    /// One Qdrant node, one shared collection (a single tier).
    Shared,
    /// A 3-node Qdrant cluster, shard keys.
    Cluster,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Edge => "embedded qdrant-edge",
            Kind::Server => "Qdrant server, collection per tenant",
            Kind::Shared => "Qdrant server, shared collection",
            Kind::Cluster => "3-node Qdrant cluster, shard keys",
        }
    }

    /// Whether the layout has a Silo tier.
    pub fn has_tiers(self) -> bool {
        self != Kind::Shared
    }
}

pub struct World {
    pub issuer: ContextIssuer,
    pub retrieval: Retrieval,
    /// A handle on the edge backend for raw access (`test-support` only).
    pub edge: Option<EdgeBackend>,
    pub dir: Option<tempfile::TempDir>,
    pub embed: HashEmbedder,
    /// The platform's operator tenant (see `World::operator`).
    pub operators: TenantId,
    pub kind: Kind,
}

pub fn specs() -> Vec<CollectionSpec> {
    vec![
        CollectionSpec::new(DOCS, DIMS).unwrap(),
        CollectionSpec::new(SEALED, DIMS)
            .unwrap()
            .sealed(["lang", "year"])
            .unwrap(),
        CollectionSpec::new(NOTES, DIMS).unwrap(),
    ]
}

pub fn data_master() -> MasterKey {
    MasterKey::from_bytes(KeyId::new("data-1").unwrap(), [7u8; 32])
}

/// The backend to build on, and (with the test-only `test-support`
/// feature, which makes `EdgeBackend` clonable) a handle kept for raw
/// access.
pub fn with_raw_handle(edge: EdgeBackend) -> (EdgeBackend, Option<EdgeBackend>) {
    #[cfg(feature = "test-support")]
    {
        let kept = edge.clone();
        (edge, Some(kept))
    }
    #[cfg(not(feature = "test-support"))]
    {
        (edge, None)
    }
}

/// A platform builder with everything but the backend-specific parts.
pub fn platform<B: tenant_retrieval::RetrievalBackend>(
    backend: B,
    issuer: &ContextIssuer,
    tiers: StaticTiers,
    operators: TenantId,
) -> tenant_retrieval::RetrievalBuilder<tenant_core::PlatformAuthority, tenant_retrieval::WithKeys>
{
    let mut b = Retrieval::builder(backend)
        .authority(issuer.authority())
        .keys(DerivedKeyProvider::new(data_master()))
        .tiers(tiers)
        .operator_tenant(operators);
    for s in specs() {
        b = b.collection(s);
    }
    b
}

/// `None` for a server kind when there is no Qdrant binary (prints that
/// the server half was skipped).
pub async fn world(kind: Kind, tiers: StaticTiers) -> Option<World> {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let operators = TenantId::random();
    match kind {
        Kind::Edge => {
            let dir = tempfile::tempdir().unwrap();
            let (edge, kept) = with_raw_handle(EdgeBackend::open(dir.path()).unwrap());
            let retrieval = platform(edge, &issuer, tiers, operators)
                .build()
                .await
                .unwrap();
            Some(World {
                issuer,
                retrieval,
                edge: kept,
                dir: Some(dir),
                embed: HashEmbedder::new(DIMS),
                operators,
                kind,
            })
        }
        server => server_world(server, issuer, tiers, operators).await,
    }
}

/// The gRPC URL of the test kit's server for `kind`, or `None` (and a
/// line saying the server half is skipped) when there is no Qdrant binary.
#[cfg(feature = "server")]
pub fn server_url(kind: Kind) -> Option<String> {
    use tenant_testkit::{TestQdrant, TestQdrantCluster, TestkitError};
    let started = || match kind {
        Kind::Cluster => TestQdrantCluster::try_shared().map(|c| c.grpc_url(0)),
        _ => TestQdrant::try_shared().map(|q| q.grpc_url()),
    };
    let url = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(started),
        _ => started(),
    };
    match url {
        Ok(url) => Some(url),
        Err(TestkitError::QdrantNotFound { .. }) => {
            report_skipped(kind);
            None
        }
        Err(e) => panic!("starting Qdrant for {}: {e}", kind.describe()),
    }
}

#[cfg(not(feature = "server"))]
pub fn server_url(kind: Kind) -> Option<String> {
    report_skipped(kind);
    None
}

/// A backend for `kind` on the test kit's server, with its own routes
/// collection under `prefix`.
#[cfg(feature = "server")]
pub fn server_backend(kind: Kind, prefix: &str) -> Option<tenant_retrieval::QdrantBackend> {
    use tenant_retrieval::{QdrantBackend, QdrantLayout};
    let url = server_url(kind)?;
    let layout = match kind {
        Kind::Shared => QdrantLayout::SharedCollection,
        Kind::Cluster => QdrantLayout::ShardKeys,
        _ => QdrantLayout::CollectionPerTenant,
    };
    Some(
        QdrantBackend::builder(url)
            .routes_collection(format!("{prefix}__routes"))
            .layout(layout)
            .build()
            .unwrap(),
    )
}

/// A fresh naming prefix, so worlds on one server never meet.
pub fn fresh_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[cfg(feature = "server")]
async fn server_world(
    kind: Kind,
    issuer: ContextIssuer,
    tiers: StaticTiers,
    operators: TenantId,
) -> Option<World> {
    let prefix = fresh_prefix();
    let backend = server_backend(kind, &prefix)?;
    let retrieval = platform(backend, &issuer, tiers, operators)
        .naming(tenant_retrieval::Naming::with_prefix(&prefix).unwrap())
        .build()
        .await
        .unwrap();
    Some(World::on_server(issuer, retrieval, operators, kind))
}

#[cfg(not(feature = "server"))]
async fn server_world(kind: Kind, _: ContextIssuer, _: StaticTiers, _: TenantId) -> Option<World> {
    report_skipped(kind);
    None
}

/// The CI log's name for the server half `kind` belongs to.
fn half(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "qdrant cluster",
        _ => "qdrant server half",
    }
}

/// Writes `<half>: SKIPPED (...)` once per process and half, to the real
/// stderr (not the captured test output) so it shows up in every run.
pub fn report_skipped(kind: Kind) {
    use std::io::Write;
    static SERVER: Once = Once::new();
    static CLUSTER: Once = Once::new();
    let once = if kind == Kind::Cluster {
        &CLUSTER
    } else {
        &SERVER
    };
    once.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n{}: SKIPPED (no ../shared/bin/qdrant binary; see tenant-testkit)",
            half(kind)
        );
    });
}

/// Writes `<half>: N cases passed (<suite>, <layout>, <detail>)` to the real
/// stderr, so the CI log proves the server half ran.
pub fn report_passed(kind: Kind, suite: &str, cases: usize, detail: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{}: {cases} cases passed ({suite}, {}, {detail})",
        half(kind),
        kind.describe(),
    );
}

/// One case of a suite that runs against several backends.
pub type Case = (
    &'static str,
    fn(Kind) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

/// Runs every case against `kind` in sequence and reports how many passed
/// (or that the server half was skipped), so the CI log shows what ran.
pub async fn server_half(suite: &str, kind: Kind, cases: &[Case]) {
    use std::io::Write;
    if server_url(kind).is_none() {
        return;
    }
    let started = std::time::Instant::now();
    for (i, (name, case)) in cases.iter().enumerate() {
        let _ = writeln!(
            std::io::stderr(),
            "tenant-retrieval {suite} [{}] case {}/{}: {name}",
            kind.describe(),
            i + 1,
            cases.len()
        );
        case(kind).await;
    }
    report_passed(
        kind,
        suite,
        cases.len(),
        &format!("{:.1?}", started.elapsed()),
    );
}

impl World {
    /// A world on a Qdrant server (no raw edge handle).
    pub fn on_server(
        issuer: ContextIssuer,
        retrieval: Retrieval,
        operators: TenantId,
        kind: Kind,
    ) -> World {
        World {
            issuer,
            retrieval,
            edge: None,
            dir: None,
            embed: HashEmbedder::new(DIMS),
            operators,
            kind,
        }
    }

    pub fn ctx(&self, tenant: TenantId) -> TenantContext {
        self.ctx_with(tenant, Capabilities::unrestricted())
    }

    pub fn ctx_with(&self, tenant: TenantId, caps: Capabilities) -> TenantContext {
        self.issuer
            .context()
            .tenant(tenant)
            .principal(PrincipalId::new("user@example.com").unwrap())
            .agent(AgentId::new("orchestrator").unwrap())
            .capabilities(caps)
            .issue()
            .unwrap()
    }

    pub fn client(&self, ctx: &TenantContext, collection: &str) -> RetrievalClient {
        RetrievalClient::builder()
            .backend(&self.retrieval)
            .collection(collection)
            .tenant(ctx)
            .build()
            .unwrap()
    }

    pub fn doc(&self, id: &str, text: &str) -> Document {
        Document::new(id, self.embed.embed_one(text), text)
    }

    /// An operator context (the platform's operator tenant, every
    /// collection).
    pub fn operator_ctx(&self) -> TenantContext {
        self.issuer
            .context()
            .tenant(self.operators)
            .principal(PrincipalId::new("oncall@platform.example").unwrap())
            .capabilities(Capabilities::unrestricted())
            .issue()
            .unwrap()
    }

    pub fn operator(&self) -> tenant_retrieval::RetrievalOperator {
        self.retrieval.operator(&self.operator_ctx()).unwrap()
    }

    /// Whether `tenant` has its own Silo storage for `collection`: a
    /// collection, or in the shard-key layout a shard key.
    pub async fn silo_exists(&self, collection: &str, tenant: TenantId) -> bool {
        let naming = self.retrieval.naming();
        if self.kind != Kind::Cluster {
            return self
                .physical_names()
                .await
                .contains(&naming.silo(collection, tenant));
        }
        shard_keys(&naming.sharded(collection))
            .await
            .contains(&naming.tenant_key(tenant))
    }

    /// Names of the platform's physical collections (through the operator
    /// handle).
    pub async fn physical_names(&self) -> Vec<String> {
        self.operator()
            .health()
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.physical_name)
            .collect()
    }
}

/// Captures `tenant_audit` events written while `f` runs on this thread.
#[derive(Clone, Default)]
pub struct AuditLog(Arc<Mutex<Vec<u8>>>);

impl AuditLog {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for AuditLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `fut` on a current-thread runtime with audit events captured.
pub fn with_audit<T>(fut: impl std::future::Future<Output = T>) -> (T, String) {
    let log = AuditLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("tenant_audit=info")
        .finish();
    let out = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    });
    (out, log.text())
}

pub fn pool() -> StaticTiers {
    StaticTiers::new(IsolationTier::Pool)
}

/// The shard keys of `collection` on the test kit's cluster.
#[cfg(feature = "server")]
pub async fn shard_keys(collection: &str) -> Vec<String> {
    use qdrant_client::qdrant::{shard_key::Key, ListShardKeysRequest};
    let Some(url) = server_url(Kind::Cluster) else {
        return Vec::new();
    };
    let raw = qdrant_client::Qdrant::from_url(&url)
        .skip_compatibility_check()
        .build()
        .unwrap();
    raw.list_shard_keys(ListShardKeysRequest {
        collection_name: collection.to_owned(),
    })
    .await
    .map(|r| {
        r.shard_keys
            .into_iter()
            .filter_map(|d| match d.key.and_then(|k| k.key) {
                Some(Key::Keyword(s)) => Some(s),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(not(feature = "server"))]
pub async fn shard_keys(_: &str) -> Vec<String> {
    Vec::new()
}
