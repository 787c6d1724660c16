//! PC-05 / API3 in the database: the `orders_app` login can move an order
//! through its life and edit its note, but cannot rewrite what was agreed —
//! totals, owners, lines, prices — nor delete anything.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::ServiceFixture;

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

#[tokio::test]
async fn pc05_the_order_app_role_cannot_rewrite_totals_owners_lines_or_prices() {
    let fx = ServiceFixture::start("orders").await.unwrap();
    estate_order::migrator().run(&fx.owner).await.unwrap();
    sqlx::query("INSERT INTO orders.prices (sku, unit_price_cents, currency) VALUES ('TEA-01', 450, 'EUR')")
        .execute(&fx.owner)
        .await
        .unwrap();
    let app = sqlx::PgPool::connect_with(fx.roles.app.clone()).await.unwrap();
    let id = uuid::Uuid::new_v4();
    let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
    sqlx::query("INSERT INTO orders.orders (id, customer_id, status, total_cents, idempotency_key) VALUES ($1, 'alice', 'pending', 450, 'key-00000001')")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders.order_lines (order_id, customer_id, sku, quantity, unit_price_cents) VALUES ($1, 'alice', 'TEA-01', 1, 450)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let refused = [
        "UPDATE orders.orders SET total_cents = 1",
        "UPDATE orders.orders SET customer_id = 'bob'",
        "UPDATE orders.orders SET idempotency_key = 'key-99999999'",
        "DELETE FROM orders.orders",
        "UPDATE orders.order_lines SET unit_price_cents = 1",
        "DELETE FROM orders.order_lines",
        "UPDATE orders.prices SET unit_price_cents = 1",
        "INSERT INTO orders.prices (sku, unit_price_cents, currency) VALUES ('FREE-01', 0, 'EUR')",
    ];
    for statement in refused {
        let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
        let error = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *tx).await.unwrap_err();
        assert_eq!(sql_state(&error).as_deref(), Some("42501"), "{statement}: {error}");
    }

    // What the service legitimately does still works.
    let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
    let payment = uuid::Uuid::new_v4();
    let moved = sqlx::query("UPDATE orders.orders SET status = 'confirmed', payment_id = $2, delivery_note = 'door', updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(payment)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(moved.rows_affected(), 1);
    let price: i64 = sqlx::query_scalar("SELECT unit_price_cents FROM orders.prices WHERE sku = 'TEA-01'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(price, 450);
    tx.commit().await.unwrap();
    // And the schema itself refuses an impossible state: confirmed without a payment.
    let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
    let error = sqlx::query("UPDATE orders.orders SET payment_id = NULL, status = 'confirmed' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sql_state(&error).as_deref(), Some("23514"), "{error}");
}
