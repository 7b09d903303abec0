//! Wires the `webhook` Lambda: configuration and clients once, then the runtime loop.

use adapters::config::Config;
use app::Deps;
use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_config(Config::load().await?)?));
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(webhook::handle(deps, req).await)
    }))
    .await
}
