//! Applies the ledger migrations to `DATABASE_URL`: `make migrate` locally, and the same
//! binary against Aurora on AWS (see the README).

use adapters::ledger::Ledger;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    adapters::telemetry::init();
    let url =
        std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("DATABASE_URL is not set"))?;
    let ledger = Ledger::connect_lazy(&url, 1)?;
    ledger.migrate().await?;
    tracing::info!("migrations applied");
    Ok(())
}
