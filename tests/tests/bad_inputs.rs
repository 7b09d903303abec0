//! Bad inputs each get the documented status and JSON `{"code","message"}`, and none of
//! them reaches the ledger.

use e2e::{Auth, Stack};
use serde_json::json;

#[tokio::test]
async fn bad_inputs_get_documented_errors() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let key = user.key();

    // Order bodies, sent byte for byte so JSON numbers stay as written.
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "malformed JSON",
            r#"{"symbol": "BTCUSDT", "qty": "0.01", "side": "buy""#,
            400,
            "malformed_json",
        ),
        ("not an object", r#"[1, 2, 3]"#, 400, "malformed_json"),
        ("empty body", "", 400, "malformed_json"),
        (
            "zero qty",
            r#"{"symbol":"BTCUSDT","qty":"0","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "invalid_qty",
        ),
        (
            "negative qty",
            r#"{"symbol":"BTCUSDT","qty":"-1","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "invalid_qty",
        ),
        (
            "negative qty as a number",
            r#"{"symbol":"BTCUSDT","qty":-1,"side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "invalid_qty",
        ),
        (
            "qty off the lot step",
            r#"{"symbol":"BTCUSDT","qty":"0.000015","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "LOT_SIZE",
        ),
        (
            "limit price off the tick",
            r#"{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"limit","time_in_force":"gtc","limit_price":"60000.001"}"#,
            422,
            "PRICE_FILTER",
        ),
        (
            "below min notional",
            r#"{"symbol":"BTCUSDT","qty":"0.0001","side":"buy","type":"limit","time_in_force":"gtc","limit_price":"60000"}"#,
            422,
            "MIN_NOTIONAL",
        ),
        (
            "unknown symbol",
            r#"{"symbol":"NOPEUSDT","qty":"1","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "unknown_symbol",
        ),
        (
            "NaN qty",
            r#"{"symbol":"BTCUSDT","qty":"NaN","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "invalid_number",
        ),
        (
            "infinite qty",
            r#"{"symbol":"BTCUSDT","qty":"Infinity","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "invalid_number",
        ),
        (
            "NaN limit price",
            r#"{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"limit","time_in_force":"gtc","limit_price":"NaN"}"#,
            422,
            "invalid_number",
        ),
        (
            "1e300 as a JSON number",
            r#"{"symbol":"BTCUSDT","qty":1e300,"side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "out_of_range",
        ),
        (
            "twenty nines as a string",
            r#"{"symbol":"BTCUSDT","qty":"99999999999999999999","side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "out_of_range",
        ),
        (
            "twenty nines as a JSON number",
            r#"{"symbol":"BTCUSDT","qty":99999999999999999999,"side":"buy","type":"market","time_in_force":"gtc"}"#,
            422,
            "out_of_range",
        ),
        (
            "huge limit price",
            r#"{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"limit","time_in_force":"gtc","limit_price":1e300}"#,
            422,
            "out_of_range",
        ),
    ];
    for (what, body, status, code) in cases {
        let r = stack.post_raw("/v2/orders", &key, body).await;
        assert_eq!(r.status, *status, "{what}: {r}");
        assert_eq!(r.code(), Some(*code), "{what}: {r}");
        assert!(
            r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {r}"
        );
    }

    // Oversized: a well-formed order padded past 64 KiB.
    let padded = json!({
        "symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "market", "time_in_force": "gtc",
        "client_order_id": "x", "padding": "p".repeat(70 * 1024)
    });
    stack
        .post("/v2/orders", &key, &padded)
        .await
        .expect_error(413, "payload_too_large");
    let big_signup = json!({ "email": "big@example.com", "password": "p".repeat(65 * 1024) });
    stack
        .post("/v2/auth/signup", &Auth::None, &big_signup)
        .await
        .expect_error(413, "payload_too_large");

    // ---- credentials ---------------------------------------------------------------------------
    let order = json!({ "symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "market", "time_in_force": "gtc" });
    stack
        .post("/v2/orders", &Auth::None, &order)
        .await
        .expect_error(401, "unauthorized");
    stack
        .get("/v2/account", &Auth::None)
        .await
        .expect_error(401, "unauthorized");
    stack
        .get("/v2/orders", &Auth::None)
        .await
        .expect_error(401, "unauthorized");
    stack
        .get("/v2/positions", &Auth::None)
        .await
        .expect_error(401, "unauthorized");
    let wrong_secret = Auth::Key {
        id: user.key_id.clone(),
        secret: format!("{}x", user.secret_key),
    };
    stack
        .post("/v2/orders", &wrong_secret, &order)
        .await
        .expect_error(401, "unauthorized");
    stack
        .get("/v2/account", &wrong_secret)
        .await
        .expect_error(401, "unauthorized");
    let unknown_key = Auth::Key {
        id: "PKNOSUCHKEY0000000000".into(),
        secret: user.secret_key.clone(),
    };
    stack
        .get("/v2/account", &unknown_key)
        .await
        .expect_error(401, "unauthorized");
    let wrong_token = Auth::Bearer(format!("{}x", user.token));
    stack
        .get("/v2/account", &wrong_token)
        .await
        .expect_error(401, "unauthorized");
    // Credentials are checked before the body is read.
    stack
        .post_raw("/v2/orders", &Auth::None, "{not json")
        .await
        .expect_error(401, "unauthorized");

    // Key management needs a login session: an API key (even a valid one) is not enough.
    stack
        .post("/v2/api_keys", &key, &json!({}))
        .await
        .expect_error(403, "session_required");
    stack
        .get("/v2/api_keys", &key)
        .await
        .expect_error(403, "session_required");
    stack
        .delete(&format!("/v2/api_keys/{}", user.key_id), &key)
        .await
        .expect_error(403, "session_required");
    stack
        .post("/v2/api_keys", &Auth::None, &json!({}))
        .await
        .expect_error(401, "unauthorized");
    stack
        .get("/v2/api_keys", &Auth::None)
        .await
        .expect_error(401, "unauthorized");
    let r = stack.get("/v2/api_keys", &user.bearer()).await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "{r}");
    assert!(
        !r.text.contains(&user.secret_key),
        "secrets are shown once only: {r}"
    );

    // Login with a wrong password.
    let bad_login = json!({ "email": user.email, "password": "not the password" });
    stack
        .post("/v2/auth/login", &Auth::None, &bad_login)
        .await
        .expect_error(401, "unauthorized");

    // ---- nothing of the above reached the ledger -----------------------------------------------
    let r = stack.get("/v2/orders?status=all", &key).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(e2e::dec(r.str("cash")), e2e::dec("100000"), "{r}");
}
