//! The repository's own owner filter (API1), proven without row-level
//! security underneath: the same queries over a connection that bypasses RLS
//! (a superuser) still never return, change or count another customer's
//! order. RLS (`order::rls`) and this filter are two independent layers; each
//! has a test that fails when that layer alone is removed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_order::domain::{CustomerId, DeliveryNote, IdempotencyKey, PricedLine, Sku, Status};
use estate_order::repo::{Begun, Orders};
use estate_testkit::TestPostgres;

#[tokio::test]
async fn api1_the_repository_filters_by_owner_even_where_rls_is_bypassed() {
    let pg = TestPostgres::start().await.unwrap();
    let roles = pg.create_service_roles("orders").await.unwrap();
    let owner = sqlx::PgPool::connect_with(roles.owner.clone()).await.unwrap();
    estate_order::migrator().run(&owner).await.unwrap();
    // A superuser bypasses row-level security: only the queries' own filter is left.
    let orders = Orders::new(pg.admin_pool().await.unwrap());
    let (alice, bob) = (CustomerId::new("alice"), CustomerId::new("bob"));
    let line = PricedLine { sku: Sku::parse("TEA-01").unwrap(), quantity: 1, unit_price_cents: 450 };
    let key = IdempotencyKey::parse("alice-key-0001").unwrap();
    let Begun::Created(order) = orders.of(&alice).start(&key, "digest", &[line], "EUR", None).await.unwrap() else {
        panic!("a new order");
    };

    assert!(orders.of(&alice).get(order.id).await.unwrap().is_some(), "the owner reads it");
    assert!(orders.of(&bob).get(order.id).await.unwrap().is_none(), "another customer does not");
    assert!(orders.of(&bob).list(50, None).await.unwrap().unwrap_or_default().is_empty());
    let note = DeliveryNote::parse("leave it at the door").unwrap();
    assert!(orders.of(&bob).set_note(order.id, &note).await.unwrap().is_none());
    assert!(!orders.of(&bob).transition(order.id, &[Status::Pending], Status::Cancelled, None, None).await.unwrap());
    assert!(orders.of(&bob).by_key(&key).await.unwrap().is_none(), "nor finds it by its idempotency key");
    let unchanged = orders.of(&alice).get(order.id).await.unwrap().unwrap();
    assert_eq!((unchanged.status, unchanged.delivery_note), (Status::Pending, None));
}
