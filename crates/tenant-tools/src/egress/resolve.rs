//! Resolution with the policy's address checks, shared by the in-process
//! client and the egress proxy: the addresses checked are the addresses
//! connected to, so a name cannot be re-pointed between check and use.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::address::is_internal_address;
use super::policy::EgressPolicy;

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `host:port` (normalized) after checking the allowlist.
/// Refuses the whole answer when any address is internal and the entry
/// for this host *and port* does not allow internal addresses: mixing
/// public and internal records is a rebinding trick.
pub(crate) async fn resolve_checked(
    policy: &EgressPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    policy.check_host(host, port)?;
    let internal_ok = policy.rule_for(host, port).is_some_and(|r| r.internal);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(format!("{host} does not resolve: {e}")),
            Err(_) => return Err(format!("{host} took too long to resolve")),
        };
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    if !internal_ok {
        if let Some(bad) = addrs.iter().find(|a| is_internal_address(a.ip())) {
            return Err(format!("{host} resolves to internal address {}", bad.ip()));
        }
    }
    Ok(addrs)
}

/// Connects to the first address that accepts.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = std::io::Error::other("no address");
    for addr in addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::from(std::io::ErrorKind::TimedOut),
        }
    }
    Err(last)
}
