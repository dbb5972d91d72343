//! Drives `examples/axum_service.rs` over real HTTP with two tenants'
//! tokens: each token only ever yields its own tenant's data.
//!
//! `cargo test` builds the example before running this test (it needs the
//! features `axum`, `retrieval`, `memory` and `tools`, e.g.
//! `cargo test --all-features`).
#![cfg(all(
    feature = "axum",
    feature = "retrieval",
    feature = "memory",
    feature = "tools"
))]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

struct Service {
    child: Child,
    addr: SocketAddr,
    acme: String,
    globex: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_service() -> Service {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/axum_service
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/axum_service");
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test --all-features`, which builds examples",
        bin.display()
    );
    let mut child = Command::new(bin)
        .env("BIND", "127.0.0.1:0")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let addr = next()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let acme = next().strip_prefix("token acme ").unwrap().to_string();
    let globex = next().strip_prefix("token globex ").unwrap().to_string();
    Service {
        child,
        addr,
        acme,
        globex,
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    // Plain HTTP; but when the whole workspace is built, another crate
    // enables reqwest's `rustls-no-provider`, and reqwest then needs a
    // process-wide crypto provider before it builds any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let payload = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_token_for_tenant_a_never_yields_tenant_b_data() {
    let svc = start_service();
    let (a, b, addr) = (svc.acme.as_str(), svc.globex.as_str(), svc.addr);

    for (token, text) in [
        (a, "acme roadmap: rocket skates"),
        (b, "globex roadmap: merger"),
    ] {
        let (status, body) = request(
            addr,
            "POST",
            "/ingest",
            Some(token),
            Some(json!({"id": "roadmap", "text": text})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // The same document id in both tenants: each sees only its own.
    let (status, body) = request(addr, "GET", "/docs/roadmap", Some(a), None).await;
    assert_eq!(
        (status, body["text"].as_str()),
        (200, Some("acme roadmap: rocket skates"))
    );
    let (status, body) = request(addr, "GET", "/docs/roadmap", Some(b), None).await;
    assert_eq!(
        (status, body["text"].as_str()),
        (200, Some("globex roadmap: merger"))
    );

    // Ask: retrieval + memory, scoped by the token.
    let (status, body) = request(
        addr,
        "POST",
        "/ask",
        Some(a),
        Some(json!({"question": "roadmap?"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = body["answer"].as_str().unwrap();
    assert!(answer.contains("acme"), "{answer}");
    assert!(!answer.contains("globex"), "leak: {answer}");
    let acme_thread = body["thread"].clone();
    assert_eq!(body["history"], 2);

    // Globex cannot continue acme's thread.
    let (status, body) = request(
        addr,
        "POST",
        "/ask",
        Some(b),
        Some(json!({"question": "roadmap?", "thread": acme_thread})),
    )
    .await;
    assert_ne!(status, 200, "globex appended to acme's thread: {body}");

    // Tools: allowed, not allowed.
    let (status, body) = request(
        addr,
        "POST",
        "/tools/calculator",
        Some(a),
        Some(json!({"a": 2, "b": 3})),
    )
    .await;
    assert_eq!((status, body["output"].clone()), (200, json!(5)));
    let (status, body) = request(
        addr,
        "POST",
        "/tools/send_email",
        Some(a),
        Some(json!({"a": 1, "b": 1})),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // No token, forged token.
    let (status, _) = request(addr, "GET", "/docs/roadmap", None, None).await;
    assert_eq!(status, 401);
    // Flip one character inside the signature (not its last, padding-bearing one).
    let mut forged: Vec<char> = svc.globex.chars().collect();
    let i = forged.len() - 5;
    forged[i] = if forged[i] == 'x' { 'y' } else { 'x' };
    let forged: String = forged.into_iter().collect();
    let (status, _) = request(addr, "GET", "/docs/roadmap", Some(&forged), None).await;
    assert_eq!(status, 401);

    // And acme's history still holds exactly its own two messages.
    let (status, body) = request(
        addr,
        "POST",
        "/ask",
        Some(a),
        Some(json!({"question": "again", "thread": acme_thread})),
    )
    .await;
    assert_eq!((status, body["history"].clone()), (200, json!(4)), "{body}");
}
