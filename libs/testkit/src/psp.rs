//! A payment service provider simulator: the card network is a third party
//! the estate does not own, so tests (and the launcher) run this small real
//! HTTPS server in its place. Besides approving and declining, it can turn
//! hostile in the ways a compromised or buggy provider would (OWASP API10),
//! so the payment service's strict validation is exercised for real.
//!
//! `POST /v1/authorizations {reference, amount_cents, currency}` →
//! `{id, status, amount_cents, currency, card_last4}`;
//! `POST /v1/authorizations/{id}/refunds` → `{id, status: "refunded"}`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use serde_json::{Value, json};

use crate::TestkitError;
use crate::kit::TestServer;

/// How the provider answers authorizations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PspMode {
    /// Authorize everything.
    Approve,
    /// Decline everything.
    Decline,
    /// Answer with an extra, unknown field.
    ExtraField,
    /// Authorize another amount than asked.
    WrongAmount,
    /// Send the full card number where the last four digits belong.
    FullCardNumber,
    /// A reference with characters that do not belong in one.
    InjectedReference,
    /// A body far over any sane size.
    Oversized,
    /// A redirect to the cloud metadata address.
    RedirectToMetadata,
    /// HTTP 500.
    ServerError,
    /// `text/html` instead of JSON.
    NotJson,
}

struct PspState {
    mode: Mutex<PspMode>,
    authorizations: AtomicU64,
    refunds: AtomicU64,
}

/// The running simulator.
pub struct TestPsp {
    server: TestServer,
    state: Arc<PspState>,
}

impl TestPsp {
    /// Start on a free loopback port (HTTPS, its own CA).
    pub async fn start() -> Result<Self, TestkitError> {
        let state = Arc::new(PspState {
            mode: Mutex::new(PspMode::Approve),
            authorizations: AtomicU64::new(0),
            refunds: AtomicU64::new(0),
        });
        let router = axum::Router::new()
            .route("/v1/authorizations", post(authorize))
            .route("/v1/authorizations/{id}/refunds", post(refund))
            .with_state(state.clone());
        let server = TestServer::serve("psp", router).await?;
        Ok(Self { server, state })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// The CA its certificate chains to (PEM).
    pub fn ca_pem(&self) -> String {
        self.server.pki.ca_pem()
    }

    /// Change how it answers.
    pub fn set_mode(&self, mode: PspMode) {
        if let Ok(mut current) = self.state.mode.lock() {
            *current = mode;
        }
    }

    /// Authorization requests received.
    pub fn authorizations(&self) -> u64 {
        self.state.authorizations.load(Ordering::SeqCst)
    }

    /// Refund requests received.
    pub fn refunds(&self) -> u64 {
        self.state.refunds.load(Ordering::SeqCst)
    }
}

async fn authorize(State(state): State<Arc<PspState>>, Json(body): Json<Value>) -> Response {
    state.authorizations.fetch_add(1, Ordering::SeqCst);
    let mode = state.mode.lock().map(|m| *m).unwrap_or(PspMode::ServerError);
    let amount = body["amount_cents"].as_i64().unwrap_or(0);
    let currency = body["currency"].as_str().unwrap_or("EUR").to_owned();
    let id = format!("psp_{}", body["reference"].as_str().unwrap_or("x").replace('-', ""));
    let approved =
        json!({ "id": id, "status": "authorized", "amount_cents": amount, "currency": currency, "card_last4": "4242" });
    match mode {
        PspMode::Approve => Json(approved).into_response(),
        PspMode::Decline => {
            Json(json!({ "id": id, "status": "declined", "amount_cents": amount, "currency": currency }))
                .into_response()
        }
        PspMode::ExtraField => {
            let mut answer = approved;
            answer["risk_override"] = json!("approve_all");
            Json(answer).into_response()
        }
        PspMode::WrongAmount => {
            let mut answer = approved;
            answer["amount_cents"] = json!(amount * 100);
            Json(answer).into_response()
        }
        PspMode::FullCardNumber => {
            let mut answer = approved;
            answer["card_last4"] = json!("4242424242424242");
            Json(answer).into_response()
        }
        PspMode::InjectedReference => {
            let mut answer = approved;
            answer["id"] = json!("psp_1'; DROP TABLE payments.payments; --");
            Json(answer).into_response()
        }
        PspMode::Oversized => {
            let mut answer = approved;
            answer["padding"] = json!("x".repeat(1 << 20));
            Json(answer).into_response()
        }
        PspMode::RedirectToMetadata => {
            (StatusCode::TEMPORARY_REDIRECT, [(http::header::LOCATION, "http://169.254.169.254/latest/meta-data/")])
                .into_response()
        }
        PspMode::ServerError => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        PspMode::NotJson => ([(http::header::CONTENT_TYPE, "text/html")], "<html>ok</html>").into_response(),
    }
}

async fn refund(State(state): State<Arc<PspState>>, Path(id): Path<String>) -> Response {
    state.refunds.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "id": id, "status": "refunded" })).into_response()
}
