use clap::Parser;
use devstack::cli::Cli;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEVSTACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse();
    if cli.describe {
        println!(
            "{}",
            serde_json::to_string_pretty(&devstack::topology::topology())?
        );
        return Ok(());
    }
    let config = cli.into_config();
    let stage = config.stage.clone();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let stack = devstack::start(config).await?;
    println!("devstack: REST API on {}", stack.rest_url());
    if let Some(addr) = stack.ws_addr() {
        println!(
            "devstack: WebSocket API on ws://{addr}/{stage}, @connections at http://{addr}/{stage}"
        );
    }

    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    eprintln!("devstack: stopping");
    stack.shutdown().await;
    Ok(())
}
