//! axum extractors: authentication and scope checks in the handler's signature
//! (CONVENTIONS §8 — an authorization you can't forget).
//!
//! ```ignore
//! async fn list_orders(Scoped(caller, ..): Scoped<scopes::OrdersRead>) -> … // 401 / 403 before the body runs
//! async fn whoami(caller: Caller) -> …                                  // any valid token
//! async fn landing(caller: Option<Caller>) -> …                         // none is fine, an invalid one is 401
//! ```
//!
//! The state must provide a [`Verifier`] (`impl FromRef<AppState> for Verifier`).
//!
//! Responses follow RFC 6750 §3: a request without credentials gets
//! `WWW-Authenticate: Bearer realm="estate"`; a bad token gets
//! `error="invalid_token"`; a missing scope gets 403 with
//! `error="insufficient_scope", scope="…"`. The reason is logged, not returned.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use estate_service_kit::Problem;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::claims::VerifiedToken;
use crate::scope::Scope;
use crate::verifier::{TokenError, Verifier};

/// An authenticated caller: the request carried a valid access token.
#[derive(Debug, Clone)]
pub struct Caller(pub VerifiedToken);

/// A caller whose token holds the scope `S` (see [`scopes`]).
#[derive(Debug, Clone)]
pub struct Scoped<S: RequiredScope>(pub VerifiedToken, pub PhantomData<S>);

/// A marker type naming one required [`Scope`].
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

/// Marker types for [`Scoped`], one per [`Scope`].
pub mod scopes {
    use super::{RequiredScope, Scope};

    macro_rules! markers {
        ($($name:ident),* $(,)?) => {$(
            #[doc = concat!("Requires [`Scope::", stringify!($name), "`].")]
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }
    markers!(OrdersRead, OrdersWrite, PaymentsAuthorize, PaymentsRefund, InventoryRead, InventoryReserve, Admin);
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRejection {
    /// No usable token: 401.
    Unauthenticated(TokenError),
    /// Valid token without the needed scope: 403.
    InsufficientScope(Scope),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Unauthenticated(TokenError::KeysUnavailable) => {
                tracing::warn!("token refused: verification keys unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE).into_response()
            }
            AuthRejection::Unauthenticated(TokenError::Missing) => {
                tracing::info!(reason = "missing", "token refused");
                Problem::new(StatusCode::UNAUTHORIZED)
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"estate\""))
                    .into_response()
            }
            AuthRejection::Unauthenticated(reason) => {
                tracing::info!(reason = %reason, "token refused");
                Problem::new(StatusCode::UNAUTHORIZED)
                    .with_header(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"estate\", error=\"invalid_token\""),
                    )
                    .into_response()
            }
            AuthRejection::InsufficientScope(scope) => {
                tracing::info!(required = %scope, "insufficient scope");
                let value = format!("Bearer realm=\"estate\", error=\"insufficient_scope\", scope=\"{scope}\"");
                let mut problem = Problem::new(StatusCode::FORBIDDEN);
                if let Ok(value) = HeaderValue::from_str(&value) {
                    problem = problem.with_header(header::WWW_AUTHENTICATE, value);
                }
                problem.into_response()
            }
        }
    }
}

/// The bearer token of a request (RFC 6750 §2.1), or why there is none.
/// Exactly one `Authorization` header, scheme `Bearer` (any case), one
/// space, a token68 value.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, TokenError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(TokenError::Malformed);
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    let token68 = !token.is_empty()
        && token.trim_end_matches('=').bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !token68 {
        return Err(TokenError::Malformed);
    }
    Ok(Some(token))
}

async fn verify_parts<S>(parts: &Parts, state: &S) -> Result<Option<VerifiedToken>, AuthRejection>
where
    Verifier: FromRef<S>,
{
    let Some(token) = bearer_token(&parts.headers).map_err(AuthRejection::Unauthenticated)? else {
        return Ok(None);
    };
    let verifier = Verifier::from_ref(state);
    verifier.verify(token).await.map(Some).map_err(AuthRejection::Unauthenticated)
}

impl<S> FromRequestParts<S> for Caller
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match verify_parts(parts, state).await? {
            Some(token) => Ok(Caller(token)),
            None => Err(AuthRejection::Unauthenticated(TokenError::Missing)),
        }
    }
}

impl<S> OptionalFromRequestParts<S> for Caller
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    /// No `Authorization` header: `None`. A present but invalid one: 401,
    /// never silently anonymous.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(verify_parts(parts, state).await?.map(Caller))
    }
}

impl<S, M> FromRequestParts<S> for Scoped<M>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    M: RequiredScope,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(token) = <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        if !token.scopes().contains(M::SCOPE) {
            return Err(AuthRejection::InsufficientScope(M::SCOPE));
        }
        Ok(Scoped(token, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Bearer a.b.c"])), Ok(Some("a.b.c")));
        assert_eq!(bearer_token(&headers(&["bearer a.b.c"])), Ok(Some("a.b.c")));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwYXNz"])), Err(TokenError::Missing));
        assert_eq!(bearer_token(&headers(&["Bearer"])), Err(TokenError::Malformed));
        assert_eq!(bearer_token(&headers(&["Bearer a b"])), Err(TokenError::Malformed));
        assert_eq!(bearer_token(&headers(&["Bearer a\"b"])), Err(TokenError::Malformed));
        assert_eq!(bearer_token(&headers(&["Bearer a.b.c", "Bearer d.e.f"])), Err(TokenError::Malformed));
    }
}
