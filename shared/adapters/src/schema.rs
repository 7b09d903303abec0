//! The ledger's schema: applying the migrations of `infra/migrations`, embedded at build
//! time. One function for every way they are applied: the `migrate` binary (`make migrate`)
//! and the `migrate` Lambda (the CloudFormation custom resource run on every deploy).

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database URL: {0}")]
    Url(sqlx::Error),
    #[error("connecting to the database timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("connecting to the database: {0}")]
    Connect(sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] MigrateError),
}

/// The newest migration version of this build (0 if it has none).
pub fn latest_version() -> i64 {
    crate::ledger::MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

/// Applies every migration of this build that `database_url` lacks, on one connection, and
/// returns [`latest_version`]. Safe to repeat and to run concurrently (sqlx takes an advisory
/// lock). A database that already has migrations this build does not know is accepted: that
/// is a rollback to an older build, which must keep working on the newer (expand-only)
/// schema rather than fail the deploy's rollback.
pub async fn apply_migrations(
    database_url: &str,
    connect_timeout: Duration,
) -> Result<i64, SchemaError> {
    let options = PgConnectOptions::from_str(database_url).map_err(SchemaError::Url)?;
    let mut connection =
        tokio::time::timeout(connect_timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| SchemaError::ConnectTimeout(connect_timeout))?
            .map_err(SchemaError::Connect)?;
    migrator().run(&mut connection).await?;
    // A failed close only loses the goodbye message; the schema is in place.
    if let Err(e) = connection.close().await {
        tracing::warn!(error = %e, "closing the migration connection");
    }
    Ok(latest_version())
}

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../../infra/migrations");
    migrator.set_ignore_missing(true);
    migrator
}
