//! An axum extractor that turns `Authorization: Bearer <JWT>` into a
//! verified [`TenantContext`].
//!
//! Handlers that take [`Tenant`] cannot run without a verified context, and
//! every rejection is a `401` whose body names the reason (never the token).
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use tenant_sdk::axum_extract::{Tenant, TenantAuth};
//! use tenant_sdk::*;
//!
//! # fn demo(verifier: ClaimVerifier, issuer: ContextIssuer) {
//! async fn whoami(Tenant(ctx): Tenant) -> String {
//!     ctx.tenant().to_string()
//! }
//! let auth = Arc::new(TenantAuth::new(verifier, issuer));
//! let app: Router = Router::new().route("/whoami", get(whoami)).with_state(auth);
//! # }
//! ```

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tenant_core::{ClaimVerifier, ContextIssuer, Error, TenantContext};

/// What the extractor needs: the JWT verifier and the context issuer. Put
/// an `Arc<TenantAuth>` in the router state (directly or via `FromRef`).
#[derive(Debug)]
pub struct TenantAuth {
    verifier: ClaimVerifier,
    issuer: ContextIssuer,
}

impl TenantAuth {
    /// Combines a verifier and an issuer.
    pub fn new(verifier: ClaimVerifier, issuer: ContextIssuer) -> Self {
        Self { verifier, issuer }
    }

    /// The issuer (to build handles' platform resources, revoke, ...).
    pub fn issuer(&self) -> &ContextIssuer {
        &self.issuer
    }

    /// Verifies an `Authorization` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<TenantContext, AuthRejection> {
        let value = authorization.ok_or(AuthRejection::MissingToken)?;
        let token = value
            .strip_prefix("Bearer ")
            .filter(|t| !t.is_empty())
            .ok_or(AuthRejection::NotBearer)?;
        self.verifier
            .verify(token, &self.issuer)
            .map_err(AuthRejection::Rejected)
    }
}

/// A request's verified tenant context.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

/// Why a request was not authenticated. Responds `401 Unauthorized` with a
/// JSON body `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    MissingToken,
    /// The header is not `Bearer <token>` (or not valid text).
    #[error("authorization header is not a bearer token")]
    NotBearer,
    /// The token was rejected.
    #[error("{0}")]
    Rejected(Error),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl<S> FromRequestParts<S> for Tenant
where
    Arc<TenantAuth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<TenantAuth>::from_ref(state);
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| AuthRejection::NotBearer)?),
        };
        auth.authenticate(header).map(Tenant)
    }
}
