//! The one error type of `tenant-mcp`.

use std::time::Duration;

use http::StatusCode;
use tenant_core::ClaimRejection;

/// Errors of `tenant-mcp`.
///
/// Every failure is closed: a request the server refuses reaches no tool,
/// and a remote call that fails returns no remote output. Messages never
/// contain a token or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A context failed its check (expired, revoked, forged, issued under
    /// another authority, ...).
    #[error(transparent)]
    Context(#[from] tenant_core::Error),
    /// The tool layer refused or failed (tool not allowed, invalid input,
    /// vault, egress, ...).
    #[error(transparent)]
    Tools(#[from] tenant_tools::Error),
    /// A resource URL is not usable as an RFC 8707 resource indicator.
    #[error("invalid resource URL `{url}`: {reason}")]
    InvalidResource {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A builder was missing a required part.
    #[error("missing configuration: {0}")]
    MissingConfiguration(&'static str),
    /// A builder was configured inconsistently.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),

    /// The request carries no bearer token.
    #[error("the request carries no bearer token")]
    MissingToken,
    /// The `Authorization` header is not exactly one `Bearer` token.
    #[error("the Authorization header is not a single bearer token")]
    MalformedAuthorization,
    /// The bearer token was rejected by the claim verifier.
    #[error("the bearer token was rejected: {0}")]
    TokenRejected(ClaimRejection),
    /// The bearer token's audience does not name this server's resource.
    #[error("the bearer token was not issued for this resource")]
    WrongResource,
    /// The token is valid for this resource, but its tenant is not the one
    /// this resource serves.
    #[error("the token's tenant may not use this resource")]
    TenantNotServed,
    /// A `tools/call` names a tool outside what the token's context may
    /// use (unknown tools included: the two are indistinguishable).
    #[error("tool `{tool}` is outside the token's scope")]
    InsufficientScope {
        /// The tool asked for.
        tool: String,
    },
    /// The `Mcp-Session-Id` names no session of the token's tenant and
    /// principal (a session of anyone else is indistinguishable from none).
    #[error("no such MCP session")]
    UnknownSession,
    /// The request is not a well-formed MCP request (several session
    /// headers, ...).
    #[error("malformed MCP request: {0}")]
    MalformedRequest(&'static str),
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than {limit} bytes")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The tenant already has as many open MCP sessions as the server
    /// allows per tenant.
    #[error("too many open MCP sessions for this tenant (at most {limit})")]
    TooManySessions {
        /// The per-tenant limit.
        limit: usize,
    },

    /// The tenant's request rate for tool calls is spent (see
    /// `McpServerBuilder::request_rate`, feature `governance`).
    #[error("the tenant's tool-call rate is exhausted")]
    RateLimited {
        /// When one more call will be allowed, if it ever will.
        retry_after: Option<Duration>,
    },

    /// A remote server alias is malformed.
    #[error("invalid server alias `{alias}`: {reason}")]
    InvalidAlias {
        /// The alias as given.
        alias: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The alias (and so the tool names it prefixes) is already in use.
    #[error("server alias `{alias}` is already in use")]
    AliasTaken {
        /// The alias.
        alias: String,
    },
    /// This tenant has no remote server by that alias (another tenant's
    /// registration is indistinguishable from none).
    #[error("no remote MCP server `{alias}` is registered for this tenant")]
    ServerNotRegistered {
        /// The alias asked for.
        alias: String,
    },
    /// Remote servers are registered and removed with a root context; a
    /// delegated context can only narrow what its parent sees.
    #[error("a delegated context cannot register or remove remote MCP servers")]
    DelegatedRegistration,
    /// A remote tool was refused at import: hostile or unenforceable
    /// schema, bad name, oversized description, or not offered at all.
    #[error("remote tool `{tool}` refused: {reason}")]
    RemoteToolRefused {
        /// The tool's name on the remote server.
        tool: String,
        /// Why.
        reason: String,
    },
    /// The remote server answered 401: it does not accept the credential.
    #[error("the remote MCP server refused the credential (HTTP 401)")]
    RemoteUnauthorized {
        /// The server's `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// The remote server answered 403: the credential's scope is too narrow.
    #[error("the remote MCP server refused the request (HTTP 403)")]
    RemoteForbidden {
        /// The server's `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// The remote server failed or answered something unusable.
    #[error("remote MCP server error: {0}")]
    Remote(String),
    /// The remote server did not answer in time.
    #[error("the remote MCP server did not answer within {0:?}")]
    RemoteTimeout(Duration),
    /// A token could not be minted.
    #[error("token minting failed: {0}")]
    Minting(String),
}

/// Result alias for `tenant-mcp`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status a server answers this refusal with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::MissingToken
            | Error::MalformedAuthorization
            | Error::TokenRejected(_)
            | Error::WrongResource => StatusCode::UNAUTHORIZED,
            Error::Context(e) if is_token_context_error(e) => StatusCode::UNAUTHORIZED,
            Error::TenantNotServed | Error::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Error::UnknownSession => StatusCode::NOT_FOUND,
            Error::MalformedRequest(_) => StatusCode::BAD_REQUEST,
            Error::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManySessions { .. } | Error::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OAuth error code of a refusal (RFC 6750 §3.1), when it has one.
    pub fn oauth_error(&self) -> Option<&'static str> {
        match self.status() {
            StatusCode::UNAUTHORIZED if matches!(self, Error::MissingToken) => None,
            StatusCode::UNAUTHORIZED => Some("invalid_token"),
            StatusCode::FORBIDDEN => Some("insufficient_scope"),
            StatusCode::BAD_REQUEST => Some("invalid_request"),
            _ => None,
        }
    }

    /// A stable, machine-readable name of the refusal, sent in the JSON
    /// body of the server's error response as `reason`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Error::MissingToken => "missing_token",
            Error::MalformedAuthorization => "malformed_authorization",
            Error::TokenRejected(ClaimRejection::Expired) => "token_expired",
            Error::TokenRejected(ClaimRejection::Revoked) => "token_revoked",
            Error::TokenRejected(ClaimRejection::WrongAudience) | Error::WrongResource => {
                "wrong_resource"
            }
            Error::TokenRejected(ClaimRejection::WrongIssuer) => "wrong_issuer",
            Error::TokenRejected(ClaimRejection::BadSignature) => "bad_signature",
            Error::TokenRejected(_) => "token_rejected",
            Error::Context(_) if self.status() == StatusCode::UNAUTHORIZED => "context_refused",
            Error::TenantNotServed => "tenant_not_served",
            Error::InsufficientScope { .. } => "insufficient_scope",
            Error::UnknownSession => "unknown_session",
            Error::MalformedRequest(_) => "malformed_request",
            Error::RequestTooLarge { .. } => "request_too_large",
            Error::TooManySessions { .. } => "too_many_sessions",
            Error::RateLimited { .. } => "rate_limited",
            _ => "internal_error",
        }
    }
}

/// What an error means to a caller of the SDK (the facade's `SdkError`,
/// spans' `error.type`). The server's own HTTP answers use
/// [`Error::status`] and [`Error::reason_code`].
impl tenant_core::Classify for Error {
    fn status(&self) -> tenant_core::ErrorStatus {
        use tenant_core::ErrorStatus as S;
        match self {
            Error::Context(e) => e.status(),
            Error::Tools(e) => e.status(),
            Error::MissingToken
            | Error::MalformedAuthorization
            | Error::TokenRejected(_)
            | Error::WrongResource => S::Unauthenticated,
            Error::TenantNotServed
            | Error::InsufficientScope { .. }
            | Error::DelegatedRegistration => S::PermissionDenied,
            Error::UnknownSession | Error::ServerNotRegistered { .. } => S::NotFound,
            Error::InvalidResource { .. }
            | Error::MalformedRequest(_)
            | Error::RequestTooLarge { .. }
            | Error::InvalidAlias { .. }
            | Error::RemoteToolRefused { .. } => S::InvalidInput,
            Error::AliasTaken { .. } => S::Conflict,
            Error::TooManySessions { .. } => S::ResourceExhausted { retry_after: None },
            Error::RateLimited { retry_after } => S::ResourceExhausted {
                retry_after: *retry_after,
            },
            Error::Remote(_) | Error::RemoteTimeout(_) => S::Unavailable { retry_after: None },
            Error::MissingConfiguration(_)
            | Error::InvalidConfiguration(_)
            | Error::RemoteUnauthorized { .. }
            | Error::RemoteForbidden { .. }
            | Error::Minting(_) => S::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Context(e) => e.kind(),
            Error::Tools(e) => e.kind(),
            Error::InvalidResource { .. } => "invalid_resource",
            Error::MissingConfiguration(_) => "missing_configuration",
            Error::InvalidConfiguration(_) => "invalid_configuration",
            Error::InvalidAlias { .. } => "invalid_alias",
            Error::AliasTaken { .. } => "alias_taken",
            Error::ServerNotRegistered { .. } => "server_not_registered",
            Error::DelegatedRegistration => "delegated_registration",
            Error::RemoteToolRefused { .. } => "remote_tool_refused",
            Error::RemoteUnauthorized { .. } => "remote_unauthorized",
            Error::RemoteForbidden { .. } => "remote_forbidden",
            Error::Remote(_) => "remote",
            Error::RemoteTimeout(_) => "remote_timeout",
            Error::Minting(_) => "minting",
            _ => self.reason_code(),
        }
    }
}

/// Context errors a presented token can cause (as opposed to a server
/// misconfiguration, such as an issuer of another authority).
fn is_token_context_error(e: &tenant_core::Error) -> bool {
    use tenant_core::Error as E;
    matches!(
        e,
        E::ContextExpired | E::ContextRevoked | E::ClaimRejected(_) | E::RevocationsStale
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_the_statuses_the_authorization_spec_names() {
        assert_eq!(Error::MissingToken.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Error::MissingToken.oauth_error(), None);
        assert_eq!(
            Error::TokenRejected(ClaimRejection::WrongAudience).oauth_error(),
            Some("invalid_token")
        );
        assert_eq!(Error::TenantNotServed.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            Error::InsufficientScope { tool: "x".into() }.oauth_error(),
            Some("insufficient_scope")
        );
        assert_eq!(Error::UnknownSession.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            Error::Context(tenant_core::Error::ForeignAuthority).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn classification_agrees_with_the_server_answers() {
        use tenant_core::{Classify, ErrorStatus};
        let wait = Duration::from_secs(3);
        let limited = Error::RateLimited {
            retry_after: Some(wait),
        };
        assert_eq!(
            Classify::status(&limited),
            ErrorStatus::ResourceExhausted {
                retry_after: Some(wait)
            }
        );
        assert!(limited.retryable());
        assert_eq!(limited.kind(), "rate_limited");
        let rejected = Error::TokenRejected(ClaimRejection::Expired);
        assert_eq!(Classify::status(&rejected), ErrorStatus::Unauthenticated);
        assert_eq!(rejected.kind(), "token_expired");
        let scope = Error::InsufficientScope { tool: "x".into() };
        assert_eq!(Classify::status(&scope), ErrorStatus::PermissionDenied);
        let tools = Error::Tools(tenant_tools::Error::ToolNotAllowed {
            tool: "shell".into(),
        });
        assert_eq!(Classify::status(&tools), ErrorStatus::PermissionDenied);
        assert_eq!(tools.kind(), "tool_not_allowed");
    }
}
