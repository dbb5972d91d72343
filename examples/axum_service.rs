//! An HTTP service whose every handler runs for the tenant named by a
//! verified bearer JWT: ingest documents, ask (retrieval + memory), call a
//! tool.
//!
//! Run with `cargo run --features axum --example axum_service`. It listens
//! on `$BIND` (default `127.0.0.1:3000`) and prints demo tokens for two
//! tenants, then e.g.:
//!
//! ```text
//! curl -H "Authorization: Bearer $ACME" -d '{"id":"plan","text":"acme plan"}' \
//!      -H 'content-type: application/json' localhost:3000/ingest
//! curl -H "Authorization: Bearer $ACME" -d '{"question":"plan?"}' \
//!      -H 'content-type: application/json' localhost:3000/ask
//! ```

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tenant_sdk::axum_extract::{Tenant, TenantAuth};
use tenant_sdk::memory::{
    MemoryAdmin, MemoryPlatform, MemoryStore, MessageRole, NewMessage, ThreadId,
};
use tenant_sdk::retrieval::{
    CollectionSpec, Document, EdgeBackend, HashEmbedder, Retrieval, RetrievalClient, SearchQuery,
};
use tenant_sdk::tools::{
    FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry,
};
use tenant_sdk::*;

const IDP_SECRET: &[u8] = b"demo HS256 secret - use your IdP's key in production";
const DIMS: usize = 64;

/// Platform-wide resources; handlers turn them into tenant handles.
struct Platform {
    auth: Arc<TenantAuth>,
    retrieval: Retrieval,
    memory: MemoryPlatform,
    registry: ToolRegistry,
    vault: Arc<MemoryVault>,
    policies: ToolPolicies,
    embed: HashEmbedder,
}

#[derive(Clone)]
struct AppState(Arc<Platform>);

impl FromRef<AppState> for Arc<TenantAuth> {
    fn from_ref(state: &AppState) -> Self {
        state.0.auth.clone()
    }
}

/// Any SDK error as a JSON response; never another tenant's data.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<tenant_sdk::retrieval::Error> for ApiError {
    fn from(e: tenant_sdk::retrieval::Error) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<tenant_sdk::memory::Error> for ApiError {
    fn from(e: tenant_sdk::memory::Error) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<tenant_sdk::tools::Error> for ApiError {
    fn from(e: tenant_sdk::tools::Error) -> Self {
        let status = match e {
            tenant_sdk::tools::Error::ToolNotAllowed { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

impl Platform {
    fn docs(&self, ctx: &TenantContext) -> Result<RetrievalClient, ApiError> {
        Ok(RetrievalClient::builder()
            .backend(&self.retrieval)
            .collection("docs")
            .tenant(ctx)
            .build()?)
    }

    fn memory(&self, ctx: &TenantContext) -> Result<MemoryStore, ApiError> {
        Ok(MemoryStore::builder()
            .platform(&self.memory)
            .tenant(ctx)
            .build()?)
    }

    fn tools(&self, ctx: &TenantContext) -> Result<ToolExecutor, ApiError> {
        Ok(ToolExecutor::builder()
            .registry(&self.registry)
            .vault(&self.vault)
            .policies(&self.policies)
            .tenant(ctx)
            .build()?)
    }
}

#[derive(Deserialize)]
struct Ingest {
    id: String,
    text: String,
}

async fn ingest(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Json(body): Json<Ingest>,
) -> Result<Json<Value>, ApiError> {
    let docs = app.0.docs(&ctx)?;
    let vector = app.0.embed.embed_one(&body.text);
    docs.upsert([Document::new(body.id.clone(), vector, body.text)])
        .await?;
    Ok(Json(json!({ "ingested": body.id })))
}

#[derive(Deserialize)]
struct Ask {
    question: String,
    thread: Option<ThreadId>,
}

async fn ask(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Json(body): Json<Ask>,
) -> Result<Json<Value>, ApiError> {
    let docs = app.0.docs(&ctx)?;
    let memory = app.0.memory(&ctx)?;
    let thread = match body.thread {
        Some(id) => id,
        None => memory.create_thread("chat", json!({})).await?.id,
    };
    memory
        .append_message(
            thread,
            NewMessage::new(MessageRole::User, json!(body.question)),
        )
        .await?;
    let hits = docs
        .search(SearchQuery::new(app.0.embed.embed_one(&body.question)).top_k(3))
        .await?;
    let answer = hits
        .iter()
        .map(|h| h.text.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    memory
        .append_message(
            thread,
            NewMessage::new(MessageRole::Assistant, json!(answer)),
        )
        .await?;
    let history = memory.last_messages(thread, 20).await?.len();
    let sources: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    Ok(Json(json!({
        "thread": thread, "answer": answer, "sources": sources, "history": history
    })))
}

async fn get_doc(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match app.0.docs(&ctx)?.get(&id).await? {
        Some(doc) => Ok(Json(json!({ "id": doc.id, "text": doc.text }))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no document `{id}`"),
        )),
    }
}

async fn call_tool(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(name): Path<String>,
    Json(input): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let output = app.0.tools(&ctx)?.call(&name, input).await?;
    Ok(Json(json!({ "output": output })))
}

fn demo_token(tenant: TenantId, user: &str) -> Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::default(),
        &json!({"sub": user, "tenant_id": tenant.to_string(),
                "iss": "https://idp.example.com", "aud": "agent-platform",
                "exp": get_current_timestamp() + 3600}),
        &EncodingKey::from_secret(IDP_SECRET),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("2026-11")?));
    let verifier = ClaimVerifier::builder()
        .hs256(IDP_SECRET)
        .issuer("https://idp.example.com")
        .audience("agent-platform")
        .capabilities(
            Capabilities::none()
                .with_tools(["calculator"])?
                .with_collections(["docs"])?
                .with_memory_namespaces(["chat"])?,
        )
        .build()?;

    let _local_pg;
    let (owner_url, app_url) = match (
        std::env::var("DATABASE_URL"),
        std::env::var("APP_DATABASE_URL"),
    ) {
        (Ok(owner), Ok(app)) => (owner, app),
        _ => {
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
    let memory = MemoryPlatform::new(&app_pool, &pg_key, &issuer.authority())?;
    admin.migrate(tenant_testkit::APP_ROLE).await?;
    admin.install_key().await?;
    memory.verify().await?;

    let shard_dir = tempfile::tempdir()?;
    let retrieval = Retrieval::builder(EdgeBackend::open(shard_dir.path())?)
        .authority(issuer.authority())
        .collection(CollectionSpec::new("docs", DIMS)?)
        .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new(
            "data-1",
        )?)))
        .build()
        .await?;

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
    let policies = ToolPolicies::new();
    let acme = TenantId::random();
    let globex = TenantId::random();
    for t in [acme, globex] {
        policies.set(t, ToolPolicy::deny_all().allow_tools(["calculator"]));
    }

    let state = AppState(Arc::new(Platform {
        auth: Arc::new(TenantAuth::new(verifier, issuer)),
        retrieval,
        memory,
        registry,
        vault: Arc::new(MemoryVault::new()),
        policies,
        embed: HashEmbedder::new(DIMS),
    }));
    let app = Router::new()
        .route("/ingest", post(ingest))
        .route("/ask", post(ask))
        .route("/docs/{id}", get(get_doc))
        .route("/tools/{name}", post(call_tool))
        .with_state(state);

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("token acme {}", demo_token(acme, "alice@acme.example")?);
    println!("token globex {}", demo_token(globex, "bob@globex.example")?);
    axum::serve(listener, app).await?;
    Ok(())
}
