//! The ledger's schema: applying the migrations of `infra/migrations`, embedded at build
//! time. One function for every way they are applied: the `migrate` binary (`make migrate`)
//! and the `migrate` Lambda (the CloudFormation custom resource run on every deploy).
//!
//! The migrations also create one database role per kind of function (see
//! `infra/migrations/0004_function_roles.sql`), without a password; [`apply_migrations`]
//! then lets each role log in with the password it is given ([`RoleLogin`]), so that every
//! function connects with only the privileges it needs.

use std::fmt;
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
    #[error("letting the role {0} log in: {1}")]
    Login(&'static str, sqlx::Error),
}

/// The database roles the migrations create, one per kind of function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionRole {
    /// api, webhook and ws: read the ledger, write only what they own.
    Api,
    /// The executor: the only writer of orders, fills, positions and cash.
    Executor,
    /// The ingest task: reads resting orders, writes nothing.
    Ingest,
}

impl FunctionRole {
    pub const ALL: [FunctionRole; 3] = [
        FunctionRole::Api,
        FunctionRole::Executor,
        FunctionRole::Ingest,
    ];

    /// The role's name in PostgreSQL, which is also the user name its login uses.
    pub fn role_name(self) -> &'static str {
        match self {
            FunctionRole::Api => "trading_api",
            FunctionRole::Executor => "trading_executor",
            FunctionRole::Ingest => "trading_ingest",
        }
    }

    /// The role's part of the environment variables that configure its login
    /// (`DATABASE_API_URL`, `DATABASE_EXECUTOR_SECRET_ARN`, ...).
    pub fn env_name(self) -> &'static str {
        match self {
            FunctionRole::Api => "API",
            FunctionRole::Executor => "EXECUTOR",
            FunctionRole::Ingest => "INGEST",
        }
    }
}

/// A function role's password, which the migrate step sets. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleLogin {
    pub role: FunctionRole,
    password: String,
}

impl RoleLogin {
    pub fn new(role: FunctionRole, password: impl Into<String>) -> RoleLogin {
        RoleLogin {
            role,
            password: password.into(),
        }
    }
}

impl fmt::Debug for RoleLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleLogin")
            .field("role", &self.role)
            .field("password", &"***")
            .finish()
    }
}

/// The newest migration version of this build (0 if it has none).
pub fn latest_version() -> i64 {
    crate::ledger::MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

/// Applies every migration of this build that `database_url` lacks, on one connection, lets
/// each of `logins` log in with its password, and returns [`latest_version`]. Safe to repeat and to run concurrently (sqlx takes an advisory
/// lock). A database that already has migrations this build does not know is accepted: that
/// is a rollback to an older build, which must keep working on the newer (expand-only)
/// schema rather than fail the deploy's rollback.
pub async fn apply_migrations(
    database_url: &str,
    connect_timeout: Duration,
    logins: &[RoleLogin],
) -> Result<i64, SchemaError> {
    crate::tls::install_crypto_provider();
    let options = PgConnectOptions::from_str(database_url).map_err(SchemaError::Url)?;
    let mut connection =
        tokio::time::timeout(connect_timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| SchemaError::ConnectTimeout(connect_timeout))?
            .map_err(SchemaError::Connect)?;
    migrator().run(&mut connection).await?;
    for login in logins {
        enable_login_retrying(&mut connection, login)
            .await
            .map_err(|e| SchemaError::Login(login.role.role_name(), e))?;
    }
    // A failed close only loses the goodbye message; the schema is in place.
    if let Err(e) = connection.close().await {
        tracing::warn!(error = %e, "closing the migration connection");
    }
    Ok(latest_version())
}

/// [`enable_login`], again when another session altered the same role at the same moment
/// (roles belong to the cluster: migrations of two databases race on them, and PostgreSQL
/// answers the loser "tuple concurrently updated").
async fn enable_login_retrying(
    connection: &mut PgConnection,
    login: &RoleLogin,
) -> Result<(), sqlx::Error> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 1;
    loop {
        match enable_login(connection, login).await {
            Err(sqlx::Error::Database(e))
                if attempt < ATTEMPTS && e.code().as_deref() == Some("XX000") =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            outcome => return outcome,
        }
    }
}

/// Lets the role log in with the login's password (again: the password may have been
/// rotated). The server gets a SCRAM-SHA-256 verifier, never the password, so a statement log
/// cannot leak it.
async fn enable_login(connection: &mut PgConnection, login: &RoleLogin) -> Result<(), sqlx::Error> {
    let verifier = postgres_protocol::password::scram_sha_256(login.password.as_bytes());
    // ALTER ROLE takes no bind parameters: the server's format() quotes name and verifier.
    let statement: String = sqlx::query_scalar(
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
    )
    .bind(login.role.role_name())
    .bind(verifier)
    .fetch_one(&mut *connection)
    .await?;
    sqlx::raw_sql(&statement).execute(connection).await?;
    Ok(())
}

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../../infra/migrations");
    migrator.set_ignore_missing(true);
    migrator
}
