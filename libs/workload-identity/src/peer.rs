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

    /// In a tonic method: the caller's identity from the connection the call
    /// came over (the kit's listener puts it in the request's extensions,
    /// which tonic keeps); `PERMISSION_DENIED` without a verified SVID.
    pub fn of_grpc<T>(request: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(Peer::of)
            .ok_or_else(|| tonic::Status::permission_denied("no workload identity"))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn call_over(chain: Vec<rustls_pki_types::CertificateDer<'static>>) -> tonic::Request<()> {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(ConnectionInfo {
            remote_addr: "127.0.0.1:4000".parse().unwrap(),
            peer_certificates: Arc::new(chain),
        });
        tonic::Request::from_http(request)
    }

    #[test]
    fn a_grpc_method_sees_the_verified_caller_and_refuses_a_call_without_one() {
        let pki = estate_testkit::TestPki::new("peer").unwrap();
        let order = pki.issue(&estate_testkit::LeafSpec::spiffe("spiffe://estate.local/ns/estate/sa/order")).unwrap();
        let peer = Peer::of_grpc(&call_over(order.chain().unwrap())).unwrap();
        assert_eq!(peer.0.as_str(), "spiffe://estate.local/ns/estate/sa/order");

        // No client certificate (or one without a SPIFFE ID): refused, never "anonymous".
        assert_eq!(Peer::of_grpc(&call_over(Vec::new())).unwrap_err().code(), tonic::Code::PermissionDenied);
        let web = pki.localhost_server().unwrap();
        assert_eq!(Peer::of_grpc(&call_over(web.chain().unwrap())).unwrap_err().code(), tonic::Code::PermissionDenied);
        // Metadata cannot assert an identity.
        let mut forged = tonic::Request::new(());
        forged.metadata_mut().insert("x-spiffe-id", "spiffe://estate.local/ns/estate/sa/order".parse().unwrap());
        assert_eq!(Peer::of_grpc(&forged).unwrap_err().code(), tonic::Code::PermissionDenied);
    }
}
