//! [`ResourceUrl`]: the canonical URL that names an MCP server as an OAuth
//! protected resource (RFC 8707 resource indicator, RFC 9728 metadata).

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

use crate::error::{Error, Result};

/// The well-known path of protected-resource metadata (RFC 9728 §3).
pub const METADATA_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The longest resource URL accepted.
const MAX_RESOURCE_LEN: usize = 2048;

/// The canonical URL of an MCP server: the value a token's `aud` must
/// hold for that server, and the `resource` of its metadata.
///
/// Canonical means: an absolute `https` URL (`http` only for a loopback
/// host), lower-case scheme and host, no default port, no user
/// information, query or fragment, and no trailing slash (`https://h/` is
/// `https://h`; a path ending in `/` is refused as ambiguous). Tokens are
/// compared with it exactly.
///
/// ```
/// use tenant_mcp::ResourceUrl;
/// let r = ResourceUrl::parse("https://MCP.example.com:443/tenants/acme/mcp")?;
/// assert_eq!(r.as_str(), "https://mcp.example.com/tenants/acme/mcp");
/// assert_eq!(
///     r.metadata_url(),
///     "https://mcp.example.com/.well-known/oauth-protected-resource/tenants/acme/mcp"
/// );
/// assert!(ResourceUrl::parse("http://mcp.example.com/mcp").is_err());
/// assert!(ResourceUrl::parse("https://mcp.example.com/mcp#frag").is_err());
/// # Ok::<(), tenant_mcp::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceUrl {
    canonical: String,
    origin: String,
    path: String,
    host: String,
    port: u16,
    loopback: bool,
}

impl fmt::Debug for ResourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResourceUrl").field(&self.canonical).finish()
    }
}

impl fmt::Display for ResourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl ResourceUrl {
    /// Parses and canonicalises `url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for anything but a canonical-able
    /// absolute URL as described on the type.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidResource {
            url: url.chars().take(200).collect(),
            reason,
        };
        if url.len() > MAX_RESOURCE_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let parsed = Url::parse(url).map_err(|_| bad("not an absolute URL"))?;
        if parsed.fragment().is_some() {
            return Err(bad("a resource indicator has no fragment"));
        }
        if parsed.query().is_some() {
            return Err(bad("a resource indicator has no query"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("a resource indicator has no user information"));
        }
        let (host, loopback) = match parsed.host() {
            Some(Host::Domain(d)) => (d.to_owned(), d == "localhost"),
            Some(Host::Ipv4(ip)) => (ip.to_string(), IpAddr::V4(ip).is_loopback()),
            Some(Host::Ipv6(ip)) => (format!("[{ip}]"), IpAddr::V6(ip).is_loopback()),
            None => return Err(bad("the URL has no host")),
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(bad("plain http is allowed for loopback hosts only")),
            _ => return Err(bad("the scheme must be https")),
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("the URL has no port"))?;
        let mut path = parsed.path().to_owned();
        if path == "/" {
            path.clear();
        } else if path.ends_with('/') {
            return Err(bad("a path ending in `/` is ambiguous"));
        }
        let origin = match parsed.port() {
            Some(p) => format!("{}://{host}:{p}", parsed.scheme()),
            None => format!("{}://{host}", parsed.scheme()),
        };
        Ok(Self {
            canonical: format!("{origin}{path}"),
            origin,
            path,
            host,
            port,
            loopback,
        })
    }

    /// The canonical URL.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The path the MCP endpoint is served at (`/` for a bare origin).
    pub fn path(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }

    /// The path of the protected-resource metadata: the well-known prefix
    /// inserted before the resource's path (RFC 9728 §3.1).
    pub fn metadata_path(&self) -> String {
        format!("{METADATA_WELL_KNOWN}{}", self.path)
    }

    /// The absolute URL of the protected-resource metadata, as advertised
    /// in `WWW-Authenticate: Bearer resource_metadata="…"`.
    pub fn metadata_url(&self) -> String {
        format!("{}{}", self.origin, self.metadata_path())
    }

    /// The `Host` header values a request for this resource may carry
    /// (host, and host with the port).
    pub fn host_header_values(&self) -> Vec<String> {
        vec![self.host.clone(), format!("{}:{}", self.host, self.port)]
    }

    /// `host:port`, as egress policies name destinations.
    pub(crate) fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (given, canonical) in [
            ("https://Example.COM", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            ("https://example.com:443/mcp", "https://example.com/mcp"),
            (
                "https://example.com:8443/mcp",
                "https://example.com:8443/mcp",
            ),
            ("http://127.0.0.1:9/mcp", "http://127.0.0.1:9/mcp"),
            ("http://[::1]:9/mcp", "http://[::1]:9/mcp"),
            ("http://localhost:9/a/b", "http://localhost:9/a/b"),
        ] {
            assert_eq!(ResourceUrl::parse(given).unwrap().as_str(), canonical);
        }
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "mcp",
            "/mcp",
            "ftp://example.com/mcp",
            "http://example.com/mcp",
            "http://10.0.0.1/mcp",
            "https://example.com/mcp?x=1",
            "https://example.com/mcp#f",
            "https://user:pw@example.com/mcp",
            "https://example.com/mcp/",
        ] {
            assert!(ResourceUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(4096));
        assert!(ResourceUrl::parse(&long).is_err());
    }

    #[test]
    fn metadata_url_inserts_the_well_known_prefix() {
        let r = ResourceUrl::parse("https://example.com").unwrap();
        assert_eq!(
            r.metadata_url(),
            "https://example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(r.path(), "/");
        let r = ResourceUrl::parse("http://127.0.0.1:8080/mcp").unwrap();
        assert_eq!(
            r.metadata_url(),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            r.host_header_values(),
            vec!["127.0.0.1".to_owned(), "127.0.0.1:8080".to_owned()]
        );
    }
}
