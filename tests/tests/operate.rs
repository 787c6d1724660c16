//! The operator commands a deployment runs (issue 11), run as their real
//! binaries: `<service> migrate` brings a schema to its version as the
//! schema's owner with the deployed configuration, `auth users create` makes
//! a user who can log in.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::path::{Path, PathBuf};
use std::process::Output;

use estate_testkit::TestPostgres;
use estate_tests::{Estate, ProcessMode};

fn binaries() -> PathBuf {
    ProcessMode::beside_current_exe(PathBuf::new())
        .expect("the service binaries next to the test binary (cargo build --workspace --bins)")
        .bin_dir
}

fn deployed_config(service: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../k8s/base/config/{service}.toml"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn tables(pg: &TestPostgres, schema: &str) -> i64 {
    let admin = pg.admin_pool().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1")
        .bind(schema)
        .fetch_one(&admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn pc05_each_binary_migrates_its_schema_as_the_owner_idempotently_and_never_as_the_app_role() {
    let pg = TestPostgres::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (service, schema) in
        [("auth", "auth"), ("order", "orders"), ("payment", "payments"), ("inventory", "inventory")]
    {
        let roles = pg.create_service_roles(schema).await.unwrap();
        let owner = pg.database_section(dir.path(), &format!("{schema}_owner"), &roles.owner_password).unwrap();
        let app = pg.database_section(dir.path(), &format!("{schema}_app"), &roles.app_password).unwrap();
        let password_file = |section: &serde_json::Value| {
            section["login"]["password"].as_str().unwrap().trim_start_matches("file:").to_owned()
        };
        let migrate = |user: String, password: String| {
            let (port, name, ca) = (
                owner["port"].to_string(),
                owner["name"].as_str().unwrap().to_owned(),
                owner["ca_file"].as_str().unwrap().to_owned(),
            );
            let exe = binaries().join(service);
            let config = deployed_config(service);
            async move {
                // The deployed (production) configuration, pointed at this throwaway cluster.
                tokio::process::Command::new(exe)
                    .args(["migrate", "--user", &user, "--password-file", &password])
                    .arg("--config")
                    .arg(config)
                    .env("ESTATE_SERVICE__DATABASE__HOST", "127.0.0.1")
                    .env("ESTATE_SERVICE__DATABASE__PORT", port)
                    .env("ESTATE_SERVICE__DATABASE__NAME", name)
                    .env("ESTATE_SERVICE__DATABASE__CA_FILE", ca)
                    .output()
                    .await
                    .unwrap()
            }
        };

        // The login the service runs with cannot run DDL: refused, nothing created.
        let refused = migrate(format!("{schema}_app"), password_file(&app)).await;
        assert!(!refused.status.success(), "{service}: {}", text(&refused));
        assert!(text(&refused).contains("permission denied"), "{service}: {}", text(&refused));
        assert_eq!(tables(&pg, schema).await, 0, "{service}: nothing was created");
        estate_testkit::evidence::refused("migrations as the app role");

        // As the owner: the schema at its version; again: nothing to do.
        for _ in 0..2 {
            let applied = migrate(format!("{schema}_owner"), password_file(&owner)).await;
            assert!(applied.status.success(), "{service}: {}", text(&applied));
            assert!(text(&applied).contains(&format!("{service}: schema at version")), "{}", text(&applied));
        }
        assert!(tables(&pg, schema).await >= 2, "{service}: the schema's tables exist");
        estate_testkit::evidence::allowed("migrations as the owner");
    }
}

#[tokio::test]
async fn auth_users_create_makes_a_user_who_can_log_in_and_refuses_weak_passwords_and_duplicates() {
    let estate = Estate::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let create = |name: &'static str, password_file: PathBuf| {
        let exe = binaries().join("auth");
        let config = estate.auth_config_path().to_path_buf();
        async move {
            tokio::process::Command::new(exe)
                .args(["users", "create", name, "--password-file"])
                .arg(password_file)
                .arg("--config")
                .arg(config)
                .output()
                .await
                .unwrap()
        }
    };
    let password = format!("{}-carol", uuid::Uuid::new_v4().simple());
    let created = create("carol", write("carol", &format!("{password}\n"))).await;
    assert!(created.status.success(), "{}", text(&created));
    assert!(!text(&created).contains(&password), "the password is never echoed");
    let login = estate.login_with("carol", &password).await.unwrap();
    assert!(login["access_token"].is_string());

    let again = create("carol", write("again", &format!("{password}x"))).await;
    assert!(!again.status.success() && text(&again).contains("exists"), "{}", text(&again));
    let weak = create("dave", write("weak", "short")).await;
    assert!(!weak.status.success() && text(&weak).contains("at least 12"), "{}", text(&weak));
    assert!(estate.login_with("dave", "short").await.is_err());
}
