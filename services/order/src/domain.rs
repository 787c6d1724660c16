//! Order domain types: what a valid order is, independent of HTTP and SQL.

use serde::Serialize;
use uuid::Uuid;

/// Most lines per order.
pub const MAX_LINES: usize = 50;
/// Most units per line.
pub const MAX_QUANTITY: u32 = 1000;
/// Longest delivery note, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// The owner of an order: the `sub` of the user's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(String);

impl CustomerId {
    /// From a verified token's subject.
    pub fn new(sub: &str) -> Self {
        Self(sub.to_owned())
    }

    /// The subject.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product code (`^[A-Z0-9][A-Z0-9-]{0,63}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[A-Z0-9][A-Z0-9-]{0,63}$")]
pub struct Sku(String);

impl Sku {
    /// Parse a product code.
    pub fn parse(value: &str) -> Option<Self> {
        estate_proto::inventory::is_sku(value).then(|| Self(value.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A requested line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    /// The product.
    pub sku: Sku,
    /// Units (1..=[`MAX_QUANTITY`]).
    pub quantity: u32,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PricedLine {
    /// The product.
    pub sku: Sku,
    /// Units.
    pub quantity: u32,
    /// Price per unit, from the price list.
    pub unit_price_cents: i64,
}

/// An idempotency key: `[A-Za-z0-9_-]{8,64}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parse the header value.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = (8..=64).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A delivery note: at most [`MAX_NOTE_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryNote(String);

impl DeliveryNote {
    /// Parse a note.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = value.chars().count() <= MAX_NOTE_CHARS && !value.chars().any(char::is_control);
        ok.then(|| Self(value.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; stock and payment in progress.
    Pending,
    /// Stock reserved and payment authorized.
    Confirmed,
    /// Stock or payment failed; whatever was taken was given back.
    Failed,
    /// Cancelled by the customer: stock released, payment refunded.
    Cancelled,
    /// Payment refunded.
    Refunded,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Refunded => "refunded",
        }
    }

    /// From the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "pending" => Status::Pending,
            "confirmed" => Status::Confirmed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            "refunded" => Status::Refunded,
            _ => return None,
        })
    }
}

/// Why an order failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Not enough stock.
    OutOfStock,
    /// The payment provider declined.
    PaymentDeclined,
    /// Payment could not be reached or answered nonsense.
    PaymentUnavailable,
    /// Inventory could not be reached.
    InventoryUnavailable,
}

impl FailureReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::OutOfStock => "out_of_stock",
            FailureReason::PaymentDeclined => "payment_declined",
            FailureReason::PaymentUnavailable => "payment_unavailable",
            FailureReason::InventoryUnavailable => "inventory_unavailable",
        }
    }

    /// From the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "out_of_stock" => FailureReason::OutOfStock,
            "payment_declined" => FailureReason::PaymentDeclined,
            "payment_unavailable" => FailureReason::PaymentUnavailable,
            "inventory_unavailable" => FailureReason::InventoryUnavailable,
            _ => return None,
        })
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Its id.
    pub id: Uuid,
    /// Its status.
    pub status: Status,
    /// Why it failed, if it did.
    pub failure_reason: Option<FailureReason>,
    /// Sum of the lines.
    pub total_cents: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// The customer's note.
    pub delivery_note: Option<String>,
    /// The payment, once authorized (internal: not shown to clients).
    pub payment_id: Option<Uuid>,
    /// The lines.
    pub lines: Vec<PricedLine>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}
