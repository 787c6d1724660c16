//! `estate-bootstrap`, run as its binary against a real OpenBao and a real
//! Postgres: certificates, then `configure` — after which every workload
//! logs in with the files written for it and gets exactly what it needs.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use estate_secrets::bootstrap::{AppRoleCredentials, spiffe_id};
use estate_secrets::database::{DatabaseLogin, DatabaseSettings};
use estate_testkit::{TestOpenBao, TestPostgres};
use secrecy::SecretString;

fn bootstrap(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_estate-bootstrap")).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn certs_are_generated_once_with_private_keys_readable_by_the_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let first = bootstrap(&["certs", "--out", out.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first));
    let ca = std::fs::read_to_string(out.join("ca.pem")).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE"));
    for name in ["postgres", "openbao", "siem", "auth", "gateway", "order", "payment", "inventory"] {
        assert_eq!(mode(&out.join(format!("{name}/tls.key"))), 0o400, "{name}");
        assert!(std::fs::read_to_string(out.join(format!("{name}/tls.crt"))).unwrap().contains("BEGIN CERTIFICATE"));
    }
    assert_eq!(mode(&out.join("ca.key")), 0o400);
    assert_eq!(mode(&out.join("postgres/superuser-password")), 0o400);
    let again = bootstrap(&["certs", "--out", out.to_str().unwrap()]);
    assert!(again.status.success() && text(&again).contains("nothing changed"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(out.join("ca.pem")).unwrap(), ca, "the CA is kept");
}

/// A Postgres with a superuser for the bootstrap (a deployment's is
/// `postgres`, its password from `certs`) and its `[service.database]`-shaped section.
async fn postgres_for_bootstrap(dir: &Path) -> (TestPostgres, serde_json::Value) {
    let pg = TestPostgres::start().await.unwrap();
    let password = uuid::Uuid::new_v4().simple().to_string();
    let admin = pg.admin_pool().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE boot SUPERUSER LOGIN PASSWORD '{password}'")))
        .execute(&admin)
        .await
        .unwrap();
    let section = pg.database_section(dir, "boot", &password).unwrap();
    (pg, section)
}

/// `configure`'s arguments: OpenBao at `openbao` with its CA, authenticated
/// by `auth` (`--token-file F` or `--init-dir D`), this Postgres.
fn configure_args(
    pg: &TestPostgres,
    section: &serde_json::Value,
    (openbao, openbao_ca): (&str, &Path),
    auth: [&str; 2],
    (certs, secrets): (&Path, &Path),
) -> Vec<String> {
    let postgres = format!("127.0.0.1:{}", pg.port());
    let password_file = section["login"]["password"].as_str().unwrap().trim_start_matches("file:");
    [
        "configure",
        "--openbao",
        openbao,
        "--openbao-ca",
        openbao_ca.to_str().unwrap(),
        auth[0],
        auth[1],
        "--postgres",
        &postgres,
        "--postgres-ca",
        section["ca_file"].as_str().unwrap(),
        "--postgres-user",
        "boot",
        "--postgres-password-file",
        password_file,
        "--database",
        section["name"].as_str().unwrap(),
        "--certs",
        certs.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

fn run(args: &[String]) -> Output {
    bootstrap(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn login(bao: &TestOpenBao, secrets: &Path, service: &str) -> estate_secrets::OpenBao {
    let read = |name: &str| std::fs::read_to_string(secrets.join(service).join(name)).unwrap().trim().to_owned();
    let credentials = AppRoleCredentials { role_id: read("role-id"), secret_id: SecretString::from(read("secret-id")) };
    estate_secrets::testing::login(bao, &credentials).await.unwrap()
}

/// What `configure` runs against: fresh certificates, a real OpenBao (its
/// root token in a file) and Postgres, and the arguments naming them.
struct Fresh {
    certs: PathBuf,
    secrets: PathBuf,
    bao: TestOpenBao,
    pg: TestPostgres,
    section: serde_json::Value,
    args: Vec<String>,
}

async fn fresh(d: &Path) -> Fresh {
    let (certs, secrets) = (d.join("certs"), d.join("secrets"));
    assert!(bootstrap(&["certs", "--out", certs.to_str().unwrap()]).status.success());
    let bao = TestOpenBao::start().await.unwrap();
    let (pg, section) = postgres_for_bootstrap(d).await;
    let token = write(d, "token", bao.root_token());
    let bao_ca = write(d, "bao-ca.pem", bao.ca_pem());
    let args = configure_args(
        &pg,
        &section,
        (bao.addr(), &bao_ca),
        ["--token-file", token.to_str().unwrap()],
        (&certs, &secrets),
    );
    Fresh { certs, secrets, bao, pg, section, args }
}

#[tokio::test]
async fn pc05_configure_gives_every_workload_its_own_least_privilege_and_runs_again_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let Fresh { secrets, bao, pg, section, args, .. } = fresh(dir.path()).await;
    let configured = run(&args);
    assert!(configured.status.success(), "{}", text(&configured));
    assert!(!text(&configured).contains(bao.root_token()), "nothing secret is printed");

    for service in ["auth", "gateway", "order", "payment", "inventory"] {
        for secret in ["secret-id", "tls.key", "metrics-token"] {
            assert_eq!(mode(&secrets.join(service).join(secret)), 0o400, "{service}/{secret}");
        }
        let client = login(&bao, &secrets, service).await;
        let minute = std::time::Duration::from_secs(60);
        let own = client.issue_spiffe_certificate("pki", service, &spiffe_id(service), minute).await;
        assert!(own.is_ok(), "{service} gets its own SVID");
        let other = if service == "order" { "payment" } else { "order" };
        let foreign = client.issue_spiffe_certificate("pki", other, &spiffe_id(other), minute).await;
        assert!(foreign.is_err(), "{service} cannot get {other}'s SVID");
        let bundle = std::fs::read_to_string(secrets.join(service).join("bundle.pem")).unwrap();
        assert!(bundle.contains("BEGIN CERTIFICATE"));
    }
    estate_testkit::evidence::refused("another workload's SVID");

    // order: its client key in OpenBao (nobody else's), a leased login that
    // reads and writes its schema but runs no DDL; its owner's password for migrations.
    let order = login(&bao, &secrets, "order").await;
    assert!(order.kv_field("kv", "order/oauth", "private_key").await.is_ok());
    let payment = login(&bao, &secrets, "payment").await;
    assert!(payment.kv_field("kv", "order/oauth", "private_key").await.is_err(), "payment cannot read order's key");
    let owner_password = order.kv_field("kv", "order/db-owner", "password").await;
    assert!(owner_password.is_err(), "the running service cannot read its schema owner's password (no DDL)");
    assert!(std::fs::read_to_string(secrets.join("auth/order-svc.pub.pem")).unwrap().contains("PUBLIC KEY"));
    assert!(std::fs::read_to_string(secrets.join("auth/ops-console.pub.pem")).unwrap().contains("PUBLIC KEY"));
    assert_eq!(mode(&secrets.join("operator/ops-console.key.pem")), 0o400);
    let settings = DatabaseSettings {
        host: "127.0.0.1".into(),
        port: pg.port(),
        name: section["name"].as_str().unwrap().to_owned(),
        login: DatabaseLogin::Openbao { mount: "database".into(), role: "order-app".into() },
        ca_file: section["ca_file"].as_str().unwrap().into(),
        max_connections: 1,
    };
    let pool = settings.connect(Some(&order), None).await.unwrap();
    let ddl = sqlx::raw_sql("CREATE TABLE orders.sneaky (x int)").execute(&pool).await;
    assert!(ddl.is_err_and(|e| e.to_string().contains("permission denied")), "the leased login runs no DDL");
    let owner = std::fs::read_to_string(secrets.join("order-migrate/password")).unwrap();
    assert_eq!(mode(&secrets.join("order-migrate/password")), 0o400);
    let as_owner = sqlx::PgPool::connect_with(pg.options_for("orders_owner", owner.trim())).await.unwrap();
    sqlx::raw_sql("CREATE TABLE orders.migrated (x int)").execute(&as_owner).await.unwrap();
    sqlx::raw_sql("INSERT INTO orders.migrated VALUES (1)").execute(&pool).await.unwrap();
    estate_testkit::evidence::allowed("each workload's own SVID, secrets and database login");

    // Again: nothing is replaced — the same roles, the same workload CA, logins still work.
    let bundle = std::fs::read_to_string(secrets.join("order/bundle.pem")).unwrap();
    let again = run(&args);
    assert!(again.status.success() && text(&again).contains("new schemas: none"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(secrets.join("order/bundle.pem")).unwrap(), bundle, "the workload CA is kept");
    let order = login(&bao, &secrets, "order").await;
    let pool = settings.connect(Some(&order), None).await.unwrap();
    sqlx::raw_sql("SELECT count(*) FROM orders.migrated").execute(&pool).await.unwrap();
}

/// A real, non-dev OpenBao server as compose runs it (raft storage, TLS with
/// the `certs` output), on a free loopback port; killed on drop.
struct Server {
    _child: tokio::process::Child,
    addr: String,
}

async fn openbao_server(dir: &Path, certs: &Path) -> Server {
    let (port, cluster) = (estate_testkit::free_port().unwrap(), estate_testkit::free_port().unwrap());
    let data = dir.join("openbao-data");
    std::fs::create_dir_all(&data).unwrap();
    let config = write(
        dir,
        "openbao.hcl",
        &format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"openbao-0\"\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  \
             tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n\
             api_addr = \"https://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\n",
            data.display(),
            certs.join("openbao/tls.crt").display(),
            certs.join("openbao/tls.key").display()
        ),
    );
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("openbao.log")).unwrap();
    let child = tokio::process::Command::new(estate_testkit::bao().unwrap())
        .arg("server")
        .arg(format!("-config={}", config.display()))
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("https://127.0.0.1:{port}");
    // Ready when it answers (uninitialised or sealed, it still answers health).
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http.get(format!("{addr}/v1/sys/health")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "OpenBao did not answer; see {}",
            dir.join("openbao.log").display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Server { _child: child, addr }
}

#[tokio::test]
async fn a_fresh_openbao_is_initialised_once_and_unsealed_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (certs, secrets, init) = (d.join("certs"), d.join("secrets"), d.join("openbao-init"));
    assert!(bootstrap(&["certs", "--out", certs.to_str().unwrap()]).status.success());
    let (pg, section) = postgres_for_bootstrap(d).await;
    let ca = certs.join("ca.pem");
    let init_arg = init.to_str().unwrap().to_owned();
    let configure =
        |addr: String| run(&configure_args(&pg, &section, (&addr, &ca), ["--init-dir", &init_arg], (&certs, &secrets)));

    let server = openbao_server(d, &certs).await;
    let first = configure(server.addr.clone());
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(mode(&init.join("unseal-key")), 0o400);
    assert_eq!(mode(&init.join("root-token")), 0o400);
    let root = std::fs::read_to_string(init.join("root-token")).unwrap();
    assert!(!text(&first).contains(root.trim()), "the root token is not printed");

    // A restart seals it; the next run unseals it with the kept key and changes nothing.
    drop(server);
    let server = openbao_server(d, &certs).await;
    let again = configure(server.addr.clone());
    assert!(again.status.success() && text(&again).contains("new schemas: none"), "{}", text(&again));
    let ca_pem = std::fs::read(&ca).unwrap();
    let read = |name: &str| std::fs::read_to_string(secrets.join("order").join(name)).unwrap().trim().to_owned();
    let order = estate_secrets::OpenBao::login_approle(
        &server.addr,
        Some(&ca_pem),
        &read("role-id"),
        &SecretString::from(read("secret-id")),
    )
    .await
    .unwrap();
    assert!(order.kv_field("kv", "order/oauth", "private_key").await.is_ok(), "order works after the restart");
}

/// OpenBao's HTTP API as the root token: `(status, body)`.
async fn bao_api(
    bao: &TestOpenBao,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let ca = reqwest::Certificate::from_pem(bao.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let mut request =
        http.request(method, format!("{}/v1/{path}", bao.addr())).header("x-vault-token", bao.root_token());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn pc05_configure_for_kubernetes_binds_each_workload_to_its_service_account_and_external_secrets_reads_only_what_it_mounts()
 {
    let dir = tempfile::tempdir().unwrap();
    let Fresh { certs, secrets, bao, pg, mut args, .. } = fresh(dir.path()).await;
    // No cluster here: any CA stands in for the API server's (OpenBao only stores it).
    let api_ca = certs.join("ca.pem").display().to_string();
    args.extend(
        ["--kubernetes", "estate", "--kubernetes-host", "https://10.96.0.1", "--kubernetes-ca", &api_ca]
            .map(String::from),
    );
    // OpenBao reaches Postgres by another name than this tool does (in
    // Kubernetes: the Service name, while the tool goes through a port-forward).
    args.extend(["--postgres-for-openbao".to_owned(), format!("localhost:{}", pg.port())]);
    let configured = run(&args);
    assert!(configured.status.success(), "{}", text(&configured));

    let (_, engine) = bao_api(&bao, reqwest::Method::GET, "database/config/estate", None).await;
    let url = engine["data"]["connection_details"]["connection_url"].as_str().unwrap_or_default();
    assert!(url.contains(&format!("@localhost:{}/", pg.port())), "{engine}");
    let (_, config) = bao_api(&bao, reqwest::Method::GET, "auth/kubernetes/config", None).await;
    assert_eq!(config["data"]["kubernetes_host"], "https://10.96.0.1");
    for service in ["auth", "gateway", "order", "payment", "inventory"] {
        let (status, role) =
            bao_api(&bao, reqwest::Method::GET, &format!("auth/kubernetes/role/{service}"), None).await;
        assert_eq!(status, 200, "{service}: {role}");
        let role = &role["data"];
        assert_eq!(role["bound_service_account_names"], serde_json::json!([service]), "{service}");
        assert_eq!(role["bound_service_account_namespaces"], serde_json::json!(["estate"]), "{service}");
        assert_eq!(role["audience"], "openbao", "{service}");
        assert_eq!(role["token_policies"], serde_json::json!([service]), "{service}");
        assert!(!secrets.join(service).join("secret-id").exists(), "{service}: no AppRole credentials to hand out");
        let (status, _) = bao_api(&bao, reqwest::Method::GET, &format!("auth/approle/role/{service}"), None).await;
        assert_eq!(status, 404, "{service}: no AppRole");
    }

    // The External Secrets Operator's token: the TLS material and the owners'
    // passwords it mounts, nothing else.
    let (_, created) = bao_api(
        &bao,
        reqwest::Method::POST,
        "auth/token/create",
        Some(serde_json::json!({ "policies": ["external-secrets"], "no_default_policy": true, "ttl": "5m" })),
    )
    .await;
    let eso_token = SecretString::from(created["auth"]["client_token"].as_str().unwrap().to_owned());
    let eso = estate_secrets::OpenBao::with_token(bao.addr(), Some(bao.ca_pem().as_bytes()), eso_token).unwrap();
    let tls: std::collections::BTreeMap<String, String> = eso
        .kv_read("kv", "order/tls")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, secrecy::ExposeSecret::expose_secret(&v).to_owned()))
        .collect();
    let names: Vec<&str> = tls.keys().map(String::as_str).collect();
    assert_eq!(names, ["bundle.pem", "ca.pem", "metrics-token", "tls.crt", "tls.key"]);
    assert_eq!(tls["tls.crt"], std::fs::read_to_string(secrets.join("order/tls.crt")).unwrap());
    let auth_tls = eso.kv_read("kv", "auth/tls").await.unwrap();
    assert!(
        auth_tls.iter().any(|(k, _)| k == "order-svc.pub.pem"),
        "auth's ExternalSecret carries the clients' public keys"
    );
    assert!(eso.kv_field("kv", "order/db-owner", "password").await.is_ok(), "the migration Job's password");
    estate_testkit::evidence::allowed("the External Secrets Operator reads what it mounts");
    assert!(eso.kv_field("kv", "order/oauth", "private_key").await.is_err(), "not order's client key");
    let (status, _) = bao_api(&bao, reqwest::Method::GET, "sys/policies/acl/external-secrets", None).await;
    assert_eq!(status, 200);
    estate_testkit::evidence::refused("the External Secrets Operator reading a service's private key");
}
