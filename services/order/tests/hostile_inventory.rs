//! API10 for order's inventory client: an inventory that answers Reserve
//! with a reservation for another order or other lines (a compromised or
//! buggy upstream) is not believed — the checkout treats it as a failure
//! and compensates — while an honest answer is accepted. The server here is
//! a real gRPC server over east-west mTLS with inventory's SVID; only its
//! answers are scripted.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use estate_oauth_client::{ClientAuth, ClientCredentialsSource, OAuthClient};
use estate_order::domain::{PricedLine, Sku};
use estate_order::upstream::{Inventory, ReserveFailure};
use estate_proto::inventory::v1::inventory_server::{Inventory as InventoryApi, InventoryServer};
use estate_proto::inventory::v1::{
    GetStockRequest, Line, ReleaseRequest, ReleaseResponse, Reservation, ReserveRequest, Stock,
};
use estate_service_kit::management::Readiness;
use estate_testkit::{IdpClient, LeafSpec, TestIdp, TestPki, spiffe_id};
use estate_workload_identity::RotatingIdentity;
use estate_workload_identity::settings::grpc_channel;
use estate_workload_identity::tls::{Svid, client_config_from_pem, server_config};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Honest,
    OtherOrder,
    OtherLines,
}

#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Answer>>,
    releases: Arc<Mutex<u32>>,
}

#[tonic::async_trait]
impl InventoryApi for Scripted {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<Reservation>, Status> {
        let request = request.into_inner();
        let answer = *self.answer.lock().unwrap();
        Ok(Response::new(match answer {
            Answer::Honest => Reservation { order_id: request.order_id, lines: request.lines },
            Answer::OtherOrder => Reservation { order_id: uuid::Uuid::new_v4().to_string(), lines: request.lines },
            Answer::OtherLines => {
                Reservation { order_id: request.order_id, lines: vec![Line { sku: "GOLD-BAR".into(), quantity: 1000 }] }
            }
        }))
    }

    async fn release(&self, _request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        *self.releases.lock().unwrap() += 1;
        Ok(Response::new(ReleaseResponse { released: true }))
    }

    async fn get_stock(&self, _request: Request<GetStockRequest>) -> Result<Response<Stock>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

#[tokio::test]
async fn api10_a_reservation_for_another_order_or_other_lines_is_not_believed() {
    let pki = TestPki::new("hostile-inventory").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.issue(&LeafSpec::spiffe(&spiffe_id("inventory"))).unwrap();
    let identity =
        RotatingIdentity::new(Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }).unwrap();
    let tls = estate_service_kit::tls::ServerTls::new(server_config(identity, &[pki.ca_der()]).unwrap());
    let scripted = Scripted { answer: Arc::new(Mutex::new(Answer::Honest)), releases: Arc::default() };
    let router = axum::Router::new()
        .route_service("/estate.inventory.v1.Inventory/{method}", InventoryServer::new(scripted.clone()));
    let config = estate_testkit::kit::config::<estate_service_kit::NoServiceSettings>(&pki, dir.path()).unwrap();
    let server =
        estate_service_kit::Server::bind_with_api_tls("inventory", &config, router, Readiness::default(), Some(tls))
            .await
            .unwrap();
    let port = server.api_addr().port();
    tokio::spawn(server.run_until(std::future::pending()));

    let idp = TestIdp::start().await.unwrap();
    idp.register_client("order-svc", IdpClient::Secret("order-secret".into()));
    let oauth = OAuthClient::new(
        &idp.token_endpoint(),
        ClientAuth::SecretBasic { client_id: "order-svc".into(), secret: SecretString::from("order-secret") },
        Some(&idp.ca_pem()),
    )
    .unwrap();
    let tokens = ClientCredentialsSource::new(oauth, "inventory:reserve", Some("inventory-api"));
    let order = pki.issue(&LeafSpec::spiffe(&spiffe_id("order"))).unwrap();
    let client_tls = client_config_from_pem(
        order.cert_pem(),
        order.key_pem(),
        &pki.ca_pem(),
        spiffe_id("inventory").parse().unwrap(),
    )
    .unwrap();
    let inventory = Inventory::new(
        grpc_channel(client_tls, Duration::from_secs(5)),
        format!("https://127.0.0.1:{port}").parse().unwrap(),
        tokens,
    );
    let lines = [PricedLine { sku: Sku::parse("TEA-01").unwrap(), quantity: 2, unit_price_cents: 450 }];

    assert_eq!(inventory.reserve(uuid::Uuid::new_v4(), &lines).await, Ok(()), "the honest answer is accepted");
    for hostile in [Answer::OtherOrder, Answer::OtherLines] {
        *scripted.answer.lock().unwrap() = hostile;
        assert_eq!(inventory.reserve(uuid::Uuid::new_v4(), &lines).await, Err(ReserveFailure::Unavailable));
    }
}
