//! Applies the ledger migrations: `make migrate` locally, and the same binary against Aurora
//! from a workstation (see the README). The database is `DATABASE_URL`, or the secret named
//! by `DATABASE_SECRET_ARN` (see `adapters::config::DatabaseSource`). On AWS the `migrate`
//! Lambda applies the same migrations on every deploy.
//!
//! It also lets the function roles log in (`DATABASE_API_URL`, `DATABASE_EXECUTOR_URL`,
//! `DATABASE_INGEST_URL` locally, or their `_SECRET_ARN` forms: see
//! `adapters::config::role_login_sources`).

use std::time::Duration;

use adapters::config::{redact_url, role_logins_from_env, DatabaseSource};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    adapters::telemetry::init();
    // Without either variable the config's local default would apply; migrating a database
    // nobody named is a mistake here.
    let Some(source) = DatabaseSource::configured()? else {
        anyhow::bail!("neither DATABASE_URL nor DATABASE_SECRET_ARN is set");
    };
    let url = source.resolve().await?;
    let logins = role_logins_from_env().await?;
    let version = adapters::schema::apply_migrations(&url, CONNECT_TIMEOUT, &logins).await?;
    let roles: Vec<_> = logins.iter().map(|l| l.role.role_name()).collect();
    tracing::info!(database = %redact_url(&url), version, ?roles, "migrations applied");
    Ok(())
}
