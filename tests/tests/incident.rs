//! PC-12 incident drills: each runbook in `docs/runbooks/` executed against
//! the running estate, with the operator command the runbook names. After
//! the procedure the revoked or compromised credential is refused — at the
//! edge and at the services behind it — within the documented bound (one
//! revocation-list poll interval), and everything else keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::future::Future;
use std::time::{Duration, Instant};

use estate_tests::{Estate, Options, REVOCATION_POLL_SECS, USERS, WEB_CLIENT};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The documented bound (one poll interval) plus the time a poll and a
/// request take on a loaded CI machine.
fn bound() -> Duration {
    Duration::from_secs(2 * REVOCATION_POLL_SECS + 3)
}

/// Wait for `check` to hold; how long it took since `started`. Fails past twice the bound.
async fn within<F: Future<Output = bool>>(what: &str, started: Instant, check: impl FnMut() -> F) -> Duration {
    eventually(what, started, 2 * bound(), check).await
}

/// The same with another limit (recovery is not bounded by the revocation list).
async fn eventually<F: Future<Output = bool>>(
    what: &str,
    started: Instant,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

async fn edge_status(estate: &Estate, token: &str) -> StatusCode {
    estate.edge_call(Method::GET, "/v1/orders", Some(token), None).await.0
}

/// The same call straight at order, as the gateway makes it (the gateway bypassed).
async fn direct_status(estate: &Estate, token: &str) -> StatusCode {
    estate.gateway().get(estate.order_url("/v1/orders")).bearer_auth(token).send().await.unwrap().status()
}

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

#[tokio::test]
async fn pc12_revoking_a_user_refuses_their_tokens_everywhere_within_the_poll_interval() {
    let estate = Estate::start_with(Options { siem: true, ..Options::default() }).await;
    let alice = estate.user_login("alice").await;
    let alice_access = alice["access_token"].as_str().unwrap().to_owned();
    let alice_refresh = alice["refresh_token"].as_str().unwrap().to_owned();
    let bob = estate.user_token("bob").await;
    for token in [&alice_access, &bob] {
        assert_eq!(edge_status(&estate, token).await, StatusCode::OK);
    }

    // Runbook "revoke a user's tokens": `auth revoke user alice`.
    let started = Instant::now();
    let said = estate.auth_operator(&["revoke", "user", "alice"]).await.unwrap();
    assert!(said.contains("ended 1 session"), "{said}");

    // At once: the refresh token is dead (no new access tokens from the old login).
    let (status, body) = estate
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", &alice_refresh), ("client_id", WEB_CLIENT)])
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    // Within the bound: the access token is refused at the edge and at the service behind it.
    let took = within("alice's token refused at the edge", started, || async {
        edge_status(&estate, &alice_access).await == StatusCode::UNAUTHORIZED
    })
    .await;
    within("alice's token refused at order directly", started, || async {
        direct_status(&estate, &alice_access).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(took <= bound(), "refused after {took:?}, documented bound {:?}", bound());
    // Nobody else is affected.
    assert_eq!(edge_status(&estate, &bob).await, StatusCode::OK);
    assert_eq!(direct_status(&estate, &bob).await, StatusCode::OK);
    // Not disabled: alice can log in again (tokens issued in the second of the
    // revocation are refused too, so the first new login may need a retry).
    within("a new login of alice works", started, || async {
        let token = estate.user_token("alice").await;
        edge_status(&estate, &token).await == StatusCode::OK
    })
    .await;

    // With --disable the account is also locked out until reinstated.
    estate.auth_operator(&["revoke", "user", "bob", "--disable"]).await.unwrap();
    assert!(estate.login_with("bob", password("bob")).await.is_err(), "a disabled user cannot log in");
    within("bob's token refused", Instant::now(), || async {
        edge_status(&estate, &bob).await == StatusCode::UNAUTHORIZED
    })
    .await;
    estate.auth_operator(&["reinstate", "user", "bob"]).await.unwrap();
    // As for alice: a token issued in the very second of the revocation is
    // still covered by it (`iat` has whole seconds), so log in again until one is not.
    within("bob's new token works", Instant::now(), || async {
        let token = estate.user_token("bob").await;
        edge_status(&estate, &token).await == StatusCode::OK
    })
    .await;

    // The SIEM saw the operator's actions and the refused uses of revoked tokens.
    estate
        .siem_events(&[
            ("auth", "admin_action", "user_revoked"),
            ("auth", "admin_action", "user_revoked_and_disabled"),
            ("auth", "admin_action", "principal_reinstated"),
            ("auth", "login_failed", "user_disabled"),
            ("gateway", "authentication_failed", "gateway_token_revoked"),
        ])
        .await;
}

#[tokio::test]
async fn pc12_cutting_off_a_compromised_workload_client_stops_its_calls_and_nothing_else() {
    // Checkouts are retried below: lift the per-user checkout budget.
    let estate =
        Estate::start_with(Options { siem: true, checkouts_per_minute: Some(1000), ..Options::default() }).await;
    let alice = estate.user_token("alice").await;
    let order_body = json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] });
    let (status, first) = estate.place_order(&alice, &uuid::Uuid::new_v4().to_string(), &order_body).await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::CREATED, Some("confirmed")), "{first}");
    let stock = estate.stock("TEA-01").await;

    // Runbook "cut off a compromised workload", OAuth half: `auth revoke client order-svc`.
    let started = Instant::now();
    estate.auth_operator(&["revoke", "client", "order-svc"]).await.unwrap();

    // order-svc can no longer reserve stock (its cached token is refused by
    // inventory within the bound, a new one is refused by auth) nor exchange
    // tokens for payment: checkouts fail cleanly, nothing is taken.
    within("checkouts fail once order-svc is cut off", started, || async {
        let (status, order) = estate.place_order(&alice, &uuid::Uuid::new_v4().to_string(), &order_body).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order["status"] == "failed"
    })
    .await;
    assert_eq!(estate.stock("TEA-01").await, stock, "a failed checkout takes no stock");
    // Everything that does not depend on order-svc's own credentials still works:
    // users read their orders, the operations console administers.
    let (status, _, listed) = estate.edge_call(Method::GET, "/v1/orders", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed["items"].as_array().unwrap().iter().any(|o| o["id"] == first["id"]), "{listed}");
    estate.ops_token("inventory-api").await;

    // Recovery: after its key is rotated the client is reinstated, and checkouts work again.
    estate.auth_operator(&["reinstate", "client", "order-svc"]).await.unwrap();
    // (order-svc's token fetches were backing off meanwhile: up to 30 s.)
    eventually("checkouts confirm again after reinstatement", Instant::now(), Duration::from_secs(60), || async {
        let (_, order) = estate.place_order(&alice, &uuid::Uuid::new_v4().to_string(), &order_body).await;
        order["status"] == "confirmed"
    })
    .await;

    estate
        .siem_events(&[
            ("auth", "admin_action", "client_revoked_and_disabled"),
            ("auth", "authentication_failed", "client_disabled"),
        ])
        .await;
}

#[tokio::test]
async fn pc12_a_leaked_svid_is_refused_by_every_peer_within_the_crl_refresh_and_the_workload_keeps_working() {
    let estate = Estate::start_with(Options { siem: true, ..Options::default() }).await;
    let alice = estate.user_token("alice").await;
    // The leaked copy: an SVID of order's SPIFFE ID held by the attacker
    // (the running order service has its own, with another serial). Its
    // connection to payment is already open when the incident starts.
    let stolen = estate.workload_client("order", "payment");
    let probe = estate.payment_url("/v1/payments");
    let call = || async { stolen.post(&probe).json(&json!({})).send().await };
    // Before: east-west policy lets order's identity in; only the missing token is refused.
    assert_eq!(call().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Runbook "cut off a compromised workload", SPIFFE half: revoke the leaked serial in OpenBao's PKI.
    let started = Instant::now();
    estate.revoke_test_svid("order").await;
    // Within the bound: refused on the open connection (403, policy: certificate
    // revoked) and at every new handshake.
    let took = within("payment refuses the leaked SVID", started, || async {
        call().await.is_ok_and(|response| response.status() == StatusCode::FORBIDDEN)
    })
    .await;
    assert!(took <= bound(), "refused after {took:?}, documented bound {:?}", bound());
    let fresh = estate.workload_client("order", "payment");
    assert!(fresh.post(&probe).json(&json!({})).send().await.is_err(), "a new handshake with it fails");

    // The running order service (its own SVID) still reserves, exchanges and pays:
    // inventory and payment accept it; the gateway's SVID still reaches order.
    let (status, order) = estate
        .place_order(
            &alice,
            &uuid::Uuid::new_v4().to_string(),
            &json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] }),
        )
        .await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("confirmed")), "{order}");
    assert_eq!(estate.edge_call(Method::GET, "/v1/orders", Some(&alice), None).await.0, StatusCode::OK);
    estate.siem_events(&[("payment", "policy_denied", "peer_certificate_revoked")]).await;
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// A new access token from the refresh token (rotated in place): signed by
/// whatever key the authorization server signs with now, without the
/// login's rate limits.
async fn refreshed(estate: &Estate, refresh: &tokio::sync::Mutex<String>) -> String {
    let mut refresh = refresh.lock().await;
    let (status, body) = estate
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", WEB_CLIENT)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    *refresh = body["refresh_token"].as_str().unwrap().to_owned();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn pc12_signing_key_rotation_fails_no_request_and_a_compromised_key_is_cut_off_estate_wide() {
    let estate = Estate::start_with(Options { siem: true, ..Options::default() }).await;
    let login = estate.user_login("alice").await;
    let before = login["access_token"].as_str().unwrap().to_owned();
    let refresh = tokio::sync::Mutex::new(login["refresh_token"].as_str().unwrap().to_owned());
    let first_kid = kid(&before);

    // Runbook "rotate the signing key", routine: publish, wait the lead, activate.
    // Traffic with the old token never fails meanwhile, at the edge or behind it.
    assert!(estate.auth_operator(&["keys", "rotate"]).await.unwrap().contains("Published"));
    let started = Instant::now();
    loop {
        assert_eq!(edge_status(&estate, &before).await, StatusCode::OK);
        assert_eq!(direct_status(&estate, &before).await, StatusCode::OK);
        let said = estate.auth_operator(&["keys", "rotate"]).await.unwrap();
        if said.contains("Activated") {
            break;
        }
        assert!(said.contains("Waiting"), "{said}");
        assert!(started.elapsed() < Duration::from_secs(60), "never activated");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Once auth has reloaded, new tokens carry the new key — and the very
    // first request with one succeeds everywhere (no failed request).
    let after = loop {
        let token = refreshed(&estate, &refresh).await;
        if kid(&token) != first_kid {
            break token;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "auth never signed with the new key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(edge_status(&estate, &after).await, StatusCode::OK);
    assert_eq!(direct_status(&estate, &after).await, StatusCode::OK);
    assert_eq!(edge_status(&estate, &before).await, StatusCode::OK, "the retiring key's tokens live on");

    // Runbook, suspected compromise: the now active key leaked. `auth keys revoke KID`.
    let leaked = kid(&after);
    let revoked_at = Instant::now();
    let said = estate.auth_operator(&["keys", "revoke", &leaked]).await.unwrap();
    assert!(said.contains("revoked"), "{said}");
    let took = within("tokens of the revoked key refused at the edge", revoked_at, || async {
        edge_status(&estate, &after).await == StatusCode::UNAUTHORIZED
    })
    .await;
    within("… and at order directly", revoked_at, || async {
        direct_status(&estate, &after).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(took <= bound(), "refused after {took:?}, documented bound {:?}", bound());
    // Tokens of other keys are untouched; new logins get a key that was never leaked.
    assert_eq!(edge_status(&estate, &before).await, StatusCode::OK);
    eventually("new tokens work again", revoked_at, Duration::from_secs(60), || async {
        let token = refreshed(&estate, &refresh).await;
        kid(&token) != leaked && edge_status(&estate, &token).await == StatusCode::OK
    })
    .await;
    // The revoked key is gone from the JWKS.
    let http = estate.auth_client();
    let jwks: serde_json::Value =
        http.get(format!("{}/jwks", estate.auth_url)).send().await.unwrap().json().await.unwrap();
    assert!(!jwks.to_string().contains(&leaked), "{jwks}");

    estate
        .siem_events(&[
            ("auth", "key_rotated", "next_key_published"),
            ("auth", "key_rotated", "next_key_activated"),
            ("auth", "key_rotated", "key_revoked"),
            ("gateway", "authentication_failed", "gateway_token_revoked"),
        ])
        .await;
}
