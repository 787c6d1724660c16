//! The caller's workload identity, for handlers.
//!
//! The TLS listener puts the verified client chain into the request's
//! [`ConnectionInfo`]; [`Peer`] turns its leaf into a [`SpiffeId`]. There is no
//! way to assert an identity with a header: a client-sent `X-Spiffe-Id` or
//! `X-Forwarded-Client-Cert` means nothing here.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use estate_service_kit::Problem;
use estate_service_kit::serve::ConnectionInfo;
use http::StatusCode;
use http::request::Parts;

use crate::spiffe::SpiffeId;

/// The verified SPIFFE ID of the calling workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub SpiffeId);

impl Peer {
    /// From the connection a request came over; `None` without a verified SVID.
    pub fn of(info: &ConnectionInfo) -> Option<Self> {
        info.peer_certificates.first().and_then(|leaf| SpiffeId::from_certificate(leaf).ok()).map(Peer)
    }
}

/// No verified workload identity on this connection.
#[derive(Debug, Clone, Copy)]
pub struct NoPeer;

impl IntoResponse for NoPeer {
    fn into_response(self) -> Response {
        Problem::new(StatusCode::FORBIDDEN).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = NoPeer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<ConnectionInfo>().and_then(Peer::of).ok_or(NoPeer)
    }
}
