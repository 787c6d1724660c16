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

#[tokio::test]
async fn auth_users_import_creates_each_user_once_and_checks_every_file_before_storing_any() {
    let estate = Estate::start().await;
    let import = |dir: PathBuf| {
        let exe = binaries().join("auth");
        let config = estate.auth_config_path().to_path_buf();
        async move {
            tokio::process::Command::new(exe)
                .args(["users", "import"])
                .arg(dir)
                .arg("--config")
                .arg(config)
                .output()
                .await
                .unwrap()
        }
    };
    // One weak password among good ones: nothing is stored.
    let bad = tempfile::tempdir().unwrap();
    let erin = format!("{}-erin", uuid::Uuid::new_v4().simple());
    std::fs::write(bad.path().join("erin"), &erin).unwrap();
    std::fs::write(bad.path().join("frank"), "short").unwrap();
    let refused = import(bad.path().to_path_buf()).await;
    assert!(!refused.status.success() && text(&refused).contains("at least 12"), "{}", text(&refused));
    assert!(estate.login_with("erin", &erin).await.is_err(), "no user was created");

    // A Kubernetes Secret mount's `..data` link is skipped; alice exists and is left as she is.
    let good = tempfile::tempdir().unwrap();
    std::fs::write(good.path().join("erin"), format!("{erin}\n")).unwrap();
    std::fs::write(good.path().join("alice"), "a-new-password-for-alice").unwrap();
    std::fs::create_dir(good.path().join("..data")).unwrap();
    let imported = import(good.path().to_path_buf()).await;
    assert!(imported.status.success(), "{}", text(&imported));
    assert!(text(&imported).contains("created [erin]") && text(&imported).contains("[alice]"), "{}", text(&imported));
    assert!(!text(&imported).contains(&erin), "the password is never echoed");
    assert!(estate.login_with("erin", &erin).await.is_ok());
    assert!(estate.login_with("alice", "a-new-password-for-alice").await.is_err(), "alice keeps her password");
    assert!(estate.login_with("alice", &estate.password("alice")).await.is_ok());
    let again = import(good.path().to_path_buf()).await;
    assert!(again.status.success() && text(&again).contains("created []"), "{}", text(&again));
}

#[tokio::test]
async fn health_succeeds_only_against_a_ready_service_presenting_the_configured_certificate() {
    let estate = Estate::start().await;
    // The deployed shape: a fixed management port (the harness binds port 0).
    let dir = tempfile::tempdir().unwrap();
    let mut config = std::fs::read_to_string(estate.auth_config_path()).unwrap();
    let api = config.lines().find(|l| l.trim_start().starts_with("bind = \"127.0.0.1:")).unwrap().to_owned();
    config = config.replacen(&api, &format!("bind = \"127.0.0.1:{}\"", estate_testkit::free_port().unwrap()), 1);
    let management = format!("bind = \"127.0.0.1:{}\"", estate_testkit::free_port().unwrap());
    config = config.replace("bind = \"127.0.0.1:0\"", &management);
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, &config).unwrap();
    let health = |config: PathBuf| {
        let exe = binaries().join("auth");
        async move { tokio::process::Command::new(exe).arg("health").arg("--config").arg(config).output().await.unwrap() }
    };
    let stopped = health(path.clone()).await;
    assert!(!stopped.status.success() && text(&stopped).contains("not ready"), "{}", text(&stopped));

    let scratch = tempfile::tempdir().unwrap();
    let auth = estate_testkit::binary::ServiceProcess::spawn_config(&binaries().join("auth"), &path, None, scratch)
        .await
        .unwrap();
    let ready = health(path.clone()).await;
    assert!(ready.status.success(), "{}", text(&ready));

    // Another certificate at that address than the configuration names: not healthy.
    let pki = estate_testkit::TestPki::new("someone-else").unwrap();
    let files = pki.localhost_server().unwrap().write_to(dir.path(), "other").unwrap();
    let cert = config.lines().find(|l| l.trim_start().starts_with("cert = ")).unwrap().to_owned();
    let foreign = dir.path().join("foreign.toml");
    std::fs::write(&foreign, config.replace(&cert, &format!("cert = {:?}", files.cert.display().to_string()))).unwrap();
    let pinned = health(foreign).await;
    assert!(!pinned.status.success() && text(&pinned).contains("TLS"), "{}", text(&pinned));
    assert_eq!(auth.terminate().await.unwrap(), Some(0));
}
