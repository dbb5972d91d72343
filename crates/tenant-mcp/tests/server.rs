//! The MCP server: per-request token verification bound to the resource and
//! the tenant, per-tenant tool views, session binding, metadata. Real rmcp
//! clients (and hand-made requests) over loopback HTTP, two tenants.

mod fixture;

use fixture::*;
use serde_json::{json, Value};
use tenant_core::*;

/// Tenant A may use echo, add, whoami and vault_echo; tenant B add only.
fn two_tenants(p: &Platform) -> (TenantId, TenantId) {
    let (a, b) = (TenantId::random(), TenantId::random());
    p.allow(a, &["echo", "add", "whoami", "vault_echo"]);
    p.allow(b, &["add"]);
    (a, b)
}

/// A platform with two tenants, a server at `/mcp` made by `configure`,
/// and a token of each tenant for it.
struct Two {
    p: Platform,
    a: TenantId,
    s: Served,
    token_a: String,
    token_b: String,
}

impl Two {
    async fn start(configure: impl FnOnce(&Platform) -> tenant_mcp::McpServerBuilder) -> Self {
        let p = Platform::new("k1");
        let (a, b) = two_tenants(&p);
        let s = serve("/mcp", configure(&p)).await;
        let token_a = idp_token(a, "alice", &s.resource, json!({}));
        let token_b = idp_token(b, "bob", &s.resource, json!({}));
        Self {
            p,
            a,
            s,
            token_a,
            token_b,
        }
    }
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Status, challenge and `reason` of a refusal.
async fn refusal(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let challenge = challenge(&response);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    (status, challenge, reason)
}

#[tokio::test]
async fn each_tenant_lists_and_calls_only_its_own_tools() {
    let Two {
        p,
        a,
        s,
        token_a,
        token_b,
        ..
    } = Two::start(|p| p.server()).await;

    let client_a = mcp_client(&s.resource, &token_a).await.unwrap();
    let client_b = mcp_client(&s.resource, &token_b).await.unwrap();
    assert_eq!(
        listed(&client_a).await,
        ["add", "echo", "vault_echo", "whoami"]
    );
    assert_eq!(listed(&client_b).await, ["add"]);

    let me = client_a
        .call_tool(rmcp::model::CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let me = me.structured_content.unwrap();
    assert_eq!(me["tenant"], a.to_string());
    assert_eq!(me["principal"], "alice");

    // B asks for A's tools: 403 insufficient_scope before anything runs,
    // for an existing tool of A's and for one that exists nowhere alike.
    let runs = p.runs();
    for tool in ["echo", "whoami", "no_such_tool"] {
        let err = client_b
            .call_tool(rmcp::model::CallToolRequestParams::new(tool))
            .await
            .unwrap_err();
        let challenge = err.auth_challenge().unwrap_or_default().to_owned();
        assert!(!err.is_authorization_required(), "{tool}: {err}");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(challenge.contains(&s.server.resource().metadata_url()));
    }
    assert_eq!(p.runs(), runs, "no tool ran for the refused calls");

    // Nothing changed: both views are as before and A's tools still work.
    let client_b = mcp_client(&s.resource, &token_b).await.unwrap();
    assert_eq!(listed(&client_b).await, ["add"]);
    assert_eq!(
        listed(&client_a).await,
        ["add", "echo", "vault_echo", "whoami"]
    );
    let sum = client_b
        .call_tool(
            rmcp::model::CallToolRequestParams::new("add")
                .with_arguments(args(json!({"a": 2, "b": 3}))),
        )
        .await
        .unwrap();
    assert_eq!(sum.content[0].as_text().unwrap().text, "5");
}

#[tokio::test]
async fn tokens_that_do_not_name_this_resource_or_do_not_verify_are_refused_with_401() {
    let Two { p, a, s, .. } = Two::start(|p| p.server()).await;
    let other_resource = format!("{}/other", s.origin);
    let valid = |claims: Value| idp_token(a, "alice", &s.resource, claims);
    let forged = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        encode(
            &Header::default(),
            &json!({"iss": IDP, "sub": "alice", "aud": s.resource,
                    "tenant_id": a.to_string(), "exp": now() + 300}),
            &EncodingKey::from_secret(b"another secret of at least 32 bytes!!"),
        )
        .unwrap()
    };
    let unsigned = {
        let mut parts: Vec<String> = valid(json!({})).split('.').map(str::to_owned).collect();
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0".into(); // {"alg":"none","typ":"JWT"}
        parts[2].clear();
        parts.join(".")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "another resource",
            idp_token(a, "alice", &other_resource, json!({})),
            "wrong_resource",
        ),
        (
            "the origin only",
            idp_token(a, "alice", &s.origin, json!({})),
            "wrong_resource",
        ),
        (
            "a trailing slash",
            idp_token(a, "alice", &format!("{}/", s.resource), json!({})),
            "wrong_resource",
        ),
        ("no audience", valid(json!({"aud": null})), "token_rejected"),
        (
            "expired",
            valid(json!({"exp": now() - 3600})),
            "token_expired",
        ),
        (
            "another issuer",
            valid(json!({"iss": "https://evil.test"})),
            "wrong_issuer",
        ),
        ("forged", forged, "bad_signature"),
        ("alg none", unsigned, "token_rejected"),
        (
            "no tenant",
            valid(json!({"tenant_id": null})),
            "token_rejected",
        ),
        ("garbage", "not.a.jwt".into(), "token_rejected"),
    ];
    let runs = p.runs();
    for (what, token, reason) in cases {
        let response = post(
            &s.resource,
            Some(&token),
            None,
            request(1, "tools/call", json!({"name": "echo", "arguments": {}})),
        )
        .await;
        let (status, challenge, got) = refusal(response).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(got, reason, "{what}");
        assert!(
            challenge.starts_with(&format!(
                "Bearer resource_metadata=\"{}\"",
                s.server.resource().metadata_url()
            )),
            "{what}: {challenge}"
        );
        assert!(challenge.contains("error=\"invalid_token\""), "{what}");
        // The rmcp client sees the challenge too.
        let err = mcp_client(&s.resource, &token).await.unwrap_err();
        assert!(err.is_authorization_required(), "{what}");
    }

    // No token, another scheme, two tokens: 401 with the metadata URL.
    let bare = http()
        .post(&s.resource)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize(1).to_string());
    let (status, challenge, reason) = refusal(bare.send().await.unwrap()).await;
    assert_eq!((status, reason.as_str()), (401, "missing_token"));
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"{}\"",
            s.server.resource().metadata_url()
        )
    );
    let token = valid(json!({}));
    for headers in [
        vec![format!("Basic {token}")],
        vec![format!("Bearer {token}"), format!("Bearer {token}")],
    ] {
        let mut req = http()
            .post(&s.resource)
            .header("content-type", "application/json")
            .body(initialize(1).to_string());
        for h in headers {
            req = req.header("authorization", h);
        }
        let (status, _, reason) = refusal(req.send().await.unwrap()).await;
        assert_eq!((status, reason.as_str()), (401, "malformed_authorization"));
    }
    assert_eq!(p.runs(), runs, "no refused request ran a tool");

    // The valid token still works.
    let client = mcp_client(&s.resource, &valid(json!({}))).await.unwrap();
    assert!(listed(&client).await.contains(&"echo".to_owned()));
}

#[tokio::test]
async fn a_resource_dedicated_to_tenant_b_refuses_tenant_a() {
    let p = Platform::new("k1");
    let (a, b) = two_tenants(&p);
    let b_service = p.ctx(b, "svc:mcp");
    let a_service = p.ctx(a, "svc:mcp");
    let srv_a = serve("/tenants/a/mcp", p.server().dedicated_to(&a_service)).await;
    let srv_b = serve("/tenants/b/mcp", p.server().dedicated_to(&b_service)).await;
    let runs = p.runs();

    // A token of tenant A minted for B's resource: valid, wrong tenant.
    let a_for_b = idp_token(a, "alice", &srv_b.resource, json!({}));
    let call = request(
        1,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 1}}),
    );
    let (status, challenge, reason) =
        refusal(post(&srv_b.resource, Some(&a_for_b), None, call.clone()).await).await;
    assert_eq!((status, reason.as_str()), (403, "tenant_not_served"));
    assert!(challenge.contains("insufficient_scope"));
    assert!(challenge.contains(&srv_b.server.resource().metadata_url()));
    // A token of tenant A for A's resource, presented to B's: not for it.
    let a_for_a = idp_token(a, "alice", &srv_a.resource, json!({}));
    let (status, _, reason) =
        refusal(post(&srv_b.resource, Some(&a_for_a), None, call.clone()).await).await;
    assert_eq!((status, reason.as_str()), (401, "wrong_resource"));
    assert_eq!(p.runs(), runs);

    // Each tenant's own token works at its own resource only.
    let b_for_b = idp_token(b, "bob", &srv_b.resource, json!({}));
    let client = mcp_client(&srv_b.resource, &b_for_b).await.unwrap();
    assert_eq!(listed(&client).await, ["add"]);
    let client = mcp_client(&srv_a.resource, &a_for_a).await.unwrap();
    assert!(listed(&client).await.contains(&"whoami".to_owned()));
    let err = mcp_client(&srv_a.resource, &b_for_b).await.unwrap_err();
    assert!(err.is_authorization_required());
}

#[tokio::test]
async fn a_session_id_never_carries_one_tenants_session_into_another_request() {
    let Two {
        p,
        a,
        s,
        token_a,
        token_b,
        ..
    } = Two::start(|p| p.server()).await;
    let token_a_other_user = idp_token(a, "mallory", &s.resource, json!({}));
    let session_a = open_session(&s.resource, &token_a).await;
    let runs = p.runs();

    // B (and another principal of A) presenting A's session id: answered
    // as an unknown session, for every method.
    for token in [&token_b, &token_a_other_user] {
        for body in [
            request(2, "tools/list", json!({})),
            request(
                3,
                "tools/call",
                json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
            ),
        ] {
            let response = post(&s.resource, Some(token), Some(&session_a), body).await;
            let (status, _, reason) = refusal(response).await;
            assert_eq!((status, reason.as_str()), (404, "unknown_session"));
        }
        let get = http()
            .get(&s.resource)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session_a)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 404);
        let delete = http()
            .delete(&s.resource)
            .bearer_auth(token)
            .header("mcp-session-id", &session_a)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 404);
    }
    // A session id nobody created, and two session headers.
    let (status, _, reason) = refusal(
        post(
            &s.resource,
            Some(&token_b),
            Some("no-such-session"),
            request(4, "tools/list", json!({})),
        )
        .await,
    )
    .await;
    assert_eq!((status, reason.as_str()), (404, "unknown_session"));
    let twice = http()
        .post(&s.resource)
        .bearer_auth(&token_a)
        .header("content-type", "application/json")
        .header("mcp-session-id", &session_a)
        .header("mcp-session-id", &session_a)
        .body(request(5, "tools/list", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    assert_eq!(p.runs(), runs);

    // Nothing changed: A's session is alive and shows A's tools; B's own
    // session shows B's.
    let listed_a = message(list_by_hand(&s.resource, Some(&token_a), Some(&session_a)).await).await;
    assert_eq!(names(&listed_a), ["add", "echo", "vault_echo", "whoami"]);
    let session_b = open_session(&s.resource, &token_b).await;
    let listed_b = message(list_by_hand(&s.resource, Some(&token_b), Some(&session_b)).await).await;
    assert_eq!(names(&listed_b), ["add"]);

    // A closes its session; the id is dead for A too.
    let delete = http()
        .delete(&s.resource)
        .bearer_auth(&token_a)
        .header("mcp-session-id", &session_a)
        .send()
        .await
        .unwrap();
    assert!(delete.status().is_success());
    let (status, _, _) =
        refusal(list_by_hand(&s.resource, Some(&token_a), Some(&session_a)).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_token_is_verified_again_on_every_request_of_a_session() {
    let Two { p, a, s, .. } = Two::start(|p| p.server()).await;
    let token = idp_token(a, "alice", &s.resource, json!({"jti": "t-1", "sid": "s-1"}));
    let session = open_session(&s.resource, &token).await;
    let ok = message(list_by_hand(&s.resource, Some(&token), Some(&session)).await).await;
    assert!(!names(&ok).is_empty());

    // The IdP session is revoked: the same token on the same MCP session
    // is refused from the next request on.
    p.issuer.revocations().apply(&Revocation::jwt_session(
        IDP,
        "s-1",
        std::time::SystemTime::now() + std::time::Duration::from_secs(600),
    ));
    let (status, challenge, reason) =
        refusal(list_by_hand(&s.resource, Some(&token), Some(&session)).await).await;
    assert_eq!((status, reason.as_str()), (401, "token_revoked"));
    assert!(challenge.contains("invalid_token"));
    // Without the token, the session id alone is nothing.
    let (status, _, reason) = refusal(list_by_hand(&s.resource, None, Some(&session)).await).await;
    assert_eq!((status, reason.as_str()), (401, "missing_token"));
}

#[tokio::test]
async fn a_narrower_token_gets_a_narrower_view() {
    let Two { a, s, .. } = Two::start(|p| p.server()).await;
    // A sub-agent's token: the `tools` claim narrows the IdP's baseline.
    let narrow = idp_token(
        a,
        "alice",
        &s.resource,
        json!({"tools": ["echo"], "agent": "researcher"}),
    );
    let client = mcp_client(&s.resource, &narrow).await.unwrap();
    assert_eq!(listed(&client).await, ["echo"]);
    let err = client
        .call_tool(rmcp::model::CallToolRequestParams::new("whoami"))
        .await
        .unwrap_err();
    assert!(err
        .auth_challenge()
        .is_some_and(|c| c.contains("insufficient_scope")));
}

#[tokio::test]
async fn calls_go_through_the_executor_validation_and_redaction() {
    let p = Platform::new("k1");
    let (a, _) = two_tenants(&p);
    p.put_secret(a, "crm", "s3cr3t-crm-token-value");
    let s = serve("/mcp", p.server()).await;
    let token = idp_token(a, "alice", &s.resource, json!({}));
    let client = mcp_client(&s.resource, &token).await.unwrap();

    // Invalid input: the tool does not run; the model sees why.
    let runs = p.runs();
    let bad = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("add").with_arguments(args(json!({"a": "x"}))),
        )
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
    assert_eq!(p.runs(), runs);

    // A tool that echoes a vault secret: the executor redacts it.
    let leak = client
        .call_tool(rmcp::model::CallToolRequestParams::new("vault_echo"))
        .await
        .unwrap();
    let text = serde_json::to_string(&leak).unwrap();
    assert!(!text.contains("s3cr3t-crm-token-value"), "{text}");
    assert!(text.contains("[REDACTED]"));
}

#[tokio::test]
async fn protected_resource_metadata_names_the_resource_and_its_authorization_server() {
    let p = Platform::new("k1");
    let s = serve(
        "/mcp",
        p.server().authorization_server("https://login.example.com"),
    )
    .await;
    for url in [
        s.server.resource().metadata_url(),
        format!("{}/.well-known/oauth-protected-resource", s.origin),
    ] {
        let doc: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["resource"], s.resource);
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://login.example.com"])
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    // Without one configured, the verifier's issuer is the authorization server.
    let s = serve("/mcp", p.server()).await;
    assert_eq!(s.server.metadata()["authorization_servers"], json!([IDP]));
}

#[tokio::test]
async fn a_server_is_refused_an_issuer_of_another_authority() {
    let p = Platform::new("k1");
    let stray = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let err = p
        .server()
        .issuer(&stray)
        .resource("http://127.0.0.1:1/mcp")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        tenant_mcp::Error::Context(tenant_core::Error::ForeignAuthority)
    ));
    let foreign = stray
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("x").unwrap())
        .issue()
        .unwrap();
    let err = p
        .server()
        .dedicated_to(&foreign)
        .resource("http://127.0.0.1:1/mcp")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        tenant_mcp::Error::Context(tenant_core::Error::ForeignAuthority)
    ));
}

#[tokio::test]
async fn one_tenant_cannot_hold_more_sessions_than_its_share() {
    let Two {
        s,
        token_a,
        token_b,
        ..
    } = Two::start(|p| p.server().sessions_per_tenant(2)).await;
    let _one = open_session(&s.resource, &token_a).await;
    let _two = open_session(&s.resource, &token_a).await;
    let (status, _, reason) =
        refusal(post(&s.resource, Some(&token_a), None, initialize(1)).await).await;
    assert_eq!((status, reason.as_str()), (429, "too_many_sessions"));
    // B is unaffected.
    open_session(&s.resource, &token_b).await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_anything_runs() {
    let Two { p, a, s, .. } = Two::start(|p| p.server().max_request_body(64 * 1024)).await;
    let token = idp_token(a, "alice", &s.resource, json!({}));
    let big = "x".repeat(128 * 1024);
    let runs = p.runs();
    let (status, _, reason) = refusal(
        post(
            &s.resource,
            Some(&token),
            None,
            request(
                1,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": big}}),
            ),
        )
        .await,
    )
    .await;
    assert_eq!((status, reason.as_str()), (413, "request_too_large"));
    assert_eq!(p.runs(), runs);
}

#[cfg(feature = "governance")]
#[tokio::test]
async fn tool_calls_past_the_tenants_request_rate_are_refused_and_other_tenants_are_unaffected() {
    use std::sync::Arc;
    use tenant_governance::{RateLimit, RequestRateLimiter};

    let p = Platform::new("k1");
    let (a, b) = two_tenants(&p);
    let limiter = Arc::new(
        RequestRateLimiter::builder(&p.issuer.authority())
            .limit(RateLimit {
                capacity: 2,
                refill_per_second: 0.01,
            })
            .build(),
    );
    let s = serve("/mcp", p.server().request_rate(&limiter)).await;
    let token_a = idp_token(a, "alice", &s.resource, json!({}));
    let token_b = idp_token(b, "bob", &s.resource, json!({}));
    let sa = open_session(&s.resource, &token_a).await;
    let sb = open_session(&s.resource, &token_b).await;
    let add = |id| {
        request(
            id,
            "tools/call",
            json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
        )
    };
    for id in 0..2 {
        let ok = message(post(&s.resource, Some(&token_a), Some(&sa), add(id)).await).await;
        assert!(ok["result"].is_object(), "{ok}");
    }
    let runs = p.runs();
    let response = post(&s.resource, Some(&token_a), Some(&sa), add(3)).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let (status, _, reason) = refusal(response).await;
    assert_eq!((status, reason.as_str()), (429, "rate_limited"));
    assert!(retry_after.is_some_and(|s| s >= 1));
    assert_eq!(p.runs(), runs, "the refused call did not run");
    // Listing is not a tool call; B has its own rate.
    let listed = message(list_by_hand(&s.resource, Some(&token_a), Some(&sa)).await).await;
    assert!(!names(&listed).is_empty());
    let ok = message(post(&s.resource, Some(&token_b), Some(&sb), add(5)).await).await;
    assert!(ok["result"].is_object(), "{ok}");
}

#[tokio::test]
async fn the_guard_and_the_mcp_service_read_the_same_body() {
    let Two { p, s, token_b, .. } = Two::start(|p| p.server()).await;
    let session = open_session(&s.resource, &token_b).await;
    let raw = |body: &str| {
        http()
            .post(&s.resource)
            .bearer_auth(&token_b)
            .header("mcp-session-id", &session)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let runs = p.runs();
    // A duplicated member: whichever one the guard reads is the one run.
    let hidden = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
                     "params":{"name":"add","name":"echo","arguments":{"a":1,"b":2}}}"#;
    let (status, _, reason) = refusal(raw(hidden).await.unwrap()).await;
    assert_eq!((status, reason.as_str()), (403, "insufficient_scope"));
    let method_swap = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","method":"tools/call",
                          "params":{"name":"echo","arguments":{}}}"#;
    let (status, _, _) = refusal(raw(method_swap).await.unwrap()).await;
    assert_eq!(status, 403);
    // The other way round the service gets a listing, and nothing runs.
    let listing = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","method":"tools/list",
                      "params":{"name":"echo","arguments":{}}}"#;
    let listed = message(raw(listing).await.unwrap()).await;
    assert_eq!(names(&listed), ["add"]);
    assert_eq!(p.runs(), runs);
    let allowed = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call",
                      "params":{"name":"echo","name":"add","arguments":{"a":1,"b":2}}}"#;
    let sum = message(raw(allowed).await.unwrap()).await;
    assert_eq!(sum["result"]["content"][0]["text"], "3");
    // Not JSON at all.
    let (status, _, reason) = refusal(raw("{not json").await.unwrap()).await;
    assert_eq!((status, reason.as_str()), (400, "malformed_request"));
}
