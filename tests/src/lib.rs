//! The whole estate, started for a test: auth (with its database, a
//! code-flow client and users), inventory, payment and order as real
//! servers in this process, each with its own SPIFFE identity and
//! least-privilege database login, over the test kit's real Postgres and a
//! payment-provider simulator. Tests then call order as the gateway would
//! (over mTLS with the gateway's SVID) with real user tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fixture: a failed step should panic the test")]

pub mod demo;
pub mod rehearsal;

use std::net::SocketAddr;
use std::path::Path;

use estate_service_kit::Service;
use estate_service_kit::config::Config;
use estate_service_kit::config::{AuditConfig, SiemConfig};
use estate_testkit::{
    SiemAuth, TestMerchant, TestOpenBao, TestPki, TestPostgres, TestPsp, TestRedis, TestSiem, free_port,
};
use estate_workload_identity::SpiffeId;
use estate_workload_identity::tls::client_config_from_pem;
use serde_json::{Value, json};

/// The SPIFFE ID of an estate workload.
pub fn spiffe(service: &str) -> String {
    format!("spiffe://estate.local/ns/estate/sa/{service}")
}

/// Demo users and their passwords.
pub const USERS: [(&str, &str); 2] = [("alice", "alice-correct-horse-battery"), ("bob", "bob-correct-horse-battery")];
/// The code-flow client users log in with.
pub const WEB_CLIENT: &str = "web-app";
/// Its redirect URI.
pub const WEB_REDIRECT: &str = "https://app.estate.test/callback";
/// What users ask for.
pub const USER_SCOPE: &str = "openid orders:read orders:write payments:authorize payments:refund";

// The east-west policies as deployed: one source for the services, the
// suites, Istio and the NetworkPolicies (`infra/east-west/`).
const INVENTORY_POLICY: &str = include_str!("../../infra/east-west/inventory.toml");
const PAYMENT_POLICY: &str = include_str!("../../infra/east-west/payment.toml");
const ORDER_POLICY: &str = include_str!("../../infra/east-west/order.toml");

/// Products: (sku, name, stock, price in cents).
pub const PRODUCTS: [(&str, &str, i32, i64); 3] =
    [("TEA-01", "Green tea", 10, 450), ("TEA-02", "Black tea", 2, 600), ("CUP-01", "Cup", 5, 1200)];

/// Knobs of a test estate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Order's per-user checkouts per minute (default 5).
    pub checkouts_per_minute: Option<u32>,
    /// The gateway's per-IP budget per minute on every route (default 1000).
    pub gateway_ip_per_minute: Option<u32>,
    /// Keep the gateway's rate-limit budget in a (real, TLS) Redis.
    pub shared_limits: bool,
    /// Ship every service's audit events to one real SIEM (rsyslog over TLS).
    pub siem: bool,
    /// Run the five services as separate processes from their binaries (as
    /// `cargo xtask up` does) instead of inside this process.
    pub processes: Option<&'static ProcessMode>,
    /// Give the users fresh random passwords instead of [`USERS`]' (the demo).
    pub generated_passwords: bool,
}

/// Where the service binaries are and where their logs go.
#[derive(Debug, Clone)]
pub struct ProcessMode {
    /// The directory holding `auth`, `gateway`, `order`, `payment`, `inventory`.
    pub bin_dir: std::path::PathBuf,
    /// One `<service>.log` (JSON lines) per service.
    pub log_dir: std::path::PathBuf,
}

impl ProcessMode {
    /// The binaries next to the running executable (a test binary in
    /// `target/<profile>/deps/` or a tool in `target/<profile>/`).
    pub fn beside_current_exe(log_dir: std::path::PathBuf) -> Option<Self> {
        let exe = std::env::current_exe().ok()?;
        exe.ancestors()
            .skip(1)
            .take(2)
            .find(|dir| ["auth", "gateway", "order", "payment", "inventory"].iter().all(|b| dir.join(b).is_file()))
            .map(|dir| Self { bin_dir: dir.to_path_buf(), log_dir })
    }
}

/// How one service runs.
enum Running {
    InProcess,
    Process(Box<estate_testkit::binary::ServiceProcess>),
}

/// Start service `A` with `settings` as its `[service]` section, in this
/// process or from its binary: its API and management addresses.
async fn launch<A: Service>(
    mode: Option<&ProcessMode>,
    pki: &TestPki,
    dir: &Path,
    settings: &Value,
    audit: Option<&AuditConfig>,
    addrs: impl Fn(&A) -> (SocketAddr, SocketAddr),
) -> (SocketAddr, SocketAddr, Running) {
    match mode {
        None => {
            let mut config = estate_testkit::kit::config_with::<A::Settings>(
                pki,
                dir,
                serde_json::from_value(settings.clone()).unwrap(),
            )
            .unwrap();
            config.audit = audit.cloned().unwrap_or_default();
            let app = A::build(config).await.unwrap();
            let addrs = addrs(&app);
            tokio::spawn(app.run_until(std::future::pending()));
            (addrs.0, addrs.1, Running::InProcess)
        }
        Some(mode) => {
            let process = estate_testkit::binary::ServiceProcess::spawn_logged(
                &mode.bin_dir.join(A::NAME),
                pki,
                &estate_testkit::binary::service_toml(settings),
                &audit_toml(audit),
                Some(&mode.log_dir.join(format!("{}.log", A::NAME))),
            )
            .await
            .unwrap_or_else(|e| panic!("{} did not start: {e} (see {})", A::NAME, mode.log_dir.display()));
            (process.api_addr(), process.management_addr(), Running::Process(Box::new(process)))
        }
    }
}

/// The `[audit]` section for a configuration file.
fn audit_toml(audit: Option<&AuditConfig>) -> String {
    audit.and_then(|a| a.siem.as_ref()).map_or_else(String::new, |siem| {
        format!(
            "[audit]\nstdout = false\n[audit.siem]\naddress = \"{}\"\nserver_name = \"{}\"\nca_file = \"{}\"\n",
            siem.address,
            siem.server_name,
            siem.ca_file.display()
        )
    })
}

/// The browser origin the gateway's CORS allows.
pub const APP_ORIGIN: &str = "https://app.estate.test";

/// The gateway's route table: what the public can reach, and nothing else.
/// Payment's authorize and refund are east-west only (order calls them).
pub const GATEWAY_ROUTES: [(&str, &[&str], &str, &str); 8] = [
    ("/v1/orders", &["GET"], "order", "orders:read"),
    ("/v1/orders", &["POST"], "order", "orders:write"),
    ("/v1/orders/{id}", &["GET"], "order", "orders:read"),
    ("/v1/orders/{id}", &["PATCH"], "order", "orders:write"),
    ("/v1/orders/{id}/cancel", &["POST"], "order", "orders:write"),
    ("/v1/orders/{id}/refund", &["POST"], "order", "orders:write"),
    ("/v1/payments/{id}", &["GET"], "payment", "orders:read"),
    ("/v1/webhooks", &["POST"], "payment", "orders:write"),
];

/// How often every verifier polls the authorization server's revocation
/// list, and every workload the PKI's CRL, here (production default: 5 s):
/// the bound the incident drills check.
pub const REVOCATION_POLL_SECS: u64 = 1;

/// How long a newly published signing key waits before it signs, here
/// (production: ≥ the JWKS max-age, 300 s). Longer than a verifier's least
/// time between two JWKS fetches for unknown `kid`s (10 s), so every
/// verifier may fetch the new key when it first meets it.
pub const KEY_PUBLISH_LEAD_SECS: u64 = 11;

/// Body limit of the gateway's routes (bytes).
pub const GATEWAY_BODY_LIMIT: usize = 16 * 1024;

/// The statuses that mean "refused": the client's request was not served
/// (malformed, unauthenticated, forbidden, not found or not theirs, too big,
/// too many). Each must leave an audit event (PC-10).
pub const REFUSALS: [u16; 9] = [400, 401, 403, 404, 405, 413, 422, 429, 431];

/// Record what a test saw for the checklist (`estate_evidence`): a 2xx is a
/// legitimate call served, a status in [`REFUSALS`] a request refused. Only
/// a passing test's records count, so a refusal the test did not expect
/// proves nothing: the test fails.
pub fn observed(what: &str, status: reqwest::StatusCode) {
    if status.is_success() {
        estate_testkit::evidence::allowed(what);
    } else if REFUSALS.contains(&status.as_u16()) {
        estate_testkit::evidence::refused(what);
    }
}

/// One call `edge_call` made, for the audit sweep.
struct EdgeCall {
    trace_id: String,
    what: String,
    status: reqwest::StatusCode,
}

/// A running estate.
pub struct Estate {
    /// The gateway's public address.
    pub gateway_addr: SocketAddr,
    /// The gateway's management address (health, metrics).
    pub gateway_management: SocketAddr,
    gateway_settings: Value,
    _redis: Option<TestRedis>,
    /// The SIEM every service ships to (with `Options::siem`).
    pub siem: Option<TestSiem>,
    /// Secrets and credentials this estate handed out (for leak sweeps).
    pub secrets: Vec<String>,
    /// The CA of the management listeners' server certificates.
    pub pki: TestPki,
    /// The workloads' trust bundle (OpenBao's PKI CA), PEM.
    pub bundle: String,
    svids: std::collections::HashMap<&'static str, (String, String)>,
    svid_serials: std::collections::HashMap<&'static str, String>,
    edge_calls: std::sync::Mutex<Vec<EdgeCall>>,
    /// The users and their passwords.
    pub users: Vec<(String, String)>,
    processes: Vec<Running>,
    log_dir: Option<std::path::PathBuf>,
    /// order-svc's private key (private_key_jwt), for the demo's token walkthrough.
    pub order_key_file: std::path::PathBuf,
    _bao: TestOpenBao,
    /// The payment provider simulator.
    pub psp: TestPsp,
    /// A merchant's webhook endpoint (on 127.0.0.2, exempted from payment's SSRF check).
    pub merchant: TestMerchant,
    /// The authorization server's base URL (= issuer).
    pub auth_url: String,
    auth_ca: String,
    auth_config: std::path::PathBuf,
    /// Order's API address.
    pub order: SocketAddr,
    /// Order's management address (health, metrics, admin API).
    pub order_management: SocketAddr,
    ops_secret: String,
    /// Payment's API address.
    pub payment: SocketAddr,
    /// Payment's management address.
    pub payment_management: SocketAddr,
    /// Inventory's API address.
    pub inventory: SocketAddr,
    /// Superuser pool (for assertions on stored state).
    pub admin: sqlx::PgPool,
    _pg: TestPostgres,
    _dir: tempfile::TempDir,
}

async fn migrate(pg: &TestPostgres, schema: &str, migrator: sqlx::migrate::Migrator) -> estate_testkit::ServiceRoles {
    let roles = pg.create_service_roles(schema).await.unwrap();
    let owner = sqlx::PgPool::connect_with(roles.owner.clone()).await.unwrap();
    migrator.run(&owner).await.unwrap();
    roles
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `[service.identity]` for `service`: its SVID issued (and renewed) by
/// OpenBao's PKI engine, the PKI's CA as the bundle.
fn identity(dir: &Path, bundle: &str, service: &str, policy: &str) -> Value {
    json!({
        "bundle_file": write(dir, "bundle.pem", bundle),
        "policy_file": write(dir, &format!("{service}-policy.toml"), policy),
        "svid": { "source": "openbao", "role": service, "spiffe_id": spiffe(service), "ttl_secs": 3600 },
        "crl": { "source": "openbao", "refresh_secs": REVOCATION_POLL_SECS },
    })
}

/// `[service.openbao]` (AppRole) and `[service.database]` (logins leased by
/// OpenBao's database engine) for `service` on `schema`.
fn platform_secrets(
    dir: &Path,
    bao: &TestOpenBao,
    pg: &TestPostgres,
    credentials: &estate_secrets::bootstrap::AppRoleCredentials,
    service: &str,
    schema: &str,
) -> (Value, Value) {
    let openbao = estate_secrets::testing::openbao_settings(dir, &format!("{service}-"), bao, credentials).unwrap();
    // The static password is never used: the login comes from OpenBao.
    let mut database = pg.database_section(dir, &format!("{schema}_app"), "unused").unwrap();
    database["login"] = json!({ "source": "openbao", "role": format!("{service}-app") });
    (serde_json::to_value(openbao).unwrap(), database)
}

impl Estate {
    /// Start everything, with the services' default limits.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Start everything; `checkouts` overrides order's per-user checkout budget.
    pub async fn start_with_checkouts_per_minute(checkouts: Option<u32>) -> Self {
        Self::start_with(Options { checkouts_per_minute: checkouts, ..Options::default() }).await
    }

    /// Start everything with `options`.
    pub async fn start_with(options: Options) -> Self {
        let checkouts = options.checkouts_per_minute;
        let pg = TestPostgres::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pki = TestPki::new("estate-management").unwrap();
        let siem = if options.siem { Some(TestSiem::start(SiemAuth::ServerOnly).await.unwrap()) } else { None };
        let audit = siem.as_ref().map(|siem| {
            let ca_file = write(d, "siem-ca.pem", &siem.ca_pem());
            AuditConfig {
                stdout: false,
                siem: Some(SiemConfig {
                    address: format!("127.0.0.1:{}", siem.port()),
                    server_name: "localhost".into(),
                    ca_file,
                    buffer: 10_000,
                    spool_dir: None,
                    cert_file: None,
                    key_file: None,
                }),
            }
        });
        let psp = TestPsp::start().await.unwrap();
        let merchant = TestMerchant::start().await.unwrap();

        // Schemas and roles, migrated as each owner; reference data as owners.
        let auth_roles = migrate(&pg, "auth", estate_auth::store::migrator()).await;
        let inventory_roles = migrate(&pg, "inventory", estate_inventory::migrator()).await;
        let order_roles = migrate(&pg, "orders", estate_order::migrator()).await;
        migrate(&pg, "payments", estate_payment::migrator()).await;
        let inventory_owner = sqlx::PgPool::connect_with(inventory_roles.owner.clone()).await.unwrap();
        let orders_owner = sqlx::PgPool::connect_with(order_roles.owner.clone()).await.unwrap();
        for (sku, name, stock, price) in PRODUCTS {
            sqlx::query("INSERT INTO inventory.products (sku, name, available) VALUES ($1, $2, $3)")
                .bind(sku)
                .bind(name)
                .bind(stock)
                .execute(&inventory_owner)
                .await
                .unwrap();
            sqlx::query("INSERT INTO orders.prices (sku, unit_price_cents, currency) VALUES ($1, $2, 'EUR')")
                .bind(sku)
                .bind(price)
                .execute(&orders_owner)
                .await
                .unwrap();
        }

        // Users, hashed as the auth server does, written as auth_app.
        let auth_app = sqlx::PgPool::connect_with(auth_roles.app.clone()).await.unwrap();
        let store = estate_auth::store::Store::Postgres(auth_app);
        let passwords = estate_auth::passwords::Passwords::new().unwrap();
        let users: Vec<(String, String)> = USERS
            .iter()
            .map(|(user, password)| {
                let password = if options.generated_passwords { random_secret() } else { (*password).to_owned() };
                ((*user).to_owned(), password)
            })
            .collect();
        for (user, password) in &users {
            store.create_user(user, &passwords.hash(password).unwrap()).await.unwrap();
        }

        // order-svc's client key (private_key_jwt).
        let order_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let order_pub = write(d, "order-svc.pub.pem", &order_key.public_key_pem());
        let order_key_file = write(d, "order-svc.key.pem", &order_key.serialize_pem());
        std::fs::set_permissions(&order_key_file, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();

        let ops_secret = random_secret();
        let audit_toml = audit_toml(audit.as_ref());
        // OpenBao: an AppRole and PKI role per workload, leased database logins.
        let bao = TestOpenBao::start().await.unwrap();
        let bao_admin = estate_secrets::testing::admin(&bao).unwrap();
        let workloads = ["inventory", "payment", "order", "gateway", "auth"];
        let credentials = estate_secrets::testing::bootstrap(&bao_admin, &workloads).await.unwrap();

        // The authorization server's signing keys in OpenBao, initialised with
        // its own identity as `auth keys rotate` does; replicas reload them.
        let auth_bao = estate_secrets::testing::login(&bao, &credentials[4]).await.unwrap();
        let key_store: estate_auth::key_store::KeyStoreSettings = serde_json::from_value(json!({
            "reload_secs": 1,
            "publish_lead_secs": KEY_PUBLISH_LEAD_SECS,
        }))
        .unwrap();
        estate_auth::key_store::rotate(&auth_bao, &key_store, estate_testkit::idp::now(), None).await.unwrap();
        let _ = auth_bao.revoke_self().await;
        let signing_toml = format!(
            "{}[service.key_store]\nreload_secs = 1\npublish_lead_secs = {KEY_PUBLISH_LEAD_SECS}\n",
            estate_secrets::testing::openbao_section(d, &bao, &credentials[4]).unwrap()
        );
        let mut processes = Vec::new();
        let (auth_url, auth_ca, auth_config, running) = start_auth(
            options.processes,
            d,
            &pg,
            &auth_roles,
            &order_pub,
            &sha256_hex(&ops_secret),
            &audit_toml,
            &signing_toml,
        )
        .await;
        processes.push(running);

        estate_secrets::testing::database(
            &bao_admin,
            &bao,
            &pg,
            &[("inventory", "inventory"), ("payment", "payments"), ("order", "orders")],
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
        // SVIDs for the test's own clients (the gateway, and order/payment when a
        // test calls as them), from the same PKI.
        let mut svids = std::collections::HashMap::new();
        let mut svid_serials = std::collections::HashMap::new();
        let mut bundle = String::new();
        for workload in ["gateway", "order", "payment"] {
            let issued = bao_admin
                .issue_spiffe_certificate("pki", workload, &spiffe(workload), std::time::Duration::from_secs(3600))
                .await
                .unwrap();
            bundle.clone_from(&issued.issuing_ca);
            svid_serials.insert(workload, issued.serial_number.clone());
            svids.insert(
                workload,
                (issued.certificate, secrecy::ExposeSecret::expose_secret(&issued.private_key).to_owned()),
            );
        }
        let auth_ca_file = write(d, "auth-ca.pem", &auth_ca);
        let tokens = |audience: &str| {
            json!({
                "issuer": auth_url,
                "audience": audience,
                "ca_file": auth_ca_file,
                "revocation_poll_secs": REVOCATION_POLL_SECS,
            })
        };

        let inventory = {
            let (openbao, database) = platform_secrets(d, &bao, &pg, &credentials[0], "inventory", "inventory");
            let settings = json!({
                "openbao": openbao,
                "database": database,
                "identity": identity(d, &bundle, "inventory", INVENTORY_POLICY),
                "tokens": tokens("inventory-api"),
            });
            let (api, _, running) =
                launch::<estate_inventory::Application>(options.processes, &pki, d, &settings, audit.as_ref(), |app| {
                    (app.api_addr(), app.management_addr())
                })
                .await;
            processes.push(running);
            api
        };
        let (payment, payment_management) = {
            let (openbao, database) = platform_secrets(d, &bao, &pg, &credentials[1], "payment", "payments");
            let settings = json!({
                "openbao": openbao,
                "database": database,
                "identity": identity(d, &bundle, "payment", PAYMENT_POLICY),
                "tokens": tokens("payment-api"),
                "psp": { "url": psp.url(), "ca_file": write(d, "psp-ca.pem", &psp.ca_pem()) },
                "order_spiffe_id": spiffe("order"),
                "order_client_id": "order-svc",
                "webhooks": { "exempt": ["127.0.0.2"], "ca_file": write(d, "merchant-ca.pem", &merchant.ca_pem()) },
            });
            let (api, management, running) =
                launch::<estate_payment::Application>(options.processes, &pki, d, &settings, audit.as_ref(), |app| {
                    (app.api_addr(), app.management_addr())
                })
                .await;
            processes.push(running);
            (api, management)
        };
        let (order, order_management) = {
            let (openbao, database) = platform_secrets(d, &bao, &pg, &credentials[2], "order", "orders");
            let settings = json!({
                "openbao": openbao,
                "database": database,
                "identity": identity(d, &bundle, "order", ORDER_POLICY),
                "tokens": tokens("order-api"),
                "oauth": {
                    "token_endpoint": format!("{auth_url}/token"),
                    "client_id": "order-svc",
                    "key": format!("file:{}", order_key_file.display()),
                    "kid": "order-key",
                    "ca_file": auth_ca_file,
                },
                "inventory": { "url": format!("https://127.0.0.1:{}", inventory.port()), "spiffe_id": spiffe("inventory") },
                "payment": { "url": format!("https://127.0.0.1:{}", payment.port()), "spiffe_id": spiffe("payment") },
                "velocity": { "checkouts_per_minute": checkouts.unwrap_or(5) },
            });
            let (api, management, running) =
                launch::<estate_order::Application>(options.processes, &pki, d, &settings, audit.as_ref(), |app| {
                    (app.api_addr(), app.management_addr())
                })
                .await;
            processes.push(running);
            (api, management)
        };
        let redis = if options.shared_limits { Some(TestRedis::start().await.unwrap()) } else { None };
        let (gateway_addr, gateway_management, gateway_settings) = {
            let openbao = estate_secrets::testing::openbao_settings(d, "gateway-", &bao, &credentials[3]).unwrap();
            let routes: Vec<Value> = GATEWAY_ROUTES
                .iter()
                .map(|(path, methods, upstream, scope)| {
                    json!({ "path": path, "methods": methods, "upstream": upstream, "scope": scope, "body_limit": GATEWAY_BODY_LIMIT })
                })
                .collect();
            let settings = json!({
                "openbao": openbao,
                "identity": {
                    "bundle_file": write(d, "bundle.pem", &bundle),
                    "svid": { "source": "openbao", "role": "gateway", "spiffe_id": spiffe("gateway"), "ttl_secs": 3600 },
                    "crl": { "source": "openbao", "refresh_secs": REVOCATION_POLL_SECS },
                },
                "issuer": auth_url,
                "issuer_ca_file": auth_ca_file,
                "revocation_poll_secs": REVOCATION_POLL_SECS,
                "upstreams": [
                    { "name": "order", "url": format!("https://127.0.0.1:{}", order.port()), "spiffe_id": spiffe("order"), "audience": "order-api" },
                    { "name": "payment", "url": format!("https://127.0.0.1:{}", payment.port()), "spiffe_id": spiffe("payment"), "audience": "payment-api" },
                ],
                "routes": routes,
                "rate_classes": { "default": {
                    "per_ip": { "requests": options.gateway_ip_per_minute.unwrap_or(1000), "per_secs": 60 },
                    "per_subject": { "requests": 600, "per_secs": 60 },
                } },
                "cors_origins": [APP_ORIGIN],
            });
            let mut settings = settings;
            if let Some(redis) = &redis {
                let password = write(d, "redis-password", redis.password());
                std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
                settings["redis"] = json!({
                    "address": redis.address(),
                    "server_name": "localhost",
                    "ca_file": write(d, "redis-ca.pem", redis.ca_pem()),
                    "password": format!("file:{}", password.display()),
                });
            }
            let (api, management, running) =
                launch::<estate_gateway::Application>(options.processes, &pki, d, &settings, audit.as_ref(), |app| {
                    (app.api_addr(), app.management_addr())
                })
                .await;
            processes.push(running);
            (api, management, settings)
        };
        let admin = pg.admin_pool().await.unwrap();
        Self {
            gateway_addr,
            gateway_management,
            gateway_settings,
            _redis: redis,
            siem,
            secrets: vec![ops_secret.clone()],
            pki,
            bundle,
            svids,
            svid_serials,
            edge_calls: std::sync::Mutex::default(),
            users,
            processes,
            order_key_file,
            log_dir: options.processes.map(|mode| mode.log_dir.clone()),
            _bao: bao,
            psp,
            merchant,
            auth_url,
            auth_ca,
            auth_config,
            order,
            order_management,
            ops_secret,
            payment,
            payment_management,
            inventory,
            admin,
            _pg: pg,
            _dir: dir,
        }
    }

    /// Stop the service processes (SIGTERM, each drains); the rest stops
    /// when the estate is dropped. `true` when every process exited 0.
    pub async fn stop(&mut self) -> bool {
        let mut clean = true;
        for running in self.processes.drain(..).rev() {
            if let Running::Process(process) = running {
                let result = process.terminate().await;
                if !matches!(result, Ok(Some(0))) {
                    eprintln!("a service did not stop cleanly: {result:?}");
                    clean = false;
                }
            }
        }
        clean
    }

    /// A real access token of `user` (authorization code + PKCE through the login page).
    pub async fn user_token(&self, user: &str) -> String {
        self.user_login(user).await["access_token"].as_str().unwrap().to_owned()
    }

    /// Everything a login of `user` returns (access, refresh and ID token).
    pub async fn user_login(&self, user: &str) -> Value {
        self.login_with(user, &self.password(user)).await.expect("the login succeeds")
    }

    /// A login through the real login page; `Err` with the reason when refused.
    pub async fn login_with(&self, user: &str, password: &str) -> Result<Value, String> {
        let login = estate_testkit::login::Login {
            base_url: &self.auth_url,
            client_id: WEB_CLIENT,
            redirect_uri: WEB_REDIRECT,
            scope: USER_SCOPE,
            username: user,
            password,
        };
        estate_testkit::login::authorization_code(&login, &self.auth_ca).await.map_err(|e| e.to_string())
    }

    /// An HTTPS client trusting the authorization server's CA.
    pub fn auth_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.auth_ca.as_bytes()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
    }

    /// `POST /token` at the authorization server as the web app (a public client).
    pub async fn token_request(&self, form: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
        let http = self.auth_client();
        let response = http.post(format!("{}/token", self.auth_url)).form(form).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Run an operator command of the `auth` binary (`revoke user alice`, …)
    /// on this estate's authorization server configuration — the same code
    /// the binary runs.
    pub async fn auth_operator(&self, args: &[&str]) -> Result<String, String> {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--config".to_owned(), self.auth_config.display().to_string()]);
        tokio::task::spawn_blocking(move || estate_auth::cli::execute(&args).map_err(|e| format!("{e:#}")))
            .await
            .unwrap()
    }

    /// The SIEM's events, once every `(service, action, reason)` in
    /// `expected` has arrived (an empty reason matches any); fails after 20 s
    /// naming what is missing. Needs `Options::siem`.
    pub async fn siem_events(&self, expected: &[(&str, &str, &str)]) -> Vec<Value> {
        let siem = self.siem.as_ref().expect("started with Options::siem");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let events: Vec<Value> = siem.events().unwrap().iter().filter_map(|e| e.msg_json()).collect();
            let missing: Vec<_> = expected
                .iter()
                .filter(|(service, action, reason)| {
                    !events.iter().any(|e| {
                        e["service"]["name"] == *service
                            && e["event"]["action"] == *action
                            && (reason.is_empty() || e["event"]["reason"] == *reason)
                    })
                })
                .collect();
            if missing.is_empty() {
                return events;
            }
            let seen: std::collections::BTreeSet<String> = events
                .iter()
                .map(|e| format!("{}/{}/{}", e["service"]["name"], e["event"]["action"], e["event"]["reason"]))
                .collect();
            assert!(std::time::Instant::now() < deadline, "events never arrived: {missing:?}; seen: {seen:?}");
            let _ = siem.wait_for_events(events.len() + 1, std::time::Duration::from_secs(2)).await;
        }
    }

    /// An `admin:*` token of the operations console (client credentials).
    pub async fn admin_token(&self) -> String {
        self.ops_token("order-api").await
    }

    /// An `admin:*` token of the operations console for `audience`.
    pub async fn ops_token(&self, audience: &str) -> String {
        let response = self
            .auth_client()
            .post(format!("{}/token", self.auth_url))
            .basic_auth("ops-console", Some(&self.ops_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "admin:*"), ("resource", audience)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// `https://localhost:<order management>/<path>` and a client for it.
    pub fn order_management(&self, path: &str) -> (reqwest::Client, String) {
        (self.pki.https_client().unwrap(), format!("https://localhost:{}{path}", self.order_management.port()))
    }

    /// The same for payment's management listener.
    pub fn payment_management(&self, path: &str) -> (reqwest::Client, String) {
        (self.pki.https_client().unwrap(), format!("https://localhost:{}{path}", self.payment_management.port()))
    }

    /// Revoke the SVID the test's own clients present as `service` (as if
    /// it had leaked) in OpenBao's PKI engine.
    pub async fn revoke_test_svid(&self, service: &str) {
        let admin = estate_secrets::testing::admin(&self._bao).unwrap();
        admin.revoke_certificate("pki", &self.svid_serials[service]).await.unwrap();
    }

    /// An HTTPS client presenting `service`'s SVID and expecting `server`'s.
    pub fn workload_client(&self, service: &str, server: &str) -> reqwest::Client {
        let (cert, key) = &self.svids[service];
        let tls = client_config_from_pem(cert, key, &self.bundle, spiffe(server).parse::<SpiffeId>().unwrap()).unwrap();
        reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
    }

    /// Another gateway replica with the same configuration; its public address.
    pub async fn another_gateway(&self) -> SocketAddr {
        start_gateway(&self.pki, self._dir.path(), &self.gateway_settings, None).await.0
    }

    /// A client of the public edge (trusts the edge's CA, presents nothing).
    pub fn edge(&self) -> reqwest::Client {
        self.pki.https_client().unwrap()
    }

    /// A call at the public edge: status, headers and JSON body (Null when none).
    /// A body is sent as JSON with a fresh Idempotency-Key.
    pub async fn edge_call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let shown = format!("{method} {path}");
        let mut request = self.edge().request(method, self.edge_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body).header("idempotency-key", uuid::Uuid::new_v4().to_string());
        }
        // Our own trace id, so the call's audit event can be found (`trace.id`).
        let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
        let span_id = &format!("{:032x}", uuid::Uuid::new_v4().as_u128())[..16];
        let traceparent = format!("00-{trace_id}-{span_id}-01");
        let response = request.header("traceparent", traceparent).send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let what = format!("{shown} → {}", status.as_u16());
        observed(&what, status);
        self.edge_calls.lock().unwrap().push(EdgeCall { trace_id, what, status });
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }

    /// `user`'s password.
    pub fn password(&self, user: &str) -> String {
        self.users.iter().find(|(u, _)| u == user).map(|(_, p)| p.clone()).expect("a demo user")
    }

    /// The authorization server's configuration file (what its operator commands take).
    pub fn auth_config_path(&self) -> &Path {
        &self.auth_config
    }

    /// The authorization server's CA (PEM).
    pub fn auth_ca(&self) -> &str {
        &self.auth_ca
    }

    /// Where the service processes write their logs (process mode only).
    pub fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }

    /// The trace id of the last `edge_call`.
    pub fn last_edge_trace(&self) -> Option<String> {
        self.edge_calls.lock().unwrap().last().map(|call| call.trace_id.clone())
    }

    /// A copy of `token` signed with the authorization server's active key
    /// but expired ten minutes ago — what an attacker holds once a stolen
    /// token's life is over (read from OpenBao with the root token: the
    /// harness plays the past, not an attacker).
    pub async fn expired_copy(&self, token: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let admin = estate_secrets::testing::admin(&self._bao).unwrap();
        let settings: estate_auth::key_store::KeyStoreSettings =
            serde_json::from_value(json!({ "reload_secs": 1, "publish_lead_secs": KEY_PUBLISH_LEAD_SECS })).unwrap();
        let set = estate_auth::key_store::load(&admin, &settings).await.unwrap();
        let now = estate_testkit::idp::now();
        let (active, _) = set.to_ring_parts(now).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let mut claims: Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        claims["iat"] = json!(now - 900);
        claims["nbf"] = json!(now - 900);
        claims["exp"] = json!(now - 600);
        claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
        estate_auth::keys::KeyRing::new(active).sign_access_token(&claims).unwrap()
    }

    /// Every refused call this estate's `edge_call` made has produced an
    /// audit event in the SIEM carrying the call's trace id — within 20 s,
    /// or the test fails naming the refusals nobody audited. Needs `Options::siem`.
    pub async fn assert_edge_refusals_audited(&self) {
        let siem = self.siem.as_ref().expect("started with Options::siem");
        let refused: Vec<(String, String)> = self
            .edge_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| REFUSALS.contains(&call.status.as_u16()))
            .map(|call| (call.trace_id.clone(), call.what.clone()))
            .collect();
        assert!(!refused.is_empty(), "no refused edge calls to check");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let events: Vec<Value> = siem.events().unwrap().iter().filter_map(|e| e.msg_json()).collect();
            let unaudited: Vec<&String> = refused
                .iter()
                .filter(|(trace, _)| !events.iter().any(|e| e["trace"]["id"] == trace.as_str()))
                .map(|(_, what)| what)
                .collect();
            if unaudited.is_empty() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "refused without an audit event: {unaudited:?}");
            let _ = siem.wait_for_events(events.len() + 1, std::time::Duration::from_secs(2)).await;
        }
    }

    /// `https://localhost:<gateway>/<path>`.
    pub fn edge_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.gateway_addr.port())
    }

    /// The same on another replica.
    pub fn edge_url_at(&self, gateway: SocketAddr, path: &str) -> String {
        format!("https://localhost:{}{path}", gateway.port())
    }

    /// `POST /v1/orders` as the gateway forwards it: status and JSON body.
    pub async fn place_order(&self, token: &str, key: &str, body: &Value) -> (reqwest::StatusCode, Value) {
        let response = self
            .gateway()
            .post(self.order_url("/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        observed(&format!("POST /v1/orders at order → {status}"), status);
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Calls to order as the gateway makes them.
    pub fn gateway(&self) -> reqwest::Client {
        self.workload_client("gateway", "order")
    }

    /// `https://127.0.0.1:<order>/<path>`.
    pub fn order_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.order.port())
    }

    /// `https://127.0.0.1:<payment>/<path>`.
    pub fn payment_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.payment.port())
    }

    /// Units of `sku` in stock.
    pub async fn stock(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM inventory.products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }

    /// Count rows of `table` (a fixed, trusted name).
    pub async fn count(&self, table: &'static str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }
}

/// A throwaway test secret: two v4 UUIDs (244 random bits from the OS-seeded generator).
fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn sha256_hex(secret: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn start_gateway(
    pki: &TestPki,
    dir: &Path,
    settings: &Value,
    audit: Option<&AuditConfig>,
) -> (SocketAddr, SocketAddr) {
    let (api, management, _) = launch::<estate_gateway::Application>(None, pki, dir, settings, audit, |app| {
        (app.api_addr(), app.management_addr())
    })
    .await;
    (api, management)
}

/// Start the authorization server on a free port (its issuer URL names the
/// port, so it is picked first, and again if someone takes it meanwhile).
#[allow(clippy::too_many_arguments, reason = "a fixture's one call site")]
async fn start_auth(
    mode: Option<&ProcessMode>,
    d: &Path,
    pg: &TestPostgres,
    roles: &estate_testkit::ServiceRoles,
    order_pub: &Path,
    ops_digest: &str,
    audit_toml: &str,
    signing_toml: &str,
) -> (String, String, std::path::PathBuf, Running) {
    let tls = TestPki::new("estate-edge").unwrap();
    let files = tls.localhost_server().unwrap().write_to(d, "auth-server").unwrap();
    let database = estate_testkit::binary::service_toml(&json!({
        "database": pg.database_section(d, "auth_app", &roles.app_password).unwrap()
    }));
    for _ in 0..5 {
        let port = free_port().unwrap();
        let issuer = format!("https://localhost:{port}");
        let toml = format!(
            r#"
            [api]
            bind = "127.0.0.1:{port}"
            [management]
            bind = "127.0.0.1:0"
            [tls]
            cert = "{cert}"
            key = "file:{key}"
            {audit_toml}
            [service]
            issuer = "{issuer}"
            {database}
            {signing_toml}

            [[service.clients]]
            client_id = "{web}"
            auth = {{ method = "none" }}
            grant_types = ["authorization_code", "refresh_token"]
            scopes = ["orders:read", "orders:write", "payments:authorize", "payments:refund"]
            audiences = ["order-api", "payment-api"]
            redirect_uris = ["{redirect}"]

            [[service.clients]]
            client_id = "order-svc"
            auth = {{ method = "private_key_jwt", public_key_file = "{order_pub}", kid = "order-key" }}
            grant_types = ["client_credentials", "token_exchange"]
            scopes = ["inventory:read", "inventory:reserve"]
            audiences = ["inventory-api"]

            [[service.clients]]
            client_id = "ops-console"
            auth = {{ method = "client_secret_basic", secret_sha256 = "{ops_digest}" }}
            grant_types = ["client_credentials"]
            scopes = ["admin:*"]
            audiences = ["order-api", "inventory-api"]

            [[service.exchange]]
            actor = "order-svc"
            subject_audiences = ["order-api"]
            audiences = ["payment-api"]
            scopes = ["payments:authorize"]
            "#,
            cert = files.cert.display(),
            key = files.key.display(),
            order_pub = order_pub.display(),
            web = WEB_CLIENT,
            redirect = WEB_REDIRECT,
        );
        let path = write(d, "auth.toml", &toml);
        if let Some(mode) = mode {
            let exe = mode.bin_dir.join("auth");
            let log = mode.log_dir.join("auth.log");
            let scratch = tempfile::tempdir().unwrap();
            let Ok(process) =
                estate_testkit::binary::ServiceProcess::spawn_config(&exe, &path, Some(&log), scratch).await
            else {
                continue;
            };
            return (issuer, tls.ca_pem(), path, Running::Process(Box::new(process)));
        }
        type AuthConfig = Config<estate_auth::settings::AuthSettings>;
        let config = AuthConfig::from_figment(AuthConfig::figment(Some(&path))).unwrap();
        let Ok(app) = estate_auth::Application::build(config).await else { continue };
        tokio::spawn(app.run_until(std::future::pending()));
        return (issuer, tls.ca_pem(), path, Running::InProcess);
    }
    panic!("could not start the authorization server on a free port");
}
