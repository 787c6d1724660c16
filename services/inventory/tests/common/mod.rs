//! The inventory service under test: a real Postgres (migrated as
//! `inventory_owner`, served as `inventory_app`), a test IdP for tokens, a
//! test CA for SVIDs, and the service itself in process.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use estate_inventory::{Application, InventorySettings};
use estate_proto::inventory::v1::inventory_client::InventoryClient;
use estate_proto::inventory::v1::{Line, ReserveRequest};
use estate_service_kit::Service;
use estate_testkit::{LeafSpec, TestIdp, TestPki, TestPostgres};
use estate_workload_identity::settings::{GrpcChannel, grpc_channel};
use estate_workload_identity::tls::{Svid, client_config};
use estate_workload_identity::{RotatingIdentity, SpiffeId};
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
    pub(crate) pki: TestPki,
    pub(crate) idp: TestIdp,
    pub(crate) owner: sqlx::PgPool,
    pub(crate) settings: Value,
    pub(crate) pg: TestPostgres,
    pub(crate) dir: tempfile::TempDir,
}

impl Infra {
    pub(crate) async fn start() -> Self {
        let pg = TestPostgres::start().await.unwrap();
        let roles = pg.create_service_roles("inventory").await.unwrap();
        let owner = sqlx::PgPool::connect_with(roles.owner.clone()).await.unwrap();
        estate_inventory::migrator().run(&owner).await.unwrap();
        for (sku, available) in [("TEA-01", 10), ("TEA-02", 2)] {
            sqlx::query("INSERT INTO inventory.products (sku, name, available) VALUES ($1, 'Tea', $2)")
                .bind(sku)
                .bind(available)
                .execute(&owner)
                .await
                .unwrap();
        }
        let idp = TestIdp::start().await.unwrap();
        let pki = TestPki::new("inventory-test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), &pki, &idp, &pg, &roles.app_password);
        Self { pki, idp, owner, settings, pg, dir }
    }
}

fn settings(dir: &Path, pki: &TestPki, idp: &TestIdp, pg: &TestPostgres, app_password: &str) -> Value {
    let svid = pki.issue(&LeafSpec::spiffe(INVENTORY)).unwrap().write_to(dir, "inventory").unwrap();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, pki.ca_pem()).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let idp_ca = dir.join("idp-ca.pem");
    std::fs::write(&idp_ca, idp.ca_pem()).unwrap();
    json!({
        "database": pg.database_section(dir, "inventory_app", app_password).unwrap(),
        "identity": {
            "bundle_file": bundle,
            "policy_file": policy,
            "svid": { "source": "files", "cert_file": svid.cert, "key_file": svid.key },
        },
        "tokens": { "issuer": idp.issuer(), "audience": "inventory-api", "ca_file": idp_ca },
    })
}

/// A client presenting an SVID for `spiffe_id` from `pki`, expecting inventory.
pub(crate) fn svid_tls(pki: &TestPki, spiffe_id: &str) -> rustls::ClientConfig {
    let leaf = pki.issue(&LeafSpec::spiffe(spiffe_id)).unwrap();
    let identity =
        RotatingIdentity::new(Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }).unwrap();
    client_config(identity, &[pki.ca_der()], INVENTORY.parse::<SpiffeId>().unwrap()).unwrap()
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
        let config = estate_testkit::kit::config_with(&infra.pki, infra.dir.path(), settings).unwrap();
        let app = Application::build(config).await.unwrap();
        let addr = app.api_addr();
        tokio::spawn(app.run_until(std::future::pending()));
        let Infra { pki, idp, owner, pg, dir, .. } = infra;
        Self { pki, idp, addr, owner, _pg: pg, _dir: dir }
    }

    /// A client presenting an SVID for `spiffe_id` issued by `pki`.
    pub(crate) fn client_from(&self, pki: &TestPki, spiffe_id: &str) -> InventoryClient<GrpcChannel> {
        let leaf = pki.issue(&LeafSpec::spiffe(spiffe_id)).unwrap();
        let identity =
            RotatingIdentity::new(Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }).unwrap();
        let tls = client_config(identity, &[self.pki.ca_der()], INVENTORY.parse::<SpiffeId>().unwrap()).unwrap();
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
