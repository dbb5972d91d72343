//! Egress policy against real HTTP servers on 127.0.0.1 started here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tenant_tools::Error;
use tenant_tools::{EgressClient, EgressPolicy, DEFAULT_MAX_BODY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-route HTTP server on 127.0.0.1 that counts the connections it
/// accepted and answers every request with `response`.
async fn server(response: String) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (port, hits, _) = serve(listener, response);
    (port, hits)
}

/// Like [`server`], also keeping every request it received.
async fn recording_server(response: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (port, _, seen) = serve(listener, response);
    (port, seen)
}

type Seen = Arc<Mutex<Vec<String>>>;

fn serve(listener: tokio::net::TcpListener, response: String) -> (u16, Arc<AtomicUsize>, Seen) {
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Arc::default();
    let (counter, log) = (hits.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let (response, log) = (response.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, hits, seen)
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect(to: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

fn assert_denied<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(matches!(r, Err(Error::EgressDenied { .. })), "{r:?}");
}

#[tokio::test]
async fn an_explicitly_allowed_internal_destination_is_reachable() {
    let (port, hits) = server(ok("hello")).await;
    let client = EgressClient::new(
        EgressPolicy::deny_all()
            .allow_internal(&format!("127.0.0.1:{port}"))
            .unwrap(),
    )
    .unwrap();
    let res = client
        .get_text(&format!("http://127.0.0.1:{port}/"), DEFAULT_MAX_BODY)
        .await
        .unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "hello"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_host_not_on_the_allowlist_fails_before_any_connection() {
    let (port, hits) = server(ok("secret")).await;
    let client =
        EgressClient::new(EgressPolicy::deny_all().allow("api.example.com").unwrap()).unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("https://localhost:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        assert_denied(client.get_text(&url, DEFAULT_MAX_BODY).await);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_allowed_name_that_resolves_to_loopback_is_refused() {
    let (port, hits) = server(ok("secret")).await;
    // `localhost` is on the allowlist, but as a public destination.
    let client = EgressClient::new(
        EgressPolicy::deny_all()
            .allow(&format!("localhost:{port}"))
            .unwrap(),
    )
    .unwrap();
    assert_denied(
        client
            .get_text(&format!("http://localhost:{port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    assert_denied(
        client
            .get_text(&format!("https://localhost:{port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    // An internal IP literal on the allowlist without allow_internal.
    let literal = EgressClient::new(
        EgressPolicy::deny_all()
            .allow(&format!("127.0.0.1:{port}"))
            .unwrap(),
    )
    .unwrap();
    assert_denied(
        literal
            .get_text(&format!("http://127.0.0.1:{port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_to_a_destination_outside_the_policy_is_refused() {
    let (target_port, target_hits) = server(ok("internal data")).await;
    let (hop_port, hop_hits) =
        server(redirect(&format!("http://127.0.0.1:{target_port}/admin"))).await;
    let (hop2_port, _) = server(redirect(&format!("http://localhost:{target_port}/admin"))).await;
    let client = EgressClient::new(
        EgressPolicy::deny_all()
            .allow_internal(&format!("127.0.0.1:{hop_port}"))
            .unwrap()
            .allow_internal(&format!("127.0.0.1:{hop2_port}"))
            .unwrap()
            // Listed, but not as internal: the redirect target resolves to loopback.
            .allow(&format!("localhost:{target_port}"))
            .unwrap(),
    )
    .unwrap();
    // Redirect to an unlisted address.
    assert_denied(
        client
            .get_text(&format!("http://127.0.0.1:{hop_port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    // Redirect to a listed name that resolves to loopback.
    assert_denied(
        client
            .get_text(&format!("http://127.0.0.1:{hop2_port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    assert_eq!(hop_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect target was contacted"
    );
}

#[tokio::test]
async fn a_redirect_loop_is_cut_off() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_, hits, _) = serve(
        listener,
        redirect(&format!("http://127.0.0.1:{port}/again")),
    );
    let client = EgressClient::new(
        EgressPolicy::deny_all()
            .allow_internal(&format!("127.0.0.1:{port}"))
            .unwrap(),
    )
    .unwrap();
    assert_denied(
        client
            .get_text(&format!("http://127.0.0.1:{port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    assert_eq!(hits.load(Ordering::SeqCst), tenant_tools::MAX_REDIRECTS + 1);
}

#[tokio::test]
async fn an_internal_allowance_covers_only_its_own_port() {
    let (open_port, open_hits) = server(ok("internal ok")).await;
    let (other_port, other_hits) = server(ok("must not be reached")).await;
    // `localhost` is internal-allowed on one port, public-only on another.
    let client = EgressClient::new(
        EgressPolicy::deny_all()
            .allow_internal(&format!("localhost:{open_port}"))
            .unwrap()
            .allow(&format!("localhost:{other_port}"))
            .unwrap(),
    )
    .unwrap();
    let res = client
        .get_text(&format!("http://localhost:{open_port}/"), DEFAULT_MAX_BODY)
        .await
        .unwrap();
    assert_eq!(res.body, "internal ok");
    assert_denied(
        client
            .get_text(&format!("http://localhost:{other_port}/"), DEFAULT_MAX_BODY)
            .await,
    );
    assert_eq!(open_hits.load(Ordering::SeqCst), 1);
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn secret_headers_do_not_follow_a_cross_origin_redirect() {
    let (target_port, target_seen) = recording_server(ok("landed")).await;
    let (same_port, same_seen) = recording_server(ok("same origin")).await;
    let (hop_port, _) =
        recording_server(redirect(&format!("http://localhost:{target_port}/next"))).await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("127.0.0.1:{hop_port}"))
        .unwrap()
        .allow_internal(&format!("localhost:{target_port}"))
        .unwrap()
        .allow_internal(&format!("127.0.0.1:{same_port}"))
        .unwrap();
    let client = EgressClient::new(policy).unwrap();
    let send = |url: String| {
        let client = client.clone();
        async move {
            let req = client
                .request(reqwest::Method::GET, &url)
                .unwrap()
                .header("authorization", "Bearer tok-123")
                .header("cookie", "session=abc")
                .header("x-api-key", "custom-key-456")
                .header("x-trace", "keep-me");
            client.send(req).await.unwrap()
        }
    };
    let res = send(format!("http://127.0.0.1:{hop_port}/")).await;
    assert_eq!(res.status(), 200);
    let landed = target_seen.lock().unwrap().join("\n").to_ascii_lowercase();
    assert!(landed.contains("get /next"), "{landed}");
    for secret in ["tok-123", "session=abc"] {
        assert!(
            !landed.contains(secret),
            "{secret} followed the redirect: {landed}"
        );
    }
    assert!(landed.contains("x-trace: keep-me"));
    // Same origin: the headers are kept.
    let res = send(format!("http://127.0.0.1:{same_port}/")).await;
    assert_eq!(res.status(), 200);
    let same = same_seen.lock().unwrap().join("\n").to_ascii_lowercase();
    assert!(same.contains("tok-123") && same.contains("custom-key-456"));
}

/// A keep-alive HTTP/1.1 server: answers every request of a connection and
/// counts the connections it accepted.
async fn keep_alive_server() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        r.fetch_add(1, Ordering::SeqCst);
                        let body = "pong";
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, connections, requests)
}

#[tokio::test]
async fn requests_to_one_destination_reuse_a_pinned_connection() {
    let (port, connections, requests) = keep_alive_server().await;
    let policy = EgressPolicy::deny_all()
        .allow_internal(&format!("localhost:{port}"))
        .unwrap();
    let client = EgressClient::new(policy).unwrap();
    let url = format!("http://localhost:{port}/ping");
    for _ in 0..3 {
        let r = client.get_text(&url, DEFAULT_MAX_BODY).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "pong"));
    }
    // A clone shares the client and its connections.
    let r = client
        .clone()
        .get_text(&url, DEFAULT_MAX_BODY)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was reused"
    );

    // Reuse never widens the policy: every request is checked again.
    assert!(matches!(
        client
            .get_text("http://localhost:1/", DEFAULT_MAX_BODY)
            .await,
        Err(Error::EgressDenied { .. })
    ));
    assert!(matches!(
        client
            .get_text(&format!("http://127.0.0.1:{port}/"), DEFAULT_MAX_BODY)
            .await,
        Err(Error::EgressDenied { .. })
    ));
    assert_eq!(requests.load(Ordering::SeqCst), 4);
}
