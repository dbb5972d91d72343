//! The platform every test runs on: a real qdrant-edge shard in a temp
//! dir, a real tool registry and executor, two tenants with seeded data.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use tenant_core::*;
use tenant_retrieval::*;
use tenant_rig::{TenantIndex, TenantTools};
use tenant_tools::{FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry};

pub const DIMS: usize = 64;
/// Text only tenant B's documents contain; it must never reach tenant A.
pub const B_SECRET: &str = "zebra-merger-plan";
pub const A_SECRET: &str = "aardvark-payroll";

pub struct Platform {
    pub issuer: ContextIssuer,
    pub retrieval: Retrieval,
    pub registry: ToolRegistry,
    pub policies: ToolPolicies,
    pub vault: Arc<MemoryVault>,
    /// How many times the `shell` tool ran (it must stay 0 for tenant A).
    pub shell_runs: Arc<AtomicUsize>,
    pub a: TenantId,
    pub b: TenantId,
    _dir: tempfile::TempDir,
}

impl Platform {
    /// Two tenants, each with three documents in `docs` that share
    /// vocabulary (so similarity alone would mix them) and `lang = en`.
    pub async fn start() -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
        let retrieval = Retrieval::builder(EdgeBackend::open(dir.path()).unwrap())
            .authority(issuer.authority())
            .keys(DerivedKeyProvider::new(MasterKey::generate(
                KeyId::new("data-1").unwrap(),
            )))
            .collection(CollectionSpec::new("docs", DIMS).unwrap())
            .tiers(StaticTiers::new(IsolationTier::Pool))
            .build()
            .await
            .unwrap();
        let registry = ToolRegistry::new(&issuer.authority());
        registry
            .register(FnTool::new(
                "add",
                "Adds two integers",
                json!({"type": "object",
                       "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"], "additionalProperties": false}),
                |_call, input| async move {
                    Ok(json!(
                        input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0)
                    ))
                },
            ))
            .unwrap();
        let shell_runs = Arc::new(AtomicUsize::new(0));
        let runs = shell_runs.clone();
        registry
            .register(FnTool::new(
                "shell",
                "Runs a shell command",
                json!({"type": "object", "properties": {"cmd": {"type": "string"}}}),
                move |_call, _input| {
                    let runs = runs.clone();
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(json!("ran"))
                    }
                },
            ))
            .unwrap();
        let policies = ToolPolicies::new();
        let a = TenantId::random();
        let b = TenantId::random();
        policies.set(a, ToolPolicy::deny_all().allow_tools(["add"]));
        policies.set(b, ToolPolicy::deny_all().allow_tools(["add", "shell"]));
        let platform = Platform {
            issuer,
            retrieval,
            registry,
            policies,
            vault: Arc::new(MemoryVault::new()),
            shell_runs,
            a,
            b,
            _dir: dir,
        };
        platform.seed(a, "a", A_SECRET).await;
        platform.seed(b, "b", B_SECRET).await;
        platform
    }

    async fn seed(&self, tenant: TenantId, prefix: &str, secret: &str) {
        let client = self.client(&self.ctx(tenant));
        let embed = HashEmbedder::new(DIMS);
        let docs = [
            format!("quarterly report on rust agents {secret}"),
            format!("rust agents retrieval guide {secret}"),
            format!("notes about vector search for agents {secret}"),
        ];
        client
            .upsert(docs.iter().enumerate().map(|(i, text)| {
                Document::new(format!("{prefix}-{i}"), embed.embed_one(text), text.clone())
                    .with_metadata("lang", "en")
                    .with_metadata("year", 2020 + i as i64)
            }))
            .await
            .unwrap();
    }

    pub fn ctx(&self, tenant: TenantId) -> TenantContext {
        self.issuer
            .context()
            .tenant(tenant)
            .principal(PrincipalId::new("agent-owner").unwrap())
            .capabilities(
                Capabilities::none()
                    .with_collections(["docs"])
                    .unwrap()
                    .with_tools(["add", "shell"])
                    .unwrap()
                    .with_max_delegation_depth(2),
            )
            .issue()
            .unwrap()
    }

    pub fn client(&self, ctx: &TenantContext) -> RetrievalClient {
        RetrievalClient::builder()
            .backend(&self.retrieval)
            .collection("docs")
            .tenant(ctx)
            .build()
            .unwrap()
    }

    pub fn index(&self, tenant: TenantId) -> TenantIndex {
        TenantIndex::new(self.client(&self.ctx(tenant)), HashEmbedder::new(DIMS))
    }

    pub fn tools(&self, tenant: TenantId) -> TenantTools {
        TenantTools::new(
            ToolExecutor::builder()
                .registry(&self.registry)
                .vault(&self.vault)
                .policies(&self.policies)
                .tenant(&self.ctx(tenant))
                .build()
                .unwrap(),
        )
    }

    /// How many documents `tenant` has (to show an attack changed nothing).
    pub async fn count(&self, tenant: TenantId) -> u64 {
        self.client(&self.ctx(tenant)).count(None).await.unwrap()
    }

    pub fn shell_runs(&self) -> usize {
        self.shell_runs.load(Ordering::SeqCst)
    }
}
