use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // tokio-tungstenite's rustls has no default crypto provider: install ring's. An error
    // only means a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ingest::Config::parse();
    let mut hooks: Vec<Box<dyn ingest::FlushHook>> = Vec::new();
    if let Some((tap, _stats)) = ingest::triggers::spawn_from_env()? {
        hooks.push(Box::new(tap));
    }
    // Kept alive until shutdown: dropping it stops the fan-out.
    let fanout = ingest::fanout::spawn_from_env(&config)?;
    if let Some(f) = &fanout {
        hooks.push(Box::new(f.tap()));
    }
    let ingest = ingest::spawn_with_hook(&config, ingest::Hooks::boxed(hooks))?;
    shutdown_signal().await;
    tracing::info!("shutting down; final flush");
    ingest.final_flush().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
