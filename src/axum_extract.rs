//! axum integration: a tower layer and an extractor that turn
//! `Authorization: Bearer <JWT>` into a verified [`TenantContext`], and
//! HTTP responses for every SDK error.
//!
//! * [`TenantAuthLayer`] verifies the token of every request it wraps and
//!   puts the [`TenantContext`] into the request's extensions (handlers
//!   take `Extension<TenantContext>` or [`Tenant`]); a request it cannot
//!   verify never reaches the handler.
//! * [`Tenant`] is an extractor for routers without the layer: it verifies
//!   with the `Arc<TenantAuth>` in the router state (and reuses the layer's
//!   context when there is one).
//! * [`SdkError`] is an `IntoResponse`: `401` with
//!   `WWW-Authenticate: Bearer error="invalid_token"` for a missing,
//!   forged, expired or revoked credential, `403` for what the context may
//!   not do, `429` with `Retry-After` for a quota, `503` (with
//!   `Retry-After` when known) for a stale revocation view or an
//!   unavailable ledger, `500` without details for platform faults. Bodies
//!   are JSON `{"error": <kind>, "message": <text>}` and never carry the
//!   token.
//!
//! The scheme is matched case-insensitively (`bearer`, `Bearer`, `BEARER`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::get, Extension, Router};
//! use tenant_sdk::axum_extract::{TenantAuth, TenantAuthLayer};
//! use tenant_sdk::prelude::*;
//!
//! # fn demo(verifier: ClaimVerifier, issuer: ContextIssuer) {
//! async fn whoami(Extension(ctx): Extension<TenantContext>) -> String {
//!     ctx.tenant().to_string()
//! }
//! let auth = Arc::new(TenantAuth::new(verifier, issuer));
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(TenantAuthLayer::new(auth));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tenant_core::{ClaimVerifier, Classify, ContextIssuer, Error, ErrorStatus, TenantContext};

use crate::SdkError;

/// What verification needs: the JWT verifier and the context issuer. Share
/// it as `Arc<TenantAuth>` with [`TenantAuthLayer`] or in the router state
/// (directly or via `FromRef`) for [`Tenant`].
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

    /// Verifies an `Authorization` header value (`Bearer <token>`, the
    /// scheme in any case).
    ///
    /// # Errors
    ///
    /// [`AuthRejection`] naming the reason.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<TenantContext, AuthRejection> {
        let value = authorization.ok_or(AuthRejection::MissingToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthRejection::NotBearer)?;
        let token = token.trim_start_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthRejection::NotBearer);
        }
        self.verifier
            .verify(token, &self.issuer)
            .map_err(AuthRejection::Rejected)
    }

    fn authenticate_headers(&self, headers: &HeaderMap) -> Result<TenantContext, AuthRejection> {
        let value = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| AuthRejection::NotBearer)?),
        };
        self.authenticate(value)
    }
}

/// A request's verified tenant context.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

/// Why a request was not authenticated. Responds `401 Unauthorized` with
/// `WWW-Authenticate: Bearer` (plus `error="invalid_token"` when a token
/// was presented), or `503` when the revocation view is stale (the token
/// may be fine; the service cannot tell right now).
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
    #[error(transparent)]
    Rejected(Error),
}

impl Classify for AuthRejection {
    fn status(&self) -> ErrorStatus {
        match self {
            AuthRejection::Rejected(e) => e.status(),
            _ => ErrorStatus::Unauthenticated,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            AuthRejection::MissingToken => "missing_token",
            AuthRejection::NotBearer => "not_bearer",
            AuthRejection::Rejected(e) => e.kind(),
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let challenge = match self {
            AuthRejection::MissingToken => "Bearer",
            _ => INVALID_TOKEN,
        };
        error_response(&self, challenge)
    }
}

const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

/// `SdkError` as an HTTP response (see the [module](self) documentation).
impl IntoResponse for SdkError {
    fn into_response(self) -> Response {
        error_response(&self, INVALID_TOKEN)
    }
}

/// The status code for an [`ErrorStatus`].
pub fn status_code(status: &ErrorStatus) -> StatusCode {
    match status {
        ErrorStatus::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorStatus::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorStatus::NotFound => StatusCode::NOT_FOUND,
        ErrorStatus::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorStatus::Conflict => StatusCode::CONFLICT,
        ErrorStatus::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
        ErrorStatus::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(error: &(impl Classify + ?Sized), challenge: &'static str) -> Response {
    let status = error.status();
    let code = status_code(&status);
    let message = if code.is_server_error() && !matches!(status, ErrorStatus::Unavailable { .. }) {
        tracing::error!(error = %error, kind = error.kind(), "request failed");
        "internal error".to_owned()
    } else {
        error.to_string()
    };
    let body = serde_json::json!({ "error": error.kind(), "message": message }).to_string();
    let mut response = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    if code == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if let Some(after) = status.retry_after() {
        // Whole seconds, rounded up: retrying early is refused again.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

impl<S> FromRequestParts<S> for Tenant
where
    Arc<TenantAuth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ctx) = parts.extensions.get::<TenantContext>() {
            return Ok(Tenant(ctx.clone()));
        }
        let auth = Arc::<TenantAuth>::from_ref(state);
        auth.authenticate_headers(&parts.headers).map(Tenant)
    }
}

/// A tower layer that verifies every request's bearer token and puts the
/// [`TenantContext`] into its extensions; a request that does not verify
/// is answered by the [`AuthRejection`] and never reaches the inner
/// service.
#[derive(Clone, Debug)]
pub struct TenantAuthLayer {
    auth: Arc<TenantAuth>,
}

impl TenantAuthLayer {
    /// A layer verifying with `auth`.
    pub fn new(auth: Arc<TenantAuth>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for TenantAuthLayer {
    type Service = TenantAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantAuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`TenantAuthLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct TenantAuthService<S> {
    inner: S,
    auth: Arc<TenantAuth>,
}

impl<S, B> tower_service::Service<Request<B>> for TenantAuthService<S>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.auth.authenticate_headers(request.headers()) {
            Ok(ctx) => {
                request.extensions_mut().insert(ctx);
                // The clone that was polled ready serves this request.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(rejection) => {
                let response = rejection.into_response();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
