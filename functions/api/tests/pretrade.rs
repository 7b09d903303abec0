//! The api's own pre-trade refusal and the executor's, each forced: what the api can see
//! on its cached data (the ledger's cash, positions and resting orders, a fresh quote) it
//! refuses at once with a 422, enqueueing nothing; what it cannot see yet (orders accepted
//! but not yet applied) it accepts, and the executor's check on the ledger rejects.

mod common;

use adapters::now_ms;
use common::{assert_nothing_enqueued, call, drain, order_in_ledger, user};
use domain::command::Command;
use domain::order::{OrderRef, OrderStatus};
use lambda_http::http::Method;
use rust_decimal_macros::dec;
use serde_json::json;
use testkit::put_quote;

fn market(side: &str, qty: &str) -> serde_json::Value {
    json!({"symbol": "BTCUSDT", "qty": qty, "side": side, "type": "market", "time_in_force": "gtc"})
}

#[tokio::test]
async fn the_api_refuses_a_buy_beyond_the_buying_power_with_a_422_and_enqueues_nothing() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;

    // 2 BTC at 60000.50 is 120001 USDT plus the fee: more than the cash.
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&market("buy", "2")),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "insufficient_buying_power"),
        "{r:?}"
    );
    // A resting buy holds back its notional and fee: 1 BTC at 59000 holds 59059 USDT, so
    // 0.7 BTC at the ask (42000.35 and its fee) no longer fits, though the cash would cover it.
    let resting = order_in_ledger(
        &deps,
        alice.account_id,
        json!({"symbol": "BTCUSDT", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc", "limit_price": "59000"}),
    )
    .await;
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&market("buy", "0.7")),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "insufficient_buying_power"),
        "{r:?}"
    );
    // Spot: no selling what the account does not hold.
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&market("sell", "0.01")),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "insufficient_qty"), "{r:?}");

    // Refused by the api itself: nothing enqueued, nothing pending, nothing in the ledger.
    assert_nothing_enqueued(&deps, alice.account_id, "a refused order").await;
    let open = deps.ledger.open_orders(alice.account_id).await.unwrap();
    assert_eq!(
        open.iter().map(|o| o.id).collect::<Vec<_>>(),
        [resting],
        "only the resting order"
    );
    // What fits is accepted: the refusals were the amounts'.
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&market("buy", "0.5")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(drain(&deps).await.len(), 1);
}

#[tokio::test]
async fn what_the_api_cannot_see_yet_the_executor_rejects() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;

    // Each buy of 1 BTC (60060.5005 with the fee) fits the cash; both together do not. The
    // api checks each against the ledger, where neither is yet: both are accepted.
    let mut ids = Vec::new();
    for coid in ["first", "second"] {
        let mut order = market("buy", "1");
        order["client_order_id"] = json!(coid);
        let r = call(
            &deps,
            Method::POST,
            "/v2/orders",
            &alice.key(),
            Some(&order),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["status"], "pending_new", "{r:?}");
        ids.push(
            r.json["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    let commands = drain(&deps).await;
    assert_eq!(commands.len(), 2, "{commands:?}");

    // The executor's check, on the ledger, in the account's FIFO order: the first fills, the
    // second finds the cash spent.
    let quote = deps.cache.quote("BTCUSDT").await.unwrap();
    let params = deps.config.execution_params();
    for command in &commands {
        let Command::PlaceOrder { command_id, order } = command else {
            panic!("a place: {command:?}")
        };
        deps.ledger
            .place_order(*command_id, order, quote.as_ref(), now_ms(), &params)
            .await
            .expect("the ledger applies it");
    }
    let get = |id| {
        deps.ledger.order(OrderRef {
            account_id: alice.account_id,
            order_id: id,
        })
    };
    let first = get(ids[0]).await.unwrap().expect("applied");
    let second = get(ids[1]).await.unwrap().expect("applied");
    assert_eq!(first.status, OrderStatus::Filled, "{first:?}");
    assert_eq!(second.status, OrderStatus::Rejected, "{second:?}");
    assert!(
        second
            .reject_reason
            .as_deref()
            .is_some_and(|r| r.contains("insufficient_buying_power")),
        "the reason names buying power: {second:?}"
    );
    let account = deps
        .ledger
        .account(alice.account_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.cash, dec!(100000) - dec!(60000.5) - dec!(60.0005));

    // Now that the ledger shows it, the api refuses the same buy itself.
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&market("buy", "1")),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "insufficient_buying_power"),
        "{r:?}"
    );
}
