//! Security decisions are emitted as `tenant_audit` events inside the
//! context's span, and never carry key material or tokens.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::*;
use tenant_core::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn rejected_jwt_is_audited_without_the_token() {
    let verifier = ClaimVerifier::builder()
        .hs256(b"0123456789abcdef0123456789abcdef-hs256")
        .issuer("iss")
        .audience("aud")
        .build()
        .unwrap();
    let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.";
    let logs = capture(|| {
        assert!(verifier.verify(token, &issuer()).is_err());
    });
    assert!(logs.contains(AUDIT_TARGET), "{logs}");
    assert!(logs.contains("denied"), "{logs}");
    assert!(logs.contains("algorithm is not allowed"), "{logs}");
    assert!(!logs.contains("eyJ"), "token leaked into logs: {logs}");
}

#[test]
fn decisions_carry_tenant_principal_and_agent_from_the_span() {
    let issuer = issuer();
    let ctx = root(&issuer);
    let logs = capture(|| {
        let _span = ctx.span().entered();
        ctx.audit_allowed("memory.read", "thread:42");
        ctx.audit_denied("tool.call", "shell", &"not in allowlist");
    });
    let tenant = ctx.tenant().to_string();
    assert!(logs.contains(&format!("tenant_id={tenant}")), "{logs}");
    assert!(logs.contains("decision=\"allowed\""), "{logs}");
    assert!(logs.contains("decision=\"denied\""), "{logs}");
    assert!(logs.contains("not in allowlist"), "{logs}");
    assert!(logs.contains("agent=main"), "{logs}");
    assert!(!logs.contains(ctx.to_token().as_str()));
}
