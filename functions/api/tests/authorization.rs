//! Authorization and revocation through `api::handle` against the real PostgreSQL, Redis and
//! moto: a revoked credential is refused from the next request on, and one account's
//! credentials reach nothing of another's (its keys, its orders, its webhooks). Each
//! refusal is checked by what it left unchanged too, not only by its status.

mod common;

use adapters::auth::digest;
use adapters::ledger::{OrderQuery, StatusFilter};
use common::{call, drain, resting_buy, user, Auth};
use domain::order::{OrderRef, OrderStatus};
use lambda_http::http::Method;
use rust_decimal_macros::dec;
use serde_json::json;
use testkit::put_quote;

#[tokio::test]
async fn a_deleted_api_key_is_refused_from_the_next_request_on() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(1000)).await;
    // A key minted through the API, as a client gets one.
    let r = call(
        &deps,
        Method::POST,
        "/v2/api_keys",
        &alice.bearer(),
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = Auth::Key(
        r.json["key_id"].as_str().unwrap().to_string(),
        r.json["secret_key"].as_str().unwrap().to_string(),
    );
    let key_id = r.json["key_id"].as_str().unwrap().to_string();
    let r = call(&deps, Method::GET, "/v2/account", &key, None).await;
    assert_eq!(r.status, 200, "the new key works: {r:?}");

    let r = call(
        &deps,
        Method::DELETE,
        &format!("/v2/api_keys/{key_id}"),
        &alice.bearer(),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    // The record stays, marked revoked: the refusal is the revocation's, not a missing row's.
    let stored = deps.ledger.api_key(&key_id).await.unwrap().expect("kept");
    assert!(stored.revoked);
    for (method, path) in [
        (Method::GET, "/v2/account"),
        (Method::GET, "/v2/orders"),
        (Method::GET, "/v2/positions"),
    ] {
        let r = call(&deps, method, path, &key, None).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{path}: {r:?}");
    }
    let order = json!({"symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "market", "time_in_force": "gtc"});
    let r = call(&deps, Method::POST, "/v2/orders", &key, Some(&order)).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{r:?}");
    assert!(drain(&deps).await.is_empty(), "nothing was enqueued");
    // Deleting it again finds no live key; the user's other key still works.
    let r = call(
        &deps,
        Method::DELETE,
        &format!("/v2/api_keys/{key_id}"),
        &alice.bearer(),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    let r = call(&deps, Method::GET, "/v2/account", &alice.key(), None).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn logout_revokes_the_session_it_names_and_no_other() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(1000)).await;
    let other = user(&deps, dec!(1000)).await;
    let r = call(&deps, Method::GET, "/v2/account", &alice.bearer(), None).await;
    assert_eq!(r.status, 200, "{r:?}");

    let r = call(
        &deps,
        Method::POST,
        "/v2/auth/logout",
        &alice.bearer(),
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(
        deps.cache
            .touch_session(&digest(&alice.token), 60)
            .await
            .unwrap()
            .is_none(),
        "the session is gone from the cache"
    );
    for (method, path) in [
        (Method::GET, "/v2/account"),
        (Method::GET, "/v2/api_keys"),
        (Method::POST, "/v2/auth/logout"),
    ] {
        let r = call(&deps, method, path, &alice.bearer(), Some(&json!({}))).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{path}: {r:?}");
    }
    // The user's key and another user's session live on.
    let r = call(&deps, Method::GET, "/v2/account", &alice.key(), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(&deps, Method::GET, "/v2/account", &other.bearer(), None).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn a_user_cannot_revoke_another_users_key() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(1000)).await;
    let bob = user(&deps, dec!(1000)).await;
    let r = call(
        &deps,
        Method::DELETE,
        &format!("/v2/api_keys/{}", bob.key_id),
        &alice.bearer(),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    let stored = deps.ledger.api_key(&bob.key_id).await.unwrap().unwrap();
    assert!(!stored.revoked, "bob's key is still live");
    let r = call(&deps, Method::GET, "/v2/account", &bob.key(), None).await;
    assert_eq!(r.status, 200, "bob's key still works: {r:?}");
    // Nor does alice see it among hers.
    let r = call(&deps, Method::GET, "/v2/api_keys", &alice.bearer(), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let listed: Vec<&str> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert_eq!(listed, [alice.key_id.as_str()], "{r:?}");
}

#[tokio::test]
async fn an_account_cannot_replace_or_cancel_another_accounts_order() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(100000)).await;
    let bob = user(&deps, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    // Bob's resting limit buy, applied in the ledger; and one only accepted (not yet applied).
    let resting = resting_buy(&deps, bob.account_id).await;
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &bob.key(),
        Some(&json!({"symbol": "BTCUSDT", "qty": "0.01", "side": "buy", "type": "limit", "time_in_force": "gtc", "limit_price": "49000"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let pending: uuid::Uuid = r.json["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(drain(&deps).await.len(), 1, "bob's own place");

    for auth in [alice.key(), alice.bearer()] {
        for id in [resting, pending] {
            let r = call(
                &deps,
                Method::PATCH,
                &format!("/v2/orders/{id}"),
                &auth,
                Some(&json!({"limit_price": "51000"})),
            )
            .await;
            assert_eq!(
                (r.status, r.code()),
                (404, "not_found"),
                "PATCH {id}: {r:?}"
            );
            let r = call(
                &deps,
                Method::DELETE,
                &format!("/v2/orders/{id}"),
                &auth,
                None,
            )
            .await;
            assert_eq!(
                (r.status, r.code()),
                (404, "not_found"),
                "DELETE {id}: {r:?}"
            );
            let r = call(&deps, Method::GET, &format!("/v2/orders/{id}"), &auth, None).await;
            assert_eq!((r.status, r.code()), (404, "not_found"), "GET {id}: {r:?}");
        }
    }
    // Nothing was enqueued: no cancel, no replacement.
    assert!(drain(&deps).await.is_empty(), "no cancel, no replacement");
    // Cancel-all and the lists of alice's own account do not reach bob's orders either.
    let r = call(&deps, Method::DELETE, "/v2/orders", &alice.key(), None).await;
    assert_eq!(r.status, 207, "{r:?}");
    assert_eq!(r.json, json!([]), "{r:?}");
    let r = call(
        &deps,
        Method::GET,
        "/v2/orders?status=all",
        &alice.key(),
        None,
    )
    .await;
    assert_eq!(r.json, json!([]), "{r:?}");
    assert!(drain(&deps).await.is_empty());
    // Bob's order is as it was, with no replacement.
    let stored = deps
        .ledger
        .order(OrderRef {
            account_id: bob.account_id,
            order_id: resting,
        })
        .await
        .unwrap()
        .expect("bob's order");
    assert_eq!(stored.status, OrderStatus::New);
    assert_eq!(stored.limit_price, Some(dec!(50000)));
    let q = OrderQuery {
        status: StatusFilter::All,
        limit: 50,
        after: None,
        until: None,
        ascending: true,
        symbols: None,
        nested: false,
    };
    assert_eq!(
        deps.ledger.orders(bob.account_id, &q).await.unwrap().len(),
        1
    );
    assert!(deps
        .ledger
        .orders(alice.account_id, &q)
        .await
        .unwrap()
        .is_empty());
    // Bob himself can do both (the refusals above were the account's, not the order's).
    let r = call(
        &deps,
        Method::PATCH,
        &format!("/v2/orders/{resting}"),
        &bob.key(),
        Some(&json!({"limit_price": "51000"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["replaces"], resting.to_string(), "{r:?}");
    let r = call(
        &deps,
        Method::DELETE,
        &format!("/v2/orders/{pending}"),
        &bob.key(),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(drain(&deps).await.len(), 2, "bob's replacement and cancel");
}

#[tokio::test]
async fn an_account_cannot_read_rotate_or_delete_another_accounts_webhook() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(1000)).await;
    let bob = user(&deps, dec!(1000)).await;
    let r = call(
        &deps,
        Method::POST,
        "/v2/webhooks",
        &bob.bearer(),
        Some(&json!({"name": "bob's"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json["id"].as_str().unwrap().to_string();
    let passphrase = r.json["passphrase"].as_str().unwrap().to_string();
    let before = deps
        .ledger
        .webhook(&id)
        .await
        .unwrap()
        .expect("bob's webhook");
    assert_eq!(before.passphrase_hash, digest(&passphrase));

    let r = call(&deps, Method::GET, "/v2/webhooks", &alice.bearer(), None).await;
    assert_eq!((r.status, &r.json), (200, &json!([])), "{r:?}");
    for auth in [alice.key(), alice.bearer()] {
        let r = call(
            &deps,
            Method::GET,
            &format!("/v2/webhooks/{id}/deliveries"),
            &auth,
            None,
        )
        .await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    }
    let r = call(
        &deps,
        Method::POST,
        &format!("/v2/webhooks/{id}/rotate"),
        &alice.bearer(),
        Some(&json!({})),
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    assert!(r.json.get("passphrase").is_none(), "{r:?}");
    let r = call(
        &deps,
        Method::DELETE,
        &format!("/v2/webhooks/{id}"),
        &alice.bearer(),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");

    // Bob's webhook is untouched: same passphrase, still there, still his.
    let after = deps
        .ledger
        .webhook(&id)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(after.passphrase_hash, before.passphrase_hash, "not rotated");
    assert_eq!(after.account_id, bob.account_id);
    let r = call(
        &deps,
        Method::GET,
        &format!("/v2/webhooks/{id}/deliveries"),
        &bob.bearer(),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}
