//! [`EgressPolicy`]: where a tenant's tools may connect, and which
//! credentials the egress proxy injects on their behalf.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use reqwest::Url;
use rustls_pki_types::CertificateDer;

use super::address::is_internal_address;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) internal: bool,
}

/// How the egress proxy presents a vault secret to a host. In
/// configuration: `"bearer"`, `{"basic": {"username": "…"}}` or
/// `{"header": {"name": "X-Api-Key"}}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CredentialInjection {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<username>:<secret>)`.
    Basic {
        /// The user name.
        username: String,
    },
    /// `<name>: <secret>` (for example `X-Api-Key`).
    Header {
        /// The header name.
        name: String,
    },
}

/// A credential the proxy adds to requests for one `host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Injection {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) integration: String,
    pub(crate) how: CredentialInjection,
}

/// Where a tenant's tools may connect. Default: nowhere.
///
/// ```
/// use tenant_tools::{CredentialInjection, EgressPolicy};
/// let policy = EgressPolicy::deny_all()
///     .allow("api.example.com")?          // any port
///     .allow("hooks.example.com:8443")?   // this port only
///     // The egress proxy adds this tenant's `github` secret to requests
///     // for api.github.com; the sandboxed process never sees it.
///     .allow("api.github.com:443")?
///     .inject("api.github.com:443", "github", CredentialInjection::Bearer)?;
/// assert!(policy.check_url("https://api.example.com/v1").is_ok());
/// assert!(policy.check_url("https://hooks.example.com/").is_err()); // port 443
/// assert!(policy.check_url("http://169.254.169.254/latest").is_err());
/// # Ok::<(), tenant_tools::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct EgressPolicy {
    rules: Arc<Vec<Rule>>,
    injections: Arc<Vec<Injection>>,
    roots: Arc<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressPolicy")
            .field("rules", &self.rules)
            .field("injections", &self.injections)
            .field("extra_roots", &self.roots.len())
            .finish()
    }
}

pub(crate) fn denied(reason: impl Into<String>) -> Error {
    Error::EgressDenied {
        reason: reason.into(),
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) and validates both.
pub(crate) fn parse_host_port(entry: &str) -> Result<(String, Option<u16>)> {
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

/// Lower case, without brackets or a trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
            ..self
        })
    }

    /// Allows `host` or `host:port` (public addresses only).
    pub fn allow(self, entry: &str) -> Result<Self> {
        self.with_rule(entry, false)
    }

    /// Allows `host[:port]` even when it resolves to a loopback, private,
    /// link-local or other internal address. The allowance belongs to this
    /// entry only: another entry for the same host (or the same host on
    /// another port) stays public-only. For deliberate internal
    /// integrations only.
    pub fn allow_internal(self, entry: &str) -> Result<Self> {
        self.with_rule(entry, true)
    }

    /// Has the egress proxy add the tenant's secret for `integration` to
    /// every request for `host[:port]` (which must be allowed), presented
    /// as `how`. The proxy terminates TLS for that host with a per-run CA
    /// that only the run trusts, so that the sandboxed process never holds
    /// the secret. The secret is fetched at run time, only for a tool that
    /// declares the integration and a tenant the policy grants it.
    pub fn inject(self, entry: &str, integration: &str, how: CredentialInjection) -> Result<Self> {
        let (host, port) = parse_host_port(entry)?;
        crate::tool::validate_name("integration", integration)?;
        match &how {
            CredentialInjection::Header { name } if !valid_header_name(name) => {
                return Err(Error::InvalidName {
                    kind: "header",
                    reason: format!("`{name}` is not a header name"),
                })
            }
            CredentialInjection::Basic { username } if username.contains(':') => {
                return Err(Error::InvalidName {
                    kind: "user name",
                    reason: "a Basic user name cannot contain `:`".into(),
                })
            }
            _ => {}
        }
        if !self.covers(&host, port) {
            return Err(Error::InvalidName {
                kind: "egress host",
                reason: format!("`{entry}` is not allowed, so nothing can be injected for it"),
            });
        }
        let mut injections = (*self.injections).clone();
        injections.push(Injection {
            host,
            port,
            integration: integration.to_owned(),
            how,
        });
        Ok(Self {
            injections: Arc::new(injections),
            ..self
        })
    }

    /// Also trusts the certificates in `pem` (one or more PEM blocks) when
    /// verifying allowed hosts — for a tenant integration with a private
    /// CA. Sandboxed runs get them in their CA bundle too.
    pub fn trust_pem(self, pem: &[u8]) -> Result<Self> {
        let mut roots = (*self.roots).clone();
        let before = roots.len();
        for block in String::from_utf8_lossy(pem)
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
        {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|_| Error::InvalidName {
                    kind: "certificate",
                    reason: "a PEM block does not decode".into(),
                })?;
            roots.push(CertificateDer::from(der));
        }
        if roots.len() == before {
            return Err(Error::InvalidName {
                kind: "certificate",
                reason: "no PEM certificate found".into(),
            });
        }
        Ok(Self {
            roots: Arc::new(roots),
            ..self
        })
    }

    /// Whether an entry allows `host` on `port` (every port when `None`).
    pub(crate) fn covers(&self, host: &str, port: Option<u16>) -> bool {
        self.rules.iter().any(|r| {
            r.host == host
                && match (r.port, port) {
                    (None, _) => true,
                    (Some(a), Some(b)) => a == b,
                    (Some(_), None) => false,
                }
        })
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule allowing `host:port`.
    pub(crate) fn rule_for(&self, host: &str, port: u16) -> Option<&Rule> {
        // An internal allowance is chosen only from entries matching this
        // very port (or any port).
        self.rules
            .iter()
            .filter(|r| r.host == host && r.port.is_none_or(|p| p == port))
            .max_by_key(|r| r.internal)
    }

    pub(crate) fn injections(&self) -> &[Injection] {
        &self.injections
    }

    pub(crate) fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Checks a parsed URL: scheme, no userinfo, host:port allowed, and an
    /// IP-literal host not internal unless its entry allows it.
    pub(crate) fn check_parsed(&self, url: &Url) -> std::result::Result<(String, u16), String> {
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
        self.check_host(&host, port)?;
        Ok((host, port))
    }

    /// Checks `host:port` (normalized) before any resolution.
    pub(crate) fn check_host(&self, host: &str, port: u16) -> std::result::Result<(), String> {
        let rule = self
            .rule_for(host, port)
            .ok_or_else(|| format!("{host}:{port} is not on the allowlist"))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            if !rule.internal && is_internal_address(ip) {
                return Err(format!("address {ip} is internal"));
            }
        }
        Ok(())
    }

    /// Checks a URL against the allowlist. Resolved addresses are checked
    /// when connecting.
    pub fn check_url(&self, url: &str) -> Result<Url> {
        let parsed = Url::parse(url).map_err(|_| denied("URL does not parse"))?;
        self.check_parsed(&parsed).map_err(denied)?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Listed, but internal without allow_internal.
        assert!(p.check_url("http://[::1]:8080/").is_err());
    }

    #[test]
    fn an_internal_allowance_is_per_host_and_port() {
        let p = EgressPolicy::deny_all()
            .allow_internal("127.0.0.1:8080")
            .unwrap()
            .allow("127.0.0.1:9090")
            .unwrap();
        assert!(p.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(p.check_url("http://127.0.0.1:9090/").is_err());
        assert!(p.rule_for("127.0.0.1", 8080).is_some_and(|r| r.internal));
        assert!(p.rule_for("127.0.0.1", 9090).is_some_and(|r| !r.internal));
    }

    #[test]
    fn injection_needs_an_allowed_host_and_a_valid_header() {
        let p = EgressPolicy::deny_all()
            .allow("api.example.com:443")
            .unwrap();
        assert!(p
            .clone()
            .inject("other.example.com", "gh", CredentialInjection::Bearer)
            .is_err());
        assert!(p
            .clone()
            .inject(
                "api.example.com:443",
                "gh",
                CredentialInjection::Header {
                    name: "X-Key\r\nEvil: 1".into()
                }
            )
            .is_err());
        assert!(p
            .inject("api.example.com:443", "gh", CredentialInjection::Bearer)
            .is_ok());
    }
}
