//! gRPC (tonic): the same verification for calls, with gRPC status codes.
//!
//! [`GrpcAuthLayer`] wraps a tonic server (or any tower HTTP service): it
//! verifies the `authorization` metadata and puts the [`VerifiedToken`] into
//! the request extensions; failures answer `UNAUTHENTICATED` (or
//! `UNAVAILABLE` when no keys could be loaded) without reaching the service.
//! Methods then call [`require_scope`], which answers `PERMISSION_DENIED`.
//!
//! ```ignore
//! Server::builder().layer(GrpcAuthLayer::new(verifier)).add_service(InventoryServer::new(svc))
//! // in a method:
//! let caller = require_scope(&request, Scope::InventoryReserve)?;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;

use crate::claims::VerifiedToken;
use crate::extract::bearer_token;
use crate::scope::Scope;
use crate::verifier::{TokenError, Verifier};

/// Verifies bearer tokens on every gRPC call.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    verifier: Verifier,
}

impl GrpcAuthLayer {
    /// Verify with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth { inner, verifier: self.verifier.clone() }
    }
}

/// The service made by [`GrpcAuthLayer`].
#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    verifier: Verifier,
}

fn status_for(error: TokenError) -> Status {
    // The reason is logged; the peer learns only the category.
    tracing::info!(reason = %error, "gRPC call refused");
    match error {
        TokenError::KeysUnavailable => Status::unavailable("authentication temporarily unavailable"),
        _ => Status::unauthenticated("invalid or missing access token"),
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = match bearer_token(request.headers()) {
                Ok(Some(token)) => token.to_owned(),
                Ok(None) => return Ok(status_for(TokenError::Missing).into_http()),
                Err(error) => return Ok(status_for(error).into_http()),
            };
            match verifier.verify(&token).await {
                Ok(verified) => {
                    request.extensions_mut().insert(verified);
                    inner.call(request).await
                }
                Err(error) => Ok(status_for(error).into_http()),
            }
        })
    }
}

/// The verified caller of a gRPC request (`UNAUTHENTICATED` if the layer did not run).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&VerifiedToken, Status> {
    request.extensions().get::<VerifiedToken>().ok_or_else(|| Status::unauthenticated("no verified caller"))
}

/// The verified caller, if its token holds `scope`; else `PERMISSION_DENIED`.
pub fn require_scope<T>(request: &tonic::Request<T>, scope: Scope) -> Result<&VerifiedToken, Status> {
    let token = caller(request)?;
    if token.scopes().contains(scope) {
        Ok(token)
    } else {
        tracing::info!(required = %scope, "gRPC call lacks scope");
        Err(Status::permission_denied(format!("requires scope {scope}")))
    }
}
