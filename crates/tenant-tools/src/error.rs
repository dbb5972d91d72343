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
    /// An HTTP request failed after the policy allowed it.
    #[error("http error: {0}")]
    Http(String),
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
}

/// Result alias for `tenant-tools`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error with every secret the redactor knows scrubbed from
    /// its free-text fields.
    pub(crate) fn redacted(self, r: &crate::credentials::Redactor) -> Self {
        match self {
            Error::ToolFailed { tool, message } => Error::ToolFailed {
                tool,
                message: r.redact_str(&message),
            },
            Error::Http(m) => Error::Http(r.redact_str(&m)),
            Error::EgressDenied { reason } => Error::EgressDenied {
                reason: r.redact_str(&reason),
            },
            Error::PathEscape { path } => Error::PathEscape {
                path: r.redact_str(&path),
            },
            Error::InvalidCommand(m) => Error::InvalidCommand(r.redact_str(&m)),
            Error::InvalidInput { tool, path, reason } => Error::InvalidInput {
                tool,
                path: r.redact_str(&path),
                reason: r.redact_str(&reason),
            },
            other => other,
        }
    }

    pub(crate) fn setup(stage: &'static str, source: impl Into<std::io::Error>) -> Self {
        Error::SandboxSetup {
            stage,
            source: source.into(),
        }
    }
}
