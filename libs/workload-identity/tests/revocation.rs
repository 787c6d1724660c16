//! A compromised SVID cut off by revocation (PC-12): once OpenBao's PKI
//! engine revokes its serial and the peers have the new CRL, the handshake
//! fails in both directions; another SVID of the same workload (the
//! redeployed one) and other workloads keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use estate_secrets::OpenBao;
use estate_secrets::pki::IssuedCertificate;
use estate_secrets::testing;
use estate_service_kit::Server;
use estate_service_kit::config::NoServiceSettings;
use estate_service_kit::management::Readiness;
use estate_service_kit::tls::ServerTls;
use estate_testkit::{TestOpenBao, TestPki};
use estate_workload_identity::crl::{CrlSet, load_from_openbao};
use estate_workload_identity::tls::{client_config_with_crls, server_config_with_crls};
use estate_workload_identity::{RotatingIdentity, SpiffeId, svid_from_pem};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::workload("estate.local", "estate", sa).unwrap()
}

async fn issue(bao: &OpenBao, sa: &str) -> IssuedCertificate {
    bao.issue_spiffe_certificate("pki", sa, id(sa).as_str(), Duration::from_secs(600)).await.unwrap()
}

fn bundle(issued: &IssuedCertificate) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(issued.issuing_ca.as_bytes()).collect::<Result<_, _>>().unwrap()
}

fn client(issued: &IssuedCertificate, crls: &std::sync::Arc<CrlSet>) -> reqwest::Client {
    let identity = RotatingIdentity::new(svid_from_pem(issued).unwrap()).unwrap();
    let tls = client_config_with_crls(identity, &bundle(issued), id("payment"), crls.clone()).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test]
async fn pc12_a_revoked_svid_is_refused_by_its_peers_in_both_directions_and_others_are_not() {
    let bao = TestOpenBao::start().await.unwrap();
    let admin = testing::admin(&bao).unwrap();
    testing::bootstrap(&admin, &["payment", "order"]).await.unwrap();
    let server_svid = issue(&admin, "payment").await;
    let stolen = issue(&admin, "order").await;
    let redeployed = issue(&admin, "order").await;

    // payment's listener, checking client SVIDs against the CRL it holds.
    let pki = TestPki::new("management").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = estate_testkit::kit::config::<NoServiceSettings>(&pki, dir.path()).unwrap();
    let server_crls = CrlSet::new();
    let server_identity = RotatingIdentity::new(svid_from_pem(&server_svid).unwrap()).unwrap();
    let tls = server_config_with_crls(server_identity, &bundle(&server_svid), server_crls.clone()).unwrap();
    let router = Router::new().route("/v1/ping", get(|| async { "pong" }));
    let server = Server::bind_with_api_tls("payment", &config, router, Readiness::default(), Some(ServerTls::new(tls)))
        .await
        .unwrap();
    let url = format!("https://localhost:{}/v1/ping", server.api_addr().port());
    tokio::spawn(server.run_until(std::future::pending()));

    let client_crls = CrlSet::new();
    let (stolen_client, redeployed_client) = (client(&stolen, &client_crls), client(&redeployed, &client_crls));
    load_from_openbao(&server_crls, &admin, "pki").await.unwrap();
    for client in [&stolen_client, &redeployed_client] {
        assert_eq!(client.get(&url).send().await.unwrap().text().await.unwrap(), "pong");
    }

    // Incident: the stolen certificate's serial is revoked; the peer reloads the CRL.
    admin.revoke_certificate("pki", &stolen.serial_number).await.unwrap();
    load_from_openbao(&server_crls, &admin, "pki").await.unwrap();
    let leaf = |issued: &IssuedCertificate| CertificateDer::from_pem_slice(issued.certificate.as_bytes()).unwrap();
    assert!(server_crls.lists(&leaf(&stolen)), "listed for the per-request check");
    assert!(!server_crls.lists(&leaf(&redeployed)));
    assert!(stolen_client.get(&url).send().await.is_err(), "the revoked SVID's handshake must fail");
    assert_eq!(redeployed_client.get(&url).send().await.unwrap().text().await.unwrap(), "pong");

    // The other direction: a server presenting a revoked SVID is refused by
    // clients that hold the CRL — and accepted before they do.
    admin.revoke_certificate("pki", &server_svid.serial_number).await.unwrap();
    assert_eq!(redeployed_client.get(&url).send().await.unwrap().text().await.unwrap(), "pong");
    load_from_openbao(&client_crls, &admin, "pki").await.unwrap();
    assert!(redeployed_client.get(&url).send().await.is_err(), "a revoked server SVID must be refused");
}

#[tokio::test]
async fn a_crl_that_is_not_a_crl_is_refused_and_the_last_one_kept() {
    let crls = CrlSet::new();
    assert!(crls.replace(&[b"-----BEGIN X509 CRL-----\nbm90IGEgY3Js\n-----END X509 CRL-----\n".to_vec()]).is_err());
    assert!(crls.replace(&[b"garbage".to_vec()]).is_err());
    assert!(crls.is_empty());
}
