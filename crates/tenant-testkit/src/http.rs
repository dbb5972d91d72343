//! A minimal blocking HTTP/1.0 client for loopback health checks (Qdrant's
//! `/readyz` and `/cluster`), so readiness polling needs no async runtime.
//!
//! HTTP/1.0 keeps it small: the server sends no chunked encoding and closes
//! the connection after the response, so the body is everything up to EOF.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The largest response accepted (health and cluster answers are tiny).
const MAX_RESPONSE: u64 = 1 << 20;

/// A response: status code and body.
#[derive(Debug)]
pub(crate) struct Response {
    /// The HTTP status code.
    pub(crate) status: u16,
    /// The body, lossily decoded.
    pub(crate) body: String,
}

/// Sends `GET path` to `127.0.0.1:port` (with an `api-key` header when
/// given) and reads the whole response, or returns `None` on any failure.
pub(crate) fn get(
    port: u16,
    path: &str,
    api_key: Option<&str>,
    timeout: Duration,
) -> Option<Response> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(key) = api_key {
        request.push_str(&format!("api-key: {key}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).ok()?;
    parse(&raw)
}

/// Splits a raw HTTP/1.x response into status and body.
fn parse(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let response = parse(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok").expect("parse");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "ok");
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"SSH-2.0\r\n\r\n").is_none());
    }
}
