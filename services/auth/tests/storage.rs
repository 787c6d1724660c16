//! The authorization server on a real Postgres, as the least-privilege
//! `auth_app` role over verified TLS: state shared across replicas,
//! revocation visible at once, and what the role may not do.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

use common::{ALICE_SECRET, GATEWAY_SECRET, READER_SECRET, TestAuth};
use estate_testkit::TestPostgres;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

async fn token_for_reader(auth: &TestAuth) -> String {
    let (status, body) = auth
        .post_token(Some(("inventory-reader", READER_SECRET.as_str())), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn post(auth: &TestAuth, path: &str, basic: Option<(&str, &str)>, token: &str) -> (StatusCode, Value) {
    let mut request = auth.http.post(format!("{}{path}", auth.base_url)).form(&[("token", token)]);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_assertion_replayed_against_another_replica_is_refused() {
    let pg = TestPostgres::start().await.unwrap();
    let (replica_a, roles) = TestAuth::start_with_database(&pg).await;
    let replica_b = replica_a.replica(&pg, &roles).await;
    assert_ne!(replica_a.base_url, replica_b.base_url, "two processes' worth of listeners");
    let assertion = replica_a.assertion(|_| {});
    assert_eq!(replica_a.post_with_assertion(&assertion).await.0, StatusCode::OK);
    let (status, body) = replica_b.post_with_assertion(&assertion).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    // A fresh assertion works at B: the refusal was the replay, not B.
    assert_eq!(replica_b.post_with_assertion(&replica_b.assertion(|_| {})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn pc12_a_revoked_token_is_inactive_at_introspection_immediately() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _) = TestAuth::start_with_database(&pg).await;
    let token = token_for_reader(&auth).await;
    let gateway = Some(("gateway", GATEWAY_SECRET.as_str()));
    let (status, body) = post(&auth, "/introspect", gateway, &token).await;
    assert_eq!((status, body["active"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    assert_eq!(body["sub"], "inventory-reader");

    let (status, _) = post(&auth, "/revoke", Some(("inventory-reader", READER_SECRET.as_str())), &token).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = post(&auth, "/introspect", gateway, &token).await;
    assert_eq!(body, serde_json::json!({ "active": false }), "revoked: nothing else is disclosed");
}

#[tokio::test]
async fn only_the_client_a_token_was_issued_to_can_revoke_it() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _) = TestAuth::start_with_database(&pg).await;
    let token = token_for_reader(&auth).await;
    let (status, body) = post(&auth, "/revoke", Some(("alice-app", ALICE_SECRET.as_str())), &token).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
    let (_, body) = post(&auth, "/introspect", Some(("gateway", GATEWAY_SECRET.as_str())), &token).await;
    assert_eq!(body["active"], true, "still active");
    // Revoking garbage is not an error (RFC 7009 §2.2), and reveals nothing.
    assert_eq!(post(&auth, "/revoke", Some(("alice-app", ALICE_SECRET.as_str())), "garbage").await.0, StatusCode::OK);
}

#[tokio::test]
async fn introspection_needs_an_authenticated_client_that_may_introspect() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _) = TestAuth::start_with_database(&pg).await;
    let token = token_for_reader(&auth).await;
    assert_eq!(post(&auth, "/introspect", None, &token).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = post(&auth, "/introspect", Some(("inventory-reader", READER_SECRET.as_str())), &token).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
}

#[tokio::test]
async fn flow_tx_a_revoked_subject_token_cannot_be_exchanged() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _) = TestAuth::start_with_database(&pg).await;
    let subject = auth.alice_token("orders:write payments:authorize").await;
    assert_eq!(post(&auth, "/revoke", Some(("alice-app", ALICE_SECRET.as_str())), &subject).await.0, StatusCode::OK);
    let error = auth.exchange_as_order(&subject, "payment-api", "payments:authorize").await.unwrap_err();
    assert!(error.contains("invalid_grant"), "{error}");
}

#[tokio::test]
async fn pc05_the_auth_app_role_cannot_run_ddl_read_other_schemas_or_act_as_superuser() {
    let pg = TestPostgres::start().await.unwrap();
    let (_auth, roles) = TestAuth::start_with_database(&pg).await;
    // Another service's schema with a table in it.
    let order = pg.create_service_roles("orders").await.unwrap();
    let mut owner = sqlx::PgConnection::connect_with(&order.owner).await.unwrap();
    sqlx::query("CREATE TABLE orders.secret_rows (id int)").execute(&mut owner).await.unwrap();

    let mut app = sqlx::PgConnection::connect_with(&roles.app).await.unwrap();
    let refused = |sql: &'static str| sqlx::query(sql);
    for sql in [
        "CREATE TABLE auth.sneaky (id int)",
        "DROP TABLE auth.revoked_token",
        "ALTER TABLE auth.revoked_token ADD COLUMN x int",
        "SELECT * FROM orders.secret_rows",
        "CREATE TABLE public.sneaky (id int)",
        "SELECT * FROM pg_authid",
    ] {
        let error = refused(sql).execute(&mut app).await.unwrap_err().to_string();
        assert!(error.contains("permission denied") || error.contains("must be owner"), "{sql}: {error}");
    }
    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert!(!superuser);
    // What it is for still works.
    sqlx::query("SELECT count(*) FROM auth.revoked_token").execute(&mut app).await.unwrap();
}

#[tokio::test]
async fn pc05_the_auth_service_runs_on_database_credentials_leased_from_openbao() {
    use estate_secrets::testing;

    let (bao, pg) = tokio::join!(estate_testkit::TestOpenBao::start(), TestPostgres::start());
    let (bao, pg) = (bao.unwrap(), pg.unwrap());
    // Postgres: roles and schema; OpenBao: engines, the auth policy and AppRole, the database role.
    let roles = pg.create_service_roles("auth").await.unwrap();
    let owner = sqlx::PgPool::connect_with(roles.owner.clone()).await.unwrap();
    estate_auth::store::migrator().run(&owner).await.unwrap();
    let admin = testing::admin(&bao).unwrap();
    let credentials = testing::bootstrap(&admin, &["auth"]).await.unwrap();
    testing::database(&admin, &bao, &pg, &[("auth", "auth")], std::time::Duration::from_secs(3600)).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let openbao_toml = testing::openbao_section(files.path(), &bao, &credentials[0]).unwrap();
    // PC-10: the lease is an audit event at the SIEM.
    let siem = estate_testkit::TestSiem::start(estate_testkit::SiemAuth::ServerOnly).await.unwrap();
    let siem_ca = files.path().join("siem-ca.pem");
    std::fs::write(&siem_ca, siem.ca_pem()).unwrap();
    let openbao_toml = format!(
        "{openbao_toml}\n[audit.siem]\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\n",
        siem.port(),
        siem_ca.display()
    );

    let auth = TestAuth::start_with_openbao_database(&pg, &openbao_toml).await;
    // The database path works: an assertion is accepted once, its replay refused.
    let assertion = auth.assertion(|_| {});
    assert_eq!(auth.post_with_assertion(&assertion).await.0, StatusCode::OK);
    assert_eq!(auth.post_with_assertion(&assertion).await.0, StatusCode::UNAUTHORIZED);
    // And it ran as a login OpenBao generated, not as a configured user.
    let logins: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE usename::text LIKE 'v-approle-auth-app-%'",
    )
    .fetch_all(&pg.admin_pool().await.unwrap())
    .await
    .unwrap();
    assert!(!logins.is_empty(), "no OpenBao-generated login connected");
    let events = siem.wait_for_events(1, std::time::Duration::from_secs(30)).await.unwrap();
    let leased = events
        .iter()
        .filter_map(|e| e.msg_json())
        .find(|r| r["event"]["action"] == "secret_leased")
        .expect("a secret_leased event");
    assert!(leased["estate"]["lease_id"].as_str().is_some_and(|l| l.starts_with("database/creds/auth-app/")));
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _roles) = TestAuth::start_with_database(&pg).await;
    let ready = || async {
        auth.http.get(format!("https://localhost:{}/health/ready", auth.management_port)).send().await.unwrap().status()
    };
    assert_eq!(ready().await, StatusCode::OK);
    drop(pg); // the database goes away
    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE);
}

/// Run an operator command the way the `auth` binary does (same code), on
/// this server's configuration.
async fn operator(auth: &TestAuth, args: &[&str]) -> anyhow::Result<String> {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["--config".to_owned(), auth.config_path().display().to_string()]);
    tokio::task::spawn_blocking(move || estate_auth::cli::execute(&args)).await.unwrap()
}

async fn revocation_list(auth: &TestAuth) -> Value {
    let response = auth.http.get(format!("{}/revocations", auth.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

#[tokio::test]
async fn pc12_a_revoked_client_is_cut_off_and_its_tokens_die_until_it_is_reinstated() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _) = TestAuth::start_with_database(&pg).await;
    let gateway = Some(("gateway", GATEWAY_SECRET.as_str()));
    let old = token_for_reader(&auth).await;
    let bystander = {
        let (status, body) =
            auth.post_token(Some(("alice-app", ALICE_SECRET.as_str())), &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    };

    let said = operator(&auth, &["revoke", "client", "inventory-reader"]).await.unwrap();
    assert!(said.contains("disabled"), "{said}");

    // Refused: its token at introspection, new tokens at the token endpoint.
    assert_eq!(post(&auth, "/introspect", gateway, &old).await.1, serde_json::json!({ "active": false }));
    let (status, body) = auth
        .post_token(Some(("inventory-reader", READER_SECRET.as_str())), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    // Published for every verifier, as a digest only.
    let list = revocation_list(&auth).await;
    let digest = estate_tokens::revocation::published_id("inventory-reader");
    assert!(list["principals"].as_array().unwrap().iter().any(|p| p["id"] == digest.as_str()), "{list}");
    assert!(!list.to_string().contains("inventory-reader"), "the list names nobody: {list}");
    // Everyone else is untouched.
    assert_eq!(post(&auth, "/introspect", gateway, &bystander).await.1["active"], true);

    // Unknown names are an error, not a silent success.
    assert!(operator(&auth, &["revoke", "client", "nobody"]).await.is_err());
    assert!(operator(&auth, &["revoke", "client", "inventory-reader", "--disable"]).await.is_err());

    // After rotating its credentials the operator reinstates it: new tokens
    // work, the old one stays revoked.
    assert!(operator(&auth, &["reinstate", "client", "inventory-reader"]).await.unwrap().contains("reinstated"));
    // Tokens are refused up to and including the second of the revocation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let fresh = loop {
        let token = token_for_reader(&auth).await;
        if post(&auth, "/introspect", gateway, &token).await.1["active"] == true {
            break token;
        }
        assert!(std::time::Instant::now() < deadline, "tokens after reinstatement stay inactive");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_ne!(fresh, old);
    assert_eq!(post(&auth, "/introspect", gateway, &old).await.1["active"], false);
}

#[tokio::test]
async fn pc12_the_revocation_list_carries_revoked_tokens_as_digests() {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, _) = TestAuth::start_with_database(&pg).await;
    assert_eq!(revocation_list(&auth).await, serde_json::json!({ "tokens": [], "principals": [], "keys": [] }));
    let token = token_for_reader(&auth).await;
    let jti =
        jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&token).unwrap()["jti"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&auth, "/revoke", Some(("inventory-reader", READER_SECRET.as_str())), &token).await.0,
        StatusCode::OK
    );
    // The list is rebuilt at most once a second: wait for the next build.
    let digest = estate_tokens::revocation::published_id(&jti);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = revocation_list(&auth).await;
        if list["tokens"].as_array().unwrap().iter().any(|t| t == digest.as_str()) {
            assert!(!list.to_string().contains(&jti), "digests only");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the revoked token never appeared: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
