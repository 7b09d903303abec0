//! Credentials people can trust, through the whole local stack: what an API key may do and
//! what needs a login session, changing the password, ending every session, the caps on
//! keys and webhooks, and a login backoff that parallel guesses cannot race.

use e2e::{Auth, Stack, User};
use serde_json::json;

/// A second login of the user: a session of its own.
async fn another_session(stack: &Stack, user: &User) -> Auth {
    let login = json!({ "email": user.email, "password": user.password });
    let r = stack.post("/v2/auth/login", &Auth::None, &login).await;
    r.expect(200);
    Auth::Bearer(r.str("token").to_string())
}

#[tokio::test]
async fn an_api_key_trades_but_cannot_mint_credentials_or_lift_limits() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, session) = (user.key(), user.bearer());

    // Webhooks: created and rotated with a session only.
    stack
        .post("/v2/webhooks", &key, &json!({ "name": "from a key" }))
        .await
        .expect_error(403, "session_required");
    let r = stack
        .post("/v2/webhooks", &session, &json!({ "name": "mine" }))
        .await;
    r.expect(201);
    let id = r.str("id").to_string();
    stack
        .post(&format!("/v2/webhooks/{id}/rotate"), &key, &json!({}))
        .await
        .expect_error(403, "session_required");
    stack
        .post(&format!("/v2/webhooks/{id}/rotate"), &session, &json!({}))
        .await
        .expect(200);
    // Reading them is open to the key.
    stack.get("/v2/webhooks", &key).await.expect(200);

    // API keys need a session too (tests/tests/bad_inputs.rs).

    // Risk limits: tightening is open to the key, loosening is not.
    stack
        .patch(
            "/v2/account/risk",
            &key,
            &json!({ "max_order_notional": "5000", "max_open_orders": 10 }),
        )
        .await
        .expect(200);
    for loosen in [
        json!({ "max_order_notional": "5000.01" }),
        json!({ "max_order_notional": null }),
        json!({ "max_open_orders": 11 }),
    ] {
        let r = stack.patch("/v2/account/risk", &key, &loosen).await;
        r.expect_error(403, "session_required");
        assert!(r.text.contains("loosen"), "{r}");
    }
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(r.str("max_order_notional"), "5000", "unchanged: {r}");
    stack
        .patch(
            "/v2/account/risk",
            &session,
            &json!({ "max_order_notional": null }),
        )
        .await
        .expect(200);

    // The kill switch: the key engages it, only a session resets it.
    stack
        .post(
            "/v2/account/kill",
            &key,
            &json!({ "reason": "key says stop" }),
        )
        .await
        .expect(200);
    stack
        .delete("/v2/account/kill", &key)
        .await
        .expect_error(403, "session_required");
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(r.json["kill_switch"]["active"], true, "{r}");
    let r = stack.delete("/v2/account/kill", &session).await;
    r.expect(200);
    assert_eq!(r.json["kill_switch"]["active"], false, "{r}");
}

#[tokio::test]
async fn a_password_change_ends_every_session_and_on_request_every_key() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let login = json!({ "email": user.email, "password": user.password });
    let other_session = another_session(&stack, &user).await;
    let new_password = "a much longer passphrase, 2026";
    let change = |current: &str, revoke: bool| json!({ "current_password": current, "new_password": new_password, "revoke_api_keys": revoke });

    stack
        .post(
            "/v2/auth/password",
            &user.key(),
            &change(&user.password, false),
        )
        .await
        .expect_error(403, "session_required");
    stack
        .post(
            "/v2/auth/password",
            &user.bearer(),
            &change("not it", false),
        )
        .await
        .expect_error(403, "wrong_password");
    stack
        .post(
            "/v2/auth/password",
            &user.bearer(),
            &json!({ "current_password": user.password, "new_password": "short" }),
        )
        .await
        .expect_error(422, "invalid_password");
    stack
        .post(
            "/v2/auth/password",
            &user.bearer(),
            &json!({ "current_password": user.password, "new_password": new_password, "extra": 1 }),
        )
        .await
        .expect(400);

    let r = stack
        .post(
            "/v2/auth/password",
            &user.bearer(),
            &change(&user.password, true),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json["sessions_revoked"], 2, "{r}");
    assert_eq!(r.json["api_keys_revoked"], json!([user.key_id]), "{r}");
    let fresh = Auth::Bearer(r.json["session"]["token"].as_str().unwrap().to_string());

    for old in [user.bearer(), other_session, user.key()] {
        stack
            .get("/v2/account", &old)
            .await
            .expect_error(401, "unauthorized");
    }
    stack.get("/v2/account", &fresh).await.expect(200);
    stack
        .post("/v2/auth/login", &Auth::None, &login)
        .await
        .expect_error(401, "unauthorized");
    stack
        .post(
            "/v2/auth/login",
            &Auth::None,
            &json!({ "email": user.email, "password": new_password }),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn logout_all_ends_every_session_but_keeps_the_keys() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let second = another_session(&stack, &user).await;
    stack
        .post("/v2/auth/logout_all", &user.key(), &json!({}))
        .await
        .expect_error(403, "session_required");
    let r = stack.post("/v2/auth/logout_all", &second, &json!({})).await;
    r.expect(200);
    assert_eq!(r.json["sessions_revoked"], 2, "{r}");
    for s in [user.bearer(), second] {
        stack
            .get("/v2/account", &s)
            .await
            .expect_error(401, "unauthorized");
    }
    stack.get("/v2/account", &user.key()).await.expect(200);
}

#[tokio::test]
async fn caps_on_keys_and_webhooks_hold_under_concurrent_creation() {
    let stack = Stack::start().await;
    let user = stack.new_user().await; // holds one key already
    let session = user.bearer();
    let empty = json!({});
    let keys = futures_util::future::join_all(
        (0..15).map(|_| stack.post("/v2/api_keys", &session, &empty)),
    )
    .await;
    let created = keys.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 9, "10 live keys at most");
    for r in keys.iter().filter(|r| r.status != 201) {
        r.expect_error(422, "max_api_keys");
    }
    assert_eq!(stack.get("/v2/api_keys", &session).await.array().len(), 10);

    let hooks = futures_util::future::join_all(
        (0..25).map(|_| stack.post("/v2/webhooks", &session, &empty)),
    )
    .await;
    assert_eq!(hooks.iter().filter(|r| r.status == 201).count(), 20);
    for r in hooks.iter().filter(|r| r.status != 201) {
        r.expect_error(422, "max_webhooks");
    }
}

#[tokio::test]
async fn fifty_parallel_guesses_get_the_tries_of_sequential_ones() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let guess = json!({ "email": user.email, "password": "not the password" });
    let answers = futures_util::future::join_all(
        (0..50).map(|_| stack.post("/v2/auth/login", &Auth::None, &guess)),
    )
    .await;
    let verified = answers.iter().filter(|r| r.status == 401).count();
    // Five failures are free and the sixth earns the first block: six verifications, as
    // six sequential guesses would get before the first refusal.
    assert_eq!(
        verified,
        6,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 401) {
        r.expect_error(429, "too_many_login_attempts");
        assert!(r.retry_after.is_some(), "{r}");
    }
    // Blocked from this address even with the right password: nothing is verified.
    stack
        .post(
            "/v2/auth/login",
            &Auth::None,
            &json!({ "email": user.email, "password": user.password }),
        )
        .await
        .expect_error(429, "too_many_login_attempts");
}
