use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = feed::Config::parse();
    let mut feed = feed::spawn(config).await?;
    tokio::select! {
        r = feed.wait() => r,
        // SIGTERM keeps its default (the process ends at once): a fake exchange has nothing
        // to flush.
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
