//! The axum layer, the extractor and SDK errors as HTTP responses, driven
//! through the router with `tower::ServiceExt::oneshot`: two tenants'
//! tokens, forged, expired, revoked and missing tokens, any case of the
//! scheme, and 401/403/429/503 with their headers.
#![cfg(all(feature = "axum", feature = "tools", feature = "governance"))]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use jsonwebtoken::get_current_timestamp;
use serde_json::{json, Value};
use support::{sign, tools_and_quota, verifier, SECRET};
use tenant_sdk::axum_extract::{Tenant, TenantAuth, TenantAuthLayer};
use tenant_sdk::prelude::*;
use tenant_sdk::Revocation;
use tower::ServiceExt;

fn jwt(tenant: TenantId, key: &[u8], exp: u64) -> String {
    sign(
        json!({"sub": "user@example.com", "tenant_id": tenant.to_string(),
               "exp": exp, "jti": uuid_like(tenant)}),
        key,
    )
}

fn uuid_like(tenant: TenantId) -> String {
    format!("jti-{tenant}")
}

fn token(tenant: TenantId) -> String {
    jwt(tenant, SECRET, get_current_timestamp() + 600)
}

struct App {
    router: Router,
    policies: ToolPolicies,
}

async fn whoami(Extension(ctx): Extension<TenantContext>) -> String {
    ctx.tenant().to_string()
}

async fn call(
    State(platform): State<Platform>,
    Extension(ctx): Extension<TenantContext>,
    Json(input): Json<Value>,
) -> Result<Json<Value>, SdkError> {
    let handles = platform.handles(&ctx)?;
    let name = input["tool"].as_str().unwrap_or_default().to_owned();
    let tokens = input["tokens"].as_u64().unwrap_or(1);
    let reservation = handles
        .quota()?
        .reserve(&Estimate::new("small", tokens, 0))
        .await?;
    let output = handles.tools()?.call(&name, json!({})).await;
    // A refused call used nothing; a call that ran is charged in full.
    match output {
        Ok(output) => {
            reservation.settle(Usage::new(tokens, 0)).await?;
            Ok(Json(output))
        }
        Err(e) => {
            reservation.release().await?;
            Err(e.into())
        }
    }
}

fn app(revocations: Revocations) -> App {
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .revocations(revocations)
        .build()
        .unwrap();
    let (platform, policies) = tools_and_quota(&issuer, &["echo", "shell"], 1_000);
    let auth = Arc::new(TenantAuth::new(verifier(), issuer));
    let router = Router::new()
        .route("/whoami", get(whoami))
        .route("/call", post(call))
        .layer(TenantAuthLayer::new(auth))
        .with_state(platform);
    App { router, policies }
}

struct Reply {
    status: StatusCode,
    www_authenticate: Option<String>,
    retry_after: Option<u64>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(router: &Router, method: &str, path: &str, auth: Option<&str>, body: Value) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        request = request.header(header::AUTHORIZATION, a);
    }
    let request = request.body(Body::from(body.to_string())).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let www_authenticate = header_text(header::WWW_AUTHENTICATE);
    let retry_after = header_text(header::RETRY_AFTER).map(|v| v.parse().unwrap());
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        www_authenticate,
        retry_after,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn call_tool(app: &App, auth: &str, body: Value) -> Reply {
    send(&app.router, "POST", "/call", Some(auth), body).await
}

async fn whoami_with(router: &Router, auth: Option<&str>) -> Reply {
    send(router, "GET", "/whoami", auth, Value::Null).await
}

#[tokio::test]
async fn each_token_yields_only_its_own_tenant_in_any_case_of_the_scheme() {
    let app = app(Revocations::new());
    let (a, b) = (TenantId::random(), TenantId::random());
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = whoami_with(&app.router, Some(&format!("{scheme} {}", token(a)))).await;
        assert_eq!(
            (r.status, r.body),
            (StatusCode::OK, a.to_string()),
            "{scheme}"
        );
    }
    let r = whoami_with(&app.router, Some(&format!("Bearer {}", token(b)))).await;
    assert_eq!((r.status, r.body), (StatusCode::OK, b.to_string()));
}

#[tokio::test]
async fn bad_credentials_get_401_with_a_bearer_challenge_and_never_reach_the_handler() {
    let app = app(Revocations::new());
    let b = TenantId::random();
    let forged = jwt(
        b,
        b"not the platform's secret but long enough",
        get_current_timestamp() + 600,
    );
    let expired = jwt(b, SECRET, get_current_timestamp() - 3600);
    for (auth, kind) in [
        (Some(format!("Bearer {forged}")), "bad_signature"),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some("Bearer not.a.jwt".to_owned()), "malformed"),
        (Some(format!("Basic {}", token(b))), "not_bearer"),
        (Some("Bearer".to_owned()), "not_bearer"),
        (Some("Bearer ".to_owned()), "not_bearer"),
        (Some(format!("Token {}", token(b))), "not_bearer"),
    ] {
        let r = whoami_with(&app.router, auth.as_deref()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}: {}", r.body);
        assert_eq!(
            r.www_authenticate.as_deref(),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(r.json()["error"], kind, "{}", r.body);
        assert!(!r.body.contains(&b.to_string()), "{}", r.body);
    }
    let r = whoami_with(&app.router, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
    assert_eq!(r.json()["error"], "missing_token");
}

#[tokio::test]
async fn what_the_context_may_not_do_is_403_and_a_spent_quota_is_429_with_retry_after() {
    let app = app(Revocations::new());
    let tenant = TenantId::random();
    app.policies
        .set(tenant, ToolPolicy::deny_all().allow_tools(["echo"]));
    let auth = format!("Bearer {}", token(tenant));

    let r = call_tool(&app, &auth, json!({"tool": "echo"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = call_tool(&app, &auth, json!({"tool": "shell"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.json()["error"], "tool_not_allowed");
    assert_eq!(r.www_authenticate, None);

    // 1,000 tokens per hour: the first 900 pass, the next 200 do not.
    let r = call_tool(&app, &auth, json!({"tool": "echo", "tokens": 900})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = call_tool(&app, &auth, json!({"tool": "echo", "tokens": 200})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.json()["error"], "quota_exceeded");
    let after = r.retry_after.expect("a Retry-After header");
    assert!((1..=3600).contains(&after), "{after}");
}

#[tokio::test]
async fn a_revoked_token_is_401_and_a_stale_revocation_view_is_503() {
    // A replica's registry that must hear from its store every second
    // (generous: the machine may stall between sync and request).
    let revocations = Revocations::replica(Duration::from_secs(1)).unwrap();
    revocations.mark_synced(Instant::now());
    let app = app(revocations.clone());
    let tenant = TenantId::random();
    let jwt = token(tenant);
    let auth = format!("Bearer {jwt}");
    let r = whoami_with(&app.router, Some(&auth)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let until = SystemTime::now() + Duration::from_secs(3600);
    revocations.apply(&Revocation::jwt_id("idp", &uuid_like(tenant), until));
    revocations.mark_synced(Instant::now());
    let r = whoami_with(&app.router, Some(&auth)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );

    // No word from the store within the bound: nobody is admitted, and the
    // answer says to come back rather than to log in again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let other = format!("Bearer {}", token(TenantId::random()));
    let r = whoami_with(&app.router, Some(&other)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.json()["error"], "revocations_stale");
    assert_eq!(r.www_authenticate, None);
}

#[tokio::test]
async fn the_extractor_works_without_the_layer_and_reuses_its_context_with_it() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let auth = Arc::new(TenantAuth::new(verifier(), issuer));
    async fn tenant_of(Tenant(ctx): Tenant) -> String {
        ctx.tenant().to_string()
    }
    let plain = Router::new()
        .route("/t", get(tenant_of))
        .with_state(auth.clone());
    let layered = Router::new()
        .route("/t", get(tenant_of))
        .layer(TenantAuthLayer::new(auth.clone()))
        .with_state(auth);
    let tenant = TenantId::random();
    for router in [&plain, &layered] {
        let r = send(
            router,
            "GET",
            "/t",
            Some(&format!("bearer {}", token(tenant))),
            Value::Null,
        )
        .await;
        assert_eq!((r.status, r.body), (StatusCode::OK, tenant.to_string()));
        let r = send(router, "GET", "/t", None, Value::Null).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
    }
}
