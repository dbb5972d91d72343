//! Secrets at call time: the [`Credentials`] accessor.

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;
use tenant_core::TenantContext;

use crate::error::{Error, Result};
use crate::policy::ToolPolicy;
use crate::redaction::Redactor;
use crate::vault::Vault;

/// The only way a tool obtains a secret.
///
/// A secret is returned only for an integration the tool declared
/// ([`Tool::integrations`](crate::Tool::integrations)) and the tenant's
/// policy grants; every secret handed out is remembered by the run's
/// [`Redactor`] so the executor scrubs it (in its common encodings) from
/// the output and errors of this and every later call of the run. `Debug`
/// prints no secret.
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

    /// Whether the tool declared `integration`.
    pub(crate) fn declares(&self, integration: &str) -> bool {
        self.declared.iter().any(|d| d == integration)
    }

    /// The secret of this tenant for `integration`.
    ///
    /// Errors: [`Error::IntegrationNotDeclared`],
    /// [`Error::IntegrationNotAllowed`], [`Error::NoVault`],
    /// [`Error::SecretNotFound`], [`Error::Context`].
    pub async fn get(&self, integration: &str) -> Result<SecretString> {
        self.ctx.check()?;
        let resource = format!("{}/{}", self.tool, integration);
        let denied = |e: Error| {
            self.ctx.deny("tool.credentials", &resource, &e);
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
        match vault.get(self.ctx.tenant(), integration).await? {
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
