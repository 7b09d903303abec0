//! The AWS SDK configuration (region, credentials, endpoints from the environment), loaded
//! once per process and shared by every client: loading it resolves the credential chain,
//! which is worth doing once, not once per client.
//!
//! Every call is bounded in time: a dependency that accepts connections but never answers
//! (a paused queue, a black-holed endpoint) becomes a [`crate::DependencyError`], and so a
//! 503 with `Retry-After`, well within API Gateway's 29 s, instead of a hang it answers 504.
//! The chaos suite's queue pause found that hang (RELIABILITY.md).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{ConfigLoader, SdkConfig};
use tokio::sync::OnceCell;

/// The longest an AWS call may take, its retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one attempt of it may take (SQS and DynamoDB answer in milliseconds).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

static SDK_CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The time bounds of every AWS call.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
}

/// The loader of the default configuration with [`timeouts`]: what [`sdk_config`] loads,
/// and what a test builds a client of its own from (to another endpoint, say).
pub fn config_loader() -> ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts())
}

/// The default AWS configuration of this process.
pub async fn sdk_config() -> &'static SdkConfig {
    SDK_CONFIG.get_or_init(|| config_loader().load()).await
}
