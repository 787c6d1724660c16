//! The payment REST API. Money moves only when BOTH identities agree
//! (ARCHITECTURE §3):
//!
//! - `POST /v1/payments` (FLOW-TX): the mTLS peer is order, the token is an
//!   exchanged `payment-api` token with `payments:authorize` whose `act.sub`
//!   is order's client, and its `sub` (the user) becomes the payment's owner;
//! - `POST /v1/payments/{id}/refund` (FLOW-RELAY): the mTLS peer is order,
//!   the token is the user's own (no `act`) with `payments:refund`, and the
//!   user owns the payment (else 404).
//!
//! Both are idempotent. Reads and writes go through row-level security on
//! the owner.

use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::response::{IntoResponse, Response};
use estate_audit::{Action, AuditEvent, Outcome};
use estate_service_kit::Problem;
use estate_service_kit::dto::Dto;
use estate_service_kit::openapi::BearerAuth;
use estate_tokens::scopes::{OrdersRead, PaymentsAuthorize, PaymentsRefund};
use estate_tokens::{Scoped, VerifiedToken, Verifier};
use estate_workload_identity::{Peer, SpiffeId};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::psp::{Decision, Psp};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// `payments_app` pool.
    pub pool: PgPool,
    /// The provider.
    pub psp: Psp,
    /// Verifies `payment-api` tokens.
    pub verifier: Verifier,
    /// Audit log.
    pub audit: estate_audit::AuditLog,
    /// The only workload that may move money (order).
    pub order_peer: SpiffeId,
    /// Order's OAuth client id: the required `act.sub` of exchanged tokens.
    pub order_client: String,
    /// The SSRF-safe client for webhooks.
    pub egress: estate_egress::EgressClient,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

/// The routes and their OpenAPI document, from one source (see order's API).
pub fn router(state: AppState) -> (axum::Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(authorize))
        .routes(routes!(refund))
        .routes(routes!(get_payment))
        .routes(routes!(crate::webhooks::register))
        .with_state(state)
        .split_for_parts()
}

/// The management listener's extra routes: the OpenAPI document.
pub fn management_router(api_doc: utoipa::openapi::OpenApi) -> axum::Router {
    let api_doc = std::sync::Arc::new(api_doc);
    axum::Router::new()
        .route("/openapi.json", axum::routing::get(move || async move { Json(api_doc.as_ref().clone()) }))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Estate payment API", version = "1", description = "Money moves only for the order workload (mTLS) acting for the user (token). Every error is application/problem+json."),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// `POST /v1/payments`: set by order from its own records, never by a user.
#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeDto {
    /// The order paid for.
    pub order_id: Uuid,
    /// Amount in minor units.
    #[validate(range(min = 1, max = 100_000_000))]
    pub amount_cents: i64,
    /// ISO 4217.
    #[validate(length(equal = 3))]
    pub currency: String,
}

/// A payment as callers see it: no provider reference, no card beyond last4.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    id: Uuid,
    order_id: Uuid,
    status: String,
    amount_cents: i64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_last4: Option<String>,
}

struct Stored {
    view: PaymentView,
    psp_reference: Option<String>,
}

fn internal(error: &sqlx::Error) -> Response {
    tracing::error!(%error, "payment database call failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

impl AppState {
    fn deny(&self, token: &VerifiedToken, peer: &Peer, status: StatusCode, reason: &'static str) -> Response {
        let mut event = AuditEvent::new(Action::AccessDenied, Outcome::Failure).reason(reason).caller(
            token.subject().as_str(),
            token.client_id().map(|c| c.as_str()),
            token.jti().map(|j| j.as_str()),
        );
        if let Ok(id) = estate_audit::Identifier::new(peer.0.as_str()) {
            event = event.peer(id);
        }
        self.audit.emit(event);
        Problem::new(status).into_response()
    }

    async fn load(&self, customer: &str, clause: &str, id: Uuid) -> Result<Option<Stored>, sqlx::Error> {
        let mut tx = estate_platform::owner_transaction(&self.pool, customer).await?;
        let query = format!(
            "SELECT id, order_id, status, amount_cents, currency, card_last4, psp_reference FROM payments.payments \
             WHERE {clause} = $1 AND customer_id = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(query)).bind(id).bind(customer).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.map(|row| {
            Ok(Stored {
                view: PaymentView {
                    id: row.try_get("id")?,
                    order_id: row.try_get("order_id")?,
                    status: row.try_get("status")?,
                    amount_cents: row.try_get("amount_cents")?,
                    currency: row.try_get("currency")?,
                    card_last4: row.try_get("card_last4")?,
                },
                psp_reference: row.try_get("psp_reference")?,
            })
        })
        .transpose()
    }

    async fn set_status(
        &self,
        customer: &str,
        id: Uuid,
        status: &str,
        reference: Option<&str>,
        last4: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = estate_platform::owner_transaction(&self.pool, customer).await?;
        sqlx::query(
            "UPDATE payments.payments SET status = $3, psp_reference = COALESCE($4, psp_reference), \
             card_last4 = COALESCE($5, card_last4), updated_at = now() WHERE id = $1 AND customer_id = $2",
        )
        .bind(id)
        .bind(customer)
        .bind(status)
        .bind(reference)
        .bind(last4)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = AuthorizeDto,
    responses(
        (status = 201, description = "Decided: authorized or declined", body = PaymentView),
        (status = 200, description = "The order's payment, made before", body = PaymentView),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not order's workload, or not an exchanged token acting for order", body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider failed; nothing was charged", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["payments:authorize"])))]
async fn authorize(
    State(state): State<AppState>,
    peer: Peer,
    Scoped(token, ..): Scoped<PaymentsAuthorize>,
    Dto(body): Dto<AuthorizeDto>,
) -> Response {
    if peer.0 != state.order_peer {
        return state.deny(&token, &peer, StatusCode::FORBIDDEN, "payment_peer_not_order");
    }
    // An exchanged token acting for order: the user alone (a relayed token)
    // cannot authorize, nor can another actor.
    if token.actor().is_none_or(|act| act.sub().as_str() != state.order_client) {
        return state.deny(&token, &peer, StatusCode::FORBIDDEN, "payment_actor_not_order");
    }
    if !body.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            estate_service_kit::dto::INVALID_BODY,
            "Invalid request body",
        )
        .with_field_errors(vec![estate_service_kit::problem::FieldError {
            field: "currency".into(),
            code: "format".into(),
        }])
        .into_response();
    }
    let customer = token.subject().as_str().to_owned();

    // Idempotent per order: the same request again gets the same payment.
    match state.load(&customer, "order_id", body.order_id).await {
        Ok(Some(existing)) => {
            let same = existing.view.amount_cents == body.amount_cents && existing.view.currency == body.currency;
            return if same {
                (StatusCode::OK, Json(existing.view)).into_response()
            } else {
                Problem::new(StatusCode::CONFLICT).with_detail("the order is paid with another amount").into_response()
            };
        }
        Ok(None) => {}
        Err(error) => return internal(&error),
    }
    let id = Uuid::new_v4();
    let inserted = async {
        let mut tx = estate_platform::owner_transaction(&state.pool, &customer).await?;
        sqlx::query(
            "INSERT INTO payments.payments (id, order_id, customer_id, amount_cents, currency, status, authorized_by) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
        )
        .bind(id)
        .bind(body.order_id)
        .bind(&customer)
        .bind(body.amount_cents)
        .bind(&body.currency)
        .bind(peer.0.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
    .await;
    match inserted {
        Ok(()) => {}
        // Another customer's payment for this order id (hidden by RLS), or a concurrent twin.
        Err(error) if error.as_database_error().is_some_and(|e| e.is_unique_violation()) => {
            return Problem::new(StatusCode::CONFLICT).with_detail("this order already has a payment").into_response();
        }
        Err(error) => return internal(&error),
    }

    let decision = state.psp.authorize(id, body.amount_cents, &body.currency).await;
    let (status, reference, last4) = match &decision {
        Ok(Decision::Authorized { reference, card_last4 }) => {
            ("authorized", Some(reference.as_str()), Some(card_last4.as_str()))
        }
        Ok(Decision::Declined) => ("declined", None, None),
        Err(error) => {
            tracing::warn!(payment_id = %id, %error, "provider failed");
            ("failed", None, None)
        }
    };
    if let Err(error) = state.set_status(&customer, id, status, reference, last4).await {
        return internal(&error);
    }
    if decision.is_err() {
        return Problem::new(StatusCode::BAD_GATEWAY)
            .with_detail("the payment provider failed; nothing was charged")
            .into_response();
    }
    tracing::info!(payment_id = %id, order_id = %body.order_id, status, "payment decided");
    let event = if status == "authorized" { "payment.authorized" } else { "payment.declined" };
    crate::webhooks::notify(
        &state,
        customer.clone(),
        crate::webhooks::Event {
            event,
            payment_id: id,
            order_id: body.order_id,
            amount_cents: body.amount_cents,
            currency: body.currency.clone(),
        },
    );
    match state.load(&customer, "id", id).await {
        Ok(Some(stored)) => (StatusCode::CREATED, Json(stored.view)).into_response(),
        Ok(None) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
        Err(error) => internal(&error),
    }
}

#[utoipa::path(post, path = "/v1/payments/{id}/refund", tag = "payments", params(("id" = uuid::Uuid, Path, description = "Payment id")),
    responses((status = 200, body = PaymentView), (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not order's workload, or not the user's own token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Missing, or another user's", body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["payments:refund"])))]
async fn refund(
    State(state): State<AppState>,
    peer: Peer,
    Scoped(token, ..): Scoped<PaymentsRefund>,
    Path(id): Path<String>,
) -> Response {
    if peer.0 != state.order_peer {
        return state.deny(&token, &peer, StatusCode::FORBIDDEN, "payment_peer_not_order");
    }
    // The user's own token, relayed: not an exchanged one.
    if token.actor().is_some() {
        return state.deny(&token, &peer, StatusCode::FORBIDDEN, "refund_needs_the_users_token");
    }
    let customer = token.subject().as_str().to_owned();
    let Ok(id) = Uuid::parse_str(&id) else {
        return Problem::invalid_id().into_response();
    };
    let stored = match state.load(&customer, "id", id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return state.deny(&token, &peer, StatusCode::NOT_FOUND, "payment_not_found"),
        Err(error) => return internal(&error),
    };
    match (stored.view.status.as_str(), stored.psp_reference.as_deref()) {
        ("refunded", _) => (StatusCode::OK, Json(stored.view)).into_response(),
        ("authorized", Some(reference)) => {
            if let Err(error) = state.psp.refund(reference).await {
                tracing::warn!(payment_id = %id, %error, "provider refund failed");
                return Problem::new(StatusCode::BAD_GATEWAY)
                    .with_detail("the payment provider failed; nothing changed")
                    .into_response();
            }
            if let Err(error) = state.set_status(&customer, id, "refunded", None, None).await {
                return internal(&error);
            }
            crate::webhooks::notify(
                &state,
                customer.clone(),
                crate::webhooks::Event {
                    event: "payment.refunded",
                    payment_id: id,
                    order_id: stored.view.order_id,
                    amount_cents: stored.view.amount_cents,
                    currency: stored.view.currency.clone(),
                },
            );
            match state.load(&customer, "id", id).await {
                Ok(Some(stored)) => (StatusCode::OK, Json(stored.view)).into_response(),
                Ok(None) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
                Err(error) => internal(&error),
            }
        }
        _ => {
            Problem::new(StatusCode::CONFLICT).with_detail("only an authorized payment can be refunded").into_response()
        }
    }
}

/// `GET /v1/payments/{id}`: the owner's view of a payment (through the
/// gateway, with the user's token). The closed scope set has no
/// `payments:read`: reading one's own payment is part of reading one's
/// orders (`orders:read`).
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments", params(("id" = uuid::Uuid, Path, description = "Payment id")),
    responses((status = 200, body = PaymentView), (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Missing, or another user's", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:read"])))]
async fn get_payment(
    State(state): State<AppState>,
    peer: Peer,
    Scoped(token, ..): Scoped<OrdersRead>,
    Path(id): Path<String>,
) -> Response {
    let customer = token.subject().as_str().to_owned();
    let Ok(id) = Uuid::parse_str(&id) else {
        return Problem::invalid_id().into_response();
    };
    match state.load(&customer, "id", id).await {
        Ok(Some(stored)) => Json(stored.view).into_response(),
        Ok(None) => state.deny(&token, &peer, StatusCode::NOT_FOUND, "payment_not_found"),
        Err(error) => internal(&error),
    }
}
