//! Wires the `migrate` Lambda (a CloudFormation custom resource): the database URL and the
//! function roles' logins are resolved per invocation inside the handler, so a configuration
//! error is answered FAILED rather than leaving CloudFormation waiting.

use adapters::config::migration_target_from_env;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use migrate::{handle, Limits};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::telemetry::init();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let limits = Limits::until(event.context.deadline());
        // Boxed: the secrets client's future is too deep a type to nest in the runtime's.
        handle(event.payload, Box::pin(migration_target_from_env()), limits)
            .await
            .map_err(Error::from)
    }))
    .await
}
