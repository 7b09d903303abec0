//! Wires the `api` Lambda: configuration and clients once, then the runtime loop.

use adapters::config::Config;
use api::{handle, Deps};
use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_config(Config::load().await?)?));
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handle(deps, req).await)
    }))
    .await
}
