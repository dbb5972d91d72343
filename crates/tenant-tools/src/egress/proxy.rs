//! [`EgressProxy`]: the only way out of a sandboxed run's network
//! namespace.
//!
//! The supervisor creates the proxy's listening socket *inside* the run's
//! otherwise empty network namespace (loopback only, port
//! [`PROXY_PORT`](crate::sandbox::PROXY_PORT)) and serves it from its own
//! runtime; the process is pointed at it through `HTTP_PROXY` and friends,
//! and Landlock lets it connect to that one port and nothing else. The
//! proxy speaks HTTP/1.1:
//!
//! - `CONNECT host:port` — checked against the tenant's [`EgressPolicy`]
//!   with the same resolved-address checks as [`EgressClient`](super::EgressClient);
//!   then either a plain byte tunnel or, for a host with an injected
//!   credential, TLS terminated with a per-run CA so the proxy can add the
//!   credential to each request before re-encrypting to the real host;
//! - absolute-form plain HTTP (`GET http://host/...`) — checked the same
//!   way and forwarded, credentials added likewise.
//!
//! Redirects are followed by the client, so every hop comes back through
//! the proxy and is checked again. Every decision is audited (target
//! `tenant_audit`: `egress.connect`, `egress.request`, `egress.credential`).

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use tenant_core::TenantContext;
use tokio::task::JoinSet;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use super::broker::RunCa;
use super::policy::{
    normalize_host, parse_host_port, CredentialInjection, EgressPolicy, Injection,
};
use super::resolve::{connect, resolve_checked};
use super::trust::{bundle_pem, client_config};
use crate::error::{Error, Result};
use crate::redaction::Redactor;

type Body = BoxBody<Bytes, hyper::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one run may hold open through its proxy.
const MAX_CONNECTIONS: usize = 64;

/// A credential armed for one `host[:port]`.
#[derive(Clone)]
struct Armed {
    host: String,
    port: Option<u16>,
    integration: String,
    header: HeaderName,
    value: HeaderValue,
}

impl Armed {
    fn matches(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port)
    }
}

/// A per-run egress proxy: the tenant's [`EgressPolicy`], the credentials
/// armed for it, and the context decisions are audited under. See
/// [`RunOptions::egress`](crate::sandbox::RunOptions::egress); tools get
/// one through [`ToolCall::run_sandboxed`](crate::ToolCall::run_sandboxed).
pub struct EgressProxy {
    ctx: TenantContext,
    policy: EgressPolicy,
    armed: Vec<Armed>,
    ca: OnceLock<Option<Arc<RunCa>>>,
    redactor: Option<Redactor>,
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let armed: Vec<String> = self
            .armed
            .iter()
            .map(|a| format!("{}/{}", a.host, a.integration))
            .collect();
        f.debug_struct("EgressProxy")
            .field("ctx", &self.ctx)
            .field("policy", &self.policy)
            .field("armed", &armed)
            .finish_non_exhaustive()
    }
}

fn header_value(
    how: &CredentialInjection,
    secret: &SecretString,
) -> Result<(HeaderName, HeaderValue)> {
    let raw = secret.expose_secret();
    let (name, value) = match how {
        CredentialInjection::Bearer => (AUTHORIZATION, format!("Bearer {raw}")),
        CredentialInjection::Basic { username } => (
            AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{raw}"))
            ),
        ),
        CredentialInjection::Header { name } => (
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::InvalidName {
                kind: "header",
                reason: "not a header name".into(),
            })?,
            raw.to_owned(),
        ),
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| Error::http("an injected credential is not a valid header value"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

impl EgressProxy {
    /// A proxy enforcing `policy` for `ctx`, with no credential armed.
    pub fn new(ctx: &TenantContext, policy: &EgressPolicy) -> Self {
        Self {
            ctx: ctx.clone(),
            policy: policy.clone(),
            armed: Vec::new(),
            ca: OnceLock::new(),
            redactor: None,
        }
    }

    /// Adds `secret` (the tenant's secret for `integration`), presented as
    /// `how`, to every request for `entry` (`host[:port]`, which the policy
    /// must allow).
    pub fn inject(
        self,
        entry: &str,
        integration: &str,
        how: &CredentialInjection,
        secret: &SecretString,
    ) -> Result<Self> {
        let (host, port) = parse_host_port(entry)?;
        self.arm(
            &Injection {
                host,
                port,
                integration: integration.to_owned(),
                how: how.clone(),
            },
            secret,
        )
    }

    /// Arms one of the policy's injections with the tenant's secret.
    pub(crate) fn arm(mut self, inj: &Injection, secret: &SecretString) -> Result<Self> {
        let (host, port, integration, how) =
            (inj.host.clone(), inj.port, &inj.integration, &inj.how);
        if !self.policy.covers(&host, port) {
            return Err(Error::InvalidName {
                kind: "egress host",
                reason: format!("`{host}` is not allowed, so nothing can be injected for it"),
            });
        }
        let (header, value) = header_value(how, secret)?;
        if let Some(r) = &self.redactor {
            r.remember(secret);
            r.remember_bytes(value.as_bytes());
        }
        self.armed.push(Armed {
            host,
            port,
            integration: integration.to_owned(),
            header,
            value,
        });
        self.ca = OnceLock::new();
        Ok(self)
    }

    /// Remembers every injected secret in `redactor`, so that output
    /// echoing one (say, an upstream reflecting headers) is scrubbed.
    pub fn redactor(mut self, redactor: &Redactor) -> Self {
        for a in &self.armed {
            redactor.remember_bytes(a.value.as_bytes());
        }
        self.redactor = Some(redactor.clone());
        self
    }

    fn ca(&self) -> Result<Option<Arc<RunCa>>> {
        if let Some(ca) = self.ca.get() {
            return Ok(ca.clone());
        }
        let ca = if self.armed.is_empty() {
            None
        } else {
            let mut hosts: Vec<String> = self.armed.iter().map(|a| a.host.clone()).collect();
            hosts.sort();
            hosts.dedup();
            Some(Arc::new(RunCa::new(&hosts)?))
        };
        Ok(self.ca.get_or_init(|| ca).clone())
    }

    /// The CA bundle the run trusts: the system's roots, the policy's,
    /// and this run's CA when credentials are armed.
    pub(crate) fn ca_bundle_pem(&self) -> Option<Vec<u8>> {
        let ca = self.ca().ok()?;
        Some(bundle_pem(&self.policy, ca.as_ref().map(|c| c.pem())))
    }

    /// Serves the proxy on `listener` until the returned guard is dropped.
    pub fn serve(&self, listener: std::net::TcpListener) -> Result<ProxyGuard> {
        let mut tls = client_config(&self.policy)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let state = Arc::new(State {
            ctx: self.ctx.clone(),
            policy: self.policy.clone(),
            armed: self.armed.clone(),
            ca: self.ca()?,
            tls: Arc::new(tls),
            tasks: Mutex::new(JoinSet::new()),
        });
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::setup("proxy listener", e))?;
        let rt = runtime()?;
        // Audit events of the proxy go where the caller's go, in the
        // context's span.
        let accept = rt.spawn(
            accept_loop(state.clone(), listener)
                .instrument(self.ctx.span())
                .with_current_subscriber(),
        );
        Ok(ProxyGuard { accept, state })
    }
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tenant-tools-egress")
            .enable_all()
            .build()
    })
    .as_ref()
    .map_err(|e| {
        Error::setup(
            "egress runtime",
            std::io::Error::new(e.kind(), e.to_string()),
        )
    })
}

/// Keeps a proxy serving; dropping it stops the proxy and every
/// connection through it.
pub struct ProxyGuard {
    accept: tokio::task::JoinHandle<()>,
    state: Arc<State>,
}

impl fmt::Debug for ProxyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyGuard").finish_non_exhaustive()
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.tasks().abort_all();
    }
}

struct State {
    ctx: TenantContext,
    policy: EgressPolicy,
    armed: Vec<Armed>,
    ca: Option<Arc<RunCa>>,
    tls: Arc<rustls::ClientConfig>,
    tasks: Mutex<JoinSet<()>>,
}

impl State {
    fn tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks();
        while tasks.try_join_next().is_some() {}
        if tasks.len() < MAX_CONNECTIONS * 2 {
            tasks.spawn(f.in_current_span().with_current_subscriber());
        }
    }
}

async fn accept_loop(state: Arc<State>, listener: std::net::TcpListener) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let live = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = live.clone().try_acquire_owned() else {
            continue; // over the limit: the connection is dropped
        };
        let st = state.clone();
        state.spawn(async move {
            let _permit = permit;
            let svc = {
                let st = st.clone();
                service_fn(move |req| handle(st.clone(), req))
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if let Err(e) = state.ctx.check() {
        state.ctx.deny("egress.request", "-", &e);
        return Ok(text(
            StatusCode::FORBIDDEN,
            "egress denied: context no longer valid",
        ));
    }
    if req.method() == Method::CONNECT {
        Ok(tunnel(state, req).await)
    } else {
        Ok(plain(state, req).await)
    }
}

/// Checks `host:port`, audits the decision, returns the addresses.
async fn admit(
    state: &State,
    action: &str,
    host: &str,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>, Response<Body>> {
    let resource = format!("{host}:{port}");
    match resolve_checked(&state.policy, host, port).await {
        Ok(addrs) => {
            state.ctx.audit_allowed(action, &resource);
            Ok(addrs)
        }
        Err(reason) => {
            state.ctx.audit_denied(action, &resource, &reason);
            Err(text(
                StatusCode::FORBIDDEN,
                format!("egress denied: {reason}"),
            ))
        }
    }
}

async fn tunnel(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = authority.port_u16() else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = normalize_host(authority.host());
    let addrs = match admit(&state, "egress.connect", &host, port).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let upstream = match connect(&addrs, CONNECT_TIMEOUT).await {
        Ok(s) => s,
        Err(_) => return text(StatusCode::BAD_GATEWAY, "upstream unreachable"),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let intercept = state.armed.iter().any(|a| a.matches(&host, port));
    let st = state.clone();
    state.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        if intercept {
            intercepted(st, host, port, addrs, upstream, client).await;
        } else {
            let mut upstream = upstream;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// Terminates the client's TLS with the run's certificate for `host`, and
/// forwards each request over TLS to the real host with the credential.
async fn intercepted(
    state: Arc<State>,
    host: String,
    port: u16,
    addrs: Vec<std::net::SocketAddr>,
    first: tokio::net::TcpStream,
    client: TokioIo<hyper::upgrade::Upgraded>,
) {
    let Some(ca) = &state.ca else { return };
    let Ok(server) = ca.server_for(&host) else {
        return;
    };
    let Ok(tls) = tokio_rustls::TlsAcceptor::from(server).accept(client).await else {
        return;
    };
    let upstream = Arc::new(tokio::sync::Mutex::new(Upstream {
        host: host.clone(),
        port,
        addrs,
        tls: Some(state.tls.clone()),
        first: Some(first),
        sender: None,
        state: Arc::downgrade(&state),
    }));
    let svc = {
        let state = state.clone();
        service_fn(move |req| {
            let (state, upstream) = (state.clone(), upstream.clone());
            async move {
                let mut up = upstream.lock().await;
                Ok::<_, Infallible>(forward(&state, &mut up, req).await)
            }
        })
    };
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

async fn plain(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "send an absolute http:// URL, or CONNECT for https",
        );
    }
    let Some(host) = req.uri().host().map(normalize_host) else {
        return text(StatusCode::BAD_REQUEST, "no host");
    };
    let port = req.uri().port_u16().unwrap_or(80);
    let addrs = match admit(&state, "egress.request", &host, port).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let mut up = Upstream {
        host,
        port,
        addrs,
        tls: None,
        first: None,
        sender: None,
        state: Arc::downgrade(&state),
    };
    forward(&state, &mut up, req).await
}

/// One upstream origin, connected lazily and reconnected when the server
/// closed the previous connection.
struct Upstream {
    host: String,
    port: u16,
    addrs: Vec<std::net::SocketAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
    first: Option<tokio::net::TcpStream>,
    sender: Option<hyper::client::conn::http1::SendRequest<Body>>,
    state: std::sync::Weak<State>,
}

impl Upstream {
    async fn open(&mut self) -> Result<hyper::client::conn::http1::SendRequest<Body>, String> {
        let tcp = match self.first.take() {
            Some(s) => s,
            None => connect(&self.addrs, CONNECT_TIMEOUT)
                .await
                .map_err(|_| "upstream unreachable".to_owned())?,
        };
        let state = self.state.upgrade().ok_or("proxy stopped")?;
        match &self.tls {
            Some(cfg) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|_| "invalid server name".to_owned())?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("upstream TLS: {e}"))?;
                handshake(&state, tls).await
            }
            None => handshake(&state, tcp).await,
        }
    }

    async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let reuse = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !reuse {
            self.sender = Some(self.open().await?);
        }
        let sender = self.sender.as_mut().ok_or("no upstream")?;
        sender.ready().await.map_err(|e| format!("upstream: {e}"))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("upstream: {e}"))
    }
}

/// An HTTP/1.1 client connection over `io`, driven by a task of the
/// proxy (stopped with it).
async fn handshake<IO>(
    state: &State,
    io: IO,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    state.spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for h in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(h);
    }
}

async fn forward(state: &State, up: &mut Upstream, mut req: Request<Incoming>) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    *req.uri_mut() = path
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    let default_port = if up.tls.is_some() { 443 } else { 80 };
    let host_header = if up.port == default_port {
        up.host.clone()
    } else if up.host.contains(':') {
        format!("[{}]:{}", up.host, up.port)
    } else {
        format!("{}:{}", up.host, up.port)
    };
    match HeaderValue::from_str(&host_header) {
        Ok(v) => {
            headers.insert(HOST, v);
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad host"),
    }
    for a in state.armed.iter().filter(|a| a.matches(&up.host, up.port)) {
        headers.remove(&a.header);
        headers.insert(a.header.clone(), a.value.clone());
        state.ctx.audit_allowed(
            "egress.credential",
            &format!("{}:{}/{}", up.host, up.port, a.integration),
        );
    }
    let req = req.map(|b| b.boxed());
    match tokio::time::timeout(RESPONSE_TIMEOUT, up.send(req)).await {
        Ok(Ok(mut resp)) => {
            strip_hop_by_hop(resp.headers_mut());
            resp.map(|b| b.boxed())
        }
        Ok(Err(reason)) => text(StatusCode::BAD_GATEWAY, reason),
        Err(_) => text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
    }
}
