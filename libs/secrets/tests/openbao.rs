//! estate-secrets against a real OpenBao (and a real Postgres for the
//! database engine): least privilege per service, PKI pinned to the SPIFFE
//! ID, leased database credentials that are renewed and revoked.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::time::Duration;

use estate_secrets::bootstrap::spiffe_id;
use estate_secrets::testing;
use estate_secrets::{OpenBao, OpenBaoError};
use estate_service_kit::SecretRef;
use estate_testkit::{TestOpenBao, TestPostgres};
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;

/// OpenBao with engines and the auth and order services set up; returns the
/// admin client and a client logged in as auth (AppRole).
async fn bootstrapped(bao: &TestOpenBao) -> (OpenBao, OpenBao) {
    let admin = testing::admin(bao).unwrap();
    let credentials = testing::bootstrap(&admin, &["auth", "order"]).await.unwrap();
    let auth = testing::login(bao, &credentials[0]).await.unwrap();
    (admin, auth)
}

fn fields(pairs: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect()
}

#[tokio::test]
async fn pc05_a_service_reads_its_own_secrets_and_nothing_else() {
    let bao = TestOpenBao::start().await.unwrap();
    let (admin, auth) = bootstrapped(&bao).await;
    admin.kv_write("kv", "auth/config", &fields(&[("metrics_token", "m-123")])).await.unwrap();
    admin.kv_write("kv", "order/config", &fields(&[("db", "order-secret")])).await.unwrap();

    assert_eq!(auth.kv_field("kv", "auth/config", "metrics_token").await.unwrap().expose_secret(), "m-123");
    estate_testkit::evidence::allowed("a service reads its own secret");
    assert!(matches!(auth.kv_read("kv", "order/config").await, Err(OpenBaoError::Denied { .. })));
    assert!(auth.kv_write("kv", "order/config", &fields(&[("db", "x")])).await.is_err());
    estate_testkit::evidence::refused("another service's secrets");
    // The resolver serves `openbao:` references from configuration.
    let reference: SecretRef = "openbao:kv/data/auth/config#metrics_token".parse().unwrap();
    assert_eq!(estate_secrets::resolve(&reference, Some(&auth)).await.unwrap().expose_secret(), b"m-123");
}

#[tokio::test]
async fn a_wrong_secret_id_cannot_log_in() {
    let bao = TestOpenBao::start().await.unwrap();
    let admin = testing::admin(&bao).unwrap();
    let auth = testing::bootstrap(&admin, &["auth"]).await.unwrap().remove(0);
    let wrong = SecretString::from("0000-wrong".to_owned());
    let result = OpenBao::login_approle(bao.addr(), Some(bao.ca_pem().as_bytes()), &auth.role_id, &wrong).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn the_token_renews_and_is_useless_once_revoked() {
    let bao = TestOpenBao::start().await.unwrap();
    let (admin, auth) = bootstrapped(&bao).await;
    admin.kv_write("kv", "auth/config", &fields(&[("k", "v")])).await.unwrap();
    let ttl = auth.renew_self().await.unwrap();
    assert!(ttl > Duration::ZERO && ttl <= Duration::from_secs(3600));
    auth.revoke_self().await.unwrap();
    assert!(matches!(auth.kv_read("kv", "auth/config").await, Err(OpenBaoError::Denied { .. })));
}

#[tokio::test]
async fn pc01_the_pki_issues_only_the_services_own_spiffe_id() {
    let bao = TestOpenBao::start().await.unwrap();
    let (_admin, auth) = bootstrapped(&bao).await;
    let issued =
        auth.issue_spiffe_certificate("pki", "auth", &spiffe_id("auth"), Duration::from_secs(600)).await.unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.certificate.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let sans: Vec<String> =
        cert.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(sans, [format!("URI({})", spiffe_id("auth"))]);
    assert!(issued.private_key.expose_secret().contains("PRIVATE KEY"));

    // Another service's identity: refused by the PKI role, and its role by the policy.
    assert!(auth.issue_spiffe_certificate("pki", "auth", &spiffe_id("order"), Duration::from_secs(600)).await.is_err());
    assert!(matches!(
        auth.issue_spiffe_certificate("pki", "order", &spiffe_id("order"), Duration::from_secs(600)).await,
        Err(OpenBaoError::Denied { .. })
    ));
}

#[tokio::test]
async fn pc05_database_credentials_are_leased_renewed_and_revoked() {
    let (bao, pg) = tokio::join!(TestOpenBao::start(), TestPostgres::start());
    let (bao, pg) = (bao.unwrap(), pg.unwrap());
    let (admin, auth) = bootstrapped(&bao).await;
    let roles = pg.create_service_roles("auth").await.unwrap();
    pg.create_service_roles("orders").await.unwrap();
    let mut owner = sqlx::PgConnection::connect_with(&roles.owner).await.unwrap();
    sqlx::query("CREATE TABLE auth.things (id int)").execute(&mut owner).await.unwrap();

    testing::database(&admin, &bao, &pg, &[("auth", "auth"), ("order", "orders")], Duration::from_secs(3600))
        .await
        .unwrap();

    let lease = auth.database_credentials("database", "auth-app").await.unwrap();
    assert!(lease.renewable && lease.duration <= Duration::from_secs(3600));
    let options = pg.options_for(&lease.username, lease.password.expose_secret());
    let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
    sqlx::query("INSERT INTO auth.things VALUES (1)").execute(&mut conn).await.unwrap();
    let denied = sqlx::query("CREATE TABLE auth.more (id int)").execute(&mut conn).await.unwrap_err().to_string();
    assert!(denied.contains("permission denied"), "{denied}");
    conn.close().await.unwrap();

    // Only its own role's credentials.
    assert!(matches!(auth.database_credentials("database", "order-app").await, Err(OpenBaoError::Denied { .. })));
    let renewed = auth.renew_lease(&lease.lease_id, Duration::from_secs(600)).await.unwrap();
    assert!(renewed > Duration::ZERO);

    auth.revoke_lease(&lease.lease_id).await.unwrap();
    let error = sqlx::PgConnection::connect_with(&options).await.unwrap_err().to_string();
    assert!(error.contains("password authentication failed") || error.contains("does not exist"), "{error}");
}

#[tokio::test]
async fn pc05_a_pool_rotates_its_database_login_under_load_without_failed_queries() {
    let (bao, pg) = tokio::join!(TestOpenBao::start(), TestPostgres::start());
    let (bao, pg) = (bao.unwrap(), pg.unwrap());
    let (admin, auth) = bootstrapped(&bao).await;
    let roles = pg.create_service_roles("auth").await.unwrap();
    let mut owner = sqlx::PgConnection::connect_with(&roles.owner).await.unwrap();
    sqlx::query("CREATE TABLE auth.things (id int)").execute(&mut owner).await.unwrap();
    testing::database(&admin, &bao, &pg, &[("auth", "auth")], Duration::from_secs(6)).await.unwrap();

    // Base options: host, database, verified TLS; the login comes from OpenBao.
    let base = pg.admin_options().username("nobody").password("nothing");
    let pool = estate_secrets::database::leased_pool(auth, "database", "auth-app", base, 4, None).await.unwrap();

    let admin_pool = pg.admin_pool().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let (mut queries, mut failures) = (0usize, 0usize);
    let mut users: Vec<String> = Vec::new();
    while users.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no rotation seen; users: {users:?}");
        match sqlx::query_scalar::<_, String>("SELECT current_user::text FROM (SELECT count(*) FROM auth.things) t")
            .fetch_one(&pool)
            .await
        {
            Ok(user) if !users.contains(&user) => users.push(user),
            Ok(_) => {}
            Err(_) => failures += 1,
        }
        queries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("database login rotation: {queries} queries, logins {users:?}");
    assert_eq!(failures, 0, "queries failed during rotation");

    // The first login is revoked once its connections are gone.
    let first = users[0].clone();
    let gone = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(&first)
            .fetch_optional(&admin_pool)
            .await
            .unwrap();
        if exists.is_none() {
            break;
        }
        assert!(std::time::Instant::now() < gone, "old login {first} still exists");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
