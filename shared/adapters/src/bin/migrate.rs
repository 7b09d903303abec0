//! Applies the ledger migrations: `make migrate` locally, and the same binary against Aurora
//! from a workstation (see the README). The database is `DATABASE_URL`, or the secret named
//! by `DATABASE_SECRET_ARN` (see `adapters::config::DatabaseSource`). On AWS the `migrate`
//! Lambda applies the same migrations on every deploy.

use std::time::Duration;

use adapters::config::{database_url_from_env, redact_url};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    adapters::telemetry::init();
    // Without either variable the config's local default would apply; migrating a database
    // nobody named is a mistake here.
    if std::env::var_os("DATABASE_URL").is_none()
        && std::env::var_os("DATABASE_SECRET_ARN").is_none()
    {
        anyhow::bail!("neither DATABASE_URL nor DATABASE_SECRET_ARN is set");
    }
    let url = database_url_from_env().await?;
    let version = adapters::schema::apply_migrations(&url, CONNECT_TIMEOUT).await?;
    tracing::info!(database = %redact_url(&url), version, "migrations applied");
    Ok(())
}
