//! The inventory service under test: a real Postgres (migrated as
//! `inventory_owner`, served as `inventory_app`), a test IdP for tokens, a
//! test CA for SVIDs, and the service itself in process.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::net::SocketAddr;
use std::time::Duration;

use estate_inventory::{Application, InventorySettings};
use estate_proto::inventory::v1::inventory_client::InventoryClient;
use estate_proto::inventory::v1::{Line, ReserveRequest};
use estate_service_kit::Service;
use estate_testkit::{LeafSpec, ServiceFixture, TestIdp, TestPki, TestPostgres};
use estate_workload_identity::SpiffeId;
use estate_workload_identity::settings::{GrpcChannel, grpc_channel};
use estate_workload_identity::tls::client_config_from_pem;
use serde_json::{Value, json};

pub(crate) const INVENTORY: &str = "spiffe://estate.local/ns/estate/sa/inventory";
pub(crate) const ORDER: &str = "spiffe://estate.local/ns/estate/sa/order";
pub(crate) const PAYMENT: &str = "spiffe://estate.local/ns/estate/sa/payment";
const POLICY: &str = r#"
[[allow]]
caller = "spiffe://estate.local/ns/estate/sa/order"
methods = ["POST"]
paths = ["/estate.inventory.v1.Inventory/Reserve", "/estate.inventory.v1.Inventory/Release", "/estate.inventory.v1.Inventory/GetStock"]

[[allow]]  # payment may read stock, never reserve it
caller = "spiffe://estate.local/ns/estate/sa/payment"
methods = ["POST"]
paths = ["/estate.inventory.v1.Inventory/GetStock"]
"#;

/// What the service needs around it, and its `[service]` settings as JSON.
pub(crate) struct Infra {
    pub(crate) fx: ServiceFixture,
    pub(crate) settings: Value,
}

impl Infra {
    pub(crate) async fn start() -> Self {
        let fx = ServiceFixture::start("inventory").await.unwrap();
        estate_inventory::migrator().run(&fx.owner).await.unwrap();
        for (sku, available) in [("TEA-01", 10), ("TEA-02", 2)] {
            sqlx::query("INSERT INTO inventory.products (sku, name, available) VALUES ($1, 'Tea', $2)")
                .bind(sku)
                .bind(available)
                .execute(&fx.owner)
                .await
                .unwrap();
        }
        let settings = fx.platform_settings("inventory", "inventory", "inventory-api", POLICY).unwrap();
        Self { fx, settings }
    }
}

/// A client presenting an SVID for `spiffe_id` from `pki`, expecting inventory.
pub(crate) fn svid_tls(pki: &TestPki, spiffe_id: &str) -> rustls::ClientConfig {
    let leaf = pki.issue(&LeafSpec::spiffe(spiffe_id)).unwrap();
    client_config_from_pem(leaf.cert_pem(), leaf.key_pem(), &pki.ca_pem(), INVENTORY.parse::<SpiffeId>().unwrap())
        .unwrap()
}

pub(crate) struct Estate {
    pub(crate) pki: TestPki,
    pub(crate) idp: TestIdp,
    pub(crate) addr: SocketAddr,
    pub(crate) owner: sqlx::PgPool,
    _pg: TestPostgres,
    _dir: tempfile::TempDir,
}

impl Estate {
    pub(crate) async fn start() -> Self {
        let infra = Infra::start().await;
        let settings: InventorySettings = serde_json::from_value(infra.settings.clone()).unwrap();
        let config = estate_testkit::kit::config_with(&infra.fx.pki, infra.fx.dir.path(), settings).unwrap();
        let app = Application::build(config).await.unwrap();
        let addr = app.api_addr();
        tokio::spawn(app.run_until(std::future::pending()));
        let ServiceFixture { pki, idp, owner, pg, dir, .. } = infra.fx;
        Self { pki, idp, addr, owner, _pg: pg, _dir: dir }
    }

    /// A client presenting an SVID for `spiffe_id` issued by `pki`.
    pub(crate) fn client_from(&self, pki: &TestPki, spiffe_id: &str) -> InventoryClient<GrpcChannel> {
        let leaf = pki.issue(&LeafSpec::spiffe(spiffe_id)).unwrap();
        let tls = client_config_from_pem(
            leaf.cert_pem(),
            leaf.key_pem(),
            &self.pki.ca_pem(),
            INVENTORY.parse::<SpiffeId>().unwrap(),
        )
        .unwrap();
        let origin = format!("https://127.0.0.1:{}", self.addr.port()).parse().unwrap();
        InventoryClient::with_origin(grpc_channel(tls, Duration::from_secs(5)), origin)
    }

    pub(crate) fn client(&self, spiffe_id: &str) -> InventoryClient<GrpcChannel> {
        self.client_from(&self.pki, spiffe_id)
    }

    /// A client-credentials token of `client` (sub = client_id).
    pub(crate) fn machine_token(&self, client: &str, audience: &str, scope: &str) -> String {
        let mut claims = self.idp.access_claims(client, audience, scope);
        claims["client_id"] = json!(client);
        self.idp.mint(&claims).unwrap()
    }

    pub(crate) fn order_token(&self) -> String {
        self.machine_token("order-svc", "inventory-api", "inventory:read inventory:reserve")
    }

    pub(crate) async fn available(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM inventory.products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.owner)
            .await
            .unwrap()
    }
}

pub(crate) fn call<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

pub(crate) fn reserve(order_id: &str, lines: &[(&str, u32)]) -> ReserveRequest {
    ReserveRequest {
        order_id: order_id.to_owned(),
        lines: lines.iter().map(|(sku, quantity)| Line { sku: (*sku).to_owned(), quantity: *quantity }).collect(),
    }
}
