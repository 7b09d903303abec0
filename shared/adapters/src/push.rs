//! Pushing messages to WebSocket clients through API Gateway's management API
//! (`POST /@connections/{id}`), at `WS_MANAGEMENT_URL`: on AWS
//! `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`, locally the devstack.
//!
//! One SDK client per process: its HTTP pool keeps connections to the endpoint open, so a
//! push costs one request on a warm connection. Transient failures (throttling, 5xx,
//! timeouts) are retried by the SDK's standard retry with exponential backoff and jitter; a
//! gone connection (410) is not, since it will never come back.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use tokio::sync::OnceCell;

/// Why a push did not arrive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// 410: the client is gone; its item should be deleted.
    #[error("connection is gone")]
    Gone,
    /// 413: over API Gateway's 128 KB message limit.
    #[error("message too large")]
    TooLarge,
    /// Anything else, after the SDK's retries.
    #[error("push failed: {0}")]
    Failed(String),
}

pub struct Pusher {
    endpoint: String,
    client: OnceCell<Client>,
}

/// How long one push may take, retries included, before it counts as failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

impl Pusher {
    /// `endpoint` is the management API's base URL, stage included.
    pub fn new(endpoint: &str) -> Pusher {
        Pusher {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            client: OnceCell::new(),
        }
    }

    /// To the configured management endpoint; `None` when there is none (no WebSocket API
    /// deployed).
    pub fn configured(connections: &crate::config::ConnectionsSettings) -> Option<Pusher> {
        connections.management_url.as_deref().map(Pusher::new)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let shared = crate::aws::sdk_config().await;
                let config = aws_sdk_apigatewaymanagement::config::Builder::from(shared)
                    .endpoint_url(&self.endpoint)
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .operation_timeout(OPERATION_TIMEOUT)
                            .build(),
                    )
                    .build();
                Client::from_conf(config)
            })
            .await
    }

    /// Sends `data` as one message to the connection.
    pub async fn post(
        &self,
        connection_id: &str,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), PushError> {
        let r = self
            .client()
            .await
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(data))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.err() {
                PostToConnectionError::GoneException(_) => Err(PushError::Gone),
                PostToConnectionError::PayloadTooLargeException(_) => Err(PushError::TooLarge),
                other => Err(PushError::Failed(other.to_string())),
            },
            Err(e) => Err(PushError::Failed(
                aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
            )),
        }
    }

    /// Closes the connection (its `$disconnect` runs). Gone already is fine.
    pub async fn disconnect(&self, connection_id: &str) -> Result<(), PushError> {
        match self
            .client()
            .await
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 410 => Ok(()),
            Err(e) => Err(PushError::Failed(
                aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
            )),
        }
    }
}
