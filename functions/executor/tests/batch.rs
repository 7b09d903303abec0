//! The executor against real PostgreSQL and Redis (`make test`): idempotent commands,
//! FIFO-safe partial batch failures, and concurrent executors on different accounts.

mod common;
use common::deps;
use std::collections::HashMap;

use aws_lambda_events::sqs::SqsMessage;
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest, OrderStatus};
use executor::{apply, handle_batch};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use testkit::{account_with_cash, put_quote};
use uuid::Uuid;

fn market(account: Uuid, side: &str, qty: &str, client_order_id: &str) -> Command {
    let json = format!(
        r#"{{"symbol":"BTCUSDT","qty":"{qty}","side":"{side}","type":"market","time_in_force":"gtc","client_order_id":"{client_order_id}"}}"#
    );
    let req: OrderRequest = serde_json::from_str(&json).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    Command::place(NewOrder::new(account, v, inst.asset_id, Utc::now()))
}

fn record(id: &str, group: Uuid, body: String) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.to_string());
    m.receipt_handle = Some(format!("rh-{id}"));
    m.body = Some(body);
    m.attributes = HashMap::from([("MessageGroupId".to_string(), group.to_string())]);
    m
}

/// A message `id` in the account's group: a market buy of 0.001 with `id` as its client
/// order id.
fn buy_record(account: Uuid, id: &str) -> SqsMessage {
    let c = market(account, "buy", "0.001", id);
    record(id, account, serde_json::to_string(&c).unwrap())
}

fn failures(resp: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// The account's cash in the ledger (the account must exist).
async fn cash_of(deps: &executor::Deps, account: Uuid) -> Decimal {
    deps.ledger.account(account).await.unwrap().unwrap().cash
}

/// The account's BTCUSDT quantity in the ledger (the position must exist).
async fn btc_qty(deps: &executor::Deps, account: Uuid) -> Decimal {
    let pos = deps.ledger.position(account, "BTCUSDT").await.unwrap();
    pos.unwrap().position.qty
}

/// The account's order of this client order id, if the ledger has one.
async fn by_client_id(
    deps: &executor::Deps,
    account: Uuid,
    client_order_id: &str,
) -> Option<domain::order::Order> {
    deps.ledger
        .order_by_client_order_id(account, client_order_id)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redelivered_command_changes_nothing() {
    let deps = deps().await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    let cmd = market(account, "buy", "0.01", "redeliver-1");
    let body = serde_json::to_string(&cmd).unwrap();
    let batch = vec![record("m1", account, body.clone())];
    assert!(failures(&handle_batch(&deps, &batch).await.unwrap()).is_empty());
    let cash_after_first = cash_of(&deps, account).await;
    // The same message again (SQS redelivery), and the same command with a new message id.
    assert!(failures(&handle_batch(&deps, &batch).await.unwrap()).is_empty());
    assert!(failures(
        &handle_batch(&deps, &[record("m2", account, body)])
            .await
            .unwrap()
    )
    .is_empty());
    let again = apply(&deps, &cmd).await.unwrap();
    assert!(again.duplicate);
    let acct = deps.ledger.account(account).await.unwrap().unwrap();
    assert_eq!(acct.cash, cash_after_first);
    assert_eq!(acct.cash, dec!(100000) - dec!(600.005) - dec!(0.600005));
    let pos = deps
        .ledger
        .position(account, "BTCUSDT")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pos.position.qty, dec!(0.01));
}

#[tokio::test]
async fn a_failure_reports_that_message_and_the_later_ones_of_its_group_only() {
    let deps = deps().await;
    let (_, a) = account_with_cash(&deps.ledger, dec!(100000)).await;
    let (_, b) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let body = |c: Command| serde_json::to_string(&c).unwrap();
    let batch = vec![
        record("a1", a, body(market(a, "buy", "0.01", "a1"))),
        record("b1", b, body(market(b, "buy", "0.01", "b1"))),
        record("a2", a, "{not a command".to_string()),
        record("b2", b, body(market(b, "buy", "0.02", "b2"))),
        record("a3", a, body(market(a, "buy", "0.03", "a3"))),
    ];
    let resp = handle_batch(&deps, &batch).await.unwrap();
    assert_eq!(failures(&resp), vec!["a2".to_string(), "a3".to_string()]);
    // Group b ran in full; group a stopped before a3, which will be retried after a2.
    assert_eq!(btc_qty(&deps, b).await, dec!(0.03));
    assert_eq!(btc_qty(&deps, a).await, dec!(0.01));
    assert!(by_client_id(&deps, a, "a3").await.is_none());
}

#[tokio::test]
async fn a_record_without_message_id_fails_the_whole_batch() {
    let deps = deps().await;
    let mut r = record("x", Uuid::new_v4(), "{}".into());
    r.message_id = None;
    assert!(handle_batch(&deps, &[r]).await.is_err());
}

#[tokio::test]
async fn executors_run_concurrently_on_different_accounts() {
    let deps = std::sync::Arc::new(deps().await);
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let mut accounts = Vec::new();
    for _ in 0..8 {
        accounts.push(account_with_cash(&deps.ledger, dec!(100000)).await.1);
    }
    // Eight concurrent "executors", each taking batches of its own account, plus one batch
    // that mixes all accounts, run at the same time.
    let mut tasks = Vec::new();
    for (i, &acct) in accounts.iter().enumerate() {
        let deps = deps.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                let batch: Vec<SqsMessage> = (0..2)
                    .map(|k| buy_record(acct, &format!("own-{i}-{n}-{k}")))
                    .collect();
                let resp = handle_batch(&deps, &batch).await.unwrap();
                assert!(resp.batch_item_failures.is_empty());
            }
        }));
    }
    let mixed: Vec<SqsMessage> = accounts
        .iter()
        .enumerate()
        .map(|(i, &acct)| buy_record(acct, &format!("mixed-{i}")))
        .collect();
    let d = deps.clone();
    tasks.push(tokio::spawn(async move {
        assert!(handle_batch(&d, &mixed)
            .await
            .unwrap()
            .batch_item_failures
            .is_empty());
    }));
    for t in tasks {
        t.await.unwrap();
    }
    for acct in accounts {
        let pos = deps
            .ledger
            .position(acct, "BTCUSDT")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            pos.position.qty,
            dec!(0.011),
            "10 own fills and one mixed fill of 0.001"
        );
        let acct_row = deps.ledger.account(acct).await.unwrap().unwrap();
        let notional = dec!(0.011) * dec!(60000);
        // Each fill: 0.001 × 60000 = 60, fee 0.06.
        assert_eq!(
            acct_row.cash,
            dec!(100000) - notional - dec!(0.06) * Decimal::from(11)
        );
    }
}

#[tokio::test]
async fn stale_prices_reject_and_sells_need_the_quantity() {
    let deps = deps().await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    // A quote 10 s old: older than the 5 s bound.
    let old = domain::quote::Quote {
        symbol: "BTCUSDT".into(),
        bid: dec!(1),
        ask: dec!(1),
        last: None,
        ts: adapters::now_ms() - 10_000,
    };
    deps.cache.put_quote(&old, 60_000).await.unwrap();
    let out = apply(&deps, &market(account, "buy", "0.01", "stale"))
        .await
        .unwrap();
    let order = out.order.unwrap();
    assert_eq!(order.status, OrderStatus::Rejected);
    assert!(order.reject_reason.unwrap().contains("stale_price"));
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let out = apply(&deps, &market(account, "sell", "0.01", "naked-sell"))
        .await
        .unwrap();
    assert!(out
        .order
        .unwrap()
        .reject_reason
        .unwrap()
        .contains("insufficient_qty"));
    assert_eq!(cash_of(&deps, account).await, dec!(100000));
}

#[tokio::test]
async fn the_sample_event_holds_commands_of_the_current_format() {
    let raw = include_str!("../../../events/executor-sqs-batch.json");
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(raw).unwrap();
    assert_eq!(event.records.len(), 3);
    for r in &event.records {
        let cmd: Command = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        let Command::PlaceOrder { command_id, order } = &cmd else {
            panic!("place_order expected")
        };
        assert_eq!(
            *command_id,
            domain::order::order_id_for(order.account_id, &order.client_order_id)
        );
        assert_eq!(
            r.attributes.get("MessageGroupId"),
            Some(&cmd.message_group_id())
        );
    }
    // The sample's accounts do not exist here: the commands are recorded and dropped, not retried.
    let deps = deps().await;
    let resp = handle_batch(&deps, &event.records).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
}

#[tokio::test]
async fn commands_in_one_batch_see_each_other_in_order() {
    let deps = deps().await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let buy = market(account, "buy", "0.02", "in-batch-buy");
    let sell = market(account, "sell", "0.02", "in-batch-sell");
    let limit_json = r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc","client_order_id":"in-batch-limit"}"#;
    let req: OrderRequest = serde_json::from_str(limit_json).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    let limit = NewOrder::new(account, v, inst.asset_id, Utc::now());
    let rest = Command::place(limit.clone());
    let cancel = Command::cancel(domain::order::OrderRef {
        account_id: account,
        order_id: limit.id,
    });
    let body = |c: &Command| serde_json::to_string(c).unwrap();
    let batch = vec![
        record("1", account, body(&buy)),
        record("2", account, body(&buy)), // the same command twice: one fill
        record("3", account, body(&sell)), // sees the position the buy opened
        record("4", account, body(&rest)),
        record("5", account, body(&cancel)), // cancels the order placed just before
    ];
    assert!(failures(&handle_batch(&deps, &batch).await.unwrap()).is_empty());
    assert!(
        deps.ledger
            .position(account, "BTCUSDT")
            .await
            .unwrap()
            .is_none(),
        "bought then sold: flat"
    );
    let sold = by_client_id(&deps, account, "in-batch-sell").await.unwrap();
    assert_eq!(sold.status, OrderStatus::Filled);
    let limit_after = by_client_id(&deps, account, "in-batch-limit")
        .await
        .unwrap();
    assert_eq!(limit_after.status, OrderStatus::Canceled);
    let book = deps.ledger.book(account).await.unwrap().unwrap();
    assert_eq!(
        book.buying_power(None, &deps.params),
        book.cash,
        "nothing held"
    );
    // 0.02 × 60000 = 1200 each way, 1.2 fee each way.
    assert_eq!(cash_of(&deps, account).await, dec!(100000) - dec!(2.4));
}

/// A place command the database refuses every time (a client_order_id over the
/// 48-character CHECK: the api never sends one, so it stands for any command that fails
/// inside the batch transaction: a constraint the domain did not foresee, an overflow, a
/// bug).
fn poison(account: Uuid) -> Command {
    let Command::PlaceOrder { order: mut bad, .. } = market(account, "buy", "0.01", "ok-to-build")
    else {
        unreachable!()
    };
    bad.client_order_id = "x".repeat(60);
    Command::place(bad)
}

#[tokio::test]
async fn a_poison_command_fails_only_itself_and_the_rest_of_its_group() {
    let deps = deps().await;
    let mut accounts = Vec::new();
    for _ in 0..4 {
        accounts.push(account_with_cash(&deps.ledger, dec!(100000)).await.1);
    }
    let [a, b, c, d] = accounts[..] else {
        unreachable!()
    };
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let body = |c: Command| serde_json::to_string(&c).unwrap();
    // Ten messages, four accounts; b's second command is the poison.
    let batch = vec![
        buy_record(a, "a1"),
        buy_record(b, "b1"),
        buy_record(c, "c1"),
        record("b2", b, body(poison(b))),
        buy_record(a, "a2"),
        buy_record(b, "b3"),
        buy_record(d, "d1"),
        buy_record(c, "c2"),
        buy_record(b, "b4"),
        buy_record(d, "d2"),
    ];
    let resp = handle_batch(&deps, &batch).await.unwrap();
    // Only the poison and the later messages of its group, in the batch's order.
    assert_eq!(failures(&resp), ["b2", "b3", "b4"]);
    for (account, applied) in [(a, 2), (c, 2), (d, 2)] {
        assert_eq!(
            btc_qty(&deps, account).await,
            dec!(0.001) * Decimal::from(applied)
        );
    }
    // b's command before the poison applied; the ones behind it did not run ahead of it.
    assert_eq!(btc_qty(&deps, b).await, dec!(0.001));
    assert!(by_client_id(&deps, b, "b3").await.is_none());

    // Redelivered (as SQS does on the next receive: the whole batch again, say), what
    // applied changes nothing and the poison is still all that fails with its followers.
    let resp = handle_batch(&deps, &batch).await.unwrap();
    assert_eq!(failures(&resp), ["b2", "b3", "b4"]);
    for account in [a, c, d] {
        assert_eq!(
            btc_qty(&deps, account).await,
            dec!(0.002),
            "applied exactly once"
        );
        assert_eq!(
            cash_of(&deps, account).await,
            dec!(100000) - dec!(120) - dec!(0.12)
        );
    }
    // Once the poison is gone (moved to the dead-letter queue), b's followers apply.
    let rest = vec![buy_record(b, "b3"), buy_record(b, "b4")];
    assert!(failures(&handle_batch(&deps, &rest).await.unwrap()).is_empty());
    assert_eq!(btc_qty(&deps, b).await, dec!(0.003));
}

#[tokio::test]
async fn a_poison_command_alone_in_its_batch_is_reported_and_its_group_stops() {
    let deps = deps().await;
    let (_, a) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let body = |c: Command| serde_json::to_string(&c).unwrap();
    let batch = vec![
        buy_record(a, "a1"),
        record("a2", a, body(poison(a))),
        buy_record(a, "a3"),
    ];
    let resp = handle_batch(&deps, &batch).await.unwrap();
    assert_eq!(failures(&resp), ["a2", "a3"]);
    assert_eq!(btc_qty(&deps, a).await, dec!(0.001));
}

/// After each commit the trigger index follows the ledger: a resting order is watched, a
/// triggered fill or a cancel removes it, and a trigger on the current price fills once.
#[tokio::test]
async fn the_trigger_index_follows_resting_orders() {
    let deps = deps().await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    deps.watches.rebuild(Vec::new()).await.unwrap();
    let watched = || async {
        let (watches, _) = deps.watches.load().await.unwrap().expect("index built");
        watches.into_iter().map(|w| w.order_id).collect::<Vec<_>>()
    };
    let order = |json: &str| {
        let req: OrderRequest = serde_json::from_str(json).unwrap();
        let (v, inst) = req.validate(Catalog::builtin()).unwrap();
        NewOrder::new(account, v, inst.asset_id, chrono::Utc::now())
    };
    let stop = order(
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"stop","stop_price":"61000","time_in_force":"gtc"}"#,
    );
    let limit = order(
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc"}"#,
    );
    apply(&deps, &Command::place(stop.clone())).await.unwrap();
    apply(&deps, &Command::place(limit.clone())).await.unwrap();
    let mut ids = watched().await;
    ids.sort();
    let mut want = vec![stop.id, limit.id];
    want.sort();
    assert_eq!(ids, want);

    // A trigger below the stop changes nothing; above it, the stop fills at the ask, once.
    let trigger = Command::trigger(account, stop.id, "BTCUSDT", None);
    let out = apply(&deps, &trigger).await.unwrap();
    assert_eq!(out.order.unwrap().status, OrderStatus::New);
    put_quote(&deps.cache, "BTCUSDT", dec!(61200), dec!(61200.5)).await;
    let out = apply(&deps, &Command::trigger(account, stop.id, "BTCUSDT", None))
        .await
        .unwrap();
    assert_eq!(out.fill.as_ref().unwrap().price, dec!(61200.5));
    let out = apply(&deps, &Command::trigger(account, stop.id, "BTCUSDT", None))
        .await
        .unwrap();
    assert!(out.fill.is_none(), "a filled order does not fill again");
    assert_eq!(out.order.unwrap().status, OrderStatus::Filled);
    apply(
        &deps,
        &Command::cancel(domain::order::OrderRef {
            account_id: account,
            order_id: limit.id,
        }),
    )
    .await
    .unwrap();
    assert!(watched().await.is_empty(), "neither order rests any more");
}

#[tokio::test]
async fn a_commit_leaves_a_positions_snapshot_and_order_events() {
    let deps = deps().await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    // Two buys in one batch: each fill reports the position after it.
    let commands = [
        market(account, "buy", "0.01", "snap-1"),
        market(account, "buy", "0.02", "snap-2"),
    ];
    let quotes = deps.cache.quotes(&["BTCUSDT".to_string()]).await.unwrap();
    let result = deps
        .ledger
        .apply_commands(
            &commands,
            &quotes,
            Catalog::builtin(),
            adapters::now_ms(),
            &deps.params,
        )
        .await
        .unwrap();
    assert_eq!(result.snapshots.len(), 1);
    let snap = &result.snapshots[0];
    assert_eq!(snap.account_id, account);
    assert_eq!(snap.positions[0].position.qty, dec!(0.03));
    let cash = cash_of(&deps, account).await;
    assert_eq!(snap.cash, cash);

    let messages = executor::updates::order_messages(&result, Utc::now());
    let events: Vec<serde_json::Value> = messages
        .iter()
        .map(|(a, m)| {
            assert_eq!(*a, account);
            serde_json::from_str(m).unwrap()
        })
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new", "fill", "new", "fill"]);
    assert!(events.iter().all(|e| e["type"] == "order"));
    assert_eq!(events[1]["data"]["position_qty"], "0.01");
    assert_eq!(events[3]["data"]["position_qty"], "0.03");
    assert_eq!(events[3]["data"]["qty"], "0.02");
    assert_eq!(events[3]["data"]["price"], "60000.5");
    assert_eq!(events[3]["data"]["order"]["status"], "filled");

    // Through the executor, the snapshot lands in Redis for the fan-out.
    apply(&deps, &market(account, "sell", "0.01", "snap-3"))
        .await
        .unwrap();
    let stored = deps.cache.snapshots(&[account]).await.unwrap();
    assert_eq!(stored[&account].positions[0].position.qty, dec!(0.02));
    assert_eq!(stored[&account].cash, cash_of(&deps, account).await);
}
