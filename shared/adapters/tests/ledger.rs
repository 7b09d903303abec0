//! The ledger, cache and queue against real PostgreSQL, Redis and moto (`make test`).

use adapters::cache::{PendingPut, Session};
use adapters::config::SessionSettings;
use adapters::ledger::{FillQuery, OrderQuery, SignupError, StatusFilter};
use adapters::queue::CommandQueue;
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest, OrderStatus};
use rust_decimal_macros::dec;
use testkit::{account_with_cash, put_quote};
use uuid::Uuid;

fn order(account: Uuid, json: &str) -> NewOrder {
    let req: OrderRequest = serde_json::from_str(json).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    NewOrder::new(account, v, inst.asset_id, Utc::now())
}

#[tokio::test]
async fn signup_rejects_a_taken_email_and_keys_round_trip() {
    let ledger = testkit::ledger().await;
    let email = testkit::unique_email();
    let (user, account) = ledger.create_user(&email, "h", dec!(100000)).await.unwrap();
    assert!(matches!(
        ledger.create_user(&email, "h", dec!(1)).await,
        Err(SignupError::EmailTaken)
    ));
    let creds = ledger.credentials_by_email(&email).await.unwrap().unwrap();
    assert_eq!((creds.user_id, creds.account_id), (user, account));
    ledger
        .insert_api_key("PKTESTKEY", user, account, "digest")
        .await
        .ok();
    let key_id = format!("PK{}", Uuid::new_v4().simple());
    ledger
        .insert_api_key(&key_id, user, account, "digest")
        .await
        .unwrap();
    assert_eq!(
        ledger.api_key(&key_id).await.unwrap().unwrap().account_id,
        account
    );
    assert!(ledger.revoke_api_key(user, &key_id).await.unwrap());
    assert!(ledger.api_key(&key_id).await.unwrap().unwrap().revoked);
    assert!(!ledger.revoke_api_key(user, &key_id).await.unwrap());
    let acct = ledger.account(account).await.unwrap().unwrap();
    assert_eq!(acct.cash, dec!(100000));
}

#[tokio::test]
async fn place_order_fills_once_and_books_cash_position_and_fill() {
    let ledger = testkit::ledger().await;
    let cache = testkit::cache();
    let (_, account) = account_with_cash(&ledger, dec!(100000)).await;
    put_quote(&cache, "BTCUSDT", dec!(60000.00), dec!(60000.50)).await;
    let quote = cache.quote("BTCUSDT").await.unwrap().unwrap();
    let params = domain::engine::ExecutionParams::default();
    let o = order(
        account,
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"c1"}"#,
    );

    let first = ledger
        .place_order(o.id, &o, Some(&quote), quote.ts, &params)
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.order.as_ref().unwrap().status, OrderStatus::Filled);
    let again = ledger
        .place_order(o.id, &o, Some(&quote), quote.ts, &params)
        .await
        .unwrap();
    assert!(again.duplicate, "a redelivered command changes nothing");

    let acct = ledger.account(account).await.unwrap().unwrap();
    // 0.01 × 60000.50 = 600.005; fee 10 bps = 0.600005; cash = 100000 − 600.605005
    assert_eq!(acct.cash, dec!(99399.394995));
    assert_eq!(acct.fees_paid, dec!(0.600005));
    let pos = ledger.position(account, "BTCUSDT").await.unwrap().unwrap();
    assert_eq!(pos.position.qty, dec!(0.01));
    assert_eq!(pos.position.avg_entry_price, dec!(60000.50));
    let fills = ledger
        .fills(
            account,
            &FillQuery {
                after: None,
                until: None,
                ascending: true,
                page_size: 100,
                page_token: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(fills.len(), 1);
    assert_eq!(fills[0].price, dec!(60000.50));
    let stored = ledger
        .order_by_client_order_id(account, "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, o.id);
    assert_eq!(stored.filled_avg_price, Some(dec!(60000.50)));

    let q = OrderQuery {
        status: StatusFilter::Closed,
        limit: 10,
        after: None,
        until: None,
        ascending: false,
        symbols: None,
        nested: false,
    };
    assert_eq!(ledger.orders(account, &q).await.unwrap().len(), 1);
    let q = OrderQuery {
        status: StatusFilter::Open,
        ..q
    };
    assert!(ledger.orders(account, &q).await.unwrap().is_empty());
}

#[tokio::test]
async fn resting_limit_is_canceled_once() {
    let ledger = testkit::ledger().await;
    let (_, account) = account_with_cash(&ledger, dec!(100000)).await;
    let quote = domain::quote::Quote {
        symbol: "BTCUSDT".into(),
        bid: dec!(60000),
        ask: dec!(60001),
        last: None,
        ts: adapters::now_ms(),
    };
    let o = order(
        account,
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc"}"#,
    );
    let params = domain::engine::ExecutionParams::default();
    let placed = ledger
        .place_order(o.id, &o, Some(&quote), quote.ts, &params)
        .await
        .unwrap();
    assert_eq!(placed.order.unwrap().status, OrderStatus::New);
    // Held back: 0.01 × 50000 and the 0.1 % fee on it.
    let book = ledger.book(account).await.unwrap().unwrap();
    assert_eq!(book.buying_power(None, &params), book.cash - dec!(500.5));
    let Command::CancelOrder { command_id, .. } = Command::cancel(domain::order::OrderRef {
        account_id: account,
        order_id: o.id,
    }) else {
        unreachable!()
    };
    let canceled = ledger
        .cancel_order(command_id, account, o.id)
        .await
        .unwrap();
    assert_eq!(canceled.order.unwrap().status, OrderStatus::Canceled);
    assert!(
        ledger
            .cancel_order(command_id, account, o.id)
            .await
            .unwrap()
            .duplicate
    );
    let book = ledger.book(account).await.unwrap().unwrap();
    assert_eq!(book.buying_power(None, &params), book.cash);
}

#[tokio::test]
async fn cache_sessions_and_pending_orders() {
    let cache = testkit::cache();
    let s = Session {
        user_id: Uuid::new_v4(),
        account_id: Uuid::new_v4(),
    };
    let times = SessionSettings {
        ttl_secs: 60,
        max_lifetime_secs: 600,
    };
    cache.put_session("d1", &s, &times).await.unwrap();
    assert_eq!(cache.touch_session("d1", 60).await.unwrap(), Some(s));
    assert!(cache.delete_session("d1").await.unwrap());
    assert_eq!(cache.touch_session("d1", 60).await.unwrap(), None);

    let account = Uuid::new_v4();
    let o = order(
        account,
        r#"{"symbol":"ETHUSDT","qty":"0.5","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"p1"}"#,
    );
    assert_eq!(
        cache.put_pending_order(&o).await.unwrap(),
        PendingPut::Created
    );
    let mut other = o.clone();
    other.spec.qty = Some(domain::amount::Quantity::new(dec!(0.6)).unwrap());
    assert_eq!(
        cache.put_pending_order(&other).await.unwrap(),
        PendingPut::Exists(Box::new(o.clone()))
    );
    assert_eq!(
        cache.pending_orders(account).await.unwrap(),
        vec![o.clone()]
    );
    cache
        .clear_pending_order(domain::order::OrderRef {
            account_id: account,
            order_id: o.id,
        })
        .await
        .unwrap();
    assert!(cache
        .pending_order(domain::order::OrderRef {
            account_id: account,
            order_id: o.id
        })
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn queue_sends_fifo_commands_with_group_and_dedup_ids() {
    let (client, url) = testkit::fifo_queue("t").await;
    let queue = CommandQueue::from_client(&url, client.clone());
    queue.ping().await.unwrap();
    let account = Uuid::new_v4();
    let o = order(
        account,
        r#"{"symbol":"ETHUSDT","qty":"0.5","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"q1"}"#,
    );
    queue.send(&Command::place(o.clone())).await.unwrap();
    queue.send(&Command::place(o.clone())).await.unwrap(); // deduplicated by SQS
    let got = client
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let msgs = got.messages.unwrap_or_default();
    assert_eq!(msgs.len(), 1, "the same command twice is one message");
    let attrs = msgs[0].attributes.clone().unwrap_or_default();
    assert_eq!(
        attrs
            .get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
            .map(String::as_str),
        Some(account.to_string().as_str())
    );
    let cmd: Command = serde_json::from_str(msgs[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(cmd, Command::place(o));
}
