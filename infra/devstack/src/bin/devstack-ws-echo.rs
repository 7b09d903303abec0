//! Test Lambda (lambda_runtime, API Gateway WebSocket events) for the
//! devstack's own tests.
//!
//! Appends every event as one JSON line `{"routeKey", "connectionId",
//! "event"}` to the file named by `ECHO_EVENTS_FILE`, so tests can see which
//! routes ran (`$disconnect` in particular). Then:
//!
//! - `$connect`: 401 without a `token` query parameter, 429 with `token=full`,
//!   a function error with `token=error`, otherwise 200;
//! - `$default`: body `error` → function error; `silent` → 200 without a
//!   body (no route response); `env` → replies with `WS_MANAGEMENT_URL`;
//!   `sleep:N` → sleeps N ms first; any body → replies
//!   `{"echo": <body>, "connectionId": …, "requestContext": …, "pid": …}`;
//! - `$disconnect`: 200.

use std::io::Write;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

fn record(event: &Value) -> Result<(), Error> {
    let Ok(path) = std::env::var("ECHO_EVENTS_FILE") else {
        return Ok(());
    };
    let rc = &event["requestContext"];
    let mut line = serde_json::to_string(&json!({
        "routeKey": rc["routeKey"],
        "connectionId": rc["connectionId"],
        "event": event,
    }))?;
    line.push('\n');
    // One write per line: appends of whole lines do not interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())?;
    Ok(())
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let event = event.payload;
    record(&event)?;
    let rc = &event["requestContext"];
    let connection_id = rc["connectionId"].clone();
    match rc["routeKey"].as_str().unwrap_or_default() {
        "$connect" => {
            let token = event["queryStringParameters"]["token"].as_str();
            Ok(match token {
                None => json!({"statusCode": 401, "body": "{\"message\":\"Unauthorized\"}"}),
                Some("full") => json!({
                    "statusCode": 429,
                    "headers": {"x-echo-reason": "full"},
                    "body": "{\"message\":\"Too many connections\"}",
                }),
                Some("error") => return Err("echo asked to fail $connect".into()),
                Some(_) => json!({"statusCode": 200}),
            })
        }
        "$default" => {
            let body = event["body"].as_str().unwrap_or_default().to_string();
            if body == "error" {
                return Err("echo asked to fail".into());
            }
            if body == "silent" {
                return Ok(json!({"statusCode": 200}));
            }
            if body == "env" {
                let url = std::env::var("WS_MANAGEMENT_URL").unwrap_or_default();
                return Ok(json!({"statusCode": 200, "body": url}));
            }
            if let Some(ms) = body.strip_prefix("sleep:") {
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let reply = json!({
                "echo": body,
                "isBase64Encoded": event["isBase64Encoded"],
                "connectionId": connection_id,
                "requestContext": rc,
                "pid": std::process::id(),
            });
            Ok(json!({"statusCode": 200, "body": reply.to_string()}))
        }
        _ => Ok(json!({"statusCode": 200})),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
