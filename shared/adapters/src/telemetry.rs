//! Logging: JSON lines on AWS (CloudWatch), readable lines locally. `RUST_LOG` filters.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // Lambda sets AWS_LAMBDA_FUNCTION_NAME; the devstack does too, but local logs read better plain.
    let result = if crate::config::log_format_json() {
        builder.json().without_time().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) is harmless.
    let _ = result;
}
