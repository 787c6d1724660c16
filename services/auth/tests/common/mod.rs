//! The auth server as a test fixture: real TLS, a generated configuration
//! with a few clients and an exchange policy; optionally backed by a real
//! Postgres with the per-service roles.
#![allow(dead_code, reason = "each test binary uses a different part of the fixture")]

use std::sync::LazyLock;

use estate_auth::Application;
use estate_oauth_client::{ClientAuth, OAuthClient};
use estate_service_kit::Service;
use estate_service_kit::config::Config;
use estate_testkit::{TestPki, TestPostgres, free_port};
use estate_tokens::{Verifier, VerifierConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub(crate) static READER_SECRET: LazyLock<String> = LazyLock::new(random_secret);
pub(crate) static PAYMENT_SECRET: LazyLock<String> = LazyLock::new(random_secret);
/// A throwaway client secret, generated per test process (no secret lives in git).
fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub(crate) const WEB_REDIRECT: &str = "https://app.example/callback";
pub(crate) static BFF_SECRET: LazyLock<String> = LazyLock::new(random_secret);

/// Clients of the authorization-code flow (they need the database).
const CODE_FLOW_CLIENTS: &str = r#"
[[service.clients]]
client_id = "web-app"
auth = { method = "none" }
grant_types = ["authorization_code", "refresh_token"]
scopes = ["orders:read", "orders:write", "payments:authorize"]
audiences = ["order-api"]
redirect_uris = ["https://app.example/callback"]

[[service.clients]]
client_id = "web-bff"
auth = { method = "client_secret_basic", secret_sha256 = "BFF_DIGEST" }
grant_types = ["authorization_code"]
scopes = ["orders:read"]
audiences = ["order-api"]
redirect_uris = ["https://bff.example/cb"]
"#;

pub(crate) static GATEWAY_SECRET: LazyLock<String> = LazyLock::new(random_secret);
pub(crate) static ALICE_SECRET: LazyLock<String> = LazyLock::new(random_secret);

pub(crate) fn sha256_hex(secret: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) struct TestAuth {
    /// The issuer identifier (the same for every replica).
    pub(crate) issuer: String,
    /// Where this instance listens (differs from the issuer for a replica).
    pub(crate) base_url: String,
    /// The management listener's port.
    pub(crate) management_port: u16,
    pub(crate) pki: TestPki,
    pub(crate) order_key: rcgen::KeyPair,
    pub(crate) http: reqwest::Client,
    _dir: tempfile::TempDir,
    _extra_dirs: Vec<tempfile::TempDir>,
    _stop: oneshot::Sender<()>,
}

impl TestAuth {
    pub(crate) async fn start() -> Self {
        Self::start_with("").await
    }

    /// Start against `pg`: create the auth roles (infra/postgres), migrate as
    /// `auth_owner`, and let the server connect as `auth_app` over verified TLS.
    pub(crate) async fn start_with_database(pg: &TestPostgres) -> (Self, estate_testkit::ServiceRoles) {
        Self::start_with_database_and(pg, "").await
    }

    /// The same, with `extra` TOML (e.g. `[service.login]`).
    pub(crate) async fn start_with_database_and(
        pg: &TestPostgres,
        extra: &str,
    ) -> (Self, estate_testkit::ServiceRoles) {
        let roles = pg.create_service_roles("auth").await.unwrap();
        let owner = sqlx::PgPool::connect_with(roles.owner.clone()).await.unwrap();
        estate_auth::store::migrator().run(&owner).await.unwrap();
        let auth = Self::start_database_config(pg, &roles.app_password, None, None, extra).await;
        (auth, roles)
    }

    /// Create a user (argon2id) through the app role, as the bootstrap does.
    pub(crate) async fn create_user(roles: &estate_testkit::ServiceRoles, username: &str, password: &str) -> String {
        let hash = estate_auth::passwords::Passwords::new().unwrap().hash(password).unwrap();
        let pool = sqlx::PgPool::connect_with(roles.app.clone()).await.unwrap();
        let store = estate_auth::store::Store::Postgres(pool);
        store.create_user(username, &hash).await.unwrap().to_string()
    }

    /// Another instance on the same database with the same order-svc key: a replica.
    pub(crate) async fn replica(&self, pg: &TestPostgres, roles: &estate_testkit::ServiceRoles) -> Self {
        Self::start_database_config(
            pg,
            &roles.app_password,
            Some(self.order_key.serialize_pem()),
            Some(self.issuer.clone()),
            "",
        )
        .await
    }

    async fn start_database_config(
        pg: &TestPostgres,
        app_password: &str,
        order_key_pem: Option<String>,
        issuer: Option<String>,
        extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("db-password");
        std::fs::write(&password, app_password).unwrap();
        std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
        let ca = dir.path().join("db-ca.pem");
        std::fs::write(&ca, pg.ca_pem().expect("local cluster with TLS")).unwrap();
        let clients = CODE_FLOW_CLIENTS.replace("BFF_DIGEST", &sha256_hex(BFF_SECRET.as_str()));
        let extra = format!(
            "{extra}\n{clients}\n[service.database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"postgres\"\nlogin = {{ source = \"password\", user = \"auth_app\", password = \"file:{}\" }}\nca_file = \"{}\"\n",
            pg.port(),
            password.display(),
            ca.display()
        );
        let mut auth = Self::start_inner(&extra, order_key_pem, issuer).await;
        auth._extra_dirs.push(dir);
        auth
    }

    /// Start against `pg` with the database login leased from OpenBao
    /// (`openbao_toml` is the `[service.openbao]` section). The schema must
    /// already be migrated.
    pub(crate) async fn start_with_openbao_database(pg: &TestPostgres, openbao_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("db-ca.pem");
        std::fs::write(&ca, pg.ca_pem().expect("local cluster with TLS")).unwrap();
        let extra = format!(
            "{openbao_toml}\n[service.database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"postgres\"\nlogin = {{ source = \"openbao\", role = \"auth-app\" }}\nca_file = \"{}\"\n",
            pg.port(),
            ca.display()
        );
        let mut auth = Self::start_inner(&extra, None, None).await;
        auth._extra_dirs.push(dir);
        auth
    }

    /// Start with `extra` TOML appended to the configuration.
    pub(crate) async fn start_with(extra: &str) -> Self {
        Self::start_inner(extra, None, None).await
    }

    /// `order_key_pem`: reuse order-svc's key of another instance (a replica).
    /// `order_key_pem` and `issuer`: reuse another instance's, as a replica does.
    async fn start_inner(extra: &str, order_key_pem: Option<String>, shared_issuer: Option<String>) -> Self {
        let pki = TestPki::new("auth").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.localhost_server().unwrap().write_to(dir.path(), "server").unwrap();
        let order_key = match order_key_pem {
            Some(pem) => rcgen::KeyPair::from_pem(&pem).unwrap(),
            None => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        };
        let order_pub = dir.path().join("order-svc.pub.pem");
        std::fs::write(&order_pub, order_key.public_key_pem()).unwrap();

        // The issuer URL must be known before the listener binds: pick a free
        // port, and try again with another if someone takes it meanwhile.
        for _ in 0..5 {
            let port = free_port().unwrap();
            let base_url = format!("https://localhost:{port}");
            let issuer = shared_issuer.clone().unwrap_or_else(|| base_url.clone());
            let config_toml = format!(
                r#"
                [api]
                bind = "127.0.0.1:{port}"
                [management]
                bind = "127.0.0.1:0"
                [tls]
                cert = "{cert}"
                key = "file:{key}"
                [service]
                issuer = "{issuer}"
                dev_generated_signing_key = true

                [[service.clients]]
                client_id = "inventory-reader"
                auth = {{ method = "client_secret_basic", secret_sha256 = "{reader}" }}
                grant_types = ["client_credentials"]
                scopes = ["inventory:read"]
                audiences = ["inventory-api"]

                [[service.clients]]
                client_id = "order-svc"
                auth = {{ method = "private_key_jwt", public_key_file = "{order_pub}", kid = "order-key" }}
                grant_types = ["client_credentials", "token_exchange"]
                scopes = ["inventory:read", "inventory:reserve"]
                audiences = ["inventory-api"]

                [[service.clients]]
                client_id = "payment-svc"
                auth = {{ method = "client_secret_basic", secret_sha256 = "{payment}" }}
                grant_types = ["client_credentials", "token_exchange"]
                scopes = []
                audiences = []

                [[service.clients]]
                client_id = "alice-app"
                auth = {{ method = "client_secret_basic", secret_sha256 = "{alice}" }}
                grant_types = ["client_credentials"]
                scopes = ["orders:read", "orders:write", "payments:authorize"]
                audiences = ["order-api", "inventory-api"]

                [[service.clients]]
                client_id = "gateway"
                auth = {{ method = "client_secret_basic", secret_sha256 = "{gateway}" }}
                grant_types = []
                may_introspect = true

                [[service.exchange]]
                actor = "order-svc"
                subject_audiences = ["order-api"]
                audiences = ["payment-api"]
                scopes = ["payments:authorize", "payments:refund"]

                {extra}
                "#,
                cert = files.cert.display(),
                key = files.key.display(),
                order_pub = order_pub.display(),
                extra = extra,
                reader = sha256_hex(READER_SECRET.as_str()),
                payment = sha256_hex(PAYMENT_SECRET.as_str()),
                alice = sha256_hex(ALICE_SECRET.as_str()),
                gateway = sha256_hex(GATEWAY_SECRET.as_str()),
            );
            let path = dir.path().join("auth.toml");
            std::fs::write(&path, config_toml).unwrap();
            let figment = Config::<estate_auth::settings::AuthSettings>::figment(Some(&path));
            let config = Config::from_figment(figment).unwrap();
            let Ok(app) = Application::build(config).await else { continue };
            let management_port = app.management_addr().port();
            let (stop, stop_rx) = oneshot::channel::<()>();
            tokio::spawn(app.run_until(async move {
                let _ = stop_rx.await;
            }));
            let http = pki.https_client().unwrap();
            return Self {
                issuer,
                base_url,
                management_port,
                pki,
                order_key,
                http,
                _dir: dir,
                _extra_dirs: Vec::new(),
                _stop: stop,
            };
        }
        panic!("could not start the auth server on a free port");
    }

    /// The configuration file this instance was started with.
    pub(crate) fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("auth.toml")
    }

    pub(crate) fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub(crate) async fn post_token(&self, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}/token", self.base_url)).form(form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn verifier(&self, audience: &str) -> Verifier {
        let mut config = VerifierConfig::new(self.issuer.clone(), &[audience]);
        config.ca_pem = Some(self.pki.ca_pem());
        Verifier::new(config).await.unwrap()
    }

    pub(crate) fn order_client(&self) -> OAuthClient {
        let auth =
            ClientAuth::private_key_jwt("order-svc", "order-key", &SecretString::from(self.order_key.serialize_pem()))
                .unwrap();
        OAuthClient::new(&self.token_endpoint(), auth, Some(&self.pki.ca_pem())).unwrap()
    }

    /// A client assertion signed with order-svc's key, with claims tweaked by `adjust`.
    pub(crate) fn assertion(&self, adjust: impl FnOnce(&mut Value)) -> String {
        let now = estate_testkit::idp::now();
        let mut claims = json!({
            "iss": "order-svc", "sub": "order-svc", "aud": self.token_endpoint(),
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60,
        });
        adjust(&mut claims);
        let key = EncodingKey::from_ec_der(&self.order_key.serialize_der());
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
    }

    pub(crate) async fn post_with_assertion(&self, assertion: &str) -> (StatusCode, Value) {
        self.post_token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion),
            ],
        )
        .await
    }

    /// A token whose subject is `alice-app`, for `order-api` (the subject token of exchanges).
    pub(crate) async fn alice_token(&self, scope: &str) -> String {
        let (status, body) = self
            .post_token(
                Some(("alice-app", ALICE_SECRET.as_str())),
                &[("grant_type", "client_credentials"), ("scope", scope), ("resource", "order-api")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn exchange(
        &self,
        basic: Option<(&str, &str)>,
        subject: &str,
        audience: &str,
        scope: &str,
    ) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("audience", audience),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        self.post_token(basic, &form).await
    }

    pub(crate) async fn exchange_as_order(&self, subject: &str, audience: &str, scope: &str) -> Result<String, String> {
        match self.order_client().exchange(&SecretString::from(subject.to_owned()), audience, scope).await {
            Ok(issued) => Ok(issued.access_token.expose_secret().to_owned()),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// The HTTP transport for the third-party `oauth2`/`openidconnect` crates:
/// our reqwest (one TLS stack, trusting the test CA), no redirects followed.
pub(crate) fn transport(
    http: reqwest::Client,
) -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>> {
    move |request: oauth2::HttpRequest| {
        let http = http.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response =
                http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await?.to_vec();
            Ok(builder.body(body).expect("valid response parts"))
        })
    }
}
