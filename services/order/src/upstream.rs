//! Order's two upstreams, each over east-west mTLS that accepts only the
//! expected SPIFFE ID, each with the token its flow prescribes:
//!
//! - **inventory** (gRPC, FLOW-CC): order's own client-credentials token,
//!   cached and refreshed by [`ClientCredentialsSource`];
//! - **payment** (REST): at checkout a token exchanged for the user's
//!   (FLOW-TX, RFC 8693: `aud=payment-api`, `scope=payments:authorize`,
//!   `act.sub=order-svc`); for refunds the user's own token (FLOW-RELAY).
//!
//! Answers are checked before they are believed: a reservation for another
//! order or other lines, or a payment answer that does not parse strictly,
//! is treated as a failure (and compensated), never as success.

use std::sync::Arc;
use std::time::Duration;

use estate_oauth_client::{BearerLayer, ClientCredentialsSource, OAuthClient};
use estate_proto::inventory::v1::inventory_client::InventoryClient;
use estate_proto::inventory::v1::{Line, ReleaseRequest, ReserveRequest};
use estate_service_kit::telemetry::{PropagateTraceLayer, outbound_trace_headers};
use estate_workload_identity::GrpcChannel;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::PricedLine;

/// How long one upstream call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest payment answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

type InventoryChannel =
    estate_oauth_client::Bearer<estate_service_kit::telemetry::PropagateTrace<GrpcChannel>, ClientCredentialsSource>;

/// Inventory over gRPC with order's client-credentials token.
#[derive(Clone)]
pub struct Inventory {
    client: InventoryClient<InventoryChannel>,
}

/// Why stock was not reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveFailure {
    /// Not enough stock (or an unknown product).
    OutOfStock,
    /// Inventory refused, failed, timed out or answered nonsense.
    Unavailable,
}

impl Inventory {
    /// Calls go to `origin` over `channel`, with tokens from `tokens`.
    pub fn new(channel: GrpcChannel, origin: http::Uri, tokens: ClientCredentialsSource) -> Self {
        let service =
            tower::ServiceBuilder::new().layer(BearerLayer::new(tokens)).layer(PropagateTraceLayer).service(channel);
        Self { client: InventoryClient::with_origin(service, origin) }
    }

    /// Reserve `lines` for `order`.
    pub async fn reserve(&self, order: Uuid, lines: &[PricedLine]) -> Result<(), ReserveFailure> {
        let request = ReserveRequest {
            order_id: order.to_string(),
            lines: lines.iter().map(|l| Line { sku: l.sku.as_str().to_owned(), quantity: l.quantity }).collect(),
        };
        let mut client = self.client.clone();
        let answer = match tokio::time::timeout(CALL_TIMEOUT, client.reserve(request.clone())).await {
            Ok(Ok(answer)) => answer.into_inner(),
            Ok(Err(status)) => {
                tracing::info!(code = ?status.code(), "inventory refused the reservation");
                return Err(match status.code() {
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound => ReserveFailure::OutOfStock,
                    _ => ReserveFailure::Unavailable,
                });
            }
            Err(_) => {
                tracing::warn!("inventory timed out");
                return Err(ReserveFailure::Unavailable);
            }
        };
        let mut expected = request.lines;
        let mut got = answer.lines;
        expected.sort_by(|a, b| a.sku.cmp(&b.sku));
        got.sort_by(|a, b| a.sku.cmp(&b.sku));
        if answer.order_id != request.order_id || expected != got {
            tracing::warn!("inventory answered with a reservation that is not the one asked for");
            return Err(ReserveFailure::Unavailable);
        }
        Ok(())
    }

    /// Release `order`'s reservation (compensation, cancellation). Errors
    /// are logged: the release is idempotent and may be retried.
    pub async fn release(&self, order: Uuid) -> bool {
        let mut client = self.client.clone();
        match tokio::time::timeout(CALL_TIMEOUT, client.release(ReleaseRequest { order_id: order.to_string() })).await {
            Ok(Ok(_)) => true,
            Ok(Err(status)) => {
                tracing::error!(order_id = %order, code = ?status.code(), "releasing stock failed");
                false
            }
            Err(_) => {
                tracing::error!(order_id = %order, "releasing stock timed out");
                false
            }
        }
    }
}

/// Payment over REST.
#[derive(Clone)]
pub struct Payment {
    http: reqwest::Client,
    base: String,
    oauth: Arc<OAuthClient>,
}

/// The outcome of an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// Authorized: the payment's id.
    Authorized(Uuid),
    /// Declined by the provider.
    Declined,
}

/// Payment failed in a way that is not a decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymentFailure {
    /// The exchange at the authorization server was refused.
    #[error("token exchange refused")]
    Exchange,
    /// Payment refused the call (401/403/404).
    #[error("payment refused the call")]
    Refused,
    /// Payment failed, timed out or answered nonsense.
    #[error("payment unavailable")]
    Unavailable,
}

#[derive(Serialize)]
struct AuthorizeBody<'a> {
    order_id: Uuid,
    amount_cents: i64,
    currency: &'a str,
}

/// Payment's answer, parsed strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentAnswer {
    id: Uuid,
    order_id: Uuid,
    status: String,
    amount_cents: i64,
    currency: String,
    #[serde(default)]
    #[allow(dead_code, reason = "part of the strict schema")]
    card_last4: Option<String>,
}

impl Payment {
    /// `http` presents order's SVID and accepts only payment's.
    pub fn new(http: reqwest::Client, base: &str, oauth: Arc<OAuthClient>) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned(), oauth }
    }

    /// FLOW-TX: exchange `user_token` and authorize `amount_cents` for `order`.
    pub async fn authorize(
        &self,
        user_token: &SecretString,
        order: Uuid,
        amount_cents: i64,
        currency: &str,
    ) -> Result<Authorization, PaymentFailure> {
        let exchanged =
            self.oauth.exchange(user_token, "payment-api", "payments:authorize").await.map_err(|error| {
                tracing::warn!(%error, "token exchange for payment failed");
                PaymentFailure::Exchange
            })?;
        let response = self
            .http
            .post(format!("{}/v1/payments", self.base))
            .headers(outbound_trace_headers())
            .bearer_auth(exchanged.access_token.expose_secret())
            .json(&AuthorizeBody { order_id: order, amount_cents, currency })
            .send()
            .await;
        let answer: PaymentAnswer = read_answer(response).await?;
        if answer.order_id != order || answer.amount_cents != amount_cents || answer.currency != currency {
            tracing::warn!("payment answered for another order or amount");
            return Err(PaymentFailure::Unavailable);
        }
        match answer.status.as_str() {
            "authorized" => Ok(Authorization::Authorized(answer.id)),
            "declined" => Ok(Authorization::Declined),
            _ => Err(PaymentFailure::Unavailable),
        }
    }

    /// FLOW-RELAY: refund `payment` with the user's own token.
    pub async fn refund(&self, user_token: &SecretString, payment: Uuid) -> Result<(), PaymentFailure> {
        let response = self
            .http
            .post(format!("{}/v1/payments/{payment}/refund", self.base))
            .headers(outbound_trace_headers())
            .bearer_auth(user_token.expose_secret())
            .send()
            .await;
        let answer: PaymentAnswer = read_answer(response).await?;
        if answer.id != payment || answer.status != "refunded" {
            return Err(PaymentFailure::Unavailable);
        }
        Ok(())
    }
}

async fn read_answer<T: serde::de::DeserializeOwned>(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, PaymentFailure> {
    let mut response = response.map_err(|error| {
        tracing::warn!(error = %error.without_url(), "payment call failed");
        PaymentFailure::Unavailable
    })?;
    let status = response.status();
    if matches!(status.as_u16(), 401 | 403 | 404) {
        tracing::warn!(%status, "payment refused the call");
        return Err(PaymentFailure::Refused);
    }
    if !status.is_success() {
        tracing::warn!(%status, "payment failed");
        return Err(PaymentFailure::Unavailable);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| PaymentFailure::Unavailable)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(PaymentFailure::Unavailable);
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| {
        tracing::warn!("payment answered something that is not its schema");
        PaymentFailure::Unavailable
    })
}
