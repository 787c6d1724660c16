//! Putting tokens on outbound calls, so handlers never touch `Authorization`.
//!
//! - reqwest: [`authorized`] adds the bearer from any [`TokenSource`];
//! - tonic (or any tower HTTP client): [`BearerLayer`] does the same for each
//!   request of a channel, e.g.
//!   `ServiceBuilder::new().layer(BearerLayer::new(source)).service(channel)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, header};
use secrecy::ExposeSecret;

use crate::source::TokenSource;

/// Boxed error of services wrapped by [`BearerLayer`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn bearer_value(token: &secrecy::SecretString) -> Result<HeaderValue, BoxError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))?;
    // Keep it out of HTTP/2 header compression tables and debug output.
    value.set_sensitive(true);
    Ok(value)
}

/// Add `Authorization: Bearer …` from `source` to a reqwest request.
pub async fn authorized(
    request: reqwest::RequestBuilder,
    source: &impl TokenSource,
) -> Result<reqwest::RequestBuilder, crate::OAuthError> {
    let token = source.token().await?;
    let value = bearer_value(&token).map_err(|_| crate::OAuthError::InvalidResponse("token is not a header value"))?;
    Ok(request.header(header::AUTHORIZATION, value))
}

/// A tower layer that adds the bearer token of a [`TokenSource`] to every request.
#[derive(Clone)]
pub struct BearerLayer<T> {
    source: T,
}

impl<T> BearerLayer<T> {
    /// Tokens from `source`.
    pub fn new(source: T) -> Self {
        Self { source }
    }
}

impl<S, T: Clone> tower::Layer<S> for BearerLayer<T> {
    type Service = Bearer<S, T>;
    fn layer(&self, inner: S) -> Self::Service {
        Bearer { inner, source: self.source.clone() }
    }
}

/// The service made by [`BearerLayer`].
#[derive(Clone)]
pub struct Bearer<S, T> {
    inner: S,
    source: T,
}

impl<S, T, B, RB> tower::Service<http::Request<B>> for Bearer<S, T>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    T: TokenSource,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; keep the one that was polled ready (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        Box::pin(async move {
            let token = source.token().await?;
            request.headers_mut().insert(header::AUTHORIZATION, bearer_value(&token)?);
            let response = inner.call(request).await.map_err(Into::into)?;
            if refused_as_unauthenticated(&response) {
                source.rejected(&token);
            }
            Ok(response)
        })
    }
}

/// HTTP 401, or a gRPC trailers-only answer with status 16 (`UNAUTHENTICATED`).
fn refused_as_unauthenticated<RB>(response: &http::Response<RB>) -> bool {
    response.status() == http::StatusCode::UNAUTHORIZED
        || response.headers().get("grpc-status").is_some_and(|status| status.as_bytes() == b"16")
}
