//! The `ingest` task (Fargate): composes the three services over one Binance stream.
//!
//! - `market_data`: Binance → latest quote per symbol → Redis every flush interval;
//! - `triggers`: resting orders crossed by the flushed prices → SQS (off without
//!   `COMMANDS_QUEUE_URL`);
//! - `fanout`: flushed prices and live PnL → WebSocket clients (off without
//!   `WS_MANAGEMENT_URL`).
//!
//! The configuration is read once, here: the command line (each service's own section,
//! flattened; every flag also reads its environment variable) and the shared sections of
//! `adapters::config` (Redis, queue, database, connections, trading).

use std::process::ExitCode;
use std::time::Duration;

use adapters::config::{
    ConnectionsSettings, DatabaseSource, QueueSettings, RedisSettings, TradingSettings,
};
use clap::Parser;
use market_data::FlushHook;

/// The ingest command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "ingest", version, about)]
struct Cli {
    #[command(flatten)]
    market: market_data::Config,
    #[command(flatten)]
    triggers: triggers::TriggerArgs,
    #[command(flatten)]
    fanout: fanout::FanoutArgs,
    /// Without a command: run.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
enum Command {
    /// The container health check: exit 0 when the heartbeat file is at most
    /// HEALTH_MAX_AGE_SECS old, 1 otherwise (printing why); nothing else is started.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The container health check runs every few seconds: answer from the heartbeat file
    // alone, before any logging, runtime or connection is set up.
    if cli.command == Some(Command::Health) {
        return market_data::health::health_check_command(
            &cli.market.heartbeat_file,
            Duration::from_secs(cli.market.health_max_age_secs),
        );
    }
    // JSON lines with LOG_FORMAT=json (CloudWatch via awslogs), as the Lambdas log.
    adapters::telemetry::init();
    // The workspace profile unwinds (so that a Lambda survives a panicking request); here a
    // panic in any task ends the process, as abort did, so that ECS replaces a task that
    // would otherwise run on with a dead flush, trigger or fan-out loop.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "ingest failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // tokio-tungstenite's rustls has no default crypto provider: install ring's. An error
    // only means a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisSettings::load().await?;
    let market = cli.market.with_redis(&redis);
    let stats_every =
        (market.stats_interval_secs > 0).then(|| Duration::from_secs(market.stats_interval_secs));
    let mut hooks: Vec<Box<dyn FlushHook>> = Vec::new();
    let trigger_config = triggers::TriggerConfig::from_sections(
        &redis,
        &QueueSettings::from_env()?,
        &TradingSettings::from_env()?,
        &cli.triggers,
    )?;
    let database = DatabaseSource::configured()?;
    if let Some((tap, _stats)) =
        triggers::spawn_configured(trigger_config, database.as_ref(), stats_every).await?
    {
        hooks.push(Box::new(tap));
    }
    // Kept alive until shutdown: dropping it stops the fan-out.
    let fanout = match fanout::FanoutConfig::from_sections(
        &redis,
        &ConnectionsSettings::from_env(),
        &cli.fanout,
        market.flush_interval_ms,
        market.stats_interval_secs,
    )? {
        Some(cfg) => Some(fanout::spawn(cfg)?),
        None => None,
    };
    if let Some(f) = &fanout {
        hooks.push(Box::new(f.tap()));
    }
    let ingest = market_data::spawn_with_hook(&market, market_data::Hooks::boxed(hooks))?;
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
