//! FLOW-CC at the inventory end, against the real service: east-west mTLS,
//! the east-west policy, a client-credentials token with the right scope,
//! idempotent reservations and releases, over a real Postgres as
//! `inventory_app`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

use common::{Estate, ORDER, PAYMENT, call, reserve};
use estate_proto::inventory::v1::inventory_client::InventoryClient;
use estate_proto::inventory::v1::{GetStockRequest, ReleaseRequest};
use estate_testkit::TestPki;
use estate_workload_identity::settings::GrpcChannel;
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn flow_cc_order_with_a_reserve_token_reserves_idempotently_and_releases_for_good() {
    let estate = Estate::start().await;
    let mut order = estate.client(ORDER);
    let token = estate.order_token();
    let id = uuid::Uuid::new_v4().to_string();

    let reservation = order.reserve(call(reserve(&id, &[("TEA-01", 3)]), Some(&token))).await.unwrap().into_inner();
    assert_eq!(reservation.order_id, id);
    assert_eq!(estate.available("TEA-01").await, 7);
    // A retry (same order, same lines) is answered from the existing reservation.
    order.reserve(call(reserve(&id, &[("TEA-01", 3)]), Some(&token))).await.unwrap();
    assert_eq!(estate.available("TEA-01").await, 7, "a retried Reserve takes nothing more");
    // The same order asking for something else is a conflict, not a second reservation.
    let status = order.reserve(call(reserve(&id, &[("TEA-01", 4)]), Some(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let stock = order.get_stock(call(GetStockRequest { sku: "TEA-01".into() }, Some(&token))).await.unwrap();
    assert_eq!(stock.into_inner().available, 7);

    let released = order.release(call(ReleaseRequest { order_id: id.clone() }, Some(&token))).await.unwrap();
    assert!(released.into_inner().released);
    assert_eq!(estate.available("TEA-01").await, 10);
    let again = order.release(call(ReleaseRequest { order_id: id.clone() }, Some(&token))).await.unwrap();
    assert!(!again.into_inner().released, "a second Release returns nothing twice");
    assert_eq!(estate.available("TEA-01").await, 10);
    // Compensation is final: a late (replayed) Reserve for a released order takes nothing.
    let late = order.reserve(call(reserve(&id, &[("TEA-01", 3)]), Some(&token))).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(estate.available("TEA-01").await, 10);
}

#[tokio::test]
async fn flow_cc_inventory_refuses_other_workloads_wrong_tokens_and_user_tokens() {
    let estate = Estate::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let attempt = |token: Option<String>, client: InventoryClient<GrpcChannel>| {
        let id = id.clone();
        async move {
            let mut client = client;
            client.reserve(call(reserve(&id, &[("TEA-01", 1)]), token.as_deref())).await.unwrap_err().code()
        }
    };

    // The wrong workload, even with a perfect token: the policy refuses it.
    assert_eq!(attempt(Some(estate.order_token()), estate.client(PAYMENT)).await, Code::PermissionDenied);
    // The right workload without a token, or with one for another audience.
    assert_eq!(attempt(None, estate.client(ORDER)).await, Code::Unauthenticated);
    let wrong_audience = estate.machine_token("order-svc", "payment-api", "inventory:reserve");
    assert_eq!(attempt(Some(wrong_audience), estate.client(ORDER)).await, Code::Unauthenticated);
    // A token without the scope: read-only callers may read, not reserve.
    let read_only = estate.machine_token("order-svc", "inventory-api", "inventory:read");
    assert_eq!(attempt(Some(read_only.clone()), estate.client(ORDER)).await, Code::PermissionDenied);
    // A user's token that holds the scope is still not a machine token.
    let mut user = estate.idp.access_claims("alice", "inventory-api", "inventory:reserve");
    user["client_id"] = json!("web");
    let user = estate.idp.mint(&user).unwrap();
    assert_eq!(attempt(Some(user), estate.client(ORDER)).await, Code::PermissionDenied);
    estate_testkit::evidence::refused("other workloads, wrong tokens and user tokens at inventory");
    // An SVID for `order` from a CA outside the bundle: no handshake at all.
    let rogue = TestPki::new("rogue").unwrap();
    let code = attempt(Some(estate.order_token()), estate.client_from(&rogue, ORDER)).await;
    assert!(matches!(code, Code::Unavailable | Code::Unknown), "{code:?}");
    assert_eq!(estate.available("TEA-01").await, 10, "nothing was taken");

    // The legitimate counterparts still work: payment may read, a read token may read.
    let mut payment = estate.client(PAYMENT);
    let payment_token = estate.machine_token("payment-svc", "inventory-api", "inventory:read");
    payment.get_stock(call(GetStockRequest { sku: "TEA-01".into() }, Some(&payment_token))).await.unwrap();
    let mut order = estate.client(ORDER);
    order.get_stock(call(GetStockRequest { sku: "TEA-02".into() }, Some(&read_only))).await.unwrap();
    // …but payment can never release what order reserved.
    order.reserve(call(reserve(&id, &[("TEA-01", 2)]), Some(&estate.order_token()))).await.unwrap();
    let status = payment
        .release(call(
            ReleaseRequest { order_id: id.clone() },
            Some(&estate.machine_token("payment-svc", "inventory-api", "inventory:reserve")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(estate.available("TEA-01").await, 8);
}

#[tokio::test]
async fn api6_inventory_concurrent_duplicate_reserves_take_stock_once() {
    let estate = Estate::start().await;
    let token = estate.order_token();
    let id = uuid::Uuid::new_v4().to_string();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = estate.client(ORDER);
            let request = call(reserve(&id, &[("TEA-01", 2), ("TEA-02", 1)]), Some(&token));
            tokio::spawn(async move { client.reserve(request).await.map(|_| ()).map_err(|s| s.code()) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!((estate.available("TEA-01").await, estate.available("TEA-02").await), (8, 1));
    let lines: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inventory.reservations").fetch_one(&estate.owner).await.unwrap();
    assert_eq!(lines, 2);
}

#[tokio::test]
async fn inventory_refuses_invalid_or_unfillable_reservations_and_takes_nothing() {
    let estate = Estate::start().await;
    let mut order = estate.client(ORDER);
    let token = estate.order_token();
    let id = uuid::Uuid::new_v4().to_string();
    let invalid = [
        reserve("not-a-uuid", &[("TEA-01", 1)]),
        reserve(&id, &[]),
        reserve(&id, &[("tea-01", 1)]),
        reserve(&id, &[("TEA-01'; DROP TABLE inventory.products; --", 1)]),
        reserve(&id, &[("TEA-01", 0)]),
        reserve(&id, &[("TEA-01", 1001)]),
        reserve(&id, &[("TEA-01", 1), ("TEA-01", 1)]),
    ];
    for request in invalid {
        let status = order.reserve(call(request.clone(), Some(&token))).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
    }
    // All lines or none: TEA-01 is there, TEA-02 is short, so nothing is taken.
    let status = order.reserve(call(reserve(&id, &[("TEA-01", 5), ("TEA-02", 3)]), Some(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = order.reserve(call(reserve(&id, &[("NO-SUCH-TEA", 1)]), Some(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(!status.message().contains("sql") && !status.message().contains("inventory."), "{}", status.message());
    assert_eq!((estate.available("TEA-01").await, estate.available("TEA-02").await), (10, 2));
    let lines: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inventory.reservations").fetch_one(&estate.owner).await.unwrap();
    assert_eq!(lines, 0);
    // And the legitimate reservation of what there is works.
    order.reserve(call(reserve(&id, &[("TEA-01", 5), ("TEA-02", 2)]), Some(&token))).await.unwrap();
    assert_eq!((estate.available("TEA-01").await, estate.available("TEA-02").await), (5, 0));
}
