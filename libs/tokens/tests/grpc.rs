//! gRPC: calls without a valid token never reach the method
//! (`UNAUTHENTICATED`), and a method's scope check answers `PERMISSION_DENIED`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use estate_testkit::TestIdp;
use estate_tokens::grpc::{GrpcAuthLayer, require_scope};
use estate_tokens::{Scope, Verifier, VerifierConfig};
use tower::{Service, ServiceBuilder, ServiceExt};

const UNAUTHENTICATED: &str = "16";
const PERMISSION_DENIED: &str = "7";

/// A stand-in gRPC method: needs `inventory:reserve`, answers with the subject.
fn method(
    calls: Arc<AtomicUsize>,
) -> impl Service<http::Request<()>, Response = http::Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |request: http::Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let request = tonic::Request::from_http(request);
            Ok(match require_scope(&request, Scope::InventoryReserve) {
                Ok(caller) => http::Response::new(caller.subject().to_string()),
                Err(status) => status.into_http(),
            })
        }
    })
}

async fn setup() -> (TestIdp, Verifier) {
    let idp = TestIdp::start().await.unwrap();
    let mut config = VerifierConfig::new(idp.issuer(), &["inventory-api"]);
    config.ca_pem = Some(idp.ca_pem());
    (idp, Verifier::new(config).await.unwrap())
}

async fn call(
    service: &mut (impl Service<http::Request<()>, Response = http::Response<String>, Error = Infallible> + Clone),
    token: Option<&str>,
) -> (Option<String>, String) {
    let mut request = http::Request::new(());
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    (status, response.into_body())
}

#[tokio::test]
async fn pc04_a_call_without_a_token_is_unauthenticated_and_never_reaches_the_method() {
    let (_idp, verifier) = setup().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new().layer(GrpcAuthLayer::new(verifier)).service(method(calls.clone()));
    assert_eq!(call(&mut service, None).await.0.as_deref(), Some(UNAUTHENTICATED));
    assert_eq!(call(&mut service, Some("forged.token.value")).await.0.as_deref(), Some(UNAUTHENTICATED));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    estate_testkit::evidence::refused("a gRPC call without a valid token");
}

#[tokio::test]
async fn pc04_a_token_without_the_scope_is_permission_denied() {
    let (idp, verifier) = setup().await;
    let mut service =
        ServiceBuilder::new().layer(GrpcAuthLayer::new(verifier)).service(method(Arc::new(AtomicUsize::new(0))));
    let token = idp.mint(&idp.access_claims("order-svc", "inventory-api", "inventory:read")).unwrap();
    assert_eq!(call(&mut service, Some(&token)).await.0.as_deref(), Some(PERMISSION_DENIED));
}

#[tokio::test]
async fn pc04_a_token_with_the_scope_reaches_the_method_with_its_caller() {
    let (idp, verifier) = setup().await;
    let mut service =
        ServiceBuilder::new().layer(GrpcAuthLayer::new(verifier)).service(method(Arc::new(AtomicUsize::new(0))));
    let token = idp.mint(&idp.access_claims("order-svc", "inventory-api", "inventory:reserve")).unwrap();
    let (status, body) = call(&mut service, Some(&token)).await;
    assert_eq!(status, None);
    assert_eq!(body, "order-svc");
}
