//! The order REST API (`/v1/orders…`), for users through the gateway.
//!
//! Every handler names its scope in its signature (`Scoped<…>`, 401/403
//! before the body runs), takes bodies only as validated DTOs
//! (`Dto<…>`: no `status`, `price`, `customer_id` or `total` can be sent),
//! and reaches orders only through the owner-scoped repository (a foreign
//! or missing id is 404). Checkout and refunds are rate-limited per user
//! (API6), and run to completion in their own task, so a client that hangs
//! up mid-checkout cannot leave a half-done order behind.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::response::{IntoResponse, Response};
use estate_audit::{Action, AuditEvent, Outcome};
use estate_service_kit::Problem;
use estate_service_kit::dto::Dto;
use estate_service_kit::openapi::BearerAuth;
use estate_service_kit::openapi::serve_document;
use estate_service_kit::problem::FieldError;
use estate_service_kit::telemetry::spawn_traced;
use estate_tokens::scopes::{Admin, OrdersRead, OrdersWrite};
use estate_tokens::{Scoped, VerifiedToken, Verifier};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use crate::domain::{
    CustomerId, DeliveryNote, FailureReason, IdempotencyKey, MAX_LINES, MAX_QUANTITY, Order, PricedLine, RequestedLine,
    Sku, Status,
};
use crate::repo::{Begun, Orders};
use crate::upstream::{Authorization, Inventory, Payment, ReserveFailure};

/// Problem types of this API.
pub mod problems {
    /// `Idempotency-Key` missing or malformed.
    pub const IDEMPOTENCY_KEY_REQUIRED: &str = "https://estate.dev/problems/idempotency-key-required";
    /// The key was used for a different request.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "https://estate.dev/problems/idempotency-key-reused";
    /// The order's status does not allow this.
    pub const ORDER_STATE: &str = "https://estate.dev/problems/order-state";
    /// Payment could not be refunded now.
    pub const PAYMENT_UNAVAILABLE: &str = "https://estate.dev/problems/payment-unavailable";
}

/// Most orders per page; larger requests get this many.
pub const MAX_PAGE: u32 = 50;
const DEFAULT_PAGE: u32 = 20;

/// Per-user velocity limits (API6).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Velocity {
    /// Checkouts per user per minute.
    #[serde(default = "default_checkouts")]
    pub checkouts_per_minute: u32,
    /// Refunds and cancellations per user per hour.
    #[serde(default = "default_refunds")]
    pub refunds_per_hour: u32,
}

fn default_checkouts() -> u32 {
    5
}

fn default_refunds() -> u32 {
    3
}

impl Default for Velocity {
    fn default() -> Self {
        Self { checkouts_per_minute: default_checkouts(), refunds_per_hour: default_refunds() }
    }
}

struct Limiters {
    checkout: DefaultKeyedRateLimiter<String>,
    refund: DefaultKeyedRateLimiter<String>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    orders: Orders,
    inventory: Inventory,
    payment: Payment,
    verifier: Verifier,
    audit: estate_audit::AuditLog,
    limiters: Arc<Limiters>,
    checkout_enabled: Arc<AtomicBool>,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

impl AppState {
    /// Assemble.
    pub fn new(
        orders: Orders,
        inventory: Inventory,
        payment: Payment,
        verifier: Verifier,
        audit: estate_audit::AuditLog,
        velocity: Velocity,
    ) -> Self {
        let per = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiters = Limiters {
            checkout: RateLimiter::keyed(Quota::per_minute(per(velocity.checkouts_per_minute))),
            refund: RateLimiter::keyed(Quota::per_hour(per(velocity.refunds_per_hour))),
        };
        Self {
            orders,
            inventory,
            payment,
            verifier,
            audit,
            limiters: Arc::new(limiters),
            checkout_enabled: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// The API routes and their OpenAPI document — one source: a route exists
/// only through `routes!` of an annotated handler, so what is served and
/// what is documented cannot drift apart (API9).
pub fn router(state: AppState) -> (axum::Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order, patch_order))
        .routes(routes!(cancel_order))
        .routes(routes!(refund_order))
        .with_state(state)
        .split_for_parts()
}

/// The admin routes, for the management listener only (OWASP API5): they
/// need an `admin:*` token, which no user holds, and the API listener does
/// not serve them at all. The management listener also serves both
/// OpenAPI documents (`/openapi.json`, `/admin/openapi.json`).
pub fn management_router(state: AppState, api_doc: utoipa::openapi::OpenApi) -> axum::Router {
    let (admin, admin_doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(get_checkout, set_checkout))
        .with_state(state)
        .split_for_parts();
    admin.merge(serve_document("/openapi.json", api_doc)).merge(serve_document("/admin/openapi.json", admin_doc))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Estate order API", version = "1", description = "Orders of the signed-in user. Every error is application/problem+json."),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// `PUT /admin/v1/checkout`: the checkout switch (incident response: stop
/// taking orders without stopping the service).
#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutSwitch {
    /// Whether new orders are taken.
    pub enabled: bool,
}

#[utoipa::path(get, path = "/admin/v1/checkout", tag = "admin",
    responses((status = 200, body = CheckoutSwitch), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["admin:*"])))]
async fn get_checkout(State(state): State<AppState>, Scoped(..): Scoped<Admin>) -> Response {
    Json(CheckoutSwitch { enabled: state.checkout_enabled.load(Ordering::SeqCst) }).into_response()
}

#[utoipa::path(put, path = "/admin/v1/checkout", tag = "admin", request_body = CheckoutSwitch,
    responses((status = 200, body = CheckoutSwitch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["admin:*"])))]
async fn set_checkout(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<Admin>,
    Dto(body): Dto<CheckoutSwitch>,
) -> Response {
    state.checkout_enabled.store(body.enabled, Ordering::SeqCst);
    tracing::warn!(enabled = body.enabled, "checkout switched by an administrator");
    state.audit.emit(
        AuditEvent::new(Action::AdminAction, Outcome::Success)
            .reason(if body.enabled { "checkout_enabled" } else { "checkout_paused" })
            .caller(token.subject().as_str(), token.client_id().map(|c| c.as_str()), token.jti().map(|j| j.as_str())),
    );
    Json(body).into_response()
}

// ------------------------------------------------------------------ DTOs

/// `POST /v1/orders`: products and quantities, an optional note. Nothing else.
#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// 1..=50 lines.
    #[validate(length(min = 1, max = 50), nested)]
    pub lines: Vec<LineDto>,
    /// Up to 500 characters.
    #[validate(length(max = 500))]
    pub delivery_note: Option<String>,
}

/// One requested line.
#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineDto {
    /// Product code.
    #[validate(length(min = 1, max = 64))]
    pub sku: String,
    /// 1..=1000.
    #[validate(range(min = 1, max = 1000))]
    pub quantity: u32,
}

/// `PATCH /v1/orders/{id}`: only the delivery note can change.
#[derive(Debug, Deserialize, Serialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchOrder {
    /// Up to 500 characters.
    #[validate(length(max = 500))]
    pub delivery_note: String,
}

/// `GET /v1/orders` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (capped at 50).
    pub limit: Option<u32>,
    /// The last order id of the previous page.
    pub after: Option<String>,
}

/// An order as clients see it: no owner, no payment reference.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    id: Uuid,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<FailureReason>,
    total_cents: i64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_note: Option<String>,
    lines: Vec<PricedLine>,
    created_at: String,
}

impl From<Order> for OrderView {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            status: order.status,
            failure_reason: order.failure_reason,
            total_cents: order.total_cents,
            currency: order.currency,
            delivery_note: order.delivery_note,
            lines: order.lines,
            created_at: order.created_at,
        }
    }
}

/// A page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    items: Vec<OrderView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Uuid>,
}

/// A create request in domain terms: validated lines (with their index in
/// the request, for error paths), sorted by product, each product once.
pub struct OrderRequest {
    /// `(index in the request, line)`, sorted by product.
    pub lines: Vec<(usize, RequestedLine)>,
    /// The note, if any.
    pub note: Option<DeliveryNote>,
}

impl TryFrom<&CreateOrder> for OrderRequest {
    type Error = Vec<FieldError>;

    fn try_from(body: &CreateOrder) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in body.lines.iter().enumerate() {
            match Sku::parse(&line.sku) {
                Some(sku) if (1..=MAX_QUANTITY).contains(&line.quantity) => {
                    lines.push((i, RequestedLine { sku, quantity: line.quantity }));
                }
                Some(_) => errors.push(field_error(format!("lines[{i}].quantity"), "range")),
                None => errors.push(field_error(format!("lines[{i}].sku"), "format")),
            }
        }
        let note = match body.delivery_note.as_deref().map(DeliveryNote::parse) {
            Some(None) => {
                errors.push(field_error("delivery_note".into(), "format"));
                None
            }
            Some(note) => note,
            None => None,
        };
        lines.sort_by(|a, b| a.1.sku.cmp(&b.1.sku));
        if lines.windows(2).any(|w| w[0].1.sku == w[1].1.sku) {
            errors.push(field_error("lines".into(), "duplicate_sku"));
        }
        if lines.is_empty() || lines.len() > MAX_LINES {
            errors.push(field_error("lines".into(), "length"));
        }
        if errors.is_empty() { Ok(Self { lines, note }) } else { Err(errors) }
    }
}

// ------------------------------------------------------------------ helpers

fn internal(error: &sqlx::Error) -> Response {
    tracing::error!(%error, "order database call failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

fn field_error(field: String, code: &'static str) -> FieldError {
    FieldError { field, code: code.into() }
}

fn invalid_body(errors: Vec<FieldError>) -> Response {
    Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, estate_service_kit::dto::INVALID_BODY, "Invalid request body")
        .with_field_errors(errors)
        .into_response()
}

impl AppState {
    fn audit_denied(&self, token: &VerifiedToken, action: Action, reason: &'static str) {
        self.audit.emit(AuditEvent::new(action, Outcome::Failure).reason(reason).caller(
            token.subject().as_str(),
            token.client_id().map(|c| c.as_str()),
            token.jti().map(|j| j.as_str()),
        ));
    }

    /// 404 for a foreign or missing order, recorded (BOLA probing shows in the SIEM).
    fn not_found(&self, token: &VerifiedToken) -> Response {
        self.audit_denied(token, Action::AccessDenied, "order_not_found");
        Problem::new(StatusCode::NOT_FOUND).into_response()
    }

    fn limited(&self, limiter: &DefaultKeyedRateLimiter<String>, token: &VerifiedToken) -> Option<Response> {
        let key = token.subject().as_str().to_owned();
        let Err(not_until) = limiter.check_key(&key) else { return None };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.audit_denied(token, Action::RateLimited, "velocity_limit");
        let retry_after = HeaderValue::from(seconds.max(1));
        Some(
            Problem::new(StatusCode::TOO_MANY_REQUESTS)
                .with_detail("too many of these for one user; try later")
                .with_header(header::RETRY_AFTER, retry_after)
                .into_response(),
        )
    }
}

fn key_reused() -> Response {
    Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, problems::IDEMPOTENCY_KEY_REUSED, "Idempotency-Key reused")
        .with_detail("this Idempotency-Key was used for a different order")
        .into_response()
}

/// Parse a path id (a UUID).
fn path_id(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

fn digest(lines: &[RequestedLine], note: Option<&DeliveryNote>) -> String {
    let mut canonical = String::new();
    for line in lines {
        canonical.push_str(&format!("{}:{};", line.sku.as_str(), line.quantity));
    }
    canonical.push('|');
    canonical.push_str(note.map_or("", DeliveryNote::as_str));
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------ handlers

#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = CreateOrder,
    params(("Idempotency-Key" = String, Header, description = "8-64 of [A-Za-z0-9_-]; a retry with the same key gets the same order")),
    responses(
        (status = 201, description = "Placed: confirmed, or failed with a reason (stock released)", body = OrderView),
        (status = 200, description = "A retry: the order made under this key", body = OrderView),
        (status = 400, description = "Malformed body or missing Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid lines, or the key was used for another order", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Per-user checkout velocity", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Checkout paused", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:write"])))]
async fn create_order(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersWrite>,
    headers: HeaderMap,
    Dto(body): Dto<CreateOrder>,
) -> Response {
    if !state.checkout_enabled.load(Ordering::SeqCst) {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_detail("checkout is paused; try again later")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("60"))
            .into_response();
    }
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).and_then(IdempotencyKey::parse) else {
        return Problem::typed(StatusCode::BAD_REQUEST, problems::IDEMPOTENCY_KEY_REQUIRED, "Idempotency-Key required")
            .with_detail("send an Idempotency-Key header of 8 to 64 characters [A-Za-z0-9_-]")
            .into_response();
    };

    // DTO → domain.
    let request = match OrderRequest::try_from(&body) {
        Ok(request) => request,
        Err(errors) => return invalid_body(errors),
    };
    let OrderRequest { lines: indexed, note } = request;
    let lines: Vec<RequestedLine> = indexed.iter().map(|(_, line)| line.clone()).collect();

    // Prices come from the price list, never from the client.
    let skus: Vec<Sku> = lines.iter().map(|l| l.sku.clone()).collect();
    let prices = match state.orders.prices(&skus).await {
        Ok(prices) => prices,
        Err(error) => return internal(&error),
    };
    let mut errors = Vec::new();
    let mut priced = Vec::new();
    let mut currency: Option<String> = None;
    for (i, line) in &indexed {
        match prices.get(&line.sku) {
            Some(price) if currency.as_ref().is_none_or(|c| *c == price.currency) => {
                currency = Some(price.currency.clone());
                priced.push(PricedLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_cents: price.unit_price_cents,
                });
            }
            Some(_) => errors.push(field_error(format!("lines[{i}].sku"), "currency_mismatch")),
            None => errors.push(field_error(format!("lines[{i}].sku"), "unknown_sku")),
        }
    }
    let Some(currency) = currency.filter(|_| errors.is_empty()) else {
        return invalid_body(errors);
    };

    let customer = CustomerId::new(token.subject().as_str());
    let digest = digest(&lines, note.as_ref());
    // A retry is answered from the stored order and spends no budget.
    match state.orders.of(&customer).by_key(&key).await {
        Ok(Some((order, stored))) if stored == digest => {
            return (StatusCode::OK, Json(OrderView::from(order))).into_response();
        }
        Ok(Some(_)) => return key_reused(),
        Ok(None) => {}
        Err(error) => return internal(&error),
    }
    if let Some(limited) = state.limited(&state.limiters.checkout, &token) {
        return limited;
    }
    let begun = state.orders.of(&customer).start(&key, &digest, &priced, &currency, note.as_ref()).await;
    let order = match begun {
        Ok(Begun::Created(order)) => order,
        Ok(Begun::Existing(order)) => return (StatusCode::OK, Json(OrderView::from(order))).into_response(),
        Ok(Begun::KeyReused) => return key_reused(),
        Err(error) => return internal(&error),
    };

    // Runs to the end even if the client goes away.
    let checkout = spawn_traced(checkout(state.clone(), customer, token.bearer().clone(), order));
    match checkout.await {
        Ok(Ok(order)) => (StatusCode::CREATED, Json(OrderView::from(order))).into_response(),
        Ok(Err(error)) => internal(&error),
        Err(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// Reserve (FLOW-CC), then authorize payment (FLOW-TX); on any failure
/// after the reservation, release it (compensation) and fail the order.
async fn checkout(
    state: AppState,
    customer: CustomerId,
    user_token: secrecy::SecretString,
    order: Order,
) -> Result<Order, sqlx::Error> {
    let orders = state.orders.of(&customer);
    let fail = |reason| orders.transition(order.id, &[Status::Pending], Status::Failed, None, Some(reason));
    match state.inventory.reserve(order.id, &order.lines).await {
        Ok(()) => {}
        Err(failure) => {
            let reason = match failure {
                ReserveFailure::OutOfStock => FailureReason::OutOfStock,
                ReserveFailure::Unavailable => {
                    // The reservation may have been made before the answer was lost.
                    state.inventory.release(order.id).await;
                    FailureReason::InventoryUnavailable
                }
            };
            fail(reason).await?;
            return orders.get(order.id).await?.ok_or(sqlx::Error::RowNotFound);
        }
    }
    let outcome = state.payment.authorize(&user_token, order.id, order.total_cents, &order.currency).await;
    match outcome {
        Ok(Authorization::Authorized(payment)) => {
            orders.transition(order.id, &[Status::Pending], Status::Confirmed, Some(payment), None).await?;
        }
        Ok(Authorization::Declined) | Err(_) => {
            let reason = if matches!(outcome, Ok(Authorization::Declined)) {
                FailureReason::PaymentDeclined
            } else {
                FailureReason::PaymentUnavailable
            };
            state.inventory.release(order.id).await;
            fail(reason).await?;
        }
    }
    orders.get(order.id).await?.ok_or(sqlx::Error::RowNotFound)
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:read"])))]
async fn list_orders(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersRead>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return Problem::new(StatusCode::BAD_REQUEST).with_detail("query parameters: limit, after").into_response();
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let after = match query.after.as_deref().map(path_id) {
        Some(None) => {
            return Problem::new(StatusCode::BAD_REQUEST).with_detail("after is not an order id").into_response();
        }
        Some(id) => id,
        None => None,
    };
    let customer = CustomerId::new(token.subject().as_str());
    match state.orders.of(&customer).list(limit, after).await {
        Ok(Some(orders)) => {
            let next_after = (orders.len() == limit as usize).then(|| orders.last().map(|o| o.id)).flatten();
            Json(OrderPage { items: orders.into_iter().map(OrderView::from).collect(), next_after }).into_response()
        }
        Ok(None) => Problem::new(StatusCode::BAD_REQUEST).with_detail("after is not an order id").into_response(),
        Err(error) => internal(&error),
    }
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Missing, or another user's", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:read"])))]
async fn get_order(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersRead>,
    Path(id): Path<String>,
) -> Response {
    let customer = CustomerId::new(token.subject().as_str());
    let Some(id) = path_id(&id) else { return Problem::invalid_id().into_response() };
    match state.orders.of(&customer).get(id).await {
        Ok(Some(order)) => Json(OrderView::from(order)).into_response(),
        Ok(None) => state.not_found(&token),
        Err(error) => internal(&error),
    }
}

#[utoipa::path(patch, path = "/v1/orders/{id}", tag = "orders", request_body = PatchOrder,
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:write"])))]
async fn patch_order(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersWrite>,
    Path(id): Path<String>,
    Dto(body): Dto<PatchOrder>,
) -> Response {
    let customer = CustomerId::new(token.subject().as_str());
    let Some(id) = path_id(&id) else { return Problem::invalid_id().into_response() };
    let Some(note) = DeliveryNote::parse(&body.delivery_note) else {
        return invalid_body(vec![field_error("delivery_note".into(), "format")]);
    };
    match state.orders.of(&customer).set_note(id, &note).await {
        Ok(Some(order)) => Json(OrderView::from(order)).into_response(),
        Ok(None) => state.not_found(&token),
        Err(error) => internal(&error),
    }
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses((status = 200, description = "Cancelled: refunded and stock released", body = OrderView), (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:write"])))]
async fn cancel_order(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersWrite>,
    Path(id): Path<String>,
) -> Response {
    money_back(state, token, id, Status::Cancelled).await
}

#[utoipa::path(post, path = "/v1/orders/{id}/refund", tag = "orders", params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses((status = 200, description = "Refunded", body = OrderView), (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["orders:write"])))]
async fn refund_order(
    State(state): State<AppState>,
    Scoped(token, ..): Scoped<OrdersWrite>,
    Path(id): Path<String>,
) -> Response {
    money_back(state, token, id, Status::Refunded).await
}

/// Cancel (refund + release stock) or refund a confirmed order; the refund
/// relays the user's own token to payment (FLOW-RELAY).
async fn money_back(state: AppState, token: VerifiedToken, id: String, to: Status) -> Response {
    let customer = CustomerId::new(token.subject().as_str());
    let Some(id) = path_id(&id) else { return Problem::invalid_id().into_response() };
    let order = match state.orders.of(&customer).get(id).await {
        Ok(Some(order)) => order,
        Ok(None) => return state.not_found(&token),
        Err(error) => return internal(&error),
    };
    let (Status::Confirmed, Some(payment)) = (order.status, order.payment_id) else {
        return Problem::typed(StatusCode::CONFLICT, problems::ORDER_STATE, "Order state")
            .with_detail("only a confirmed order can be cancelled or refunded")
            .into_response();
    };
    if let Some(limited) = state.limited(&state.limiters.refund, &token) {
        return limited;
    }
    let task_state = state.clone();
    let bearer = token.bearer().clone();
    let work = spawn_traced(async move {
        if let Err(failure) = task_state.payment.refund(&bearer, payment).await {
            tracing::warn!(order_id = %order.id, %failure, "refund failed");
            return Ok(None);
        }
        if to == Status::Cancelled {
            task_state.inventory.release(order.id).await;
        }
        let orders = task_state.orders.of(&customer);
        orders.transition(order.id, &[Status::Confirmed], to, None, None).await?;
        orders.get(order.id).await
    });
    match work.await {
        Ok(Ok(Some(order))) => Json(OrderView::from(order)).into_response(),
        Ok(Ok(None)) => Problem::typed(StatusCode::BAD_GATEWAY, problems::PAYMENT_UNAVAILABLE, "Payment unavailable")
            .with_detail("the refund did not go through; the order is unchanged")
            .into_response(),
        Ok(Err(error)) => internal(&error),
        Err(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(lines: &[(&str, u32)]) -> CreateOrder {
        CreateOrder {
            lines: lines
                .iter()
                .map(|(sku, quantity)| LineDto { sku: (*sku).to_owned(), quantity: *quantity })
                .collect(),
            delivery_note: None,
        }
    }

    #[test]
    fn a_create_request_becomes_sorted_domain_lines_with_their_request_positions() {
        let request = OrderRequest::try_from(&body(&[("TEA-02", 1), ("CUP-01", 2)])).unwrap();
        let skus: Vec<(usize, &str)> = request.lines.iter().map(|(i, l)| (*i, l.sku.as_str())).collect();
        assert_eq!(skus, [(1, "CUP-01"), (0, "TEA-02")]);

        let errors = OrderRequest::try_from(&body(&[("TEA-02", 1), ("tea 01", 1), ("TEA-03", 0)])).err().unwrap();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["lines[1].sku", "lines[2].quantity"]);
        let errors = OrderRequest::try_from(&body(&[("TEA-02", 1), ("TEA-02", 2)])).err().unwrap();
        assert_eq!(errors[0].code, "duplicate_sku");
        let mut noted = body(&[("TEA-02", 1)]);
        noted.delivery_note = Some("line\u{0}break".into());
        assert_eq!(OrderRequest::try_from(&noted).err().unwrap()[0].field, "delivery_note");
    }
}
