//! The payment service provider (the card network): a third party, so its
//! answers are validated as strictly as user input (OWASP API10). An answer
//! that is not exactly the expected shape — an unknown field, another amount
//! or currency than asked, a malformed reference, a full card number, a
//! redirect, an oversized or slow body — is a provider failure: the payment
//! is marked failed, nothing is treated as authorized.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest provider answer read.
const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// `[service.psp]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PspSettings {
    /// Base URL (https).
    pub url: String,
    /// Extra CA certificates (PEM file) for the provider's TLS.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Per-call timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// The provider said no, or said something we cannot trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PspError {
    /// Transport failure, timeout, redirect, 5xx.
    #[error("provider unreachable or failing: {0}")]
    Unavailable(String),
    /// The answer broke the contract.
    #[error("provider answer refused: {0}")]
    Contract(&'static str),
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Authorized under `reference`.
    Authorized {
        /// The provider's reference.
        reference: String,
        /// Last four digits of the card.
        card_last4: String,
    },
    /// Declined.
    Declined,
}

#[derive(Serialize)]
struct AuthorizeBody<'a> {
    reference: Uuid,
    amount_cents: i64,
    currency: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeAnswer {
    id: String,
    status: String,
    amount_cents: i64,
    currency: String,
    #[serde(default)]
    card_last4: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundAnswer {
    id: String,
    status: String,
}

fn reference_ok(value: &str) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The provider's client.
#[derive(Clone)]
pub struct Psp {
    http: reqwest::Client,
    base: String,
}

impl Psp {
    /// From settings.
    pub fn new(settings: &PspSettings) -> anyhow::Result<Self> {
        if !settings.url.starts_with("https://") {
            anyhow::bail!("service.psp.url must be https");
        }
        let timeout = Duration::from_millis(settings.timeout_ms.clamp(100, 30_000));
        let mut http = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout);
        if let Some(file) = &settings.ca_file {
            let pem = std::fs::read(file)?;
            http = http.tls_certs_only([reqwest::Certificate::from_pem(&pem)?]);
        }
        Ok(Self { http: http.build()?, base: settings.url.trim_end_matches('/').to_owned() })
    }

    /// Ask for an authorization of `amount_cents` under our `reference`.
    pub async fn authorize(&self, reference: Uuid, amount_cents: i64, currency: &str) -> Result<Decision, PspError> {
        let response = self
            .http
            .post(format!("{}/v1/authorizations", self.base))
            .json(&AuthorizeBody { reference, amount_cents, currency })
            .send()
            .await;
        let answer: AuthorizeAnswer = read(response).await?;
        if answer.amount_cents != amount_cents || answer.currency != currency {
            return Err(PspError::Contract("amount or currency differs from the request"));
        }
        if !reference_ok(&answer.id) {
            return Err(PspError::Contract("malformed reference"));
        }
        match (answer.status.as_str(), answer.card_last4) {
            ("authorized", Some(last4)) if last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Decision::Authorized { reference: answer.id, card_last4: last4 })
            }
            ("authorized", _) => Err(PspError::Contract("card_last4 missing or not four digits")),
            ("declined", _) => Ok(Decision::Declined),
            _ => Err(PspError::Contract("unknown status")),
        }
    }

    /// Refund the authorization `reference`.
    pub async fn refund(&self, reference: &str) -> Result<(), PspError> {
        if !reference_ok(reference) {
            return Err(PspError::Contract("malformed reference"));
        }
        let response = self.http.post(format!("{}/v1/authorizations/{reference}/refunds", self.base)).send().await;
        let answer: RefundAnswer = read(response).await?;
        if answer.id != reference || answer.status != "refunded" {
            return Err(PspError::Contract("refund answer does not match"));
        }
        Ok(())
    }
}

async fn read<T: serde::de::DeserializeOwned>(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, PspError> {
    let mut response = response.map_err(|e| PspError::Unavailable(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        // Redirects are not followed: a 3xx lands here too.
        return Err(PspError::Unavailable(format!("status {status}")));
    }
    let json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(PspError::Contract("not application/json"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| PspError::Unavailable(e.without_url().to_string()))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(PspError::Contract("answer too large"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| PspError::Contract("answer does not match the schema"))
}
