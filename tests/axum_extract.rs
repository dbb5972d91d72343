//! The axum extractor over real HTTP: two tenants' tokens, forged and
//! missing tokens.
#![cfg(feature = "axum")]

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::json;
use tenant_sdk::axum_extract::{Tenant, TenantAuth};
use tenant_sdk::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &[u8] = b"axum test secret, at least 32 bytes long";

fn jwt(tenant: TenantId, key: &[u8]) -> String {
    encode(
        &Header::default(),
        &json!({"sub": "user", "tenant_id": tenant.to_string(), "iss": "idp", "aud": "api",
                "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

async fn whoami(Tenant(ctx): Tenant) -> String {
    ctx.tenant().to_string()
}

async fn get_raw(addr: std::net::SocketAddr, auth: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET /whoami HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test]
async fn each_token_yields_only_its_own_tenant_and_bad_tokens_get_401() {
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let verifier = ClaimVerifier::builder()
        .hs256(SECRET)
        .issuer("idp")
        .audience("api")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/whoami", get(whoami))
        .with_state(Arc::new(TenantAuth::new(verifier, issuer)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (a, b) = (TenantId::random(), TenantId::random());
    let (status, body) = get_raw(addr, Some(&format!("Bearer {}", jwt(a, SECRET)))).await;
    assert_eq!((status, body), (200, a.to_string()));
    let (status, body) = get_raw(addr, Some(&format!("Bearer {}", jwt(b, SECRET)))).await;
    assert_eq!((status, body), (200, b.to_string()));

    let forged = jwt(b, b"not the platform's secret but long enough");
    let (status, body) = get_raw(addr, Some(&format!("Bearer {forged}"))).await;
    assert_eq!(status, 401);
    assert!(body.contains("signature is invalid"), "{body}");
    assert!(!body.contains(&b.to_string()));

    let (status, body) = get_raw(addr, None).await;
    assert_eq!(status, 401);
    assert!(body.contains("missing bearer token"), "{body}");
    let (status, _) = get_raw(addr, Some("Basic dXNlcjpwYXNz")).await;
    assert_eq!(status, 401);
}
