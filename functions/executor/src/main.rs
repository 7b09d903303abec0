#![recursion_limit = "256"]
//! Wires the `executor` Lambda: configuration and clients once, then the runtime loop.

use adapters::config::Config;
use executor::{handle_event, Deps};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_config(&Config::load().await?)?));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            handle_event(deps, event.payload).await.map_err(Error::from)
        },
    ))
    .await
}
