//! The stock invariants hold in the database itself (PC-05 least privilege,
//! API6 business-flow abuse): concurrent reservations never oversell, a
//! reservation line exists once per order and product, and the app role can
//! move stock counts but not rewrite products or reservations.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::TestPostgres;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

const MIGRATION: &str = include_str!("../migrations/0001_stock.sql");
const ORDER: &str = "spiffe://estate.local/ns/estate/sa/order";

async fn setup(available: i32) -> (TestPostgres, PgPool) {
    let pg = TestPostgres::start().await.unwrap();
    let roles = pg.create_service_roles("inventory").await.unwrap();
    let mut owner = PgConnection::connect_with(&roles.owner).await.unwrap();
    sqlx::raw_sql(MIGRATION).execute(&mut owner).await.unwrap();
    sqlx::query("INSERT INTO inventory.products (sku, name, available) VALUES ('TEA-01', 'Green tea', $1)")
        .bind(available)
        .execute(&mut owner)
        .await
        .unwrap();
    let app = PgPoolOptions::new().max_connections(8).connect_with(roles.app.clone()).await.unwrap();
    (pg, app)
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

/// One reservation the way the service makes it: guarded decrement, then the
/// line, in one transaction. `false` when there was not enough stock.
async fn reserve(app: &PgPool, order_id: uuid::Uuid, quantity: i32) -> bool {
    let mut tx = app.begin().await.unwrap();
    let taken =
        sqlx::query("UPDATE inventory.products SET available = available - $2 WHERE sku = $1 AND available >= $2")
            .bind("TEA-01")
            .bind(quantity)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
    if taken == 0 {
        tx.rollback().await.unwrap();
        return false;
    }
    sqlx::query(
        "INSERT INTO inventory.reservations (order_id, sku, quantity, reserved_by) VALUES ($1, 'TEA-01', $2, $3)",
    )
    .bind(order_id)
    .bind(quantity)
    .bind(ORDER)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    true
}

async fn available(app: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT available FROM inventory.products WHERE sku = 'TEA-01'").fetch_one(app).await.unwrap()
}

#[tokio::test]
async fn api6_concurrent_reservations_never_oversell() {
    let (_pg, app) = setup(10).await;
    let attempts: Vec<_> = (0..25)
        .map(|_| {
            tokio::spawn({
                let app = app.clone();
                async move { reserve(&app, uuid::Uuid::new_v4(), 1).await }
            })
        })
        .collect();
    let mut succeeded = 0;
    for attempt in attempts {
        succeeded += usize::from(attempt.await.unwrap());
    }
    assert_eq!(succeeded, 10, "exactly the stock there was");
    assert_eq!(available(&app).await, 0);
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory.reservations").fetch_one(&app).await.unwrap();
    assert_eq!(lines, 10);
}

#[tokio::test]
async fn api6_even_an_unguarded_update_cannot_take_stock_below_zero() {
    let (_pg, app) = setup(3).await;
    let error = sqlx::query("UPDATE inventory.products SET available = available - 4 WHERE sku = 'TEA-01'")
        .execute(&app)
        .await
        .unwrap_err();
    assert_eq!(sql_state(&error).as_deref(), Some("23514"), "check_violation: {error}");
    assert_eq!(available(&app).await, 3, "nothing changed");
    assert!(reserve(&app, uuid::Uuid::new_v4(), 3).await, "the legitimate reservation still works");
}

#[tokio::test]
async fn a_reservation_line_exists_once_per_order_and_product() {
    let (_pg, app) = setup(10).await;
    let order = uuid::Uuid::new_v4();
    assert!(reserve(&app, order, 2).await);
    let duplicate = sqlx::query(
        "INSERT INTO inventory.reservations (order_id, sku, quantity, reserved_by) VALUES ($1, 'TEA-01', 2, $2)",
    )
    .bind(order)
    .bind(ORDER)
    .execute(&app)
    .await
    .unwrap_err();
    assert_eq!(sql_state(&duplicate).as_deref(), Some("23505"), "unique_violation: {duplicate}");
}

#[tokio::test]
async fn pc05_the_app_role_moves_stock_but_cannot_rewrite_products_or_reservations() {
    let (_pg, app) = setup(10).await;
    let order = uuid::Uuid::new_v4();
    assert!(reserve(&app, order, 2).await);
    for statement in [
        "UPDATE inventory.products SET sku = 'TEA-02' WHERE sku = 'TEA-01'",
        "UPDATE inventory.products SET name = 'Free tea' WHERE sku = 'TEA-01'",
        "INSERT INTO inventory.products (sku, name, available) VALUES ('GOLD-01', 'Gold', 1000000)",
        "DELETE FROM inventory.products",
        "UPDATE inventory.reservations SET quantity = 1",
        "ALTER TABLE inventory.products DROP CONSTRAINT products_available_check",
        "CREATE TABLE inventory.shadow (x int)",
    ] {
        let error = sqlx::query(statement).execute(&app).await.unwrap_err();
        assert_eq!(sql_state(&error).as_deref(), Some("42501"), "{statement}: {error}");
    }
    // What the service needs still works: release a reservation, return the stock.
    let mut tx = app.begin().await.unwrap();
    let released = sqlx::query("DELETE FROM inventory.reservations WHERE order_id = $1")
        .bind(order)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(released.rows_affected(), 1);
    sqlx::query("UPDATE inventory.products SET available = available + 2 WHERE sku = 'TEA-01'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(available(&app).await, 10);
}
