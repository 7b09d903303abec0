//! The executor's retry schedule against moto's SQS (`make test`), with the schedule and
//! the queue's `maxReceiveCount` shortened to seconds: a command that fails on an outage is
//! hidden for a growing time, so an outage longer than the queue's deliveries would last at
//! its visibility timeout sends nothing to the dead-letter queue; a bad command is hidden
//! briefly and reaches the dead-letter queue after its few deliveries, where its account
//! sees the order as `suspended`; a redrive applies it once.
//!
//! The loop here does what Lambda's event source mapping does: receive, invoke, delete what
//! was not reported.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use adapters::config::RetrySettings;
use adapters::queue::CommandQueue;
use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::order::{NewOrder, OrderRef, OrderRequest, OrderStatus};
use executor::{handle_batch, Deps};
use rust_decimal_macros::dec;
use testkit::{account_with_cash, put_quote};
use uuid::Uuid;

/// The shortened `maxReceiveCount`.
const MAX_RECEIVES: u32 = 3;

/// The queue's own visibility timeout: what a reported message waits without the schedule.
const VISIBILITY_SECS: i32 = 1;

/// A FIFO queue with a dead-letter queue after [`MAX_RECEIVES`] deliveries: the client, the
/// queue URL and the dead-letter queue URL.
async fn queues() -> (Client, String, String) {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = Client::new(&config);
    let stem = Uuid::new_v4().simple().to_string();
    let create = |name: String, attrs: Vec<(QueueAttributeName, String)>| {
        let mut req = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY_SECS.to_string(),
            );
        for (k, v) in attrs {
            req = req.attributes(k, v);
        }
        req.send()
    };
    let dlq = create(format!("dlq-{stem}.fifo"), vec![]).await.unwrap();
    let dlq_url = dlq.queue_url.unwrap();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    let redrive =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES});
    let queue = create(
        format!("cmd-{stem}.fifo"),
        vec![(QueueAttributeName::RedrivePolicy, redrive.to_string())],
    )
    .await
    .unwrap();
    (client, queue.queue_url.unwrap(), dlq_url)
}

/// The executor's dependencies with the queue and a schedule of seconds: hidden 2 s after
/// the first failed delivery on an outage, 4 s after the second (so the command's third and
/// last delivery comes 6 s after its first), 0 s after a bad one.
async fn deps_with(client: &Client, url: &str) -> Deps {
    Deps {
        queue: Some(CommandQueue::from_client(url, client.clone())),
        retries: RetrySettings {
            max_receives: MAX_RECEIVES,
            outage_first_secs: 2,
            outage_max_secs: 8,
            bad_secs: 0,
        },
        ..common::deps().await
    }
}

/// `deps` with Redis out of reach (a port nothing listens on): every batch fails on the
/// quotes, an outage; PostgreSQL still answers, so a last delivery can be recorded.
fn without_redis(deps: &Deps, client: &Client, queue_url: &str) -> Deps {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}/", closed.local_addr().unwrap().port());
    drop(closed);
    Deps {
        cache: adapters::cache::Cache::new(&url, deps.cache.prefix()).unwrap(),
        ledger: deps.ledger.clone(),
        catalog: deps.catalog,
        params: deps.params.clone(),
        watches: adapters::watch::WatchIndex::new(&url, deps.cache.prefix()).unwrap(),
        connections: adapters::connections::ConnectionTable::new("unused"),
        pusher: None,
        queue: Some(CommandQueue::from_client(queue_url, client.clone())),
        retries: deps.retries,
        retention: deps.retention,
    }
}

fn buy(account: Uuid, client_order_id: &str) -> Command {
    let json = format!(
        r#"{{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"{client_order_id}"}}"#
    );
    let req: OrderRequest = serde_json::from_str(&json).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    Command::place(NewOrder::new(account, v, inst.asset_id, Utc::now()))
}

/// A place command the database refuses every time (a client_order_id over its CHECK).
fn poison(account: Uuid) -> Command {
    let Command::PlaceOrder { mut order, .. } = buy(account, "ok") else {
        unreachable!()
    };
    order.client_order_id = "x".repeat(60);
    Command::place(order)
}

async fn send(client: &Client, url: &str, c: &Command) {
    client
        .send_message()
        .queue_url(url)
        .message_body(serde_json::to_string(c).unwrap())
        .message_group_id(c.message_group_id())
        .message_deduplication_id(c.deduplication_id())
        .send()
        .await
        .unwrap();
}

/// One receive as the event source mapping does it; the records as Lambda builds them.
async fn receive(client: &Client, url: &str) -> Vec<SqsMessage> {
    #[allow(deprecated)] // moto reads AttributeNames
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    out.messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            r.attributes = m
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect::<HashMap<_, _>>();
            r
        })
        .collect()
}

/// Invokes the executor with the batch and deletes what it did not report; the highest
/// receive count seen.
async fn deliver(client: &Client, url: &str, deps: &Deps, batch: &[SqsMessage]) -> u32 {
    let resp = handle_batch(deps, batch).await.unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for r in batch {
        if !failed.contains(&r.message_id.as_deref().unwrap()) {
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(r.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    batch
        .iter()
        .filter_map(|r| r.attributes.get("ApproximateReceiveCount")?.parse().ok())
        .max()
        .unwrap_or(0)
}

async fn messages_in(client: &Client, url: &str) -> u32 {
    let attrs = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    attrs.values().filter_map(|v| v.parse::<u32>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_longer_than_the_queues_deliveries_sends_nothing_to_the_dead_letter_queue() {
    let (client, url, dlq) = queues().await;
    let deps = deps_with(&client, &url).await;
    let down = without_redis(&deps, &client, &url);
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let order = buy(account, "through-the-outage");
    send(&client, &url, &order).await;

    // Redis is out of reach for 4 s from the first delivery. At the queue's own visibility
    // timeout (1 s) the three deliveries would all fall inside it (at 0, 1 and 2 s) and the
    // command would go to the dead-letter queue; hidden 2 s and then 4 s, its deliveries
    // come at 0, 2 and 6 s, and the last one finds Redis back.
    let outage = Duration::from_secs(4);
    let mut started: Option<Instant> = None;
    let mut deliveries = 0u32;
    let mut applied = false;
    // Bounded: the schedule needs about 6 s; a command stuck for 30 s has failed the test.
    let give_up = Instant::now() + Duration::from_secs(30);
    while !applied && Instant::now() < give_up {
        let batch = receive(&client, &url).await;
        if batch.is_empty() {
            if messages_in(&client, &url).await == 0 {
                break; // gone: to the dead-letter queue or applied
            }
            continue;
        }
        let t0 = *started.get_or_insert_with(Instant::now);
        let during = t0.elapsed() < outage;
        // A fresh price for when it applies (the first one is older than its age limit by then).
        put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
        deliveries = deliver(&client, &url, if during { &down } else { &deps }, &batch).await;
        applied = !during;
    }
    assert!(applied, "the command was never delivered after the outage");
    assert!(deliveries <= MAX_RECEIVES, "{deliveries} deliveries");
    assert_eq!(
        messages_in(&client, &dlq).await,
        0,
        "nothing in the dead-letter queue"
    );
    let o = deps
        .ledger
        .order(OrderRef {
            account_id: account,
            order_id: order.order_id(),
        })
        .await
        .unwrap()
        .expect("the order applied");
    assert_eq!(o.status, OrderStatus::Filled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_command_reaches_the_dead_letter_queue_in_its_few_deliveries_and_shows_suspended() {
    let (client, url, dlq) = queues().await;
    let deps = deps_with(&client, &url).await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    let (_, other) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let bad = poison(account);
    let good = buy(other, "next-to-the-poison");
    send(&client, &url, &bad).await;
    send(&client, &url, &good).await;

    // Hidden 0 s after each failure, the poison's three deliveries follow each other; the
    // fourth receive moves it to the dead-letter queue. At most a few dozen receives.
    for _ in 0..40 {
        if messages_in(&client, &url).await == 0 {
            break;
        }
        let batch = receive(&client, &url).await;
        if !batch.is_empty() {
            deliver(&client, &url, &deps, &batch).await;
        }
    }
    assert_eq!(messages_in(&client, &url).await, 0, "the queue drained");
    assert_eq!(
        messages_in(&client, &dlq).await,
        1,
        "the poison is in the dead-letter queue"
    );
    // The other account's command applied once, in the poison's first batch or alone.
    let good_order = deps
        .ledger
        .order(OrderRef {
            account_id: other,
            order_id: good.order_id(),
        })
        .await
        .unwrap()
        .expect("the good command applied");
    assert_eq!(good_order.status, OrderStatus::Filled);
    // The account sees its order suspended, with a reason that names no internals.
    let shown = deps
        .ledger
        .dead_order(OrderRef {
            account_id: account,
            order_id: bad.order_id(),
        })
        .await
        .unwrap()
        .expect("the dead-lettered order is shown");
    assert_eq!(shown.status, OrderStatus::Suspended);
    let reason = shown.reject_reason.unwrap();
    assert!(reason.contains("could not be processed"), "{reason}");
    assert!(
        !reason.contains("violates"),
        "no database error for the user: {reason}"
    );
    // And not to another account.
    let foreign = deps
        .ledger
        .dead_order(OrderRef {
            account_id: other,
            order_id: bad.order_id(),
        })
        .await
        .unwrap();
    assert!(foreign.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_dead_lettered_by_an_outage_is_suspended_and_its_redrive_applies_it_once() {
    let (client, url, dlq) = queues().await;
    let deps = deps_with(&client, &url).await;
    let down = without_redis(&deps, &client, &url);
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let order = buy(account, "outlived-the-schedule");
    send(&client, &url, &order).await;
    let order_ref = OrderRef {
        account_id: account,
        order_id: order.order_id(),
    };

    // Redis stays out of reach past every delivery (the schedule's 6 s and more).
    for _ in 0..40 {
        if messages_in(&client, &url).await == 0 {
            break;
        }
        let batch = receive(&client, &url).await;
        if !batch.is_empty() {
            deliver(&client, &url, &down, &batch).await;
        }
    }
    assert_eq!(
        messages_in(&client, &dlq).await,
        1,
        "in the dead-letter queue"
    );
    let shown = deps
        .ledger
        .dead_order(order_ref)
        .await
        .unwrap()
        .expect("shown");
    assert_eq!(shown.status, OrderStatus::Suspended);
    assert!(shown.reject_reason.unwrap().contains("unavailable"));

    // The operator redrives it (twice, by mistake): it applies once.
    let dead = receive(&client, &dlq).await;
    assert_eq!(dead.len(), 1);
    for attempt in 0..2 {
        client
            .send_message()
            .queue_url(&url)
            .message_body(dead[0].body.clone().unwrap())
            .message_group_id(order.message_group_id())
            .message_deduplication_id(format!("redrive-{attempt}"))
            .send()
            .await
            .unwrap();
        let batch = receive(&client, &url).await;
        assert_eq!(batch.len(), 1);
        put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
        deliver(&client, &url, &deps, &batch).await;
    }
    let o = deps
        .ledger
        .order(order_ref)
        .await
        .unwrap()
        .expect("applied");
    assert_eq!(o.status, OrderStatus::Filled);
    let pos = deps
        .ledger
        .position(account, "BTCUSDT")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pos.position.qty, dec!(0.001), "once");
    // The ledger's order is what the account sees now.
    assert!(deps.ledger.dead_order(order_ref).await.unwrap().is_none());
}
