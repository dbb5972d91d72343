//! Starts a real redis-server and simulates an outage.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use tenant_testkit::TestRedis;

/// Sends one RESP command and returns the first reply line plus, for bulk
/// strings, the payload.
fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    (&stream).write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end().to_owned();
    if let Some(len) = line.strip_prefix('$') {
        if len == "-1" {
            return Ok("(nil)".to_owned());
        }
        let mut payload = String::new();
        reader.read_line(&mut payload)?;
        return Ok(payload.trim_end().to_owned());
    }
    Ok(line)
}

#[test]
fn set_get_stop_restart() {
    let mut redis = TestRedis::start().expect("start redis");
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert!(redis.is_running());

    assert_eq!(
        command(port, &["SET", "greeting", "hello"]).expect("set"),
        "+OK"
    );
    assert_eq!(command(port, &["GET", "greeting"]).expect("get"), "hello");
    // Persistence is off.
    assert_eq!(
        command(port, &["CONFIG", "GET", "appendonly"]).expect("config"),
        "*2"
    );

    let first_pid = redis.pid().expect("pid while running");
    redis.stop().expect("stop");
    assert!(!redis.is_running());
    assert_eq!(redis.pid(), None);
    let refused = command(port, &["PING"]).expect_err("server is down");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    redis.stop().expect("stopping twice is a no-op");

    redis.restart().expect("restart");
    assert_eq!(redis.port(), port, "same port after restart");
    assert_ne!(redis.pid(), Some(first_pid));
    assert_eq!(command(port, &["PING"]).expect("ping"), "+PONG");
    assert_eq!(
        command(port, &["GET", "greeting"]).expect("get"),
        "(nil)",
        "restarted server starts empty"
    );
    assert_eq!(command(port, &["SET", "k", "v"]).expect("set"), "+OK");

    let log = redis.log_path().expect("log while running");
    let run_dir = log.parent().expect("run dir").to_path_buf();
    let pid = redis.pid().expect("pid");
    drop(redis);
    assert!(!run_dir.exists(), "run dir removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server gone after drop"
    );
}

#[test]
fn shared_instance_serves_requests() {
    let redis = TestRedis::shared();
    assert!(std::ptr::eq(redis, TestRedis::shared()));
    assert_eq!(command(redis.port(), &["PING"]).expect("ping"), "+PONG");
}
