//! SQS → Lambda event source mapping emulation (with `ReportBatchItemFailures`).
//!
//! Pollers long-poll the queue, invoke the executor with an `SqsEvent` exactly
//! as Lambda builds it, then delete every message the function did not report
//! in `batchItemFailures`. Reported messages are left alone and come back after
//! the visibility timeout. An invalid report (empty or unknown identifier,
//! non-object response) or a function error/timeout/crash fails the whole
//! batch: nothing is deleted.

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::encodings::Base64Data;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::Value;
use testkit::events::{sqs_event, EventJson, SqsMessage, SqsMessageAttribute, SqsRecord};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::runtime::FunctionHandle;

#[derive(Debug, Clone)]
pub struct SqsSourceConfig {
    pub queue_url: String,
    /// ReceiveMessage MaxNumberOfMessages (1..=10).
    pub batch_size: i32,
    /// ReceiveMessage VisibilityTimeout: how long a failed message stays hidden.
    pub visibility_timeout_secs: i32,
    /// ReceiveMessage WaitTimeSeconds.
    pub wait_time_secs: i32,
    /// Number of concurrent pollers.
    pub pollers: usize,
    /// Executor invocation timeout.
    pub function_timeout: Duration,
    pub region: String,
    /// Fault injection: the deletes of one successful batch in every N are skipped (0:
    /// never), so its messages are delivered again after the visibility timeout.
    pub lose_delete_every: u64,
}

/// Batches that succeeded, counted across pollers for `lose_delete_every`.
static SUCCESSFUL_BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the deletes of this successful batch are to be lost (see `lose_delete_every`).
fn lose_this_delete(every: u64) -> bool {
    if every == 0 {
        return false;
    }
    let n = SUCCESSFUL_BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    n.is_multiple_of(every)
}

/// `arn:aws:sqs:<region>:<account>:<name>` from a queue URL
/// (`http(s)://host/<account>/<name>`).
pub fn queue_arn_from_url(url: &str, region: &str) -> String {
    let mut segs = url.trim_end_matches('/').rsplit('/');
    let name = segs.next().unwrap_or("queue");
    let account = segs
        .next()
        .filter(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or(crate::runtime::ACCOUNT_ID);
    format!("arn:aws:sqs:{region}:{account}:{name}")
}

/// Build one SQS event record as Lambda sends it (`testkit::events::SqsRecord`).
pub fn record_from_message(m: &Message, queue_arn: &str, region: &str) -> SqsMessage {
    let mut record = SqsRecord::new(
        m.message_id().unwrap_or_default(),
        m.body().unwrap_or_default(),
    )
    .queue_arn(queue_arn)
    .region(region);
    if let Some(handle) = m.receipt_handle() {
        record = record.receipt_handle(handle);
    }
    if let Some(md5) = m.md5_of_body() {
        record = record.md5_of_body(md5);
    }
    if let Some(md5) = m.md5_of_message_attributes() {
        record = record.md5_of_message_attributes(md5);
    }
    for (k, v) in m.attributes().into_iter().flatten() {
        record = record.attribute(k.as_str(), v);
    }
    for (k, v) in m.message_attributes().into_iter().flatten() {
        let mut attr = SqsMessageAttribute::default();
        attr.string_value = v.string_value().map(str::to_string);
        attr.binary_value = v.binary_value().map(base64_data);
        attr.string_list_values = v.string_list_values().to_vec();
        attr.binary_list_values = v.binary_list_values().iter().map(base64_data).collect();
        attr.data_type = Some(v.data_type().to_string());
        record = record.message_attribute(k, attr);
    }
    if m.message_id().is_none() {
        // SQS always sends one; if not, the record says so (null), as before.
        record = record.edit(|r| r.message_id = None);
    }
    record.build()
}

fn base64_data(b: &aws_sdk_sqs::primitives::Blob) -> Base64Data {
    let mut data = Base64Data::default();
    data.0 = b.as_ref().to_vec();
    data
}

/// What to do with a batch after the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Delete every message.
    AllSucceeded,
    /// Delete every message except these ids.
    Partial(HashSet<String>),
    /// Delete nothing.
    AllFailed(String),
}

/// Interpret an `SqsBatchResponse` as Lambda does for `ReportBatchItemFailures`.
///
/// Complete success: null or empty response, null or empty `batchItemFailures`.
/// Complete failure: not a JSON object, `batchItemFailures` not a list, or an
/// entry whose `itemIdentifier` is missing, null, empty, or not in the batch.
pub fn evaluate_batch_response(resp: &Value, batch_ids: &HashSet<String>) -> BatchOutcome {
    let obj = match resp {
        Value::Null => return BatchOutcome::AllSucceeded,
        Value::Object(o) => o,
        Value::String(s) if s.is_empty() => return BatchOutcome::AllSucceeded,
        other => return BatchOutcome::AllFailed(format!("invalid response: {other}")),
    };
    let failures = match obj.get("batchItemFailures") {
        None | Some(Value::Null) => return BatchOutcome::AllSucceeded,
        Some(Value::Array(a)) => a,
        Some(other) => {
            return BatchOutcome::AllFailed(format!("batchItemFailures is not a list: {other}"))
        }
    };
    if failures.is_empty() {
        return BatchOutcome::AllSucceeded;
    }
    let mut failed = HashSet::new();
    for f in failures {
        match f.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && batch_ids.contains(id) => {
                failed.insert(id.to_string());
            }
            _ => return BatchOutcome::AllFailed(format!("invalid batch item failure: {f}")),
        }
    }
    BatchOutcome::Partial(failed)
}

/// A one-line description of an SDK error (code and message when the service answered).
fn sdk_error<E, R>(e: &aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("Unknown"),
            s.message().unwrap_or_default()
        ),
        None => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
    }
}

/// Build the SQS client from the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, keys).
pub async fn client_from_env(region: &str) -> aws_sdk_sqs::Client {
    let region = aws_config::Region::new(region.to_string());
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .load()
        .await;
    aws_sdk_sqs::Client::new(&conf)
}

/// One poller: runs until `shutdown` turns true.
pub async fn run_poller(
    index: usize,
    client: aws_sdk_sqs::Client,
    cfg: SqsSourceConfig,
    executor: FunctionHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue_arn = queue_arn_from_url(&cfg.queue_url, &cfg.region);
    let mut backoff = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    info!("sqs poller {index}: polling {}", cfg.queue_url);
    loop {
        if *shutdown.borrow() {
            return;
        }
        #[allow(deprecated)] // older SQS servers (moto) only read AttributeNames
        let receive = client
            .receive_message()
            .queue_url(&cfg.queue_url)
            .max_number_of_messages(cfg.batch_size.clamp(1, 10))
            .wait_time_seconds(cfg.wait_time_secs)
            .visibility_timeout(cfg.visibility_timeout_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .attribute_names(QueueAttributeName::All)
            .message_attribute_names("All")
            .send();
        let out = tokio::select! {
            r = receive => r,
            _ = shutdown.changed() => return,
        };
        let messages = match out {
            Ok(o) => {
                backoff = Duration::from_millis(200);
                o.messages.unwrap_or_default()
            }
            Err(e) => {
                warn!(
                    "sqs poller {index}: ReceiveMessage failed: {}; retrying in {backoff:?}",
                    sdk_error(&e)
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        process_batch(index, &client, &cfg, &queue_arn, &executor, &messages).await;
    }
}

async fn process_batch(
    index: usize,
    client: &aws_sdk_sqs::Client,
    cfg: &SqsSourceConfig,
    queue_arn: &str,
    executor: &FunctionHandle,
    messages: &[Message],
) {
    let event = sqs_event(
        messages
            .iter()
            .map(|m| record_from_message(m, queue_arn, &cfg.region)),
    )
    .to_value();
    let ids: HashSet<String> = messages
        .iter()
        .filter_map(|m| m.message_id().map(str::to_string))
        .collect();
    let outcome = match executor.invoke(&event, cfg.function_timeout).await {
        Ok(resp) => evaluate_batch_response(&resp, &ids),
        Err(e) => BatchOutcome::AllFailed(e.to_string()),
    };
    let to_delete: Vec<&Message> = match &outcome {
        BatchOutcome::AllSucceeded => messages.iter().collect(),
        BatchOutcome::Partial(failed) => messages
            .iter()
            .filter(|m| !m.message_id().is_some_and(|id| failed.contains(id)))
            .collect(),
        BatchOutcome::AllFailed(why) => {
            warn!(
                "sqs poller {index}: batch of {} failed, nothing deleted: {why}",
                messages.len()
            );
            Vec::new()
        }
    };
    if let BatchOutcome::Partial(failed) = &outcome {
        info!(
            "sqs poller {index}: batch of {}: {} failed, left for redelivery",
            messages.len(),
            failed.len()
        );
    } else {
        debug!(
            "sqs poller {index}: batch of {}: {outcome:?}",
            messages.len()
        );
    }
    if to_delete.is_empty() {
        return;
    }
    if lose_this_delete(cfg.lose_delete_every) {
        info!(
            "sqs poller {index}: fault injection: the deletes of {} applied messages are lost; they will be delivered again",
            to_delete.len()
        );
        return;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = to_delete
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .ok()
        })
        .collect();
    for chunk in entries.chunks(10) {
        match client
            .delete_message_batch()
            .queue_url(&cfg.queue_url)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await
        {
            Ok(out) => {
                for f in out.failed() {
                    warn!(
                        "sqs poller {index}: delete of entry {} failed: {} {}",
                        f.id(),
                        f.code(),
                        f.message().unwrap_or_default()
                    );
                }
            }
            Err(e) => warn!(
                "sqs poller {index}: DeleteMessageBatch failed (messages will be redelivered): {}",
                sdk_error(&e)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids() -> HashSet<String> {
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn complete_success_forms() {
        for resp in [
            json!(null),
            json!({}),
            json!({"batchItemFailures": null}),
            json!({"batchItemFailures": []}),
            json!(""),
        ] {
            assert_eq!(
                evaluate_batch_response(&resp, &ids()),
                BatchOutcome::AllSucceeded,
                "{resp}"
            );
        }
    }

    #[test]
    fn partial_failure_reports_exactly_those() {
        let resp = json!({"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "c"}]});
        let expected: HashSet<String> = ["b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            evaluate_batch_response(&resp, &ids()),
            BatchOutcome::Partial(expected)
        );
    }

    #[test]
    fn invalid_reports_fail_the_whole_batch() {
        for resp in [
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "zzz"}]}),
            json!({"batchItemFailures": [{"itemId": "a"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "nope"}]}),
            json!({"batchItemFailures": "a"}),
            json!("oops"),
            json!(42),
        ] {
            assert!(
                matches!(
                    evaluate_batch_response(&resp, &ids()),
                    BatchOutcome::AllFailed(_)
                ),
                "{resp}"
            );
        }
    }

    #[test]
    fn arn_from_queue_url() {
        assert_eq!(
            queue_arn_from_url(
                "http://127.0.0.1:5099/123456789012/commands.fifo",
                "us-east-1"
            ),
            "arn:aws:sqs:us-east-1:123456789012:commands.fifo"
        );
        assert_eq!(
            queue_arn_from_url(
                "https://sqs.eu-west-1.amazonaws.com/000000000042/q.fifo/",
                "eu-west-1"
            ),
            "arn:aws:sqs:eu-west-1:000000000042:q.fifo"
        );
    }
}
