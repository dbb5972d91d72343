//! Trust anchors for allowed hosts: the system's roots plus any the
//! tenant's policy adds, as a rustls configuration for the supervisor and
//! as a PEM bundle for sandboxed runs (which have no `/etc/ssl`).

use std::sync::{Arc, OnceLock};

use base64::Engine;
use rustls_pki_types::CertificateDer;

use super::policy::EgressPolicy;
use crate::error::{Error, Result};

fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        tracing::debug!(count = found.certs.len(), "loaded native TLS roots");
        found.certs
    })
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the system's roots and the policy's.
pub(crate) fn client_config(policy: &EgressPolicy) -> Result<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(native_roots().iter().cloned());
    let (_, rejected) = store.add_parsable_certificates(policy.extra_roots().iter().cloned());
    if rejected > 0 {
        return Err(Error::InvalidName {
            kind: "certificate",
            reason: format!("{rejected} trusted certificate(s) do not parse"),
        });
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Http {
            message: "TLS configuration".into(),
            source: Some(Box::new(e)),
        })?
        .with_root_certificates(store)
        .with_no_client_auth())
}

pub(crate) fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 70);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The system's roots, the policy's, and `extra` (a run's CA), as PEM.
pub(crate) fn bundle_pem(policy: &EgressPolicy, extra: Option<&str>) -> Vec<u8> {
    static SYSTEM: OnceLock<String> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| native_roots().iter().map(|c| pem(c)).collect());
    let mut out = system.clone();
    for c in policy.extra_roots() {
        out.push_str(&pem(c));
    }
    if let Some(extra) = extra {
        out.push_str(extra);
    }
    out.into_bytes()
}
