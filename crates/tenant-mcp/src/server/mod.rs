//! [`McpServer`]: a tenant's tools served over MCP's streamable HTTP
//! transport, with every request's bearer token verified into a context.

mod guard;
mod handler;
mod sessions;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{json, Value};
use tenant_core::{
    ClaimVerifier, ClaimVerifierBuilder, ContextIssuer, PrincipalId, TenantContext, TenantId,
};
use tenant_tools::{Sandbox, ToolExecutor, ToolPolicies, ToolRegistry, Vault, WorkspaceRoot};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::resource::{ResourceUrl, METADATA_WELL_KNOWN};
use handler::TenantToolsHandler;
use sessions::SessionBindings;

/// The default largest request body accepted.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The default number of open MCP sessions per tenant.
pub const DEFAULT_SESSIONS_PER_TENANT: usize = 64;

/// What an executor is built from, per request.
#[derive(Clone)]
struct ToolResources {
    registry: ToolRegistry,
    policies: ToolPolicies,
    vault: Option<Arc<Arc<dyn Vault>>>,
    workspace_root: Option<WorkspaceRoot>,
    sandbox: Option<Arc<Sandbox>>,
}

/// Everything the guard and the handler share.
pub(crate) struct Shared {
    resource: ResourceUrl,
    issuer: ContextIssuer,
    verifier: ClaimVerifier,
    tools: ToolResources,
    dedicated: Option<TenantId>,
    sessions: SessionBindings,
    sessions_per_tenant: usize,
    max_body: usize,
    #[cfg(feature = "governance")]
    request_rate: Option<Arc<tenant_governance::RequestRateLimiter>>,
}

impl Shared {
    /// Takes `calls` tool calls from the tenant's request rate, if one is
    /// configured.
    #[cfg(feature = "governance")]
    fn charge(&self, ctx: &TenantContext, calls: usize) -> Result<()> {
        let Some(limiter) = &self.request_rate else {
            return Ok(());
        };
        for _ in 0..calls {
            limiter.check(ctx).map_err(|e| match e {
                tenant_governance::Error::Context(e) => Error::Context(e),
                tenant_governance::Error::QuotaExceeded { retry_after, .. } => {
                    Error::RateLimited { retry_after }
                }
                _ => Error::RateLimited { retry_after: None },
            })?;
        }
        Ok(())
    }

    #[cfg(not(feature = "governance"))]
    fn charge(&self, _ctx: &TenantContext, _calls: usize) -> Result<()> {
        Ok(())
    }

    /// The executor of one request's context.
    fn executor(&self, ctx: &TenantContext) -> Result<ToolExecutor> {
        let t = &self.tools;
        let mut b = ToolExecutor::builder()
            .registry(&t.registry)
            .policies(&t.policies);
        if let Some(vault) = &t.vault {
            b = b.vault(vault);
        }
        if let Some(root) = &t.workspace_root {
            b = b.workspace_root(root);
        }
        if let Some(sandbox) = &t.sandbox {
            b = b.sandbox(sandbox);
        }
        Ok(b.tenant(ctx).build()?)
    }
}

/// Serves tools of the platform's [`ToolRegistry`] over MCP (streamable
/// HTTP, sessions included) as an OAuth protected resource.
///
/// Every request to the MCP endpoint goes through a guard before the MCP
/// service sees it:
///
/// 1. exactly one `Authorization: Bearer` token, verified by the
///    configured [`ClaimVerifier`] (whose audience is this server's
///    [`ResourceUrl`]) into a [`TenantContext`] of the platform's issuer;
///    the token's `aud` is read again and must name this resource exactly
///    (RFC 8707); the context must be admitted by the registry's authority;
/// 2. on a resource dedicated to one tenant
///    ([`dedicated_to`](McpServerBuilder::dedicated_to)), the context's
///    tenant must be that tenant;
/// 3. an `Mcp-Session-Id` must name a session created by the same tenant
///    and principal (any other session is answered as unknown);
/// 4. a `tools/call` must name a tool of the context's view.
///
/// Refusals are 401 (no, bad or foreign-resource token) or 403 (tenant not
/// served, tool out of scope) with `WWW-Authenticate: Bearer
/// resource_metadata="…"` (RFC 9728), or 404 for an unknown session. The
/// request then runs with a [`ToolExecutor`] built from that request's
/// context: `tools/list` is exactly what the tenant's policy and the
/// context allow, `tools/call` goes through the executor (schema
/// validation, vault credentials, redaction, audit). Nothing of one
/// request's context is kept for the next, so a session never carries a
/// context; the token is verified again on every request.
///
/// Protected-resource metadata is served at the well-known URL for the
/// resource's path and at the root well-known URL.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenant_core::*;
/// use tenant_mcp::McpServer;
/// use tenant_tools::{MemoryVault, ToolPolicies, ToolRegistry};
///
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let registry = ToolRegistry::new(&issuer.authority());
/// let keys = JwkKeys::new(&[jsonwebtoken::Algorithm::EdDSA])?;
/// let server = McpServer::builder()
///     .registry(&registry)
///     .policies(&ToolPolicies::new())
///     .vault(&Arc::new(MemoryVault::new()))
///     .issuer(&issuer)
///     .verifier(ClaimVerifier::builder().jwks(&keys).issuer("https://idp.example.com"))
///     .resource("https://mcp.example.com/mcp")?
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// axum::serve(listener, server.router()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
    service: StreamableHttpService<TenantToolsHandler, LocalSessionManager>,
    metadata: Arc<Value>,
    shutdown: CancellationToken,
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServer")
            .field("resource", &self.shared.resource)
            .field("dedicated", &self.shared.dedicated)
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// Starts a builder (see [`McpServerBuilder`]).
    pub fn builder() -> McpServerBuilder {
        McpServerBuilder::default()
    }

    /// The resource this server is.
    pub fn resource(&self) -> &ResourceUrl {
        &self.shared.resource
    }

    /// The protected-resource metadata document (RFC 9728).
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    /// The axum router: the MCP endpoint at the resource's path, behind the
    /// guard, and the protected-resource metadata.
    pub fn router(&self) -> Router {
        let mcp = Router::new()
            .route_service(self.shared.resource.path(), self.service.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                guard::guard,
            ));
        let doc = self.metadata.clone();
        let serve_doc = move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        };
        let mut router = Router::new().route(
            &self.shared.resource.metadata_path(),
            get(serve_doc.clone()),
        );
        if self.shared.resource.metadata_path() != METADATA_WELL_KNOWN {
            router = router.route(METADATA_WELL_KNOWN, get(serve_doc));
        }
        router.merge(mcp)
    }

    /// Ends every open MCP session (their streams close); the router
    /// accepts no new ones.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// Configures an [`McpServer`]. Platform-wide: no tenant is chosen here
/// (each request's token decides), unless the resource is
/// [`dedicated_to`](Self::dedicated_to) one tenant.
///
/// Required: [`registry`](Self::registry), [`issuer`](Self::issuer),
/// [`verifier`](Self::verifier) and [`resource`](Self::resource). The rest
/// is optional.
#[derive(Default)]
#[must_use = "a builder does nothing until build() is called"]
pub struct McpServerBuilder {
    registry: Option<ToolRegistry>,
    policies: Option<ToolPolicies>,
    vault: Option<Arc<Arc<dyn Vault>>>,
    workspace_root: Option<WorkspaceRoot>,
    sandbox: Option<Arc<Sandbox>>,
    issuer: Option<ContextIssuer>,
    verifier: Option<ClaimVerifierBuilder>,
    resource: Option<ResourceUrl>,
    authorization_servers: Vec<String>,
    dedicated: Option<TenantContext>,
    name: Option<String>,
    max_body: Option<usize>,
    sessions_per_tenant: Option<usize>,
    session_idle: Option<Duration>,
    #[cfg(feature = "governance")]
    request_rate: Option<Arc<tenant_governance::RequestRateLimiter>>,
}

impl fmt::Debug for McpServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServerBuilder")
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl McpServerBuilder {
    /// The platform's tools (and the authority whose contexts they serve).
    pub fn registry(mut self, registry: &ToolRegistry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// The per-tenant tool policies (without them every tool is denied).
    pub fn policies(mut self, policies: &ToolPolicies) -> Self {
        self.policies = Some(policies.clone());
        self
    }

    /// The vault tools read credentials from.
    pub fn vault<V: Vault>(mut self, vault: &Arc<V>) -> Self {
        let vault: Arc<dyn Vault> = vault.clone();
        self.vault = Some(Arc::new(vault));
        self
    }

    /// Where tool runs get their workspace.
    pub fn workspace_root(mut self, root: &WorkspaceRoot) -> Self {
        self.workspace_root = Some(root.clone());
        self
    }

    /// The sandbox subprocess tools run in.
    pub fn sandbox(mut self, sandbox: &Arc<Sandbox>) -> Self {
        self.sandbox = Some(sandbox.clone());
        self
    }

    /// The platform's issuer: verified tokens become its contexts. It must
    /// be the issuer of the registry's authority.
    pub fn issuer(mut self, issuer: &ContextIssuer) -> Self {
        self.issuer = Some(issuer.clone());
        self
    }

    /// How bearer tokens are verified (keys, `iss`, tenant claim, baseline
    /// capabilities). Its audience is set to this server's resource URL,
    /// replacing any audience set on it.
    pub fn verifier(mut self, verifier: ClaimVerifierBuilder) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// This server's canonical URL (see [`ResourceUrl`]): the audience
    /// every accepted token names, and where the MCP endpoint is served.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`].
    pub fn resource(mut self, url: &str) -> Result<Self> {
        self.resource = Some(ResourceUrl::parse(url)?);
        Ok(self)
    }

    /// An authorization server clients obtain tokens from, listed in the
    /// metadata (default: the verifier's issuer).
    pub fn authorization_server(mut self, url: impl Into<String>) -> Self {
        self.authorization_servers.push(url.into());
        self
    }

    /// Serves `ctx`'s tenant only: a valid token of any other tenant is
    /// refused with 403 (a per-tenant resource, such as
    /// `https://mcp.example.com/tenants/acme/mcp`).
    pub fn dedicated_to(mut self, ctx: &TenantContext) -> Self {
        self.dedicated = Some(ctx.clone());
        self
    }

    /// The server name reported in `initialize` (default `tenant-mcp`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The largest request body accepted (default
    /// [`DEFAULT_MAX_REQUEST_BODY`]).
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// How many MCP sessions one tenant may hold open (default
    /// [`DEFAULT_SESSIONS_PER_TENANT`]).
    pub fn sessions_per_tenant(mut self, sessions: usize) -> Self {
        self.sessions_per_tenant = Some(sessions);
        self
    }

    /// Charges every `tools/call` to the calling tenant's request rate; a
    /// call past it is refused with 429 (`rate_limited`, with
    /// `Retry-After`) before it runs. The limiter must serve the registry's
    /// authority.
    #[cfg(feature = "governance")]
    pub fn request_rate(mut self, limiter: &Arc<tenant_governance::RequestRateLimiter>) -> Self {
        self.request_rate = Some(limiter.clone());
        self
    }

    /// How long an idle session lives (default 5 minutes).
    pub fn session_idle_timeout(mut self, idle: Duration) -> Self {
        self.session_idle = Some(idle);
        self
    }

    /// Checks the configuration and builds the server.
    ///
    /// # Errors
    ///
    /// [`Error::MissingConfiguration`]; [`Error::Context`] when the issuer
    /// is not the registry's authority (`ForeignAuthority`) or the
    /// dedicated tenant's context is not admitted;
    /// [`Error::InvalidConfiguration`] for a verifier the SDK refuses or a
    /// zero limit.
    pub fn build(self) -> Result<McpServer> {
        let registry = self
            .registry
            .ok_or(Error::MissingConfiguration("registry"))?;
        let issuer = self.issuer.ok_or(Error::MissingConfiguration("issuer"))?;
        let resource = self
            .resource
            .ok_or(Error::MissingConfiguration("resource"))?;
        let verifier = self
            .verifier
            .ok_or(Error::MissingConfiguration("verifier"))?
            .audience(resource.as_str())
            .build()?;
        check_issuer(&issuer, &registry)?;
        let dedicated = match &self.dedicated {
            Some(ctx) => {
                registry.authority().admit(ctx)?;
                Some(ctx.tenant())
            }
            None => None,
        };
        let max_body = self.max_body.unwrap_or(DEFAULT_MAX_REQUEST_BODY);
        let sessions_per_tenant = self
            .sessions_per_tenant
            .unwrap_or(DEFAULT_SESSIONS_PER_TENANT);
        if max_body == 0 || sessions_per_tenant == 0 {
            return Err(Error::InvalidConfiguration(
                "limits must be positive".into(),
            ));
        }
        let mut authorization_servers = self.authorization_servers;
        if authorization_servers.is_empty() {
            authorization_servers.push(verifier.issuer().to_owned());
        }
        let metadata = json!({
            "resource": resource.as_str(),
            "authorization_servers": authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": self.name.as_deref().unwrap_or("tenant-mcp"),
        });

        let mut manager = LocalSessionManager::default();
        if let Some(idle) = self.session_idle {
            manager.session_config.keep_alive = Some(idle);
        }
        let manager = Arc::new(manager);
        let shutdown = CancellationToken::new();
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(resource.host_header_values())
            .with_max_request_body_bytes(max_body)
            .with_cancellation_token(shutdown.child_token());
        let handler = TenantToolsHandler {
            name: Arc::from(self.name.as_deref().unwrap_or("tenant-mcp")),
        };
        let service =
            StreamableHttpService::new(move || Ok(handler.clone()), manager.clone(), config);
        let shared = Arc::new(Shared {
            resource,
            issuer,
            verifier,
            tools: ToolResources {
                registry,
                policies: self.policies.unwrap_or_default(),
                vault: self.vault,
                workspace_root: self.workspace_root,
                sandbox: self.sandbox,
            },
            dedicated,
            sessions: SessionBindings::new(manager, sessions_per_tenant),
            sessions_per_tenant,
            max_body,
            #[cfg(feature = "governance")]
            request_rate: self.request_rate,
        });
        Ok(McpServer {
            shared,
            service,
            metadata: Arc::new(metadata),
            shutdown,
        })
    }
}

/// The issuer's contexts must be the registry's: a server configured with
/// a stray issuer would mint contexts no executor admits (or, worse, that
/// another platform's handles do).
fn check_issuer(issuer: &ContextIssuer, registry: &ToolRegistry) -> Result<()> {
    let probe = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("tenant-mcp:probe")?)
        .ttl(Duration::from_secs(1))
        .issue()?;
    if registry.authority().issued(&probe) {
        Ok(())
    } else {
        Err(tenant_core::Error::ForeignAuthority.into())
    }
}
