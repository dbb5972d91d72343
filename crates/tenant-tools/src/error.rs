//! The one error type of `tenant-tools`.

/// Errors of `tenant-tools`.
///
/// Every failure is closed: a call that returns one of these did not run the
/// tool (or its result was withheld). Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant context failed its check (expired, revoked, forged, ...).
    #[error(transparent)]
    Context(#[from] tenant_core::Error),
    /// The tool is not allowed for this tenant or this context (or does not
    /// exist: the two are indistinguishable to the caller on purpose).
    #[error("tool `{tool}` is not allowed for this context")]
    ToolNotAllowed {
        /// The tool name asked for.
        tool: String,
    },
    /// A tool with this name is already registered.
    #[error("tool `{0}` is already registered")]
    DuplicateTool(String),
    /// A name (tool, integration, host) is malformed.
    #[error("invalid {kind}: {reason}")]
    InvalidName {
        /// What kind of name.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tool's input schema is not a schema this crate can enforce.
    #[error("tool `{tool}` has an unsupported input schema: {reason}")]
    InvalidSchema {
        /// The tool.
        tool: String,
        /// What is unsupported.
        reason: String,
    },
    /// The input does not match the tool's input schema.
    #[error("input for tool `{tool}` is invalid at `{path}`: {reason}")]
    InvalidInput {
        /// The tool.
        tool: String,
        /// JSON pointer of the offending value.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The tool asked for an integration it did not declare.
    #[error("tool `{tool}` did not declare integration `{integration}`")]
    IntegrationNotDeclared {
        /// The tool.
        tool: String,
        /// The integration asked for.
        integration: String,
    },
    /// The tenant's policy does not grant this integration to the tool.
    #[error("integration `{integration}` is not allowed for this tenant")]
    IntegrationNotAllowed {
        /// The integration asked for.
        integration: String,
    },
    /// The vault holds no secret for this tenant and integration.
    #[error("no secret stored for integration `{integration}`")]
    SecretNotFound {
        /// The integration asked for.
        integration: String,
    },
    /// A vault entry could not be decrypted or parsed (tampered with, copied
    /// from another tenant, or encrypted under another key).
    #[error("vault entry for integration `{integration}` is corrupt or not this tenant's")]
    VaultCorrupt {
        /// The integration asked for.
        integration: String,
    },
    /// The vault's storage failed.
    #[error("vault storage error: {0}")]
    VaultIo(#[source] std::io::Error),
    /// The executor has no vault but a tool asked for credentials.
    #[error("no vault is configured for this executor")]
    NoVault,
    /// The tool ran and reported a failure (message already redacted).
    #[error("tool `{tool}` failed: {message}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// What the tool reported, with secret values redacted.
        message: String,
    },
    /// A workspace path would resolve outside the workspace (`..`, absolute
    /// path, symlink out, swap race) or names a hard-linked file.
    #[error("path `{path}` escapes the workspace")]
    PathEscape {
        /// The path as given.
        path: String,
    },
    /// The executor has no workspace root but a tool asked for a workspace.
    #[error("no workspace root is configured for this executor")]
    NoWorkspace,
    /// File-system I/O inside the workspace failed.
    #[error("workspace I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The egress policy refused a request before any connection was made.
    #[error("egress denied: {reason}")]
    EgressDenied {
        /// Why (host not allowlisted, forbidden address, redirect, scheme).
        reason: String,
    },
    /// An HTTP request failed after the policy allowed it (or the HTTP or
    /// TLS client could not be set up).
    #[error("http error: {message}")]
    Http {
        /// What failed.
        message: String,
        /// The HTTP or TLS library's error (without the URL, which may
        /// carry a secret), when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A requested sandbox isolation layer is not available on this kernel.
    #[error("sandbox layer unavailable: {0}")]
    SandboxUnavailable(String),
    /// Setting up the sandbox failed in the parent or in the child before
    /// `execve`.
    #[error("sandbox setup failed at {stage}: {source}")]
    SandboxSetup {
        /// The setup step that failed.
        stage: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sandbox command was malformed (relative program path, NUL bytes,
    /// too many arguments).
    #[error("invalid sandbox command: {0}")]
    InvalidCommand(String),
    /// The warm pool has no sandbox left and may not grow.
    #[error("warm pool exhausted")]
    PoolExhausted,
    /// A builder was missing a required platform resource.
    #[error("missing configuration: {0}")]
    MissingConfiguration(&'static str),
    /// A recycled sandbox failed its wipe verification and was discarded.
    #[error("sandbox wipe verification failed: {0}")]
    WipeFailed(String),
    /// A workspace path names something other than a regular file (a FIFO,
    /// socket, device or directory), which is never opened for reading or
    /// writing.
    #[error("`{path}` is not a regular file")]
    NotRegularFile {
        /// The path as given.
        path: String,
    },
    /// The workspace's size or inode quota is exhausted.
    #[error("the workspace is full (writing `{path}`)")]
    WorkspaceFull {
        /// The path being written.
        path: String,
    },
    /// A declared sandbox system path is unusable.
    #[error("system path `{path}` is refused: {reason}")]
    InvalidSystemPath {
        /// The path as declared.
        path: String,
        /// Why.
        reason: String,
    },
    /// A duration is longer than this crate accepts.
    #[error("{what} exceeds the maximum of {max:?}")]
    InvalidDuration {
        /// Which duration.
        what: &'static str,
        /// The longest accepted.
        max: std::time::Duration,
    },
    /// A host uid range for a warm pool is taken or out of range.
    #[error("host uid range unavailable: {0}")]
    UidRangeUnavailable(String),
    /// An error whose text held a secret and whose original type could not
    /// be rebuilt without it.
    #[error("{message}")]
    Redacted {
        /// The error's message, with secrets redacted.
        message: String,
    },
}

/// Result alias for `tenant-tools`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error with every secret the redactor knows scrubbed from
    /// its text, source chains included. Every variant is listed: a new
    /// one does not compile until it is handled here.
    pub(crate) fn redacted(self, r: &crate::redaction::Redactor) -> Self {
        if r.is_empty() {
            return self;
        }
        let s = |text: String| r.redact_str(&text);
        let io = |e: std::io::Error| {
            let text = e.to_string();
            if r.contains_secret(text.as_bytes()) {
                std::io::Error::new(e.kind(), r.redact_str(&text))
            } else {
                e
            }
        };
        match self {
            Error::Context(e) => {
                let text = e.to_string();
                if r.contains_secret(text.as_bytes()) {
                    Error::Redacted {
                        message: r.redact_str(&text),
                    }
                } else {
                    Error::Context(e)
                }
            }
            Error::ToolNotAllowed { tool } => Error::ToolNotAllowed { tool: s(tool) },
            Error::DuplicateTool(name) => Error::DuplicateTool(s(name)),
            Error::InvalidName { kind, reason } => Error::InvalidName {
                kind,
                reason: s(reason),
            },
            Error::InvalidSchema { tool, reason } => Error::InvalidSchema {
                tool: s(tool),
                reason: s(reason),
            },
            Error::InvalidInput { tool, path, reason } => Error::InvalidInput {
                tool: s(tool),
                path: s(path),
                reason: s(reason),
            },
            Error::IntegrationNotDeclared { tool, integration } => Error::IntegrationNotDeclared {
                tool: s(tool),
                integration: s(integration),
            },
            Error::IntegrationNotAllowed { integration } => Error::IntegrationNotAllowed {
                integration: s(integration),
            },
            Error::SecretNotFound { integration } => Error::SecretNotFound {
                integration: s(integration),
            },
            Error::VaultCorrupt { integration } => Error::VaultCorrupt {
                integration: s(integration),
            },
            Error::VaultIo(e) => Error::VaultIo(io(e)),
            Error::NoVault => Error::NoVault,
            Error::ToolFailed { tool, message } => Error::ToolFailed {
                tool: s(tool),
                message: s(message),
            },
            Error::PathEscape { path } => Error::PathEscape { path: s(path) },
            Error::NoWorkspace => Error::NoWorkspace,
            Error::Io(e) => Error::Io(io(e)),
            Error::EgressDenied { reason } => Error::EgressDenied { reason: s(reason) },
            Error::Http { message, source } => {
                let chain_leaks = source.as_ref().is_some_and(|src| {
                    let mut text = String::new();
                    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**src);
                    while let Some(e) = next {
                        text.push_str(&e.to_string());
                        next = e.source();
                    }
                    r.contains_secret(text.as_bytes())
                });
                Error::Http {
                    message: s(message),
                    // A source chain that shows a secret is dropped whole.
                    source: if chain_leaks { None } else { source },
                }
            }
            Error::SandboxUnavailable(m) => Error::SandboxUnavailable(s(m)),
            Error::SandboxSetup { stage, source } => Error::SandboxSetup {
                stage,
                source: io(source),
            },
            Error::InvalidCommand(m) => Error::InvalidCommand(s(m)),
            Error::PoolExhausted => Error::PoolExhausted,
            Error::MissingConfiguration(m) => Error::MissingConfiguration(m),
            Error::WipeFailed(m) => Error::WipeFailed(s(m)),
            Error::NotRegularFile { path } => Error::NotRegularFile { path: s(path) },
            Error::WorkspaceFull { path } => Error::WorkspaceFull { path: s(path) },
            Error::InvalidSystemPath { path, reason } => Error::InvalidSystemPath {
                path: s(path),
                reason: s(reason),
            },
            Error::InvalidDuration { what, max } => Error::InvalidDuration { what, max },
            Error::UidRangeUnavailable(m) => Error::UidRangeUnavailable(s(m)),
            Error::Redacted { message } => Error::Redacted {
                message: s(message),
            },
        }
    }

    pub(crate) fn setup(stage: &'static str, source: impl Into<std::io::Error>) -> Self {
        Error::SandboxSetup {
            stage,
            source: source.into(),
        }
    }

    /// An [`Error::Http`] without a source.
    pub(crate) fn http(message: impl Into<String>) -> Self {
        Error::Http {
            message: message.into(),
            source: None,
        }
    }
}

impl tenant_core::Classify for Error {
    fn status(&self) -> tenant_core::ErrorStatus {
        use tenant_core::ErrorStatus as S;
        match self {
            Error::Context(e) => e.status(),
            Error::ToolNotAllowed { .. }
            | Error::IntegrationNotDeclared { .. }
            | Error::IntegrationNotAllowed { .. }
            | Error::EgressDenied { .. }
            | Error::PathEscape { .. }
            | Error::NotRegularFile { .. } => S::PermissionDenied,
            Error::InvalidInput { .. } | Error::InvalidName { .. } | Error::InvalidCommand(_) => {
                S::InvalidInput
            }
            Error::SecretNotFound { .. } => S::NotFound,
            Error::DuplicateTool(_) => S::Conflict,
            Error::WorkspaceFull { .. } => S::ResourceExhausted { retry_after: None },
            Error::PoolExhausted | Error::UidRangeUnavailable(_) => {
                S::Unavailable { retry_after: None }
            }
            Error::Http { .. } | Error::VaultIo(_) => S::Unavailable { retry_after: None },
            Error::InvalidSchema { .. }
            | Error::VaultCorrupt { .. }
            | Error::NoVault
            | Error::ToolFailed { .. }
            | Error::NoWorkspace
            | Error::Io(_)
            | Error::SandboxUnavailable(_)
            | Error::SandboxSetup { .. }
            | Error::MissingConfiguration(_)
            | Error::WipeFailed(_)
            | Error::InvalidSystemPath { .. }
            | Error::InvalidDuration { .. }
            | Error::Redacted { .. } => S::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Context(e) => e.kind(),
            Error::ToolNotAllowed { .. } => "tool_not_allowed",
            Error::DuplicateTool(_) => "duplicate_tool",
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidSchema { .. } => "invalid_schema",
            Error::InvalidInput { .. } => "invalid_input",
            Error::IntegrationNotDeclared { .. } => "integration_not_declared",
            Error::IntegrationNotAllowed { .. } => "integration_not_allowed",
            Error::SecretNotFound { .. } => "secret_not_found",
            Error::VaultCorrupt { .. } => "vault_corrupt",
            Error::VaultIo(_) => "vault_io",
            Error::NoVault => "no_vault",
            Error::ToolFailed { .. } => "tool_failed",
            Error::PathEscape { .. } => "path_escape",
            Error::NoWorkspace => "no_workspace",
            Error::Io(_) => "io",
            Error::EgressDenied { .. } => "egress_denied",
            Error::Http { .. } => "http",
            Error::SandboxUnavailable(_) => "sandbox_unavailable",
            Error::SandboxSetup { .. } => "sandbox_setup",
            Error::InvalidCommand(_) => "invalid_command",
            Error::PoolExhausted => "pool_exhausted",
            Error::MissingConfiguration(_) => "missing_configuration",
            Error::WipeFailed(_) => "wipe_failed",
            Error::NotRegularFile { .. } => "not_regular_file",
            Error::WorkspaceFull { .. } => "workspace_full",
            Error::InvalidSystemPath { .. } => "invalid_system_path",
            Error::InvalidDuration { .. } => "invalid_duration",
            Error::UidRangeUnavailable(_) => "uid_range_unavailable",
            Error::Redacted { .. } => "redacted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redaction::{Redactor, REDACTED};

    const S: &str = "sk_live_S3cretValue_42";

    fn io() -> std::io::Error {
        std::io::Error::other(format!("upstream said {S}"))
    }

    /// One error of every variant, each with the secret in every field
    /// that holds text.
    fn every_variant() -> Vec<Error> {
        let s = || S.to_owned();
        vec![
            Error::Context(tenant_core::Error::InvalidConfiguration(s())),
            Error::ToolNotAllowed { tool: s() },
            Error::DuplicateTool(s()),
            Error::InvalidName {
                kind: "tool name",
                reason: s(),
            },
            Error::InvalidSchema {
                tool: s(),
                reason: s(),
            },
            Error::InvalidInput {
                tool: s(),
                path: s(),
                reason: s(),
            },
            Error::IntegrationNotDeclared {
                tool: s(),
                integration: s(),
            },
            Error::IntegrationNotAllowed { integration: s() },
            Error::SecretNotFound { integration: s() },
            Error::VaultCorrupt { integration: s() },
            Error::VaultIo(io()),
            Error::NoVault,
            Error::ToolFailed {
                tool: s(),
                message: s(),
            },
            Error::PathEscape { path: s() },
            Error::NoWorkspace,
            Error::Io(io()),
            Error::EgressDenied { reason: s() },
            Error::Http {
                message: s(),
                source: Some(Box::new(io())),
            },
            Error::SandboxUnavailable(s()),
            Error::SandboxSetup {
                stage: "execve",
                source: io(),
            },
            Error::InvalidCommand(s()),
            Error::PoolExhausted,
            Error::MissingConfiguration("registry"),
            Error::WipeFailed(s()),
            Error::NotRegularFile { path: s() },
            Error::WorkspaceFull { path: s() },
            Error::InvalidSystemPath {
                path: s(),
                reason: s(),
            },
            Error::InvalidDuration {
                what: "timeout",
                max: std::time::Duration::from_secs(1),
            },
            Error::UidRangeUnavailable(s()),
            Error::Redacted { message: s() },
        ]
    }

    #[test]
    fn every_error_variant_is_redacted_including_source_chains() {
        let r = Redactor::new();
        r.remember(&secrecy::SecretString::from(S.to_owned()));
        let errors = every_variant();
        assert_eq!(errors.len(), 30, "a variant is missing from this test");
        for e in errors {
            let shown_before = format!("{e}");
            let e = e.redacted(&r);
            let mut shown = format!("{e} {e:?}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                shown.push_str(&format!(" {s} {s:?}"));
                source = s.source();
            }
            assert!(!shown.contains(S), "{shown}");
            if shown_before.contains(S) {
                assert!(shown.contains(REDACTED), "{shown}");
            }
        }
    }
}
