//! Wires the `migrate` Lambda (a CloudFormation custom resource): the database URL is
//! resolved per invocation inside the handler, so a configuration error is answered FAILED
//! rather than leaving CloudFormation waiting.

use adapters::config::database_url_from_env;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use migrate::{handle, Limits};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::telemetry::init();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let limits = Limits::until(event.context.deadline());
        handle(event.payload, database_url_from_env(), limits)
            .await
            .map_err(Error::from)
    }))
    .await
}
