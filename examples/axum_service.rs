//! An HTTP service whose every handler runs for the tenant named by a
//! verified bearer JWT: ingest documents, ask (retrieval + memory), call a
//! tool. `TenantAuthLayer` verifies every request's token (401 with
//! `WWW-Authenticate` otherwise), a `Platform` builds each request's
//! handles, and SDK errors are responses (403 for what the tenant may not
//! do, ...).
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

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tenant_sdk::axum_extract::{TenantAuth, TenantAuthLayer};
use tenant_sdk::prelude::*;

const IDP_SECRET: &[u8] = b"demo HS256 secret - use your IdP's key in production";
const DIMS: usize = 64;

/// What handlers share: the platform (every store's resources) and the
/// embedder. The layer has already verified the token into the request's
/// `TenantContext`; `platform.handles(&ctx)` turns it into handles.
#[derive(Clone)]
struct App {
    platform: Platform,
    embed: HashEmbedder,
}

#[derive(Deserialize)]
struct Ingest {
    id: String,
    text: String,
}

async fn ingest(
    State(app): State<App>,
    Extension(ctx): Extension<TenantContext>,
    Json(body): Json<Ingest>,
) -> Result<Json<Value>, SdkError> {
    let handles = app.platform.handles(&ctx)?;
    let vector = app.embed.embed_one(&body.text);
    handles
        .retrieval()?
        .upsert([Document::new(body.id.clone(), vector, body.text)])
        .await?;
    Ok(Json(json!({ "ingested": body.id })))
}

#[derive(Deserialize)]
struct Ask {
    question: String,
    thread: Option<ThreadId>,
}

async fn ask(
    State(app): State<App>,
    Extension(ctx): Extension<TenantContext>,
    Json(body): Json<Ask>,
) -> Result<Json<Value>, SdkError> {
    let handles = app.platform.handles(&ctx)?;
    let memory = handles.memory()?;
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
    let hits = handles
        .retrieval()?
        .search(SearchQuery::new(app.embed.embed_one(&body.question)).top_k(3))
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
    State(app): State<App>,
    Extension(ctx): Extension<TenantContext>,
    Path(id): Path<String>,
) -> Result<Response, SdkError> {
    let handles = app.platform.handles(&ctx)?;
    Ok(match handles.retrieval()?.get(&id).await? {
        Some(doc) => Json(json!({ "id": doc.id, "text": doc.text })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not_found", "message": format!("no document `{id}`") })),
        )
            .into_response(),
    })
}

async fn call_tool(
    State(app): State<App>,
    Extension(ctx): Extension<TenantContext>,
    Path(name): Path<String>,
    Json(input): Json<Value>,
) -> Result<Json<Value>, SdkError> {
    let output = app
        .platform
        .handles(&ctx)?
        .tools()?
        .call(&name, input)
        .await?;
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

    let platform = Platform::builder(&issuer.authority())
        .memory(&memory)
        .retrieval(&retrieval, "docs")
        .tools(&registry, &policies)
        .vault(&Arc::new(MemoryVault::new()))
        .build()?;
    let auth = Arc::new(TenantAuth::new(verifier, issuer));
    let app = Router::new()
        .route("/ingest", post(ingest))
        .route("/ask", post(ask))
        .route("/docs/{id}", get(get_doc))
        .route("/tools/{name}", post(call_tool))
        .layer(TenantAuthLayer::new(auth))
        .with_state(App {
            platform,
            embed: HashEmbedder::new(DIMS),
        });

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("token acme {}", demo_token(acme, "alice@acme.example")?);
    println!("token globex {}", demo_token(globex, "bob@globex.example")?);
    axum::serve(listener, app).await?;
    Ok(())
}
