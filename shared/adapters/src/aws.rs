//! The AWS SDK configuration (region, credentials, endpoints from the environment), loaded
//! once per process and shared by every client: loading it resolves the credential chain,
//! which is worth doing once, not once per client.

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

static SDK_CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The default AWS configuration of this process.
pub async fn sdk_config() -> &'static SdkConfig {
    SDK_CONFIG
        .get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
        .await
}
