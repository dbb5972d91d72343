//! [`EgressClient`]: HTTP for in-process tools, to allowed destinations
//! only.
//!
//! Every hop of a request — the first and each redirect — is checked on
//! its own: the URL against the allowlist, then its name resolved with the
//! address checks of its own `host:port` entry, and the connection pinned
//! to exactly those addresses. Redirects are followed here, not by the
//! HTTP library, so that a cross-origin hop drops `Authorization`,
//! `Cookie`, `Proxy-Authorization` and any header carrying a secret the
//! run has handed out.
//!
//! Connections are reused: a client keeps one pinned HTTP client per
//! destination (`host`, `port`) together with the addresses it was pinned
//! to, and reuses it (and its pooled connections) for a later hop whose
//! fresh check yields the same addresses. A hop that resolves differently
//! gets a new client pinned to its own checked addresses. One client per
//! destination rather than one for all: the library's resolver hook does
//! not see the port, and the policy's address checks are per `host:port`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, AUTHORIZATION, COOKIE, HOST, LOCATION, PROXY_AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};

use super::policy::{denied, EgressPolicy};
use super::resolve::resolve_checked;
use super::trust::client_config;
use crate::error::{Error, Result};
use crate::redaction::Redactor;

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;
/// Default cap on a response body read by [`EgressClient::get_text`].
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Pinned per-destination clients kept per [`EgressClient`]; beyond it the
/// least recently pinned is dropped.
const MAX_PINNED: usize = 64;

/// Resolves nothing: every connection of the client goes to addresses
/// pinned after the policy checked them.
struct NoResolve;

impl Resolve for NoResolve {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let e: Box<dyn std::error::Error + Send + Sync> =
                format!("{host} was not checked by the egress policy").into();
            Err(e)
        })
    }
}

/// Maps a reqwest error without its URL (which may carry a query secret).
fn map_reqwest(e: reqwest::Error) -> Error {
    let e = e.without_url();
    Error::Http {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// An HTTP client bound to one [`EgressPolicy`]. Obtain it from
/// [`ToolCall::http`](crate::ToolCall::http) inside a tool (one client per
/// tenant policy, shared by its calls); build requests with
/// [`request`](Self::request) and send them with [`send`](Self::send).
/// Cheap to clone: clones share pinned clients and their connections.
#[derive(Clone)]
pub struct EgressClient {
    shared: Arc<Shared>,
    redactor: Option<Redactor>,
}

struct Shared {
    policy: EgressPolicy,
    tls: rustls::ClientConfig,
    builder: reqwest::Client,
    pinned: Mutex<Pinned>,
}

/// Clients pinned to checked addresses, by destination.
#[derive(Default)]
struct Pinned {
    clients: HashMap<(String, u16), PinnedClient>,
    next_use: u64,
}

struct PinnedClient {
    /// The checked addresses, sorted.
    addrs: Vec<SocketAddr>,
    client: reqwest::Client,
    last_use: u64,
}

impl fmt::Debug for EgressClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressClient")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// A response read by [`EgressClient::get_text`].
#[derive(Clone, Debug)]
pub struct EgressResponse {
    /// HTTP status code.
    pub status: u16,
    /// The URL of the final response (after redirects).
    pub url: String,
    /// The body, lossily decoded and truncated to the cap.
    pub body: String,
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl EgressClient {
    /// A client enforcing `policy`.
    pub fn new(policy: EgressPolicy) -> Result<Self> {
        let tls = client_config(&policy)?;
        let builder = Self::base(tls.clone()).build().map_err(map_reqwest)?;
        Ok(Self {
            shared: Arc::new(Shared {
                policy,
                tls,
                builder,
                pinned: Mutex::default(),
            }),
            redactor: None,
        })
    }

    /// Also drops headers carrying any secret `redactor` knows on
    /// cross-origin redirects.
    pub(crate) fn with_redactor(mut self, redactor: &Redactor) -> Self {
        self.redactor = Some(redactor.clone());
        self
    }

    fn base(tls: rustls::ClientConfig) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(NoResolve))
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
    }

    /// A new client whose only reachable destination is `host` at `addrs`.
    fn pinned(&self, host: &str, addrs: &[SocketAddr]) -> Result<reqwest::Client> {
        let mut b = Self::base(self.shared.tls.clone());
        if host.parse::<IpAddr>().is_err() {
            b = b.resolve_to_addrs(host, addrs);
        }
        b.build().map_err(map_reqwest)
    }

    /// The client for `host:port` pinned to exactly `addrs` (just checked):
    /// the one kept from an earlier hop when it was pinned to the same
    /// addresses (its connections reused), else a new one.
    fn pinned_for(&self, host: &str, port: u16, addrs: &[SocketAddr]) -> Result<reqwest::Client> {
        let mut sorted = addrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let key = (host.to_owned(), port);
        let mut pinned = self.shared.pinned.lock().unwrap_or_else(|e| e.into_inner());
        pinned.next_use += 1;
        let now = pinned.next_use;
        if let Some(kept) = pinned.clients.get_mut(&key) {
            if kept.addrs == sorted {
                kept.last_use = now;
                return Ok(kept.client.clone());
            }
        }
        let client = self.pinned(host, &sorted)?;
        if pinned.clients.len() >= MAX_PINNED && !pinned.clients.contains_key(&key) {
            let oldest = pinned
                .clients
                .iter()
                .min_by_key(|(_, c)| c.last_use)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                pinned.clients.remove(&oldest);
            }
        }
        pinned.clients.insert(
            key,
            PinnedClient {
                addrs: sorted,
                client: client.clone(),
                last_use: now,
            },
        );
        Ok(client)
    }

    /// A client for a protocol that drives its own HTTP exchange with one
    /// origin (such as an MCP transport): `url` is checked against the
    /// policy, its host resolved with the policy's address checks, and the
    /// client can reach exactly those addresses (kept and reused while they
    /// stay the same). It follows no redirect (a
    /// redirect is returned to the caller as is) and uses no proxy.
    ///
    /// Errors: [`Error::EgressDenied`] when the URL, its host or a resolved
    /// address is not allowed.
    pub async fn pinned_client(&self, url: &str) -> Result<reqwest::Client> {
        let policy = &self.shared.policy;
        let url = policy.check_url(url)?;
        let (host, port) = policy.check_parsed(&url).map_err(denied)?;
        let addrs = resolve_checked(policy, &host, port).await.map_err(denied)?;
        self.pinned_for(&host, port, &addrs)
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &EgressPolicy {
        &self.shared.policy
    }

    /// A request builder for `url`, after the allowlist check. Send it with
    /// [`send`](Self::send), which checks every hop.
    pub fn request(&self, method: Method, url: &str) -> Result<reqwest::RequestBuilder> {
        let url = self.shared.policy.check_url(url)?;
        Ok(self.shared.builder.request(method, url))
    }

    fn strip_on_cross_origin(&self, headers: &mut HeaderMap) {
        for h in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, HOST] {
            headers.remove(h);
        }
        if let Some(r) = &self.redactor {
            let secret: Vec<_> = headers
                .iter()
                .filter(|(_, v)| r.contains_secret(v.as_bytes()))
                .map(|(k, _)| k.clone())
                .collect();
            for k in secret {
                headers.remove(k);
            }
        }
    }

    /// Sends a request made by [`request`](Self::request), following up
    /// to [`MAX_REDIRECTS`] redirects, each checked like the first.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let mut req = request.build().map_err(map_reqwest)?;
        let mut hops = 0;
        loop {
            let url = req.url().clone();
            let policy = &self.shared.policy;
            let (host, port) = policy.check_parsed(&url).map_err(denied)?;
            let addrs = resolve_checked(policy, &host, port).await.map_err(denied)?;
            let next = req.try_clone();
            let method = req.method().clone();
            let response = self
                .pinned_for(&host, port, &addrs)?
                .execute(req)
                .await
                .map_err(map_reqwest)?;
            let status = response.status();
            let location = match response.headers().get(LOCATION) {
                Some(l) if status.is_redirection() => l.to_str().ok().map(str::to_owned),
                _ => None,
            };
            let (Some(location), Some(mut next)) = (location, next) else {
                return Ok(response);
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(denied("too many redirects"));
            }
            let target = url
                .join(&location)
                .map_err(|_| denied("redirect target does not parse"))?;
            if let Err(reason) = policy.check_parsed(&target) {
                return Err(denied(format!("redirect refused: {reason}")));
            }
            let to_get = status == StatusCode::SEE_OTHER
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST);
            if to_get {
                *next.method_mut() = Method::GET;
                *next.body_mut() = None;
                next.headers_mut().remove(reqwest::header::CONTENT_TYPE);
                next.headers_mut().remove(reqwest::header::CONTENT_LENGTH);
            }
            if !same_origin(&url, &target) {
                self.strip_on_cross_origin(next.headers_mut());
            }
            *next.url_mut() = target;
            req = next;
        }
    }

    /// `GET url` and read at most `max_body` bytes of the body as text.
    pub async fn get_text(&self, url: &str, max_body: usize) -> Result<EgressResponse> {
        let mut response = self.send(self.request(Method::GET, url)?).await?;
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(map_reqwest)? {
            let room = max_body.saturating_sub(body.len());
            body.extend_from_slice(chunk.get(..chunk.len().min(room)).unwrap_or_default());
            if body.len() >= max_body {
                break;
            }
        }
        Ok(EgressResponse {
            status,
            url: final_url,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
