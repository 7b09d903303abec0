//! The executor's work after the commit (clearing pending copies, updating the trigger
//! index, replacing positions snapshots, pushing order updates) can fail without harm: the
//! commands are applied and reported applied (never redone), the ledger is right, and every
//! derived copy can be rebuilt from the ledger (the trigger index by the ingest task's
//! reconcile, whose source is `Ledger::live_orders`).

mod common;

use adapters::cache::Cache;
use adapters::watch::WatchIndex;
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest, OrderStatus};
use domain::trigger::Watch;
use rust_decimal_macros::dec;
use serde_json::json;
use uuid::Uuid;

fn order(account: Uuid, request: serde_json::Value) -> NewOrder {
    let req: OrderRequest = serde_json::from_value(request).unwrap();
    let (valid, inst) = req.validate(domain::catalog::Catalog::builtin()).unwrap();
    NewOrder::new(account, valid, inst.asset_id, chrono::Utc::now())
}

#[tokio::test]
async fn failures_after_the_commit_leave_the_ledger_right_and_the_copies_repairable() {
    let deps = common::deps().await;
    let (_, account) = testkit::account_with_cash(&deps.ledger, dec!(100000)).await;
    testkit::put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    let prefix = deps.watches.prefix().to_string();
    // Build the index as the ingest task would, so that it looks complete.
    deps.watches.rebuild(Vec::new()).await.unwrap();

    // The same services, through a Redis user that may read and nothing else: every write
    // after the commit fails (the pending copies, the trigger index and its marker, the
    // positions snapshot), and pushes go to a port nobody listens on.
    let read_only = testkit::redis_acl_user(&format!("on ~{prefix}* +@read +@connection")).await;
    let mut broken = common::deps().await;
    broken.cache = Cache::new(&read_only, &prefix).unwrap();
    broken.watches = WatchIndex::new(&read_only, &prefix).unwrap();
    broken.ledger = deps.ledger.clone();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    broken.pusher = Some(adapters::push::Pusher::new(&format!(
        "http://127.0.0.1:{closed_port}/local"
    )));

    let resting = order(
        account,
        json!({"symbol": "BTCUSDT", "qty": "0.01", "side": "buy", "type": "limit", "time_in_force": "gtc", "limit_price": "50000"}),
    );
    let market = order(
        account,
        json!({"symbol": "BTCUSDT", "qty": "0.01", "side": "buy", "type": "market", "time_in_force": "gtc"}),
    );
    let commands = vec![
        Command::PlaceOrder {
            command_id: resting.id,
            order: resting.clone(),
        },
        Command::PlaceOrder {
            command_id: market.id,
            order: market.clone(),
        },
    ];
    let outcomes = executor::apply_all(&broken, &commands)
        .await
        .expect("applied: what fails after the commit does not fail the commands");
    assert_eq!(outcomes.len(), 2);

    // The ledger is right.
    let get = |id| {
        deps.ledger.order(domain::order::OrderRef {
            account_id: account,
            order_id: id,
        })
    };
    assert_eq!(
        get(resting.id).await.unwrap().unwrap().status,
        OrderStatus::New
    );
    assert_eq!(
        get(market.id).await.unwrap().unwrap().status,
        OrderStatus::Filled
    );
    let cash = deps.ledger.account(account).await.unwrap().unwrap().cash;
    assert_eq!(cash, dec!(100000) - dec!(600.005) - dec!(0.6000050));

    // Redelivered (as SQS may), nothing is applied twice, even through the working services.
    let again = executor::apply_all(&deps, &commands).await.unwrap();
    assert!(again.iter().all(|o| o.duplicate), "{again:?}");
    assert_eq!(
        deps.ledger.account(account).await.unwrap().unwrap().cash,
        cash
    );

    // The trigger index missed the resting order, and still looks complete...
    let (copy, _) = deps
        .watches
        .load()
        .await
        .unwrap()
        .expect("still marked built");
    assert!(copy.iter().all(|w| w.order_id != resting.id), "{copy:?}");
    // ...and the ledger, which the reconcile rebuilds it from, has it.
    let live: Vec<Watch> = deps
        .ledger
        .live_orders()
        .await
        .unwrap()
        .iter()
        .filter_map(Watch::of)
        .collect();
    assert!(live.iter().any(|w| w.order_id == resting.id), "{live:?}");
    deps.watches.rebuild(live).await.unwrap();
    let (copy, _) = deps.watches.load().await.unwrap().expect("built");
    assert!(
        copy.iter().any(|w| w.order_id == resting.id),
        "repaired: {copy:?}"
    );
}
