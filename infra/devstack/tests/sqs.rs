//! SQS → executor event source against moto (or any SQS endpoint).
//!
//! Needs `AWS_ENDPOINT_URL` (e.g. moto on http://127.0.0.1:5099); `make test`
//! starts moto and exports it. Without it the tests fail naming it; they never skip.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use devstack::{Config, FunctionConfig, SqsSourceConfig};
use serde_json::Value;
use testkit::wait::poll;

const SQS_ECHO: &str = env!("CARGO_BIN_EXE_devstack-sqs-echo");

/// Fails the test (never skips it) without an SQS endpoint to run against.
fn require_endpoint() {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(u) if !u.is_empty() => {}
        _ => {
            panic!("AWS_ENDPOINT_URL is not set: run the tests with `make test`, which starts moto")
        }
    }
}

fn ensure_test_credentials() {
    // moto accepts anything; only fill in what is missing.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
}

struct Fixture {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    log: PathBuf,
}

async fn fixture(tag: &str) -> Fixture {
    ensure_test_credentials();
    let client = devstack::sqs::client_from_env(&devstack::runtime::default_region()).await;
    let name = format!("devstack-{tag}-{}.fifo", uuid::Uuid::new_v4().simple());
    let out = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .send()
        .await
        .expect("create FIFO queue");
    let queue_url = out.queue_url().unwrap().to_string();
    let log = std::env::temp_dir().join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&log);
    Fixture {
        client,
        queue_url,
        log,
    }
}

impl Fixture {
    async fn send(&self, group: &str, dedup: &str, body: &str) -> String {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_group_id(group)
            .message_deduplication_id(dedup)
            .message_body(body)
            .send()
            .await
            .expect("send message")
            .message_id()
            .unwrap()
            .to_string()
    }

    fn config(&self, visibility_secs: i32) -> Config {
        let mut exec = FunctionConfig::new("executor", SQS_ECHO, 2);
        exec.env
            .push(("SQS_ECHO_LOG".into(), self.log.display().to_string()));
        let mut config = Config::new();
        config.executor = Some(exec);
        config.sqs = Some(SqsSourceConfig {
            queue_url: self.queue_url.clone(),
            batch_size: 10,
            visibility_timeout_secs: visibility_secs,
            wait_time_secs: 1,
            pollers: 2,
            function_timeout: Duration::from_secs(visibility_secs.max(1) as u64),
            region: devstack::runtime::default_region(),
            lose_delete_every: 0,
        });
        config
    }

    /// Records the executor received, in order.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["record"].clone())
            .collect()
    }

    /// How many times the executor has received the message `id` so far.
    fn deliveries(&self, id: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r["messageId"] == id)
            .count()
    }

    async fn messages_left(&self) -> (u64, u64) {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().cloned().unwrap_or_default();
        let get = |k: QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    async fn cleanup(&self) {
        let _ = self
            .client
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    poll(timeout, Duration::from_millis(100), async || {
        cond()
            .then_some(())
            .ok_or(format!("timed out waiting for {what}"))
    })
    .await
}

#[tokio::test]
async fn successes_are_deleted_and_reported_failures_come_back() {
    require_endpoint();
    let fx = fixture("partial").await;
    let ok_a = fx
        .send("acct-a", "a1", r#"{"type":"place_order","n":1}"#)
        .await;
    let ok_b = fx
        .send("acct-b", "b1", r#"{"type":"place_order","n":2}"#)
        .await;
    let fail_b = fx
        .send(
            "acct-b",
            "b2",
            r#"{"type":"place_order","n":3,"please":"fail"}"#,
        )
        .await;

    let stack = devstack::start(fx.config(2)).await.unwrap();

    // The failed message is delivered again after the visibility timeout.
    wait_until(
        "the failed message to be redelivered",
        Duration::from_secs(30),
        || fx.deliveries(&fail_b) >= 2,
    )
    .await;
    stack.shutdown().await;

    let received = fx.received();
    let count = |id: &str| received.iter().filter(|r| r["messageId"] == id).count();
    assert_eq!(count(&ok_a), 1, "deleted after success, never redelivered");
    assert_eq!(count(&ok_b), 1, "deleted after success, never redelivered");

    // The records are SQS events as Lambda builds them.
    let first_fail = received
        .iter()
        .find(|r| r["messageId"] == fail_b.as_str())
        .unwrap();
    for r in &received {
        let ev: aws_lambda_events::sqs::SqsMessage = serde_json::from_value(r.clone()).unwrap();
        assert_eq!(ev.event_source.as_deref(), Some("aws:sqs"));
        assert!(ev
            .event_source_arn
            .as_deref()
            .unwrap()
            .starts_with("arn:aws:sqs:"));
        assert!(ev.receipt_handle.is_some() && ev.md5_of_body.is_some());
        for attr in [
            "MessageGroupId",
            "MessageDeduplicationId",
            "SequenceNumber",
            "ApproximateReceiveCount",
            "SentTimestamp",
        ] {
            assert!(ev.attributes.contains_key(attr), "{attr} missing in {r}");
        }
    }
    assert_eq!(first_fail["attributes"]["MessageGroupId"], "acct-b");
    assert_eq!(first_fail["attributes"]["MessageDeduplicationId"], "b2");
    let counts: Vec<u64> = received
        .iter()
        .filter(|r| r["messageId"] == fail_b.as_str())
        .filter_map(|r| {
            r["attributes"]["ApproximateReceiveCount"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[1] > w[0]),
        "receive count grows: {counts:?}"
    );

    // Only the failed message is still in the queue.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (visible, in_flight) = fx.messages_left().await;
    assert_eq!(visible + in_flight, 1, "only the failed message is left");
    fx.cleanup().await;
}

#[tokio::test]
async fn an_invalid_report_deletes_nothing() {
    require_endpoint();
    let fx = fixture("whole").await;
    // A report naming an unknown id fails the whole batch it came from.
    let a = fx
        .send("g1", "x1", r#"{"type":"place_order","mark":"bogus"}"#)
        .await;
    let b = fx.send("g2", "x2", r#"{"type":"place_order","n":2}"#).await;

    // One poller, so the first ReceiveMessage returns both messages in one batch.
    let mut config = fx.config(2);
    if let Some(sqs) = config.sqs.as_mut() {
        sqs.pollers = 1;
    }
    let stack = devstack::start(config).await.unwrap();
    wait_until("a to be redelivered twice", Duration::from_secs(30), || {
        fx.deliveries(&a) >= 3
    })
    .await;
    stack.shutdown().await;

    // Group the deliveries by invocation: every batch that contained `a` was
    // failed as a whole, so a `b` delivered with `a` must come back again.
    let lines: Vec<Value> = std::fs::read_to_string(&fx.log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut batches: Vec<(String, HashSet<String>)> = Vec::new();
    for l in &lines {
        let req = l["request_id"].as_str().unwrap().to_string();
        let id = l["record"]["messageId"].as_str().unwrap().to_string();
        match batches.iter_mut().find(|(r, _)| *r == req) {
            Some((_, set)) => {
                set.insert(id);
            }
            None => batches.push((req, HashSet::from([id]))),
        }
    }
    let first = &batches[0].1;
    assert!(
        first.contains(&a) && first.contains(&b),
        "first batch has both: {batches:?}"
    );
    let b_deliveries = batches.iter().filter(|(_, s)| s.contains(&b)).count();
    assert!(
        b_deliveries >= 2,
        "b was redelivered after the failed batch: {batches:?}"
    );
    let (visible, in_flight) = fx.messages_left().await;
    assert!(visible + in_flight >= 1, "a is never deleted");
    fx.cleanup().await;
}

/// The chaos suite's duplicate-delivery fault: with `lose_delete_every = 2` the deletes of
/// every second successful batch are skipped, so its message is delivered again after the
/// visibility timeout, as SQS may deliver a message twice.
#[tokio::test]
async fn a_lost_delete_delivers_the_message_again() {
    require_endpoint();
    let fx = fixture("lost-delete").await;
    let first = fx
        .send("acct-a", "d1", r#"{"type":"place_order","n":1}"#)
        .await;
    let mut config = fx.config(1);
    if let Some(sqs) = config.sqs.as_mut() {
        sqs.pollers = 1;
        sqs.lose_delete_every = 2;
    }
    let stack = devstack::start(config).await.unwrap();
    // Batch 1 (first delivery of `first`) is deleted.
    wait_until("the first message", Duration::from_secs(30), || {
        fx.deliveries(&first) >= 1
    })
    .await;
    let second = fx
        .send("acct-a", "d2", r#"{"type":"place_order","n":2}"#)
        .await;
    // Batch 2 (`second`) succeeds but its delete is lost: it comes back as batch 3.
    wait_until("the second message twice", Duration::from_secs(30), || {
        fx.deliveries(&second) >= 2
    })
    .await;
    stack.shutdown().await;
    assert_eq!(fx.deliveries(&first), 1, "its delete was not lost");
    let counts: Vec<String> = fx
        .received()
        .iter()
        .filter(|r| r["messageId"] == second.as_str())
        .filter_map(|r| {
            r["attributes"]["ApproximateReceiveCount"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        counts[..2],
        ["1", "2"],
        "delivered again by SQS itself: {counts:?}"
    );
    fx.cleanup().await;
}
