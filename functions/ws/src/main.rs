#![recursion_limit = "256"]
//! Wires the `ws` Lambda: configuration and clients once, then the runtime loop.

use adapters::config::Config;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use ws::{handle, Deps, WsRequest};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_config(Config::load().await?)?));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            let response = handle(deps, WsRequest::from(event.payload)).await;
            Ok::<ApiGatewayProxyResponse, Error>(response.into_proxy_response())
        },
    ))
    .await
}
