//! The stock repository: reserve, release and read stock in the
//! `inventory` schema, as the least-privilege `inventory_app` login.
//!
//! Every call for one order runs under a transaction-scoped advisory lock on
//! the order id, so a duplicate Reserve, or a Reserve racing a Release,
//! serialises: a reservation is taken at most once per order, and never
//! after the order was released. Stock is decremented by a guarded
//! `UPDATE … WHERE available >= n` (the `CHECK (available >= 0)` backs it),
//! all lines or none.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Most lines in one reservation.
pub const MAX_LINES: usize = 50;
/// Most units of one product in one reservation (the schema's bound too).
pub const MAX_QUANTITY: u32 = 1000;

/// A product code: `^[A-Z0-9][A-Z0-9-]{0,63}$` (the schema's CHECK too).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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

/// One line: a product and 1..=[`MAX_QUANTITY`] units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The product.
    pub sku: Sku,
    /// Units.
    pub quantity: u32,
}

/// A valid reservation request: 1..=[`MAX_LINES`] lines, each product once,
/// sorted by product (a fixed lock order across concurrent orders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines(Vec<Line>);

/// Why a request is not valid (`INVALID_ARGUMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `order_id` is not a UUID.
    #[error("order_id must be a UUID")]
    OrderId,
    /// No lines or too many.
    #[error("lines must hold 1 to 50 entries")]
    LineCount,
    /// A bad product code.
    #[error("sku must match ^[A-Z0-9][A-Z0-9-]{{0,63}}$")]
    Sku,
    /// A quantity out of range.
    #[error("quantity must be 1 to 1000")]
    Quantity,
    /// The same product twice.
    #[error("each sku may appear once")]
    DuplicateSku,
}

impl Lines {
    /// Validate raw lines.
    pub fn parse(raw: impl IntoIterator<Item = (String, u32)>) -> Result<Self, Invalid> {
        let mut lines = Vec::new();
        for (sku, quantity) in raw {
            if lines.len() == MAX_LINES {
                return Err(Invalid::LineCount);
            }
            let sku = Sku::parse(&sku).ok_or(Invalid::Sku)?;
            if quantity == 0 || quantity > MAX_QUANTITY {
                return Err(Invalid::Quantity);
            }
            lines.push(Line { sku, quantity });
        }
        if lines.is_empty() {
            return Err(Invalid::LineCount);
        }
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        if lines.windows(2).any(|w| w[0].sku == w[1].sku) {
            return Err(Invalid::DuplicateSku);
        }
        Ok(Self(lines))
    }

    /// The lines, sorted by product.
    pub fn lines(&self) -> &[Line] {
        &self.0
    }
}

/// Parse an order id.
pub fn order_id(value: &str) -> Result<Uuid, Invalid> {
    Uuid::parse_str(value).map_err(|_| Invalid::OrderId)
}

/// Why a reservation was not made.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// A product does not exist (`NOT_FOUND`).
    #[error("unknown sku")]
    UnknownSku(Sku),
    /// Not enough stock of a product (`FAILED_PRECONDITION`); nothing was taken.
    #[error("insufficient stock")]
    Insufficient(Sku),
    /// The order already holds a different reservation, or another workload's
    /// (`ALREADY_EXISTS`).
    #[error("the order already holds a different reservation")]
    Conflict,
    /// The order was released; it cannot reserve again (`FAILED_PRECONDITION`).
    #[error("the order was released")]
    Released,
    /// The database failed (`INTERNAL`, logged, not shown).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The outcome of a successful Reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The reservation's lines.
    pub lines: Lines,
    /// Whether this call found the reservation already made (a retry).
    pub replayed: bool,
}

/// The stock store.
#[derive(Clone)]
pub struct StockStore {
    pool: PgPool,
}

async fn lock_order(tx: &mut Transaction<'_, Postgres>, order: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7401))")
        .bind(order)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl StockStore {
    /// Over `pool` (logged in as `inventory_app`).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserve `lines` for `order` on behalf of `caller` (its SPIFFE ID);
    /// idempotent: the same request again returns the same reservation.
    pub async fn reserve(&self, order: Uuid, lines: &Lines, caller: &str) -> Result<Reserved, ReserveError> {
        let mut tx = self.pool.begin().await?;
        lock_order(&mut tx, order).await?;

        let existing: Vec<(String, i32, String)> = sqlx::query_as(
            "SELECT sku, quantity, reserved_by FROM inventory.reservations WHERE order_id = $1 ORDER BY sku",
        )
        .bind(order)
        .fetch_all(&mut *tx)
        .await?;
        if !existing.is_empty() {
            let same = existing.len() == lines.0.len()
                && existing.iter().zip(&lines.0).all(|((sku, quantity, by), line)| {
                    sku == line.sku.as_str() && i64::from(*quantity) == i64::from(line.quantity) && by == caller
                });
            return if same {
                Ok(Reserved { lines: lines.clone(), replayed: true })
            } else {
                Err(ReserveError::Conflict)
            };
        }
        let released: Option<i32> = sqlx::query_scalar("SELECT 1 FROM inventory.released_orders WHERE order_id = $1")
            .bind(order)
            .fetch_optional(&mut *tx)
            .await?;
        if released.is_some() {
            return Err(ReserveError::Released);
        }

        for line in &lines.0 {
            let quantity = i32::try_from(line.quantity).unwrap_or(i32::MAX);
            let taken = sqlx::query(
                "UPDATE inventory.products SET available = available - $2 WHERE sku = $1 AND available >= $2",
            )
            .bind(line.sku.as_str())
            .bind(quantity)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if taken == 0 {
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM inventory.products WHERE sku = $1")
                    .bind(line.sku.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                // Dropping `tx` rolls back the lines already taken.
                return Err(match exists {
                    Some(_) => ReserveError::Insufficient(line.sku.clone()),
                    None => ReserveError::UnknownSku(line.sku.clone()),
                });
            }
            sqlx::query(
                "INSERT INTO inventory.reservations (order_id, sku, quantity, reserved_by) VALUES ($1, $2, $3, $4)",
            )
            .bind(order)
            .bind(line.sku.as_str())
            .bind(quantity)
            .bind(caller)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Reserved { lines: lines.clone(), replayed: false })
    }

    /// Release `order`'s reservation made by `caller` and return its stock;
    /// `true` when something was released. The order is marked released
    /// either way, so a late Reserve for it is refused. Another workload's
    /// reservation is left alone.
    pub async fn release(&self, order: Uuid, caller: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        lock_order(&mut tx, order).await?;
        let foreign: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM inventory.reservations WHERE order_id = $1 AND reserved_by <> $2 LIMIT 1",
        )
        .bind(order)
        .bind(caller)
        .fetch_optional(&mut *tx)
        .await?;
        if foreign.is_some() {
            return Ok(false);
        }
        let lines: Vec<(String, i32)> = sqlx::query_as(
            "DELETE FROM inventory.reservations WHERE order_id = $1 AND reserved_by = $2 RETURNING sku, quantity",
        )
        .bind(order)
        .bind(caller)
        .fetch_all(&mut *tx)
        .await?;
        for (sku, quantity) in &lines {
            sqlx::query("UPDATE inventory.products SET available = available + $2 WHERE sku = $1")
                .bind(sku)
                .bind(quantity)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO inventory.released_orders (order_id, released_by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(order)
        .bind(caller)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(!lines.is_empty())
    }

    /// Units available of `sku`; `None` for an unknown product.
    pub async fn available(&self, sku: &Sku) -> Result<Option<u32>, sqlx::Error> {
        let available: Option<i32> = sqlx::query_scalar("SELECT available FROM inventory.products WHERE sku = $1")
            .bind(sku.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(available.map(|n| u32::try_from(n).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_validated_and_sorted() {
        let lines = Lines::parse([("TEA-02".to_owned(), 2), ("TEA-01".to_owned(), 1)]).unwrap();
        assert_eq!(lines.lines()[0].sku.as_str(), "TEA-01");
        assert_eq!(Lines::parse([]), Err(Invalid::LineCount));
        assert_eq!(Lines::parse([("tea".to_owned(), 1)]), Err(Invalid::Sku));
        assert_eq!(Lines::parse([("TEA' OR 1=1".to_owned(), 1)]), Err(Invalid::Sku));
        assert_eq!(Lines::parse([("TEA-01".to_owned(), 0)]), Err(Invalid::Quantity));
        assert_eq!(Lines::parse([("TEA-01".to_owned(), 1001)]), Err(Invalid::Quantity));
        assert_eq!(Lines::parse([("TEA-01".to_owned(), 1), ("TEA-01".to_owned(), 2)]), Err(Invalid::DuplicateSku));
        assert_eq!(Lines::parse((0..51).map(|i| (format!("SKU-{i}"), 1))), Err(Invalid::LineCount));
        assert_eq!(Sku::parse(&"A".repeat(65)), None);
        assert_eq!(order_id("not-a-uuid"), Err(Invalid::OrderId));
    }
}
