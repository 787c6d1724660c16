//! Customer webhooks: `POST /v1/webhooks` registers a callback URL;
//! payment events (authorized, declined, refunded) of that customer's
//! payments are then POSTed to it.
//!
//! Every URL goes through `estate-egress` (OWASP API7): vetted when it is
//! registered (scheme, credentials, what the host resolves to — a refusal
//! is a 422 naming the address class, and an audit event), and again on
//! every delivery (resolve-then-connect to the vetted address, no
//! redirects, timeouts, size cap), so a name that later resolves inside
//! the estate is refused at that moment too. The payload carries nothing
//! internal: no provider reference, no card data beyond the last four digits.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use estate_audit::{Action, AuditEvent, Outcome};
use estate_egress::{EgressClient, EgressConfig, EgressError};
use estate_service_kit::Problem;
use estate_service_kit::dto::Dto;
use estate_service_kit::problem::FieldError;
use estate_tokens::Scoped;
use estate_tokens::scopes::OrdersWrite;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

use crate::api::AppState;

/// Most webhooks per customer.
pub const MAX_WEBHOOKS: i64 = 5;

/// `[service.webhooks]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Addresses exempt from the SSRF check (a merchant simulator in
    /// development and tests; empty in production).
    #[serde(default)]
    pub exempt: Vec<std::net::IpAddr>,
    /// Trust only this CA (PEM file) for callbacks (tests); default: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl WebhookSettings {
    /// The outbound client.
    pub fn client(&self) -> anyhow::Result<EgressClient> {
        let ca_pem = self.ca_file.as_ref().map(std::fs::read_to_string).transpose()?;
        Ok(EgressClient::new(EgressConfig {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_response_bytes: 4096,
            exempt: self.exempt.clone(),
            ca_pem,
            ..EgressConfig::default()
        })?)
    }
}

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWebhook {
    /// The callback (https).
    #[validate(length(min = 8, max = 2048))]
    pub url: String,
}

/// A registered webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    id: Uuid,
    url: String,
}

/// A payment event as delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `payment.authorized` | `payment.declined` | `payment.refunded`.
    pub event: &'static str,
    /// The payment.
    pub payment_id: Uuid,
    /// Its order.
    pub order_id: Uuid,
    /// Amount in minor units.
    pub amount_cents: i64,
    /// ISO 4217.
    pub currency: String,
}

fn refused_class(error: &EgressError) -> &'static str {
    match error {
        EgressError::Url(_) => "url",
        EgressError::Scheme => "scheme",
        EgressError::Destination { class } => class,
        EgressError::Unresolvable => "unresolvable",
        EgressError::Redirect(_) => "redirect",
        EgressError::TooLarge(_) => "too_large",
        EgressError::Timeout => "timeout",
        EgressError::Transport(_) => "transport",
    }
}

/// Register a callback URL for the caller's payment events.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = RegisterWebhook,
    responses((status = 201, body = WebhookView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused destination (the address class is the error code)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:write"])))]
pub async fn register(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersWrite>,
    Dto(body): Dto<RegisterWebhook>,
) -> Response {
    let customer = token.subject().as_str().to_owned();
    let url =
        match state.egress.vet_url(&body.url).await {
            Ok(url) => url,
            Err(error) => {
                let class = refused_class(&error);
                tracing::info!(class, "webhook destination refused");
                state.audit.emit(
                    AuditEvent::new(Action::AccessDenied, Outcome::Failure)
                        .reason("webhook_destination_refused")
                        .caller(&customer, token.client_id().map(|c| c.as_str()), token.jti().map(|j| j.as_str())),
                );
                return Problem::typed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    estate_service_kit::dto::INVALID_BODY,
                    "Invalid request body",
                )
                .with_field_errors(vec![FieldError { field: "url".into(), code: class.into() }])
                .into_response();
            }
        };
    let id = Uuid::new_v4();
    let stored = async {
        let mut tx = estate_platform::owner_transaction(&state.pool, &customer).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.webhooks WHERE customer_id = $1")
            .bind(&customer)
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_WEBHOOKS {
            return Ok(false);
        }
        sqlx::query("INSERT INTO payments.webhooks (id, customer_id, url) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(&customer)
            .bind(url.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(true)
    }
    .await;
    match stored {
        Ok(true) => (StatusCode::CREATED, Json(WebhookView { id, url: url.to_string() })).into_response(),
        Ok(false) => Problem::new(StatusCode::CONFLICT).with_detail("at most 5 webhooks per customer").into_response(),
        Err(error) if error.as_database_error().is_some_and(|e| e.is_unique_violation()) => {
            Problem::new(StatusCode::CONFLICT).with_detail("this URL is registered already").into_response()
        }
        Err(error) => {
            tracing::error!(%error, "storing a webhook failed");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}

/// Deliver `event` to every webhook of `customer`, in the background; each
/// attempt's outcome is recorded. Failures never affect the payment.
pub fn notify(state: &AppState, customer: String, event: Event) {
    let state = state.clone();
    estate_service_kit::telemetry::spawn_traced(async move {
        if let Err(error) = deliver(&state, &customer, &event).await {
            tracing::warn!(%error, "webhook delivery bookkeeping failed");
        }
    });
}

async fn deliver(state: &AppState, customer: &str, event: &Event) -> Result<(), sqlx::Error> {
    let hooks: Vec<(Uuid, String)> = {
        let mut tx = estate_platform::owner_transaction(&state.pool, customer).await?;
        let hooks = sqlx::query_as("SELECT id, url FROM payments.webhooks WHERE customer_id = $1")
            .bind(customer)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        hooks
    };
    for (id, url) in hooks {
        let outcome = match state.egress.post_json(&url, event).await {
            Ok(response) if (200..300).contains(&response.status) => "delivered".to_owned(),
            Ok(response) => format!("rejected_{}", response.status),
            Err(error) => format!("refused_{}", refused_class(&error)),
        };
        tracing::info!(webhook_id = %id, event = event.event, outcome, "webhook delivery");
        let mut tx = estate_platform::owner_transaction(&state.pool, customer).await?;
        sqlx::query(
            "INSERT INTO payments.webhook_deliveries (webhook_id, customer_id, payment_id, event, outcome) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(customer)
        .bind(event.payment_id)
        .bind(event.event)
        .bind(&outcome)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}
