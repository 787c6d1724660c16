//! Row-level security on `orders.orders` (ARCHITECTURE §4, API1): even a
//! query that forgets its owner filter returns only the caller's rows, a
//! transaction that never names its subject sees nothing, and the subject
//! does not leak into the next transaction on a pooled connection.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::TestPostgres;
use sqlx::{Connection, PgConnection};

const MIGRATION: &str = include_str!("../migrations/0001_orders.sql");

async fn setup() -> (TestPostgres, PgConnection) {
    let pg = TestPostgres::start().await.unwrap();
    let roles = pg.create_service_roles("orders").await.unwrap();
    let mut owner = PgConnection::connect_with(&roles.owner).await.unwrap();
    sqlx::raw_sql(MIGRATION).execute(&mut owner).await.unwrap();
    let mut app = PgConnection::connect_with(&roles.app).await.unwrap();
    for (customer, total) in [("alice", 100), ("alice", 250), ("bob", 999)] {
        let mut tx = app.begin().await.unwrap();
        sqlx::query("SELECT set_config('estate.subject', $1, true)").bind(customer).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO orders.orders (id, customer_id, status, total_cents) VALUES ($1, $2, 'placed', $3)")
            .bind(uuid::Uuid::new_v4())
            .bind(customer)
            .bind(i64::from(total))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    (pg, app)
}

/// The "forgetful repository": selects every row, no owner filter.
async fn all_rows_as(app: &mut PgConnection, subject: Option<&str>) -> Vec<String> {
    let mut tx = app.begin().await.unwrap();
    if let Some(subject) = subject {
        sqlx::query("SELECT set_config('estate.subject', $1, true)").bind(subject).execute(&mut *tx).await.unwrap();
    }
    let rows: Vec<String> = sqlx::query_scalar("SELECT customer_id FROM orders.orders ORDER BY total_cents")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    rows
}

#[tokio::test]
async fn api1_rls_hides_other_users_rows_even_without_an_owner_filter() {
    let (_pg, mut app) = setup().await;
    assert_eq!(all_rows_as(&mut app, Some("alice")).await, ["alice", "alice"]);
    assert_eq!(all_rows_as(&mut app, Some("bob")).await, ["bob"]);
}

#[tokio::test]
async fn api1_a_transaction_without_a_subject_sees_nothing() {
    let (_pg, mut app) = setup().await;
    assert!(all_rows_as(&mut app, None).await.is_empty(), "fail closed");
}

#[tokio::test]
async fn api1_the_subject_does_not_outlive_its_transaction_on_a_pooled_connection() {
    let (_pg, mut app) = setup().await;
    assert_eq!(all_rows_as(&mut app, Some("alice")).await.len(), 2);
    // The same connection, next transaction, nobody named: nothing.
    assert!(all_rows_as(&mut app, None).await.is_empty());
}

#[tokio::test]
async fn api1_a_user_cannot_write_or_change_rows_of_another() {
    let (_pg, mut app) = setup().await;
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('estate.subject', 'alice', true)").execute(&mut *tx).await.unwrap();
    let insert =
        sqlx::query("INSERT INTO orders.orders (id, customer_id, status, total_cents) VALUES ($1, 'bob', 'placed', 1)")
            .bind(uuid::Uuid::new_v4())
            .execute(&mut *tx)
            .await
            .unwrap_err()
            .to_string();
    assert!(insert.contains("row-level security"), "{insert}");
    tx.rollback().await.unwrap();

    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('estate.subject', 'alice', true)").execute(&mut *tx).await.unwrap();
    let updated = sqlx::query("UPDATE orders.orders SET status = 'cancelled' WHERE customer_id = 'bob'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 0);
    let moved = sqlx::query("UPDATE orders.orders SET customer_id = 'bob' WHERE customer_id = 'alice'")
        .execute(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(moved.contains("row-level security"), "handing a row to another user: {moved}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn pc05_the_app_role_cannot_switch_rls_off() {
    let (_pg, mut app) = setup().await;
    for sql in
        ["ALTER TABLE orders.orders DISABLE ROW LEVEL SECURITY", "DROP POLICY orders_owner_only ON orders.orders"]
    {
        let error = sqlx::query(sql).execute(&mut app).await.unwrap_err().to_string();
        assert!(error.contains("must be owner"), "{sql}: {error}");
    }
}
