//! The owner-scoped order repository.
//!
//! There is no "find order by id" here: every read and write goes through
//! [`OwnedOrders`], which exists only for one customer. Each of its
//! transactions first sets `estate.subject` (`SET LOCAL` semantics), so the
//! database's row-level security shows and accepts that customer's rows
//! only; the queries filter by owner as well. A foreign or missing order is
//! simply not found (→ 404 at the API, never 403).

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::domain::{CustomerId, DeliveryNote, FailureReason, IdempotencyKey, Order, PricedLine, Sku, Status};

/// The order store.
#[derive(Clone)]
pub struct Orders {
    pool: PgPool,
}

/// The outcome of starting an order under an idempotency key.
#[derive(Debug)]
pub enum Begun {
    /// A new pending order: the caller goes on with stock and payment.
    Created(Order),
    /// The key was used before for the same request: that order.
    Existing(Order),
    /// The key was used before for a different request.
    KeyReused,
}

/// A price-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Per unit.
    pub unit_price_cents: i64,
    /// ISO 4217.
    pub currency: String,
}

impl Orders {
    /// Over `pool` (logged in as `orders_app`).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The repository of one customer's orders.
    pub fn of<'a>(&'a self, customer: &'a CustomerId) -> OwnedOrders<'a> {
        OwnedOrders { pool: &self.pool, customer }
    }

    /// Prices of `skus` (unknown products are absent).
    pub async fn prices(&self, skus: &[Sku]) -> Result<HashMap<Sku, Price>, sqlx::Error> {
        let names: Vec<&str> = skus.iter().map(Sku::as_str).collect();
        let rows = sqlx::query("SELECT sku, unit_price_cents, currency FROM orders.prices WHERE sku = ANY($1)")
            .bind(&names)
            .fetch_all(&self.pool)
            .await?;
        let mut prices = HashMap::new();
        for row in rows {
            let Some(sku) = Sku::parse(row.try_get("sku")?) else { continue };
            prices.insert(
                sku,
                Price { unit_price_cents: row.try_get("unit_price_cents")?, currency: row.try_get("currency")? },
            );
        }
        Ok(prices)
    }
}

/// One customer's orders.
pub struct OwnedOrders<'a> {
    pool: &'a PgPool,
    customer: &'a CustomerId,
}

const ORDER_COLUMNS: &str = "id, status, failure_reason, total_cents, currency, delivery_note, payment_id, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at";

impl OwnedOrders<'_> {
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        estate_platform::owner_transaction(self.pool, self.customer.as_str()).await
    }

    /// Start an order under `key`; see [`Begun`]. Lines and total are stored
    /// as priced here; nothing of them comes from the client but product and
    /// quantity.
    pub async fn start(
        &self,
        key: &IdempotencyKey,
        digest: &str,
        lines: &[PricedLine],
        currency: &str,
        note: Option<&DeliveryNote>,
    ) -> Result<Begun, sqlx::Error> {
        let total: i64 = lines.iter().map(|l| l.unit_price_cents.saturating_mul(i64::from(l.quantity))).sum();
        let mut tx = self.begin().await?;
        let id = Uuid::new_v4();
        // A concurrent request with the same key waits here for the first to
        // commit, then finds the conflict.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO orders.orders (id, customer_id, status, total_cents, currency, delivery_note, idempotency_key, request_digest) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7) \
             ON CONFLICT (customer_id, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(self.customer.as_str())
        .bind(total)
        .bind(currency)
        .bind(note.map(DeliveryNote::as_str))
        .bind(key.as_str())
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            let row: Option<(Uuid, String)> = sqlx::query_as(
                "SELECT id, request_digest FROM orders.orders WHERE customer_id = $1 AND idempotency_key = $2",
            )
            .bind(self.customer.as_str())
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            return match row {
                Some((existing, stored)) if stored == digest => {
                    Ok(self.get(existing).await?.map_or(Begun::KeyReused, Begun::Existing))
                }
                _ => Ok(Begun::KeyReused),
            };
        }
        for line in lines {
            sqlx::query(
                "INSERT INTO orders.order_lines (order_id, customer_id, sku, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(self.customer.as_str())
            .bind(line.sku.as_str())
            .bind(i32::try_from(line.quantity).unwrap_or(i32::MAX))
            .bind(line.unit_price_cents)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        match self.get(id).await? {
            Some(order) => Ok(Begun::Created(order)),
            None => Err(sqlx::Error::RowNotFound),
        }
    }

    /// The order made under `key`, with the digest of its request.
    pub async fn by_key(&self, key: &IdempotencyKey) -> Result<Option<(Order, String)>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let row: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, request_digest FROM orders.orders WHERE customer_id = $1 AND idempotency_key = $2",
        )
        .bind(self.customer.as_str())
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some((id, digest)) = row else { return Ok(None) };
        Ok(self.get(id).await?.map(|order| (order, digest)))
    }

    /// The order `id`, if it is this customer's.
    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let query = format!("SELECT {ORDER_COLUMNS} FROM orders.orders WHERE id = $1 AND customer_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(id)
            .bind(self.customer.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut orders = vec![order_from(&row)?];
        attach_lines(&mut tx, &mut orders).await?;
        tx.commit().await?;
        Ok(orders.pop())
    }

    /// A page of this customer's orders, newest first, after `after` (an
    /// order id of the previous page; one not this customer's gives `None`).
    pub async fn list(&self, limit: u32, after: Option<Uuid>) -> Result<Option<Vec<Order>>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let rows = match after {
            None => {
                let query = format!(
                    "SELECT {ORDER_COLUMNS} FROM orders.orders WHERE customer_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                );
                sqlx::query(sqlx::AssertSqlSafe(query))
                    .bind(self.customer.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?
            }
            Some(after) => {
                let anchor: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM orders.orders WHERE id = $1 AND customer_id = $2")
                        .bind(after)
                        .bind(self.customer.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                if anchor.is_none() {
                    return Ok(None);
                }
                let query = format!(
                    "SELECT {ORDER_COLUMNS} FROM orders.orders o WHERE customer_id = $1 \
                     AND (created_at, id) < (SELECT created_at, id FROM orders.orders WHERE id = $3) \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                );
                sqlx::query(sqlx::AssertSqlSafe(query))
                    .bind(self.customer.as_str())
                    .bind(i64::from(limit))
                    .bind(after)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let mut orders = rows.iter().map(order_from).collect::<Result<Vec<_>, _>>()?;
        attach_lines(&mut tx, &mut orders).await?;
        tx.commit().await?;
        Ok(Some(orders))
    }

    /// Move `id` from one of `from` to `to` (with the payment or the failure
    /// reason); `false` if it was not in one of `from` (or not this customer's).
    pub async fn transition(
        &self,
        id: Uuid,
        from: &[Status],
        to: Status,
        payment_id: Option<Uuid>,
        failure: Option<FailureReason>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let updated = sqlx::query(
            "UPDATE orders.orders SET status = $3, payment_id = COALESCE($4, payment_id), failure_reason = $5, updated_at = now() \
             WHERE id = $1 AND customer_id = $2 AND status = ANY($6)",
        )
        .bind(id)
        .bind(self.customer.as_str())
        .bind(to.as_str())
        .bind(payment_id)
        .bind(failure.map(FailureReason::as_str))
        .bind(&from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Replace the delivery note of `id`; the updated order, if it is this customer's.
    pub async fn set_note(&self, id: Uuid, note: &DeliveryNote) -> Result<Option<Order>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE orders.orders SET delivery_note = $3, updated_at = now() WHERE id = $1 AND customer_id = $2",
        )
        .bind(id)
        .bind(self.customer.as_str())
        .bind(note.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if updated == 0 {
            return Ok(None);
        }
        self.get(id).await
    }
}

fn order_from(row: &sqlx::postgres::PgRow) -> Result<Order, sqlx::Error> {
    let decode = |column: &str| sqlx::Error::ColumnDecode { index: column.into(), source: "unknown value".into() };
    let status: String = row.try_get("status")?;
    let failure: Option<String> = row.try_get("failure_reason")?;
    Ok(Order {
        id: row.try_get("id")?,
        status: Status::parse(&status).ok_or_else(|| decode("status"))?,
        failure_reason: failure
            .map(|f| FailureReason::parse(&f).ok_or_else(|| decode("failure_reason")))
            .transpose()?,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        delivery_note: row.try_get("delivery_note")?,
        payment_id: row.try_get("payment_id")?,
        lines: Vec::new(),
        created_at: row.try_get("created_at")?,
    })
}

async fn attach_lines(tx: &mut Transaction<'static, Postgres>, orders: &mut [Order]) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let rows = sqlx::query(
        "SELECT order_id, sku, quantity, unit_price_cents FROM orders.order_lines WHERE order_id = ANY($1) ORDER BY sku",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let order_id: Uuid = row.try_get("order_id")?;
        let sku: String = row.try_get("sku")?;
        let quantity: i32 = row.try_get("quantity")?;
        if let (Some(order), Some(sku)) = (orders.iter_mut().find(|o| o.id == order_id), Sku::parse(&sku)) {
            order.lines.push(PricedLine {
                sku,
                quantity: u32::try_from(quantity).unwrap_or(0),
                unit_price_cents: row.try_get("unit_price_cents")?,
            });
        }
    }
    Ok(())
}
