//! The bearer guard in front of the MCP endpoint: every request's token is
//! verified into a context, checked against this resource, its tenant and
//! its session, before the MCP service sees the request.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value;
use tenant_core::{TenantContext, AUDIT_TARGET};
use tenant_tools::ToolExecutor;

use super::Shared;
use crate::error::{Error, Result};

/// The MCP session header.
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";

/// What the guard hands the MCP service with each admitted request: the
/// executor of the context verified from this very request's token.
#[derive(Clone)]
pub(crate) struct RequestScope {
    pub(crate) executor: Arc<ToolExecutor>,
}

/// The axum middleware.
pub(crate) async fn guard(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let resource = shared.resource.as_str().to_owned();
    match admit(&shared, request).await {
        Ok(Admitted {
            request,
            ctx,
            session,
        }) => {
            let method = request.method().clone();
            let response = next.run(request).await;
            let created = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let closed = method == Method::DELETE && response.status().is_success();
            after(&shared, &ctx, session.as_deref(), created, closed).await;
            response
        }
        Err(e) => {
            tracing::warn!(
                target: AUDIT_TARGET,
                decision = "deny",
                resource = %resource,
                reason = e.reason_code(),
                "mcp request refused"
            );
            refusal(&shared, &e)
        }
    }
}

struct Admitted {
    request: Request,
    ctx: TenantContext,
    session: Option<String>,
}

async fn admit(shared: &Shared, request: Request) -> Result<Admitted> {
    let token = bearer(request.headers())?;
    let ctx = verify(shared, token)?;
    let session = session_id(request.headers())?;
    if let Some(id) = &session {
        shared.sessions.check(id, &ctx)?;
    }
    let executor = Arc::new(shared.executor(&ctx)?);
    let (mut parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        let bytes = to_bytes(body, shared.max_body)
            .await
            .map_err(|_| Error::RequestTooLarge {
                limit: shared.max_body,
            })?;
        // The body is parsed once here and the MCP service gets it
        // re-serialised from that parse, so both read the same messages
        // (a duplicated member cannot mean one thing here and another
        // there).
        let parsed: Value = serde_json::from_slice(&bytes)
            .map_err(|_| Error::MalformedRequest("the body is not a JSON-RPC message"))?;
        let messages = match &parsed {
            Value::Array(items) => items.as_slice(),
            one => std::slice::from_ref(one),
        };
        let calls = check_calls(&executor, messages)?;
        shared.charge(&ctx, calls)?;
        if session.is_none() && is_initialize(messages) && !shared.sessions.has_room(&ctx).await {
            return Err(Error::TooManySessions {
                limit: shared.sessions_per_tenant,
            });
        }
        let canonical = serde_json::to_vec(&parsed)
            .map_err(|_| Error::MalformedRequest("the body is not a JSON-RPC message"))?;
        Body::from(canonical)
    } else {
        body
    };
    parts.extensions.insert(RequestScope { executor });
    Ok(Admitted {
        request: Request::from_parts(parts, body),
        ctx,
        session,
    })
}

/// The single `Authorization: Bearer <token>` of the request.
fn bearer(headers: &HeaderMap) -> Result<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Error::MissingToken)?;
    if values.next().is_some() {
        return Err(Error::MalformedAuthorization);
    }
    let value = value.to_str().map_err(|_| Error::MalformedAuthorization)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::MalformedAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::MalformedAuthorization);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(Error::MalformedAuthorization);
    }
    Ok(token)
}

/// Verifies the token into a context of the platform's authority, for
/// this resource and (if the resource is dedicated) its tenant.
fn verify(shared: &Shared, token: &str) -> Result<TenantContext> {
    let ctx = shared
        .verifier
        .verify(token, &shared.issuer)
        .map_err(|e| match e {
            tenant_core::Error::ClaimRejected(r) => Error::TokenRejected(r),
            other => Error::Context(other),
        })?;
    // The verifier was built with this resource as its audience; the claim
    // is read again here so a token naming another resource can never
    // pass, whatever the verifier's configuration.
    if !audience_names(token, shared.resource.as_str()) {
        return Err(Error::WrongResource);
    }
    shared.tools.registry.authority().admit(&ctx)?;
    if let Some(tenant) = shared.dedicated {
        if ctx.tenant() != tenant {
            return Err(Error::TenantNotServed);
        }
    }
    Ok(ctx)
}

/// Whether the (already verified) token's `aud` is or contains `resource`.
fn audience_names(token: &str, resource: &str) -> bool {
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<Value>(&bytes) else {
        return false;
    };
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == resource,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(resource)),
        _ => false,
    }
}

/// The request's session id, if it names one.
fn session_id(headers: &HeaderMap) -> Result<Option<String>> {
    let mut values = headers.get_all(SESSION_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::MalformedRequest("several session ids"));
    }
    let id = value.to_str().map_err(|_| Error::UnknownSession)?;
    Ok(Some(id.to_owned()))
}

fn is_initialize(messages: &[Value]) -> bool {
    messages
        .iter()
        .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"))
}

/// Refuses a `tools/call` of any tool outside the context's view before the
/// MCP service runs it (the executor checks again when it does). Returns
/// how many calls the body holds.
fn check_calls(executor: &ToolExecutor, messages: &[Value]) -> Result<usize> {
    let calls: Vec<String> = messages
        .iter()
        .filter(|m| m.get("method").and_then(Value::as_str) == Some("tools/call"))
        .filter_map(|m| m.pointer("/params/name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    if calls.is_empty() {
        return Ok(0);
    }
    let view = executor.list()?;
    let count = calls.len();
    for tool in calls {
        if !view.iter().any(|t| t.name == tool) {
            return Err(Error::InsufficientScope { tool });
        }
    }
    Ok(count)
}

/// Binds a session the request created; forgets one it closed.
async fn after(
    shared: &Shared,
    ctx: &TenantContext,
    session: Option<&str>,
    created: Option<String>,
    closed: bool,
) {
    match (session, created) {
        (None, Some(id)) => shared.sessions.bind(&id, ctx).await,
        (Some(id), _) if closed => shared.sessions.unbind(id),
        _ => {}
    }
}

/// The error response: status, `WWW-Authenticate` for 401/403 (with the
/// protected-resource metadata URL, RFC 9728 §5.1), and a JSON body.
fn refusal(shared: &Shared, e: &Error) -> Response {
    let status = e.status();
    let description = quoted_safe(&e.to_string());
    let mut response = (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        serde_json::json!({
            "error": e.oauth_error().unwrap_or("server_error"),
            "reason": e.reason_code(),
            "error_description": description,
        })
        .to_string(),
    )
        .into_response();
    if let Error::RateLimited {
        retry_after: Some(after),
    } = e
    {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let mut challenge = format!(
            "Bearer resource_metadata=\"{}\"",
            shared.resource.metadata_url()
        );
        if let Some(code) = e.oauth_error() {
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// Text safe inside an HTTP quoted-string (RFC 6750 limits
/// `error_description` to printable ASCII without `"` and `\`).
fn quoted_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '\'',
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_bearer_header_is_a_token() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Err(Error::MissingToken)));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&h), Err(Error::MalformedAuthorization)));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(matches!(bearer(&h), Err(Error::MalformedAuthorization)));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a b"));
        assert!(matches!(bearer(&h), Err(Error::MalformedAuthorization)));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h).unwrap(), "abc");
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer def"));
        assert!(matches!(bearer(&h), Err(Error::MalformedAuthorization)));
    }

    #[test]
    fn audience_must_name_the_resource_exactly() {
        let token = |aud: Value| {
            let p = URL_SAFE_NO_PAD.encode(serde_json::json!({ "aud": aud }).to_string());
            format!("h.{p}.s")
        };
        let r = "https://a.example/mcp";
        assert!(audience_names(&token(r.into()), r));
        assert!(audience_names(&token(serde_json::json!(["x", r])), r));
        assert!(!audience_names(&token("https://a.example/mcp/".into()), r));
        assert!(!audience_names(&token("https://a.example".into()), r));
        assert!(!audience_names(&token(serde_json::json!([])), r));
        assert!(!audience_names("garbage", r));
    }

    #[test]
    fn descriptions_are_safe_in_a_quoted_string() {
        assert_eq!(quoted_safe("a \"b\" \\ c\n"), "a 'b' ' c'");
    }
}
