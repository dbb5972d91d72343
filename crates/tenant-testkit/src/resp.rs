//! A minimal blocking RESP2 client for setting up Redis servers (cluster
//! slots and handshakes) without an async runtime or the `redis` crate.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::TestkitError;

/// The largest bulk string or array accepted (setup replies are small).
const MAX_LEN: usize = 1 << 20;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK` and friends.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` (lossily decoded), `None` for the null bulk string.
    Bulk(Option<String>),
    /// `*n`, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string reply.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Reply::Simple(text) | Reply::Bulk(Some(text)) => Some(text),
            _ => None,
        }
    }
}

/// Sends one command to `127.0.0.1:port` on a new connection and reads the
/// reply. A server error reply is returned as [`Reply::Error`], not as `Err`.
pub(crate) fn command(port: u16, args: &[&str], timeout: Duration) -> Result<Reply, TestkitError> {
    let context = || format!("sending {:?} to 127.0.0.1:{port}", args.first());
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| TestkitError::io(context(), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| TestkitError::io(context(), e))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| TestkitError::io(context(), e))?;
    read_reply(&mut BufReader::new(stream)).map_err(|e| TestkitError::io(context(), e))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| invalid("reply line without CRLF"))?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| invalid("empty reply"))?;
    let length = || -> std::io::Result<Option<usize>> {
        let n: i64 = rest.parse().map_err(|_| invalid("bad length"))?;
        match usize::try_from(n) {
            Ok(n) if n <= MAX_LEN => Ok(Some(n)),
            Ok(_) => Err(invalid("reply too long")),
            Err(_) => Ok(None),
        }
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| invalid("bad integer")),
        "$" => match length()? {
            None => Ok(Reply::Bulk(None)),
            Some(n) => {
                let mut payload = vec![0u8; n + 2];
                reader.read_exact(&mut payload)?;
                payload.truncate(n);
                Ok(Reply::Bulk(Some(
                    String::from_utf8_lossy(&payload).into_owned(),
                )))
            }
        },
        "*" => match length()? {
            None => Ok(Reply::Array(None)),
            Some(n) => (0..n)
                .map(|_| read_reply(reader))
                .collect::<std::io::Result<Vec<_>>>()
                .map(|items| Reply::Array(Some(items))),
        },
        _ => Err(invalid("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> std::io::Result<Reply> {
        read_reply(&mut raw.as_bytes())
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(parse("+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse("-ERR no\r\n").unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(parse(":42\r\n").unwrap(), Reply::Integer(42));
        assert_eq!(
            parse("$3\r\nabc\r\n").unwrap(),
            Reply::Bulk(Some("abc".into()))
        );
        assert_eq!(parse("$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse("*2\r\n:1\r\n$1\r\nx\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Bulk(Some("x".into()))]))
        );
        assert!(parse("?\r\n").is_err());
        assert!(parse("$99999999999\r\n").is_err());
        assert!(parse("+OK").is_err());
    }
}
