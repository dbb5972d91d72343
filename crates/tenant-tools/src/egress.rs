//! Egress: an HTTP client that reaches only a tenant's allowlisted
//! `host[:port]` pairs.
//!
//! Three checks, all before any byte leaves the host:
//! 1. the URL (scheme `http`/`https`, host and port on the allowlist; an IP
//!    literal host is checked against the forbidden ranges right away);
//! 2. every address the name resolves to, in a custom resolver: loopback,
//!    private, link-local (cloud metadata), CGNAT, multicast, unspecified
//!    and the IPv6 equivalents (including IPv4-mapped/NAT64/6to4 embeddings)
//!    are refused unless the rule was added with
//!    [`EgressPolicy::allow_internal`];
//! 3. every redirect target, again through 1 and 2.
//!
//! Proxies from the environment are ignored (a relay would hide the real
//! destination), so plain HTTP and TLS take the same path.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::error::{Error, Result};

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;
/// Default cap on a response body read by [`EgressClient::get_text`].
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    host: String,
    port: Option<u16>,
    internal: bool,
}

/// Where a tenant's tools may connect. Default: nowhere.
///
/// ```
/// use tenant_tools::EgressPolicy;
/// let policy = EgressPolicy::deny_all()
///     .allow("api.example.com")?          // any port
///     .allow("hooks.example.com:8443")?;   // this port only
/// assert!(policy.check_url("https://api.example.com/v1").is_ok());
/// assert!(policy.check_url("https://hooks.example.com/").is_err()); // port 443
/// assert!(policy.check_url("http://169.254.169.254/latest").is_err());
/// # Ok::<(), tenant_tools::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct EgressPolicy {
    rules: Arc<Vec<Rule>>,
}

#[derive(Debug)]
struct Violation(String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Violation {}

fn denied(reason: impl Into<String>) -> Error {
    Error::EgressDenied {
        reason: reason.into(),
    }
}

fn parse_host_port(entry: &str) -> Result<(String, Option<u16>)> {
    let bad = || Error::InvalidName {
        kind: "egress host",
        reason: format!("`{entry}` is not host[:port]"),
    };
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_owned(), port)
    } else {
        match entry.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (entry.to_owned(), None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad()))
        .transpose()?;
    let host = normalize_host(&host);
    let valid = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !valid {
        return Err(bad());
    }
    Ok((host, port))
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `ip` lies in a range tools must not reach by default.
pub fn is_internal_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT, incl. 100.100.100.200 metadata
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let seg = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local, incl. fd00:ec2::254
        || (seg[0] & 0xffc0) == 0xfe80 // link local
        || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (seg[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        || (seg[0] == 0x64 && seg[1] == 0xff9b && is_internal_v4(embedded_v4(seg[6], seg[7])))
        || (seg[0] == 0x2002 && is_internal_v4(embedded_v4(seg[1], seg[2])))
}

impl EgressPolicy {
    /// No destination at all.
    pub fn deny_all() -> Self {
        Self::default()
    }

    fn with_rule(self, entry: &str, internal: bool) -> Result<Self> {
        let (host, port) = parse_host_port(entry)?;
        let mut rules = (*self.rules).clone();
        rules.push(Rule {
            host,
            port,
            internal,
        });
        Ok(Self {
            rules: Arc::new(rules),
        })
    }

    /// Allows `host` or `host:port` (public addresses only).
    pub fn allow(self, entry: &str) -> Result<Self> {
        self.with_rule(entry, false)
    }

    /// Allows `host[:port]` even when it resolves to a loopback, private or
    /// link-local address. For deliberate internal integrations only.
    pub fn allow_internal(self, entry: &str) -> Result<Self> {
        self.with_rule(entry, true)
    }

    fn rule_for(&self, host: &str, port: u16) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.host == host && r.port.is_none_or(|p| p == port))
    }

    fn host_allows_internal(&self, host: &str) -> Option<bool> {
        let mut listed = None;
        for r in self.rules.iter().filter(|r| r.host == host) {
            listed = Some(listed.unwrap_or(false) || r.internal);
        }
        listed
    }

    fn check_parsed(&self, url: &Url) -> std::result::Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme `{}` is not allowed", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".into());
        }
        let host = url
            .host_str()
            .map(normalize_host)
            .ok_or_else(|| "URL has no host".to_owned())?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "URL has no port".to_owned())?;
        let rule = self
            .rule_for(&host, port)
            .ok_or_else(|| format!("{host}:{port} is not on the allowlist"))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            if !rule.internal && is_internal_address(ip) {
                return Err(format!("address {ip} is internal"));
            }
        }
        Ok(())
    }

    /// Checks a URL against the allowlist (step 1 above). Resolution is
    /// checked when connecting.
    pub fn check_url(&self, url: &str) -> Result<Url> {
        let parsed = Url::parse(url).map_err(|_| denied("URL does not parse"))?;
        self.check_parsed(&parsed).map_err(denied)?;
        Ok(parsed)
    }
}

struct PolicyResolver {
    policy: EgressPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = normalize_host(name.as_str());
        let internal_ok = self.policy.host_allows_internal(&host);
        Box::pin(async move {
            let Some(internal_ok) = internal_ok else {
                let e: Box<dyn StdError + Send + Sync> =
                    Box::new(Violation(format!("{host} is not on the allowlist")));
                return Err(e);
            };
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // Refuse the whole answer if any address is internal: mixing
            // public and internal records is a rebinding trick.
            if let Some(bad) = addrs.iter().find(|a| is_internal_address(a.ip())) {
                if !internal_ok {
                    let e: Box<dyn StdError + Send + Sync> = Box::new(Violation(format!(
                        "{host} resolves to internal address {}",
                        bad.ip()
                    )));
                    return Err(e);
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn tls_config() -> Result<rustls::ClientConfig> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    let roots = ROOTS
        .get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, "loaded native TLS roots");
            Arc::new(store)
        })
        .clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Http(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn violation_in(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(v) = err.downcast_ref::<Violation>() {
            return Some(v.0.clone());
        }
        cur = err.source();
    }
    None
}

/// Maps a reqwest error, surfacing a policy violation as
/// [`Error::EgressDenied`].
fn map_reqwest(e: reqwest::Error) -> Error {
    match violation_in(&e) {
        Some(reason) => denied(reason),
        None => Error::Http(e.without_url().to_string()),
    }
}

/// An HTTP client bound to one [`EgressPolicy`]. Obtain it from
/// [`ToolCall::http`](crate::ToolCall::http) inside a tool.
#[derive(Clone)]
pub struct EgressClient {
    policy: EgressPolicy,
    client: reqwest::Client,
}

impl fmt::Debug for EgressClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressClient")
            .field("policy", &self.policy)
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

impl EgressClient {
    /// A client enforcing `policy`.
    pub fn new(policy: EgressPolicy) -> Result<Self> {
        let redirect_policy = policy.clone();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(Violation("too many redirects".into()));
            }
            match redirect_policy.check_parsed(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(reason) => attempt.error(Violation(format!("redirect refused: {reason}"))),
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect)
            .dns_resolver(PolicyResolver {
                policy: policy.clone(),
            })
            .tls_backend_preconfigured(tls_config()?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(map_reqwest)?;
        Ok(Self { policy, client })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// A request builder for `url`, after the allowlist check. Redirects
    /// and name resolution of the request are checked by the client.
    pub fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder> {
        let url = self.policy.check_url(url)?;
        Ok(self.client.request(method, url))
    }

    /// Sends a request made by [`request`](Self::request).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        request.send().await.map_err(map_reqwest)
    }

    /// `GET url` and read at most `max_body` bytes of the body as text.
    pub async fn get_text(&self, url: &str, max_body: usize) -> Result<EgressResponse> {
        let mut response = self.send(self.request(reqwest::Method::GET, url)?).await?;
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(map_reqwest)? {
            let room = max_body.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(is_internal_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "1.1.1.1"] {
            assert!(!is_internal_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_against_host_and_port() {
        let p = EgressPolicy::deny_all()
            .allow("api.example.com:443")
            .unwrap()
            .allow("[::1]:8080")
            .unwrap();
        assert!(p.check_url("https://API.example.com./x").is_ok());
        assert!(p.check_url("http://api.example.com/x").is_err());
        assert!(p.check_url("https://evil.example.com/").is_err());
        assert!(p.check_url("ftp://api.example.com:443/").is_err());
        assert!(p.check_url("https://user:pw@api.example.com/").is_err());
        // Listed, but an internal literal without allow_internal.
        assert!(p.check_url("http://[::1]:8080/").is_err());
    }
}
