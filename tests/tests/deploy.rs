//! The deployment configurations (`k8s/base/config/`) are what each service
//! expects (PC-06, issue 11): every file parses as that service's
//! configuration, in production mode — which refuses development settings
//! (self-signed TLS, static database passwords, generated signing keys, open
//! metrics) — and names no secret, only files and OpenBao references.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::path::{Path, PathBuf};

use estate_service_kit::Config;
use estate_service_kit::config::Mode;

/// The configuration folders: Kubernetes, and compose (generated from it).
const DEPLOYMENTS: [&str; 2] = ["k8s/base/config", "infra/compose/config"];

fn file(deployment: &str, service: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../{deployment}/{service}.toml"))
}

fn load<S: serde::de::DeserializeOwned + serde::Serialize + estate_service_kit::config::DevSettings>(
    deployment: &str,
    service: &str,
) -> Config<S> {
    let path = file(deployment, service);
    let config = Config::<S>::from_figment(Config::<S>::figment(Some(&path)))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(config.mode, Mode::Production, "{service}");
    config
}

#[test]
fn pc06_k8s_configurations_parse_as_each_service_expects() {
    for deployment in DEPLOYMENTS {
        load::<estate_auth::settings::AuthSettings>(deployment, "auth");
        load::<estate_gateway::GatewaySettings>(deployment, "gateway");
        load::<estate_order::OrderSettings>(deployment, "order");
        load::<estate_payment::PaymentSettings>(deployment, "payment");
        load::<estate_inventory::InventorySettings>(deployment, "inventory");
    }
}

#[test]
fn pc06_k8s_configurations_reference_secrets_only_as_files_or_openbao() {
    for (deployment, service) in
        DEPLOYMENTS.iter().flat_map(|d| ["auth", "gateway", "order", "payment", "inventory"].map(|s| (*d, s)))
    {
        let text = std::fs::read_to_string(file(deployment, service)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let lower = line.to_ascii_lowercase();
            if lower.contains("key =") || lower.contains("token =") || lower.contains("password") {
                assert!(
                    line.contains("\"file:/etc/estate/tls/")
                        || line.contains("\"openbao:")
                        || lower.contains("_file ="),
                    "{deployment}/{service}: {line:?} is not a file or OpenBao reference"
                );
            }
        }
    }
}

#[test]
fn pc06_the_east_west_policies_deployed_are_the_ones_the_suites_run_with() {
    for service in ["inventory", "order", "payment"] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let source = std::fs::read_to_string(root.join(format!("infra/east-west/{service}.toml"))).unwrap();
        let deployed =
            std::fs::read_to_string(root.join(format!("k8s/base/generated/east-west/{service}.toml"))).unwrap();
        assert_eq!(source, deployed, "{service}: run `cargo xtask gen-infra`");
        estate_workload_identity::EastWestPolicy::from_toml(&source).unwrap();
    }
}
