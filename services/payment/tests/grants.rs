//! PC-05 / API3 in the database: the `payments_app` login records outcomes
//! but cannot change amounts, owners or orders of payments, nor delete them;
//! row-level security hides other customers' payments.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::ServiceFixture;

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

#[tokio::test]
async fn pc05_the_payment_app_role_cannot_rewrite_amounts_owners_or_delete_payments() {
    let fx = ServiceFixture::start("payments").await.unwrap();
    estate_payment::migrator().run(&fx.owner).await.unwrap();
    let app = sqlx::PgPool::connect_with(fx.roles.app.clone()).await.unwrap();
    let id = uuid::Uuid::new_v4();
    let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
    sqlx::query("INSERT INTO payments.payments (id, order_id, customer_id, amount_cents, currency, status, authorized_by) VALUES ($1, $2, 'alice', 450, 'EUR', 'pending', 'spiffe://estate.local/ns/estate/sa/order')")
        .bind(id)
        .bind(uuid::Uuid::new_v4())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    for statement in [
        "UPDATE payments.payments SET amount_cents = 1",
        "UPDATE payments.payments SET customer_id = 'bob'",
        "UPDATE payments.payments SET order_id = gen_random_uuid()",
        "DELETE FROM payments.payments",
    ] {
        let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
        let error = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *tx).await.unwrap_err();
        assert_eq!(sql_state(&error).as_deref(), Some("42501"), "{statement}: {error}");
    }
    // Full card numbers cannot even be stored.
    let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
    let error = sqlx::query("UPDATE payments.payments SET card_last4 = '4242424242424242' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sql_state(&error).as_deref(), Some("23514"), "{error}");
    drop(tx);

    // Another customer sees nothing and changes nothing.
    let mut tx = estate_platform::owner_transaction(&app, "bob").await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.payments").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(seen, 0);
    let changed = sqlx::query("UPDATE payments.payments SET status = 'refunded'").execute(&mut *tx).await.unwrap();
    assert_eq!(changed.rows_affected(), 0);
    drop(tx);

    // The owner's legitimate outcome update works.
    let mut tx = estate_platform::owner_transaction(&app, "alice").await.unwrap();
    let changed = sqlx::query("UPDATE payments.payments SET status = 'authorized', psp_reference = 'psp_1', card_last4 = '4242', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    tx.commit().await.unwrap();
}
