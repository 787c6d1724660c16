//! A merchant's webhook endpoint: a third party the estate calls out to, so
//! tests run this small real HTTPS server in its place, on `127.0.0.2` — an
//! address an SSRF-safe client can exempt for the test without exempting
//! `127.0.0.1` (whose refusal the same test proves).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

use crate::TestkitError;
use crate::kit::TestServer;

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantMode {
    /// 204.
    Accept,
    /// 307 to the cloud metadata address.
    RedirectToMetadata,
}

/// One received delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Request headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    deliveries: Mutex<Vec<Delivery>>,
    mode: Mutex<Option<MerchantMode>>,
    arrived: Notify,
}

/// The running endpoint.
pub struct TestMerchant {
    server: TestServer,
    inner: Arc<Inner>,
}

impl TestMerchant {
    /// Start on `127.0.0.2`, a free port, HTTPS from its own CA.
    pub async fn start() -> Result<Self, TestkitError> {
        let inner = Arc::new(Inner::default());
        let router = axum::Router::new().route("/hooks/estate", axum::routing::post(receive)).with_state(inner.clone());
        let server = TestServer::serve_at("merchant", router, std::net::IpAddr::from([127, 0, 0, 2]), |_| {}).await?;
        Ok(Self { server, inner })
    }

    /// The callback URL (`https://127.0.0.2:<port>/hooks/estate`).
    pub fn url(&self) -> String {
        self.server.ip_url("/hooks/estate")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.api_addr.port()
    }

    /// The CA of its certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.server.pki.ca_pem()
    }

    /// Change how it answers.
    pub fn set_mode(&self, mode: MerchantMode) {
        if let Ok(mut current) = self.inner.mode.lock() {
            *current = Some(mode);
        }
    }

    /// What arrived so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.deliveries.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Wait until at least `n` deliveries arrived (or `timeout` passed).
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<Delivery> {
        let wait = async {
            loop {
                let notified = self.inner.arrived.notified();
                if self.deliveries().len() >= n {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.deliveries()
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut deliveries) = inner.deliveries.lock() {
        deliveries.push(Delivery { headers, body });
    }
    inner.arrived.notify_waiters();
    match inner.mode.lock().ok().and_then(|m| *m).unwrap_or(MerchantMode::Accept) {
        MerchantMode::Accept => StatusCode::NO_CONTENT.into_response(),
        MerchantMode::RedirectToMetadata => {
            (StatusCode::TEMPORARY_REDIRECT, [(http::header::LOCATION, "https://169.254.169.254/latest/meta-data/")])
                .into_response()
        }
    }
}
