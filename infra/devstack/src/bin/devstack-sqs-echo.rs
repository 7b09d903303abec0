//! Test Lambda (lambda_runtime, SQS events) for the devstack's own tests.
//!
//! Appends one JSON line per record to the file named by `SQS_ECHO_LOG`
//! (messageId, body, attributes) and reports as batch item failures the
//! records whose body contains "fail". A body containing "bogus" makes it
//! report an unknown identifier (which fails the whole batch); "crash"
//! makes the process exit.

use std::io::Write;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

async fn handler(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    let log = std::env::var("SQS_ECHO_LOG").ok();
    let mut lines = String::new();
    for record in &event.payload.records {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        lines.push_str(&serde_json::to_string(&serde_json::json!({
            "request_id": event.context.request_id,
            "record": record,
        }))?);
        lines.push('\n');
        if body.contains("crash") {
            std::process::exit(4);
        }
        if body.contains("bogus") {
            let mut f = BatchItemFailure::default();
            f.item_identifier = "not-a-message-id".into();
            response.batch_item_failures.push(f);
        } else if body.contains("fail") {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            response.batch_item_failures.push(f);
        }
    }
    if let Some(path) = log {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(lines.as_bytes())?;
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
