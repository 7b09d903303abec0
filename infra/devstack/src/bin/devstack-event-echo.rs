//! Test Lambda (lambda_runtime, API Gateway REST proxy events taken as raw
//! JSON) for the devstack's own tests: answers 200 with
//! `{"event": <the event exactly as received>, "function_name": …, "pid": …}`,
//! so tests see every field the devstack put in the event (`resource`,
//! `pathParameters`, `isBase64Encoded`, …), not only what lambda_http exposes.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let body = json!({
        "event": event.payload,
        "function_name": std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
        "pid": std::process::id(),
    });
    Ok(json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
        "isBase64Encoded": false,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
