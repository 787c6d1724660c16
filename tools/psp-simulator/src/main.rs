//! `psp-simulator`: the card network on a demo host (compose). The payment
//! provider is a third party the estate does not own, so a demo runs this
//! real HTTPS server in its place — the same contract as the suites'
//! simulator (`estate_testkit::psp`), approving everything.
//!
//! - `psp-simulator serve --bind ADDR --name DNS --ca-out FILE`: a CA of its
//!   own (generated, never stored but its certificate: FILE, for the payment
//!   service to trust), a certificate for DNS, and
//!   `POST /v1/authorizations` → `{id, status: "authorized", amount_cents,
//!   currency, card_last4}`, `POST /v1/authorizations/{id}/refunds` →
//!   `{id, status: "refunded"}`.
//! - `psp-simulator health --bind ADDR --name DNS --ca-out FILE`: exit 0 when
//!   the server answers over TLS verified with that CA (compose's healthcheck).
#![allow(clippy::print_stderr, reason = "a command-line tool reports on its terminal")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::extract::Path;
use axum::routing::post;
use estate_service_kit::serve::TlsListener;
use estate_service_kit::tls::{CertifiedKey, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};

const USAGE: &str = "usage: psp-simulator serve|health --bind ADDR --name DNS --ca-out FILE";

struct Args {
    bind: SocketAddr,
    name: String,
    ca_out: PathBuf,
}

fn args(rest: &[String]) -> Result<Args> {
    let value = |flag: &str| -> Result<String> {
        let at = rest.iter().position(|a| a == flag).with_context(|| format!("{flag} is required\n{USAGE}"))?;
        rest.get(at + 1).cloned().with_context(|| format!("{flag} needs a value\n{USAGE}"))
    };
    Ok(Args {
        bind: value("--bind")?.parse().context("--bind")?,
        name: value("--name")?,
        ca_out: value("--ca-out")?.into(),
    })
}

/// A CA and a server certificate for `name`, both generated now.
fn certificates(name: &str) -> Result<(String, CertifiedKey)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "PSP Simulator CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let now = time::OffsetDateTime::now_utc();
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = now + time::Duration::days(30);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec![name.to_owned(), "localhost".to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::minutes(5);
    leaf.not_after = now + time::Duration::days(30);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_pem, CertifiedKey::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?))
}

async fn authorize(Json(body): Json<Value>) -> Json<Value> {
    let reference = body["reference"].as_str().unwrap_or_default().replace('-', "");
    Json(json!({
        "id": format!("psp_{reference}"),
        "status": "authorized",
        "amount_cents": body["amount_cents"].as_i64().unwrap_or(0),
        "currency": body["currency"].as_str().unwrap_or("EUR"),
        "card_last4": "4242",
    }))
}

async fn refund(Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "id": id, "status": "refunded" }))
}

async fn serve(args: Args) -> Result<()> {
    let (ca_pem, certified) = certificates(&args.name)?;
    let tls = ServerTls::new(certified.into_server_config()?);
    let listener = TlsListener::bind(args.bind, tls, Duration::from_secs(5)).await.context("bind")?;
    // The CA once the server listens: a client that can read it can connect.
    std::fs::write(&args.ca_out, ca_pem).with_context(|| format!("{}", args.ca_out.display()))?;
    let router = axum::Router::new()
        .route("/v1/authorizations", post(authorize))
        .route("/v1/authorizations/{id}/refunds", post(refund));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        estate_service_kit::shutdown_signal().await;
        let _ = stop.send(true);
    });
    listener.serve(router, stopped, Duration::from_secs(5)).await;
    Ok(())
}

async fn health(args: Args) -> Result<()> {
    let ca = std::fs::read(&args.ca_out).with_context(|| format!("{}", args.ca_out.display()))?;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .resolve(&args.name, SocketAddr::from(([127, 0, 0, 1], args.bind.port())))
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("https://{}:{}/v1/authorizations/probe/refunds", args.name, args.bind.port());
    let status = http.post(url).send().await.context("TLS")?.status();
    if !status.is_success() {
        bail!("answered {status}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let outcome = (|| -> Result<()> {
        let (command, rest) = argv.split_first().context(USAGE)?;
        let args = args(rest)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        match command.as_str() {
            "serve" => runtime.block_on(serve(args)),
            "health" => runtime.block_on(health(args)),
            _ => bail!("{USAGE}"),
        }
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("psp-simulator: {error:#}");
            ExitCode::FAILURE
        }
    }
}
