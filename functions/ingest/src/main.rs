use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

fn main() -> ExitCode {
    let config = ingest::Config::parse();
    // The container health check runs every few seconds: answer from the heartbeat file
    // alone, before any logging, runtime or connection is set up.
    if config.command == Some(ingest::Command::Health) {
        return ingest::health::health_check_command(
            &config.heartbeat_file,
            Duration::from_secs(config.health_max_age_secs),
        );
    }
    // JSON lines with LOG_FORMAT=json (CloudWatch via awslogs), as the Lambdas log.
    adapters::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "ingest failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ingest::Config) -> anyhow::Result<()> {
    // tokio-tungstenite's rustls has no default crypto provider: install ring's. An error
    // only means a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut hooks: Vec<Box<dyn ingest::FlushHook>> = Vec::new();
    if let Some((tap, _stats)) = ingest::triggers::spawn_from_env().await? {
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
