//! Quickstart: two tenants on the embedded defaults — qdrant-edge in a temp
//! dir and PostgreSQL (an ephemeral local cluster from `tenant-testkit`
//! unless `DATABASE_URL` and `APP_DATABASE_URL` are set) — each ingests
//! documents, chats with memory and runs a tool; a sub-agent gets narrowed
//! handles; then the classic leaks are attempted and each fails closed.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tenant_sdk::memory::{MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewMessage};
use tenant_sdk::retrieval::{
    CollectionSpec, Document, EdgeBackend, HashEmbedder, Retrieval, RetrievalClient, SearchQuery,
};
use tenant_sdk::tools::{
    FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry, WorkspaceRoot,
};
use tenant_sdk::*;

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const IDP_SECRET: &[u8] = b"demo HS256 secret - use your IdP's key in production";
const DIMS: usize = 64;

/// Everything a tenant's request touches, built from one context.
struct Handles {
    docs: RetrievalClient,
    memory: MemoryStore,
    tools: ToolExecutor,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> AnyResult<()> {
    // ---- platform set-up, once per process ----------------------------------
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
    let verifier = ClaimVerifier::builder()
        .hs256(IDP_SECRET)
        .issuer("https://idp.example.com")
        .audience("agent-platform")
        .capabilities(
            Capabilities::none()
                .with_tools(["calculator", "send_email"])?
                .with_collections(["docs"])?
                .with_memory_namespaces(["chat", "scratch"])?
                .with_token_budget(200_000)
                .with_max_delegation_depth(2),
        )
        .build()?;

    // PostgreSQL: the owner runs migrations, the app role runs the agents.
    let _local_pg; // keeps an ephemeral cluster alive for the whole run
    let (owner_url, app_url) = match (
        std::env::var("DATABASE_URL"),
        std::env::var("APP_DATABASE_URL"),
    ) {
        (Ok(owner), Ok(app)) => (owner, app),
        _ => {
            println!("(no DATABASE_URL/APP_DATABASE_URL: starting an ephemeral local PostgreSQL)");
            let pg = tenant_testkit::TestPostgres::start()?;
            let urls = (pg.owner_url().to_string(), pg.app_url().to_string());
            _local_pg = pg;
            urls
        }
    };
    let owner_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&owner_url)
        .await?;
    let app_pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&app_url)
        .await?;
    let pg_key = issuer.subkey(Purpose::Postgres);
    let admin = MemoryAdmin::new(&owner_pool, &pg_key, &issuer.authority())?;
    admin.migrate(tenant_testkit::APP_ROLE).await?;
    admin.install_key().await?;
    let memory_platform = MemoryPlatform::new(&app_pool, &pg_key, &issuer.authority())?;
    memory_platform.verify().await?;

    // Retrieval: an embedded qdrant-edge shard on local disk, one shared
    // (Pool) collection with sealed text.
    let shard_dir = tempfile::tempdir()?;
    let retrieval = Retrieval::builder(EdgeBackend::open(shard_dir.path())?)
        .authority(issuer.authority())
        .collection(CollectionSpec::new("docs", DIMS)?.sealed(Vec::<String>::new())?)
        .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new(
            "data-1",
        )?)))
        .build()
        .await?;
    let embed = HashEmbedder::new(DIMS);

    // Tools: a registry for the platform, an allowlist per tenant.
    let registry = ToolRegistry::new(&issuer.authority());
    let args = json!({"type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"], "additionalProperties": false});
    registry.register(FnTool::new(
        "calculator",
        "Adds two integers",
        args.clone(),
        |_c, i| async move {
            Ok(json!(
                i["a"].as_i64().unwrap_or(0) + i["b"].as_i64().unwrap_or(0)
            ))
        },
    ))?;
    registry.register(FnTool::new(
        "send_email",
        "Sends an email",
        args,
        |_c, _i| async move { Ok(json!("sent")) },
    ))?;
    let vault = Arc::new(MemoryVault::new());
    let policies = ToolPolicies::new();
    let workspace_dir = tempfile::tempdir()?;
    let workspaces = WorkspaceRoot::new(workspace_dir.path().join("runs"), &issuer.authority())?;

    // ---- two tenants, each from its own signed JWT --------------------------
    let acme: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse()?;
    let globex: TenantId = "0b7e3a2f-5c11-4c3e-9d6a-6f1c1f4e8a4b".parse()?;
    for t in [acme, globex] {
        policies.set(
            t,
            ToolPolicy::deny_all().allow_tools(["calculator", "send_email"]),
        );
    }
    let alice = verifier.verify(&jwt_for(acme, "alice@acme.example")?, &issuer)?;
    let bob = verifier.verify(&jwt_for(globex, "bob@globex.example")?, &issuer)?;

    let handles = |ctx: &TenantContext| -> AnyResult<Handles> {
        Ok(Handles {
            docs: RetrievalClient::builder()
                .backend(&retrieval)
                .collection("docs")
                .tenant(ctx)
                .build()?,
            memory: MemoryStore::builder()
                .platform(&memory_platform)
                .tenant(ctx)
                .build()?,
            tools: ToolExecutor::builder()
                .registry(&registry)
                .vault(&vault)
                .policies(&policies)
                .tenant(ctx)
                .build()?,
        })
    };
    let acme_h = handles(&alice)?;
    let globex_h = handles(&bob)?;

    println!("== each tenant ingests, chats and runs a tool");
    for (name, h, texts) in [
        (
            "acme",
            &acme_h,
            ["acme Q3 revenue was 12M", "acme launches rocket skates"],
        ),
        (
            "globex",
            &globex_h,
            ["globex merger plans are secret", "globex hires a new CEO"],
        ),
    ] {
        let docs = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Document::new(format!("doc-{i}"), embed.embed_one(t), *t));
        h.docs.upsert(docs).await?;
        let thread = h
            .memory
            .create_thread("chat", json!({"title": "briefing"}))
            .await?;
        h.memory
            .append_message(
                thread.id,
                NewMessage::new(MessageRole::User, json!("what's new?")),
            )
            .await?;
        let hits = h
            .docs
            .search(SearchQuery::new(embed.embed_one("news and plans")).top_k(5))
            .await?;
        let answer = hits
            .iter()
            .map(|r| r.text.clone())
            .collect::<Vec<_>>()
            .join(" | ");
        h.memory
            .append_message(
                thread.id,
                NewMessage::new(MessageRole::Assistant, json!(answer)),
            )
            .await?;
        let sum = h.tools.call("calculator", json!({"a": 40, "b": 2})).await?;
        println!("{name:<7} search -> [{answer}]; calculator -> {sum}");
    }

    println!("\n== a sub-agent gets narrowed handles");
    let researcher = alice
        .delegate(AgentId::new("researcher")?)
        .tools(["calculator"])
        .memory_namespaces(["scratch"])
        .token_budget(10_000)
        .ttl(Duration::from_secs(120))
        .issue()?;
    let r_docs = acme_h.docs.delegate(&researcher)?;
    let r_memory = acme_h.memory.delegate(&researcher)?;
    let r_tools = acme_h.tools.delegate(&researcher)?;
    let names: Vec<String> = r_tools.list()?.into_iter().map(|t| t.name).collect();
    println!(
        "researcher lineage {:?}, tools {names:?}",
        researcher.lineage()
    );
    println!(
        "researcher sees {} acme document(s)",
        r_docs.count(None).await?
    );
    r_memory
        .kv_put(
            "scratch",
            "note",
            json!("checked Q3"),
            tenant_sdk::memory::Expected::Absent,
        )
        .await?;

    println!("\n== the classic leaks, each failing closed");
    // 1. An unscoped search is not expressible: this does not compile,
    //    because `build()` exists only after `.tenant(&ctx)`:
    //        RetrievalClient::builder().backend(&retrieval).collection("docs").build()
    // 2. By-id read of the other tenant's document: ids are tenant-scoped.
    match acme_h.docs.get("doc-0").await? {
        Some(r) if r.text.contains("globex") => {
            panic!("LEAK: acme read globex's document")
        }
        Some(r) => println!(
            "blocked  acme get(\"doc-0\") returns only acme's own doc-0: {:?}",
            r.text
        ),
        None => println!("blocked  acme get(\"doc-0\") -> nothing"),
    }
    // 3. SQL that switches the bound tenant with set_config.
    let forged = format!("v1:2026-11:{globex}:99999999999999:{}", "0".repeat(64));
    let sql = format!(
        "SELECT set_config('tenant_sdk.ctx', '{forged}', true) AS s, \
                (SELECT count(*) FROM tenant_memory.messages) AS n"
    );
    match acme_h.memory.read_only_sql(&sql).await {
        Err(e) => println!("blocked  set_config to globex inside agent SQL -> {e}"),
        Ok(rows) => println!(
            "blocked  set_config to globex inside agent SQL -> saw {rows:?} (acme's rows only)"
        ),
    }
    // 4. A tool outside the sub-agent's allowlist.
    match r_tools.call("send_email", json!({"a": 1, "b": 2})).await {
        Err(e) => println!("blocked  researcher send_email -> {e}"),
        Ok(v) => panic!("LEAK: tool ran: {v}"),
    }
    // 5. A path escape from the tool workspace.
    let ws = workspaces.create(&researcher)?;
    for path in ["../../../etc/shadow", "/etc/passwd"] {
        match ws.read(path) {
            Err(e) => println!("blocked  workspace read {path:?} -> {e}"),
            Ok(_) => panic!("LEAK: read {path}"),
        }
    }
    // 6. A sub-agent asking for a collection or namespace it was not given.
    match r_memory.kv_get("chat", "history").await {
        Err(e) => println!("blocked  researcher reads namespace \"chat\" -> {e}"),
        Ok(_) => panic!("LEAK: namespace"),
    }
    // 7. Revoking the session stops the sub-agent everywhere.
    issuer.revocations().revoke(&alice);
    match r_docs
        .search(SearchQuery::new(embed.embed_one("revenue")).top_k(1))
        .await
    {
        Err(e) => println!("blocked  researcher search after revocation -> {e}"),
        Ok(_) => panic!("LEAK: revoked context still searches"),
    }
    println!(
        "\nglobex is unaffected: {} doc(s) visible to bob",
        globex_h.docs.count(None).await?
    );
    Ok(())
}

fn jwt_for(
    tenant: TenantId,
    user: &str,
) -> std::result::Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::default(),
        &json!({
            "sub": user, "tenant_id": tenant.to_string(),
            "iss": "https://idp.example.com", "aud": "agent-platform",
            "exp": get_current_timestamp() + 600,
        }),
        &EncodingKey::from_secret(IDP_SECRET),
    )
}
