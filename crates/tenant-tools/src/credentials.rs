//! Secrets at call time: the [`Credentials`] accessor and output redaction.

use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tenant_core::TenantContext;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::policy::ToolPolicy;
use crate::vault::Vault;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The only way a tool obtains a secret.
///
/// A secret is returned only for an integration the tool declared
/// ([`Tool::integrations`](crate::Tool::integrations)) and the tenant's
/// policy grants; every secret handed out is remembered for this call so the
/// executor can redact it (and its base64/hex forms) from the tool's output
/// and error messages. `Debug` prints no secret.
#[derive(Clone)]
pub struct Credentials {
    ctx: TenantContext,
    tool: Arc<str>,
    declared: Arc<[String]>,
    policy: Arc<ToolPolicy>,
    vault: Option<Arc<dyn Vault>>,
    redactor: Redactor,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tool", &self.tool)
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn new(
        ctx: TenantContext,
        tool: Arc<str>,
        declared: Arc<[String]>,
        policy: Arc<ToolPolicy>,
        vault: Option<Arc<dyn Vault>>,
        redactor: Redactor,
    ) -> Self {
        Self {
            ctx,
            tool,
            declared,
            policy,
            vault,
            redactor,
        }
    }

    /// The secret of this tenant for `integration`.
    ///
    /// Errors: [`Error::IntegrationNotDeclared`],
    /// [`Error::IntegrationNotAllowed`], [`Error::NoVault`],
    /// [`Error::SecretNotFound`], [`Error::Context`].
    pub fn get(&self, integration: &str) -> Result<SecretString> {
        self.ctx.check()?;
        let resource = format!("{}/{}", self.tool, integration);
        let denied = |e: Error| {
            self.ctx.audit_denied("tool.credentials", &resource, &e);
            Err(e)
        };
        if !self.declared.iter().any(|d| d == integration) {
            return denied(Error::IntegrationNotDeclared {
                tool: self.tool.to_string(),
                integration: integration.to_owned(),
            });
        }
        if !self.policy.allows_integration(integration) {
            return denied(Error::IntegrationNotAllowed {
                integration: integration.to_owned(),
            });
        }
        let Some(vault) = &self.vault else {
            return denied(Error::NoVault);
        };
        match vault.get(self.ctx.tenant(), integration)? {
            Some(secret) => {
                self.redactor.remember(&secret);
                self.ctx.audit_allowed("tool.credentials", &resource);
                Ok(secret)
            }
            None => denied(Error::SecretNotFound {
                integration: integration.to_owned(),
            }),
        }
    }
}

/// Remembers the secrets handed out during one call and scrubs them from
/// text and JSON.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Arc<Mutex<Vec<Zeroizing<String>>>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor { .. }")
    }
}

impl Redactor {
    /// A redactor that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret (and its common encodings) to the redaction list.
    pub fn remember(&self, secret: &SecretString) {
        let raw = secret.expose_secret();
        if raw.is_empty() {
            return;
        }
        let mut forms = vec![
            Zeroizing::new(raw.to_owned()),
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw)),
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)),
            Zeroizing::new(hex::encode(raw)),
        ];
        let mut needles = self.needles.lock().unwrap_or_else(|e| e.into_inner());
        forms.retain(|f| !needles.iter().any(|n| n.as_str() == f.as_str()));
        needles.extend(forms);
        // Longest first, so a secret containing another is scrubbed whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    /// Whether any secret has been remembered.
    pub fn is_empty(&self) -> bool {
        self.needles.lock().map(|n| n.is_empty()).unwrap_or(false)
    }

    /// `text` with every remembered secret replaced by [`REDACTED`].
    pub fn redact_str(&self, text: &str) -> String {
        let needles = self.needles.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_owned();
        for n in needles.iter() {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts every string (keys included) of a JSON value in place.
    pub fn redact_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.redact_str(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.redact_json(&mut v);
                    map.insert(self.redact_str(&k), v);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_raw_and_encoded_forms() {
        let r = Redactor::new();
        r.remember(&SecretString::from("s3cr3t-token".to_owned()));
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t-token");
        let out = r.redact_str(&format!(
            "a s3cr3t-token b {b64} c {}",
            hex::encode("s3cr3t-token")
        ));
        assert_eq!(out, "a [REDACTED] b [REDACTED] c [REDACTED]");
        let mut v = serde_json::json!({"s3cr3t-token": ["x s3cr3t-token"]});
        r.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"[REDACTED]": ["x [REDACTED]"]}));
    }
}
