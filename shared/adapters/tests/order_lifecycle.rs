//! The order state machine through the ledger's batch writes, on real PostgreSQL: what the
//! engine decides is what the tables hold, legs and links included, and a redelivered
//! trigger changes nothing.

use std::collections::HashMap;

use adapters::ledger::{Ledger, OrderQuery, StatusFilter};
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::engine::ExecutionParams;
use domain::order::{leg_id, LegRole, NewOrder, Order, OrderRequest, OrderStatus};
use domain::quote::Quote;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use testkit::account_with_cash;
use uuid::Uuid;

fn order(account: Uuid, json: &str) -> NewOrder {
    let req: OrderRequest = serde_json::from_str(json).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    NewOrder::new(account, v, inst.asset_id, Utc::now())
}

fn quotes(bid: Decimal, ask: Decimal) -> HashMap<String, Quote> {
    let q = Quote::new("BTCUSDT", bid, ask, adapters::now_ms());
    HashMap::from([("BTCUSDT".to_string(), q)])
}

async fn run(ledger: &Ledger, commands: &[Command], quotes: &HashMap<String, Quote>) -> Vec<Order> {
    run_at(ledger, commands, quotes, adapters::now_ms()).await
}

/// The batch applied as of `now_ms`: the orders it changed.
async fn run_at(
    ledger: &Ledger,
    commands: &[Command],
    quotes: &HashMap<String, Quote>,
    now_ms: i64,
) -> Vec<Order> {
    let result = ledger
        .apply_commands(
            commands,
            quotes,
            Catalog::builtin(),
            now_ms,
            &ExecutionParams::default(),
        )
        .await
        .expect("batch applies");
    result.changed
}

/// The order as the ledger stores it (it must exist).
async fn stored_order(ledger: &Ledger, account: Uuid, id: Uuid) -> Order {
    ledger
        .order(domain::order::OrderRef {
            account_id: account,
            order_id: id,
        })
        .await
        .unwrap()
        .unwrap()
}

async fn status(ledger: &Ledger, account: Uuid, id: Uuid) -> OrderStatus {
    stored_order(ledger, account, id).await.status
}

#[tokio::test]
async fn a_bracket_lives_its_whole_life_in_the_ledger() {
    let ledger = testkit::ledger().await;
    let (_, account) = account_with_cash(&ledger, dec!(100000)).await;
    let entry = order(
        account,
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"59000","time_in_force":"gtc","order_class":"bracket","take_profit":{"limit_price":"62000"},"stop_loss":{"stop_price":"58000"}}"#,
    );
    let (tp, sl) = (
        leg_id(entry.id, LegRole::TakeProfit),
        leg_id(entry.id, LegRole::StopLoss),
    );
    let changed = run(
        &ledger,
        &[Command::place(entry.clone())],
        &quotes(dec!(60000), dec!(60001)),
    )
    .await;
    assert_eq!(changed.len(), 3, "the entry and its two legs are written");
    let stored = stored_order(&ledger, account, entry.id).await;
    assert_eq!(stored.status, OrderStatus::New);
    assert_eq!(stored.legs.len(), 2, "legs nested under their parent");
    assert!(stored.legs.iter().all(|l| l.status == OrderStatus::Held));
    assert!(
        entry.matches_stored(&stored),
        "a retry of the POST matches the stored bracket"
    );

    // The entry triggers: filled, the legs go live for 0.01.
    let trigger = Command::trigger(account, entry.id, "BTCUSDT", None);
    let changed = run(
        &ledger,
        std::slice::from_ref(&trigger),
        &quotes(dec!(58990), dec!(59000)),
    )
    .await;
    assert_eq!(changed.len(), 3);
    assert_eq!(
        status(&ledger, account, entry.id).await,
        OrderStatus::Filled
    );
    assert_eq!(status(&ledger, account, tp).await, OrderStatus::New);
    assert_eq!(status(&ledger, account, sl).await, OrderStatus::New);
    // The same trigger again (a redelivery) changes nothing.
    assert!(run(&ledger, &[trigger], &quotes(dec!(58990), dec!(59000)))
        .await
        .is_empty());

    // The stop-loss gaps: filled at the bid; the take-profit is canceled with it.
    run(
        &ledger,
        &[Command::trigger(account, sl, "BTCUSDT", None)],
        &quotes(dec!(57500), dec!(57501)),
    )
    .await;
    let sl_order = stored_order(&ledger, account, sl).await;
    assert_eq!(sl_order.status, OrderStatus::Filled);
    assert_eq!(sl_order.filled_avg_price, Some(dec!(57500)));
    assert!(sl_order.triggered_at.is_some());
    assert_eq!(status(&ledger, account, tp).await, OrderStatus::Canceled);
    // A late trigger of the canceled take-profit: nothing.
    assert!(run(
        &ledger,
        &[Command::trigger(account, tp, "BTCUSDT", None)],
        &quotes(dec!(63000), dec!(63001))
    )
    .await
    .is_empty());

    // Ledger invariants: flat position; cash = initial − buy − fees + sell.
    assert!(ledger.position(account, "BTCUSDT").await.unwrap().is_none());
    let cash = ledger.account(account).await.unwrap().unwrap().cash;
    let expected = dec!(100000) - dec!(590) - dec!(0.59) + dec!(575) - dec!(0.575);
    assert_eq!(cash, expected);
    let open = OrderQuery {
        status: StatusFilter::Open,
        limit: 50,
        after: None,
        until: None,
        ascending: true,
        symbols: None,
        nested: false,
    };
    assert!(ledger.orders(account, &open).await.unwrap().is_empty());
}

#[tokio::test]
async fn replace_expire_and_trailing_marks_are_stored() {
    let ledger = testkit::ledger().await;
    let (_, account) = account_with_cash(&ledger, dec!(100000)).await;
    let q = quotes(dec!(60000), dec!(60001));
    let old = order(
        account,
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"55000","time_in_force":"day"}"#,
    );
    run(&ledger, &[Command::place(old.clone())], &q).await;
    let mut new = order(
        account,
        r#"{"symbol":"BTCUSDT","qty":"0.02","side":"buy","type":"limit","limit_price":"56000","time_in_force":"day"}"#,
    );
    new.replaces = Some(old.id);
    run(&ledger, &[Command::place(new.clone())], &q).await;
    let o = stored_order(&ledger, account, old.id).await;
    assert_eq!(o.status, OrderStatus::Replaced);
    assert_eq!(o.replaced_by, Some(new.id));
    let n = stored_order(&ledger, account, new.id).await;
    assert_eq!((n.status, n.replaces), (OrderStatus::New, Some(old.id)));
    assert!(n.expires_at.is_some());

    // Expiry before its time changes nothing; at its time the order expires.
    assert!(run(&ledger, &[Command::expire(account, new.id)], &q)
        .await
        .is_empty());
    let at = n.expires_at.unwrap().timestamp_millis();
    run_at(
        &ledger,
        &[Command::ExpireOrder {
            command_id: Uuid::new_v4(),
            account_id: account,
            order_id: new.id,
        }],
        &q,
        at,
    )
    .await;
    let n = stored_order(&ledger, account, new.id).await;
    assert_eq!(n.status, OrderStatus::Expired);
    assert!(n.expired_at.is_some());

    // A trailing buy stop: its mark follows the ask down and is stored.
    let trailing = order(
        account,
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"trailing_stop","trail_percent":"1","time_in_force":"gtc"}"#,
    );
    run(&ledger, &[Command::place(trailing.clone())], &q).await;
    let t = stored_order(&ledger, account, trailing.id).await;
    assert_eq!(t.hwm, Some(dec!(60001)));
    run(
        &ledger,
        &[Command::trigger(
            account,
            trailing.id,
            "BTCUSDT",
            Some(dec!(58000)),
        )],
        &quotes(dec!(58500), dec!(58501)),
    )
    .await;
    let t = stored_order(&ledger, account, trailing.id).await;
    assert_eq!(t.hwm, Some(dec!(58000)), "the mark the trigger saw");
    assert_eq!(t.status, OrderStatus::New, "58501 is below 58000 × 1.01");
    run(
        &ledger,
        &[Command::trigger(account, trailing.id, "BTCUSDT", None)],
        &quotes(dec!(58580), dec!(58580)),
    )
    .await;
    let t = stored_order(&ledger, account, trailing.id).await;
    assert_eq!(t.status, OrderStatus::Filled);
    assert_eq!(t.filled_avg_price, Some(dec!(58580)));
    let live = ledger.live_orders().await.unwrap();
    assert!(
        live.iter().all(|o| o.account_id != account),
        "nothing of this account rests"
    );
}
