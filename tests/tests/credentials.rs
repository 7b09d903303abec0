//! Credentials people can trust, through the whole local stack: what an API key may do and
//! what needs a login session, changing the password, ending every session, the caps on
//! keys and webhooks, and a login backoff that parallel guesses cannot race.

use e2e::ws::Closed;
use e2e::{Auth, Stack, StackOptions, User};
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

#[tokio::test]
async fn signup_answers_alike_for_taken_and_free_addresses_and_is_limited_per_address() {
    let stack = Stack::start_with(StackOptions {
        function_env: vec![
            ("RATE_SIGNUPS_BURST".into(), "3".into()),
            ("RATE_SIGNUPS_PER_MINUTE".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
    let first = json!({ "email": email, "password": "the owner's password" });
    let again = json!({ "email": email.to_uppercase(), "password": "someone else's guess" });
    let free = stack.post("/v2/auth/signup", &Auth::None, &first).await;
    let taken = stack.post("/v2/auth/signup", &Auth::None, &again).await;
    free.expect(202);
    assert_eq!((taken.status, &taken.text), (free.status, &free.text));
    // The owner keeps their password; the second sign-up changed nothing.
    stack
        .post("/v2/auth/login", &Auth::None, &first)
        .await
        .expect(200);
    stack
        .post("/v2/auth/login", &Auth::None, &again)
        .await
        .expect_error(401, "unauthorized");
    // A third from this address is the burst's last; the fourth waits.
    let other = json!({ "email": format!("x-{email}"), "password": "another password" });
    stack
        .post("/v2/auth/signup", &Auth::None, &other)
        .await
        .expect(202);
    let r = stack.post("/v2/auth/signup", &Auth::None, &other).await;
    r.expect_error(429, "rate_limited");
    assert!(r.retry_after.is_some(), "{r}");
}

/// What a user's credentials are never allowed to reach: a log. Every secret this test
/// creates (session tokens, API key secrets, webhook ids and passphrases, passwords) is used
/// on the routes that carry it (paths, query strings, headers, bodies), then every log of
/// the stack is searched for it.
#[tokio::test]
async fn no_secret_reaches_a_log() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let session = user.bearer();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let hook = stack
        .post("/v2/webhooks", &session, &json!({ "name": "logged?" }))
        .await;
    hook.expect(201);
    let id = hook.str("id").to_string();
    let first_passphrase = hook.str("passphrase").to_string();
    let rotated = stack
        .post(&format!("/v2/webhooks/{id}/rotate"), &session, &json!({}))
        .await;
    rotated.expect(200);
    let passphrase = rotated.str("passphrase").to_string();
    for p in [&first_passphrase, &passphrase] {
        let alert = json!({ "passphrase": p, "action": "buy", "symbol": "BINANCE:BTCUSDT", "qty": "0.001" });
        stack
            .post(&format!("/v2/hooks/tradingview/{id}"), &Auth::None, &alert)
            .await;
    }
    stack
        .get(&format!("/v2/webhooks/{id}/deliveries"), &session)
        .await
        .expect(200);
    // The WebSocket carries credentials in its query.
    let ws = stack.ws_connect(&format!("token={}", user.token)).await;
    assert!(ws.is_ok(), "the session opens a socket");
    drop(ws);
    stack.ws_connect_as(&user).await;
    let _ = stack
        .ws_connect("token=not-a-token-but-secret-looking-0123456789")
        .await;
    // A wrong key and a wrong password are secrets of someone too.
    let wrong_secret = "wrong-secret-0123456789abcdefghijklmnop";
    stack
        .get(
            "/v2/account",
            &Auth::Key {
                id: user.key_id.clone(),
                secret: wrong_secret.into(),
            },
        )
        .await
        .expect_error(401, "unauthorized");
    let new_password = "the new password, never logged";
    let changed = stack
        .post(
            "/v2/auth/password",
            &session,
            &json!({ "current_password": user.password, "new_password": new_password }),
        )
        .await;
    changed.expect(200);
    let new_token = changed.json["session"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    stack
        .post(
            "/v2/auth/logout",
            &Auth::Bearer(new_token.clone()),
            &json!({}),
        )
        .await;

    // Let the last lines reach the files.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let logs = stack.logs();
    assert!(
        logs.contains("/v2/webhooks/{}/rotate"),
        "the log names route templates"
    );
    for (what, secret) in [
        ("session token", user.token.as_str()),
        ("new session token", new_token.as_str()),
        ("API key secret", user.secret_key.as_str()),
        ("wrong API key secret", wrong_secret),
        ("webhook id", id.as_str()),
        ("first passphrase", first_passphrase.as_str()),
        ("passphrase", passphrase.as_str()),
        ("password", user.password.as_str()),
        ("new password", new_password),
        (
            "a token that was refused",
            "not-a-token-but-secret-looking-0123456789",
        ),
    ] {
        assert!(!logs.contains(secret), "the {what} reached a log");
    }
}

/// A revoked credential does not keep the sockets it opened: logging out closes the
/// session's, deleting a key closes the key's, and ending every session closes every
/// session's socket but not a key's.
#[tokio::test]
async fn revoking_a_credential_closes_the_websockets_it_opened() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let second = another_session(&stack, &user).await;
    let Auth::Bearer(second_token) = &second else {
        unreachable!()
    };
    let within = std::time::Duration::from_secs(10);
    let open = |query: String| {
        let stack = &stack;
        async move {
            let mut ws = stack.ws_connect(&query).await.expect("a socket");
            ws.ping().await;
            ws
        }
    };

    let mut by_first = open(format!("token={}", user.token)).await;
    let mut by_second = open(format!("token={second_token}")).await;
    let mut by_key = open(format!(
        "key_id={}&secret_key={}",
        user.key_id, user.secret_key
    ))
    .await;
    // Logging out closes that session's socket only.
    stack
        .post("/v2/auth/logout", &user.bearer(), &json!({}))
        .await
        .expect(204);
    assert!(matches!(
        by_first.closed_within(within).await,
        Closed::Code(_)
    ));
    by_second.ping().await;
    by_key.ping().await;

    // Ending every session closes the other session's socket, not the key's.
    let third = another_session(&stack, &user).await;
    stack
        .post("/v2/auth/logout_all", &third, &json!({}))
        .await
        .expect(200);
    assert!(matches!(
        by_second.closed_within(within).await,
        Closed::Code(_)
    ));
    by_key.ping().await;

    // Deleting the key closes its socket.
    let session = another_session(&stack, &user).await;
    stack
        .delete(&format!("/v2/api_keys/{}", user.key_id), &session)
        .await
        .expect(204);
    assert!(matches!(
        by_key.closed_within(within).await,
        Closed::Code(_)
    ));
}
