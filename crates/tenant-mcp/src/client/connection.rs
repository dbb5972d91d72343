//! One short MCP session with a remote server: connect through the
//! registration's egress policy with one bearer credential, list or call,
//! close.

use std::future::Future;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, PaginatedRequestParams, Tool as McpTool};
use rmcp::service::{ClientInitializeError, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tenant_tools::EgressClient;

use crate::error::{Error, Result};
use crate::resource::ResourceUrl;

/// The largest JSON response accepted from a remote server.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// The most `tools/list` pages read from a remote server.
const MAX_LIST_PAGES: usize = 16;
/// The most tools read from a remote server's list.
pub(crate) const MAX_LISTED_TOOLS: usize = 1024;

/// Where a registration's requests go, and how long they may take.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) resource: ResourceUrl,
    pub(crate) egress: EgressClient,
    pub(crate) timeout: Duration,
}

type Session = RunningService<RoleClient, ()>;

impl Endpoint {
    /// Runs `work` in a fresh session authenticated with `bearer`; the
    /// whole exchange (connection included) is bounded by the timeout.
    async fn with_session<T, F, Fut>(&self, bearer: &SecretString, work: F) -> Result<T>
    where
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = (Session, Result<T>)>,
    {
        let exchange = async {
            let http = self.egress.pinned_client(self.resource.as_str()).await?;
            let config = StreamableHttpClientTransportConfig::with_uri(self.resource.as_str())
                .auth_header(bearer.expose_secret())
                .max_json_response_size(MAX_RESPONSE_BYTES)
                .max_sse_event_size(MAX_RESPONSE_BYTES)
                .reinit_on_expired_session(false);
            let transport = StreamableHttpClientTransport::with_client(http, config);
            let session = ().serve(transport).await.map_err(init_error)?;
            let (session, out) = work(session).await;
            // Closing deletes the session on the server; its failure (an
            // expired token, say) changes nothing for the caller.
            let _ = session.cancel().await;
            out
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(out) => out,
            Err(_) => Err(Error::RemoteTimeout(self.timeout)),
        }
    }

    /// Every tool the server lists (bounded in pages and count).
    pub(crate) async fn list(&self, bearer: &SecretString) -> Result<Vec<McpTool>> {
        self.with_session(bearer, |session| async move {
            let out = list_all(&session).await;
            (session, out)
        })
        .await
    }

    /// Calls `tool` with `input`.
    pub(crate) async fn call(
        &self,
        bearer: &SecretString,
        tool: &str,
        input: Map<String, Value>,
    ) -> Result<CallToolResult> {
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(input);
        self.with_session(bearer, |session| async move {
            let out = session.call_tool(params).await.map_err(service_error);
            (session, out)
        })
        .await
    }
}

async fn list_all(session: &Session) -> Result<Vec<McpTool>> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        let page = session
            .list_tools(Some(params))
            .await
            .map_err(service_error)?;
        tools.extend(page.tools);
        if tools.len() > MAX_LISTED_TOOLS {
            return Err(Error::Remote(format!(
                "the server lists more than {MAX_LISTED_TOOLS} tools"
            )));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(tools),
        }
    }
    Err(Error::Remote(format!(
        "the server's tool list runs past {MAX_LIST_PAGES} pages"
    )))
}

/// A 401 or 403 with its challenge, when that is what the transport hit.
fn challenge(challenge: Option<&str>, unauthorized: bool) -> Option<Error> {
    let challenge = challenge?.chars().take(512).collect();
    Some(if unauthorized {
        Error::RemoteUnauthorized { challenge }
    } else {
        Error::RemoteForbidden { challenge }
    })
}

fn init_error(e: ClientInitializeError) -> Error {
    challenge(e.auth_challenge(), e.is_authorization_required())
        .unwrap_or_else(|| Error::Remote(format!("initialization failed: {e}")))
}

fn service_error(e: ServiceError) -> Error {
    match e {
        ServiceError::McpError(data) => Error::Remote(data.message.chars().take(2048).collect()),
        other => challenge(other.auth_challenge(), other.is_authorization_required())
            .unwrap_or_else(|| Error::Remote(other.to_string())),
    }
}
