//! What the devstack emulates, as data: the REST and WebSocket routes with the function
//! behind each, the SQS event source and the functions it can run. `devstack --describe`
//! prints it as JSON, and `tests/python/test_template_agreement.py` checks it against
//! template.yaml, so a route or function added to one and not the other fails the tests.
//! The routing code (`rest::route`, the WebSocket events) uses these constants; the test
//! that routing agrees with [`topology`] lives with `rest` (this module depends on nothing
//! else in the crate).

use serde::Serialize;

/// `ANY /{proxy+}`: every REST request that no other resource takes, to `api`.
pub const API_PROXY_RESOURCE: &str = "/{proxy+}";
/// `GET /health` and `OPTIONS /health`, to `api` (API Gateway's `/{proxy+}` does not match
/// the bare resource the template declares for it, so it is a route of its own there).
pub const API_HEALTH_RESOURCE: &str = "/health";
/// `POST /v2/hooks/tradingview/{webhook_id}`, to `webhook`.
pub const WEBHOOK_RESOURCE: &str = "/v2/hooks/tradingview/{webhook_id}";
/// The WebSocket API's routes, all to `ws`.
pub const WS_ROUTE_KEYS: [&str; 3] = ["$connect", "$disconnect", "$default"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub function: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebSocketRoute {
    pub route_key: &'static str,
    pub function: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSource {
    /// The queue's name without the stack prefix (`commands.fifo`; template.yaml names it
    /// `${AWS::StackName}-commands.fifo`).
    pub queue: &'static str,
    pub function: &'static str,
    pub max_batch_size: i32,
    pub report_batch_item_failures: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub rest_routes: Vec<RestRoute>,
    pub websocket_routes: Vec<WebSocketRoute>,
    pub queue_sources: Vec<QueueSource>,
    /// The Lambda functions the devstack runs (`--<name>-bin`).
    pub functions: Vec<&'static str>,
}

pub fn topology() -> Topology {
    Topology {
        rest_routes: vec![
            RestRoute {
                method: "ANY",
                path: API_PROXY_RESOURCE,
                function: "api",
            },
            RestRoute {
                method: "GET",
                path: API_HEALTH_RESOURCE,
                function: "api",
            },
            // Its CORS preflight, which the api answers as every other route's.
            RestRoute {
                method: "OPTIONS",
                path: API_HEALTH_RESOURCE,
                function: "api",
            },
            RestRoute {
                method: "POST",
                path: WEBHOOK_RESOURCE,
                function: "webhook",
            },
        ],
        websocket_routes: WS_ROUTE_KEYS
            .iter()
            .map(|route_key| WebSocketRoute {
                route_key,
                function: "ws",
            })
            .collect(),
        queue_sources: vec![QueueSource {
            queue: "commands.fifo",
            function: "executor",
            max_batch_size: 10,
            report_batch_item_failures: true,
        }],
        functions: vec!["api", "webhook", "ws", "executor"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_goes_to_a_function_the_devstack_runs() {
        let t = topology();
        for r in &t.rest_routes {
            assert!(t.functions.contains(&r.function), "{r:?}");
        }
        for r in &t.websocket_routes {
            assert!(t.functions.contains(&r.function), "{r:?}");
        }
        for q in &t.queue_sources {
            assert!(t.functions.contains(&q.function), "{q:?}");
        }
    }
}
