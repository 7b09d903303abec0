//! Configuration from the environment, read once at start. Every variable is documented
//! in the README.
//!
//! The ledger's connection URL is either given (`DATABASE_URL`, locally and in tests) or
//! built from a Secrets Manager secret (`DATABASE_SECRET_ARN`, on AWS): see
//! [`DatabaseSource`]. [`Config::load`] resolves it; [`Config::from_env`] reads the
//! environment only and never calls AWS.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::schema::{FunctionRole, RoleLogin};

/// The configuration of a Lambda function, in sections. `Debug` masks the database
/// password (see [`DatabaseSettings`]).
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub queue: QueueSettings,
    pub trading: TradingSettings,
    pub sessions: SessionSettings,
    pub connections: ConnectionsSettings,
    pub websocket: WebSocketLimits,
    pub rates: RateSettings,
    pub retention: RetentionSettings,
    pub cors: CorsSettings,
}

/// The ledger.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// The ledger's connection URL: `DATABASE_URL`, or, with [`Config::load`] and
    /// `DATABASE_SECRET_ARN` set, the URL built from that secret (see [`DatabaseSource`]).
    pub url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 5): pool size per process.
    pub max_connections: u32,
}

/// Every field, the URL without its password: a logged config must not leak it.
impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Redis: prices, sessions, pending orders, the trigger index, notifications.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `REDIS_URL` (default `redis://127.0.0.1:6379/`); with [`RedisSettings::load`] and
    /// `REDIS_SECRET_ARN` set, with that secret's user and password in it.
    pub url: String,
    /// `KEY_PREFIX` (default empty): prefix of every Redis key, so deployments or test runs
    /// can share one Redis.
    pub key_prefix: String,
}

/// The command queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// `COMMANDS_QUEUE_URL`: the SQS FIFO queue of trade commands (none: nowhere to send).
    pub url: Option<String>,
    /// How the executor spaces the deliveries of a command it could not apply.
    pub retries: RetrySettings,
}

/// The executor's retry schedule (DEPLOY.md, "Retries and the dead-letter queue", has the
/// arithmetic). A command that failed because a dependency was out of reach is hidden for a
/// growing time, so an outage of an hour uses up fewer deliveries than the queue allows; a
/// command that is itself bad is hidden briefly, so it reaches the dead-letter queue within
/// minutes and its account's later commands wait no longer than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// `COMMAND_MAX_RECEIVES` (default 20): the queue's `maxReceiveCount`; the delivery with
    /// this count is the last, and a command failing on it is recorded as dead-lettered.
    pub max_receives: u32,
    /// `COMMAND_OUTAGE_RETRY_SECS` (default 15): the hiding after the first delivery that
    /// failed on an outage; it doubles with every further delivery...
    pub outage_first_secs: u32,
    /// `COMMAND_OUTAGE_RETRY_MAX_SECS` (default 300): ...up to this.
    pub outage_max_secs: u32,
    /// `COMMAND_BAD_RETRY_SECS` (default 5): the hiding after a delivery that failed on the
    /// command itself.
    pub bad_secs: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_receives: 20,
            outage_first_secs: 15,
            outage_max_secs: 300,
            bad_secs: 5,
        }
    }
}

impl RetrySettings {
    /// How long to hide a command after its `receive_count`-th delivery failed on an outage:
    /// `outage_first_secs · 2^(n-1)`, at most `outage_max_secs` (and SQS's 12 hours).
    pub fn outage_hiding_secs(&self, receive_count: u32) -> u32 {
        let doublings = receive_count.saturating_sub(1).min(31);
        let grown = u64::from(self.outage_first_secs).saturating_mul(1u64 << doublings);
        grown.min(u64::from(self.outage_max_secs)).min(43_200) as u32
    }

    /// The longest an outage can last and every command still apply once it ends: a
    /// command first delivered when the outage began has its last delivery after the
    /// hidings of all the deliveries before it.
    pub fn outage_covered_secs(&self) -> u64 {
        (1..self.max_receives)
            .map(|n| u64::from(self.outage_hiding_secs(n)))
            .sum()
    }
}

impl QueueSettings {
    /// The URL, empty when unset (a client that fails on first use).
    pub fn url_or_empty(&self) -> &str {
        self.url.as_deref().unwrap_or_default()
    }
}

/// Paper execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradingSettings {
    /// `FEE_BPS` (default 10): paper fee in basis points of the notional.
    pub fee_bps: Decimal,
    /// `MAX_PRICE_AGE_MS` (default 5000): an older price is no price.
    pub max_price_age_ms: i64,
    /// `INITIAL_CASH` (default 100000): paper USDT of a new account.
    pub initial_cash: Decimal,
}

impl TradingSettings {
    pub fn execution_params(&self) -> domain::engine::ExecutionParams {
        domain::engine::ExecutionParams {
            fee_bps: self.fee_bps,
            max_price_age_ms: self.max_price_age_ms,
        }
    }
}

/// Login sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// `SESSION_TTL_SECS` (default 86400): sliding expiry of login sessions.
    pub ttl_secs: u64,
    /// `SESSION_MAX_LIFETIME_SECS` (default 604800, 7 days): a session ends this long after
    /// login however often it is used.
    pub max_lifetime_secs: u64,
}

/// The WebSocket connections and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionsSettings {
    /// `CONNECTIONS_TABLE` (default `connections`): the DynamoDB WebSocket connection table.
    pub table: String,
    /// `WS_MANAGEMENT_URL`: the API Gateway management endpoint (`@connections`), stage
    /// included; none when no WebSocket API is deployed.
    pub management_url: Option<String>,
}

/// Limits of one WebSocket client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// `WS_MAX_CONNECTIONS_PER_USER` (default 5): open WebSocket connections per account.
    pub max_connections_per_user: usize,
    /// `WS_MAX_SYMBOLS` (default 50): symbols one WebSocket connection may subscribe to.
    pub max_symbols: usize,
}

/// How long the bookkeeping tables keep their rows (migration 0006; the executor's scheduled
/// prune deletes older ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// `RETENTION_DAYS` (default 30, at least [`RetentionSettings::MIN_DAYS`]): processed
    /// command ids, webhook deliveries and dead letters older than this are deleted.
    pub days: u32,
}

impl RetentionSettings {
    /// A processed command id must outlive every redelivery: the dead-letter queue keeps a
    /// message 14 days, and a redrive after that has nothing to move.
    pub const MIN_DAYS: u32 = 15;
}

/// Which web origins may call the REST API from a browser (CORS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// `CORS_ALLOWED_ORIGINS` (default none: no browser may call): a comma-separated list of
    /// origins (`https://terminal.example.com`), each exact or with `:*` for any port
    /// (`http://127.0.0.1:*`, as `make dev` sets it).
    pub allowed_origins: Vec<AllowedOrigin>,
    /// `WS_CHECK_ORIGIN` (default false): the WebSocket `$connect` refuses (403) a browser
    /// whose `Origin` is not allowed. Off by default: the WebSocket authenticates by a token
    /// or key the client sends, never by a cookie a browser would add on its own, so a
    /// foreign page gains nothing (no cross-site hijacking); and apps, bots and scripts send
    /// an `Origin` of their own or none (a connection without one is never refused).
    pub check_websocket_origin: bool,
}

impl CorsSettings {
    /// Whether a browser on `origin` (an `Origin` header's value) may call.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o.matches(origin))
    }
}

/// One entry of [`CorsSettings::allowed_origins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `https://terminal.example.com`: this origin only (scheme, host and port as a browser
    /// sends them, without a path).
    Exact(String),
    /// `http://127.0.0.1:*`: this scheme and host on any port (or none).
    AnyPort(String),
}

impl AllowedOrigin {
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            AllowedOrigin::Exact(o) => o == origin,
            AllowedOrigin::AnyPort(base) => {
                origin.strip_prefix(base.as_str()).is_some_and(|rest| {
                    rest.is_empty()
                        || rest.strip_prefix(':').is_some_and(|port| {
                            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                        })
                })
            }
        }
    }
}

impl FromStr for AllowedOrigin {
    type Err = String;

    /// A browser's origin is `scheme://host[:port]`, lowercase, without a path: anything else
    /// would never match, so it is refused at start rather than silently ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (base, any_port) = match s.strip_suffix(":*") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let Some((scheme, host)) = base.split_once("://") else {
            return Err(format!("{s:?}: an origin is scheme://host[:port]"));
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]".contains(&b));
        if !matches!(scheme, "http" | "https") || !host_ok {
            return Err(format!(
                "{s:?}: an origin is http(s)://host[:port] in lowercase, without a path"
            ));
        }
        Ok(if any_port {
            AllowedOrigin::AnyPort(base.to_string())
        } else {
            AllowedOrigin::Exact(base.to_string())
        })
    }
}

/// Per-account token buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// `RATE_REQUESTS_PER_MINUTE` (default 1200) and `RATE_REQUESTS_BURST` (default 200):
    /// the token bucket of every authenticated request of an account; 0 switches it off.
    pub requests: crate::ratelimit::BucketSpec,
    /// `RATE_ORDERS_PER_MINUTE` (default 300) and `RATE_ORDERS_BURST` (default 50): the
    /// token bucket of new and replaced orders of an account (REST and webhooks).
    pub orders: crate::ratelimit::BucketSpec,
    /// `RATE_SIGNUPS_PER_MINUTE` (default 2) and `RATE_SIGNUPS_BURST` (default 20): the
    /// token bucket of sign-ups per source address.
    pub signups: crate::ratelimit::BucketSpec,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// The one reader of the process environment: every variable the platform knows is read
/// here, through the section that owns it (`tests/config.rs` in this crate's tests fails
/// on a second reader). Unset and empty are the same.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A variable parsed as `T`, `default` when unset; an unparsable value is an error naming
/// the variable.
fn parsed<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| ConfigError(format!("{name}={v}: {e}"))),
    }
}

impl Default for RedisSettings {
    /// The local Redis, no prefix: what an unset environment means.
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379/".into(),
            key_prefix: String::new(),
        }
    }
}

/// The URL without its password: a logged config must not leak it.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl RedisSettings {
    /// `REDIS_URL` and `KEY_PREFIX`; never calls AWS (see [`RedisSettings::load`]).
    pub fn from_env() -> RedisSettings {
        let default = RedisSettings::default();
        RedisSettings {
            url: var("REDIS_URL").unwrap_or(default.url),
            key_prefix: var("KEY_PREFIX").unwrap_or(default.key_prefix),
        }
    }

    /// [`RedisSettings::from_env`], and with `REDIS_SECRET_ARN` set (on AWS: the ElastiCache
    /// RBAC user of this function, `{"username", "password"}`) that user's credentials in the
    /// URL. Fetched once: call it once at start.
    pub async fn load() -> Result<RedisSettings, ConfigError> {
        let mut settings = RedisSettings::from_env();
        if let Some(secret_id) = var("REDIS_SECRET_ARN") {
            let secret = fetch_secret_string(&secrets_client().await, &secret_id).await?;
            settings.url = settings.with_credentials_from_secret(&secret_id, &secret)?;
        }
        Ok(settings)
    }

    /// The URL with the secret's `username` and `password` as its user info.
    pub fn with_credentials_from_secret(
        &self,
        secret_id: &str,
        secret_json: &str,
    ) -> Result<String, ConfigError> {
        let secret = CredentialsSecret::parse("cache", secret_id, secret_json)?;
        let username = secret.required("username")?;
        let password = secret.required("password")?;
        let invalid = || ConfigError("REDIS_URL: not a redis:// or rediss:// URL".into());
        let (scheme, rest) = self.url.split_once("://").ok_or_else(invalid)?;
        if scheme != "redis" && scheme != "rediss" {
            return Err(invalid());
        }
        // Any user info already in the URL gives way to the secret's.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        Ok(format!(
            "{scheme}://{}:{}@{host}{path}",
            percent_encode(username),
            percent_encode(password)
        ))
    }
}

impl QueueSettings {
    pub fn from_env() -> Result<QueueSettings, ConfigError> {
        let d = RetrySettings::default();
        Ok(QueueSettings {
            url: var("COMMANDS_QUEUE_URL"),
            retries: RetrySettings {
                max_receives: parsed("COMMAND_MAX_RECEIVES", d.max_receives)?,
                outage_first_secs: parsed("COMMAND_OUTAGE_RETRY_SECS", d.outage_first_secs)?,
                outage_max_secs: parsed("COMMAND_OUTAGE_RETRY_MAX_SECS", d.outage_max_secs)?,
                bad_secs: parsed("COMMAND_BAD_RETRY_SECS", d.bad_secs)?,
            },
        })
    }
}

impl TradingSettings {
    pub fn from_env() -> Result<TradingSettings, ConfigError> {
        Ok(TradingSettings {
            fee_bps: parsed("FEE_BPS", Decimal::TEN)?,
            max_price_age_ms: parsed("MAX_PRICE_AGE_MS", 5_000)?,
            initial_cash: parsed("INITIAL_CASH", Decimal::from(100_000))?,
        })
    }
}

impl ConnectionsSettings {
    pub fn from_env() -> ConnectionsSettings {
        ConnectionsSettings {
            table: var("CONNECTIONS_TABLE").unwrap_or_else(|| "connections".into()),
            management_url: var("WS_MANAGEMENT_URL"),
        }
    }
}

/// `DATABASE_URL`, the ledger's URL as given.
fn database_url_var() -> Option<String> {
    var("DATABASE_URL")
}

/// `LOG_FORMAT=json`: JSON log lines (CloudWatch); anything else, readable lines.
pub fn log_format_json() -> bool {
    var("LOG_FORMAT").as_deref() == Some("json")
}

impl Config {
    /// The configuration of a deployed function: [`Config::from_env`], then the database URL
    /// resolved by [`database_url_from_env`] (one Secrets Manager call when
    /// `DATABASE_SECRET_ARN` is set).
    pub async fn load() -> Result<Config, ConfigError> {
        let mut config = Config::from_env()?;
        config.database.url = database_url_from_env().await?;
        config.redis = RedisSettings::load().await?;
        Ok(config)
    }

    /// The environment only, without AWS calls: the database URL is `DATABASE_URL` as given.
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            database: DatabaseSettings {
                url: database_url_var().unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
                max_connections: parsed("DATABASE_MAX_CONNECTIONS", 5)?,
            },
            redis: RedisSettings::from_env(),
            queue: QueueSettings::from_env()?,
            trading: TradingSettings::from_env()?,
            sessions: SessionSettings {
                ttl_secs: parsed("SESSION_TTL_SECS", 86_400)?,
                max_lifetime_secs: parsed("SESSION_MAX_LIFETIME_SECS", 604_800)?,
            },
            connections: ConnectionsSettings::from_env(),
            websocket: WebSocketLimits {
                max_connections_per_user: parsed("WS_MAX_CONNECTIONS_PER_USER", 5)?,
                max_symbols: parsed("WS_MAX_SYMBOLS", domain::realtime::DEFAULT_MAX_SYMBOLS)?,
            },
            retention: {
                let days = parsed("RETENTION_DAYS", 30)?;
                if days < RetentionSettings::MIN_DAYS {
                    return Err(ConfigError(format!(
                        "RETENTION_DAYS={days}: at least {} (processed commands must outlive the dead-letter queue's 14 days)",
                        RetentionSettings::MIN_DAYS
                    )));
                }
                RetentionSettings { days }
            },
            cors: CorsSettings {
                allowed_origins: match var("CORS_ALLOWED_ORIGINS") {
                    None => Vec::new(),
                    Some(v) => v
                        .split(',')
                        .filter(|o| !o.trim().is_empty())
                        .map(|o| o.parse())
                        .collect::<Result<_, String>>()
                        .map_err(|e| ConfigError(format!("CORS_ALLOWED_ORIGINS: {e}")))?,
                },
                check_websocket_origin: parsed("WS_CHECK_ORIGIN", false)?,
            },
            rates: RateSettings {
                requests: crate::ratelimit::BucketSpec {
                    burst: parsed("RATE_REQUESTS_BURST", 200)?,
                    per_minute: parsed("RATE_REQUESTS_PER_MINUTE", 1200)?,
                },
                orders: crate::ratelimit::BucketSpec {
                    burst: parsed("RATE_ORDERS_BURST", 50)?,
                    per_minute: parsed("RATE_ORDERS_PER_MINUTE", 300)?,
                },
                signups: crate::ratelimit::BucketSpec {
                    burst: parsed("RATE_SIGNUPS_BURST", 20)?,
                    per_minute: parsed("RATE_SIGNUPS_PER_MINUTE", 2)?,
                },
            },
        })
    }

    pub fn execution_params(&self) -> domain::engine::ExecutionParams {
        self.trading.execution_params()
    }
}

/// The ledger's connection URL from the environment (see [`DatabaseSource::from_env`]): the
/// Secrets Manager secret is fetched once per call, so call it once at start.
pub async fn database_url_from_env() -> Result<String, ConfigError> {
    DatabaseSource::from_env()?.resolve().await
}

/// Where the ledger's connection URL comes from.
#[derive(Clone)]
pub enum DatabaseSource {
    /// `DATABASE_URL`, used as given (default
    /// `postgres://trading:trading@127.0.0.1:5432/trading`).
    Url(String),
    /// `DATABASE_SECRET_ARN` is set: the URL is built from that secret.
    Secret(DatabaseSecretSource),
}

/// A database secret in Secrets Manager in the shape RDS writes (a JSON object with
/// `username`, `password` and usually `host`, `port`, `dbname`), plus the environment's
/// overrides of its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSecretSource {
    /// `DATABASE_SECRET_ARN`: the secret's ARN (or name).
    pub secret_id: String,
    /// `DATABASE_HOST`: the host to connect to, typically the RDS Proxy endpoint; it wins over
    /// the secret's `host` (the cluster's own endpoint). Required when the secret has none.
    pub host: Option<String>,
    /// `DATABASE_PORT`: wins over the secret's `port`; default 5432.
    pub port: Option<u16>,
    /// `DATABASE_NAME`: wins over the secret's `dbname`; default `trading`.
    pub dbname: Option<String>,
    /// `DATABASE_SSL_MODE` (default `verify-full`): the URL's `sslmode`. RDS Proxy refuses
    /// connections without TLS; `verify-full` also checks that its certificate chains to a
    /// trusted root and names the host, so a machine in the path cannot pose as the proxy.
    /// RDS Proxy's certificates come from ACM (Amazon Trust Services roots), which the
    /// bundled public roots (webpki-roots) trust: no CA file is needed for it.
    pub ssl_mode: String,
    /// `DATABASE_SSL_ROOT_CERT`: a PEM file of more roots to trust (the URL's
    /// `sslrootcert`), e.g. the RDS CA bundle to connect to the cluster directly rather than
    /// through the proxy.
    pub ssl_root_cert: Option<String>,
}

const DEFAULT_DATABASE_URL: &str = "postgres://trading:trading@127.0.0.1:5432/trading";
const DEFAULT_DATABASE_NAME: &str = "trading";
const DEFAULT_DATABASE_PORT: u16 = 5432;
const DEFAULT_SSL_MODE: &str = "verify-full";
/// The `sslmode` values libpq and sqlx know.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl DatabaseSource {
    /// `DATABASE_SECRET_ARN` set: a secret source with `DATABASE_HOST`, `DATABASE_PORT`,
    /// `DATABASE_NAME` and `DATABASE_SSL_MODE`; otherwise `DATABASE_URL` (default the local
    /// database).
    pub fn from_env() -> Result<DatabaseSource, ConfigError> {
        Ok(Self::configured()?.unwrap_or_else(|| DatabaseSource::Url(DEFAULT_DATABASE_URL.into())))
    }

    /// As [`DatabaseSource::from_env`], but `None` when neither `DATABASE_URL` nor
    /// `DATABASE_SECRET_ARN` is set: for tools and services that must not fall back to the
    /// local default.
    pub fn configured() -> Result<Option<DatabaseSource>, ConfigError> {
        let Some(secret_id) = var("DATABASE_SECRET_ARN") else {
            return Ok(database_url_var().map(DatabaseSource::Url));
        };
        let port = match var("DATABASE_PORT") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|e| ConfigError(format!("DATABASE_PORT={v}: {e}")))?,
            ),
        };
        let ssl_mode = var("DATABASE_SSL_MODE").unwrap_or_else(|| DEFAULT_SSL_MODE.into());
        if !SSL_MODES.contains(&ssl_mode.as_str()) {
            return Err(ConfigError(format!(
                "DATABASE_SSL_MODE={ssl_mode}: not one of {}",
                SSL_MODES.join(", ")
            )));
        }
        Ok(Some(DatabaseSource::Secret(DatabaseSecretSource {
            secret_id,
            host: var("DATABASE_HOST"),
            port,
            dbname: var("DATABASE_NAME"),
            ssl_mode,
            ssl_root_cert: var("DATABASE_SSL_ROOT_CERT"),
        })))
    }

    /// The connection URL; fetches the secret with a client from the default AWS
    /// configuration (which honours `AWS_ENDPOINT_URL`, as every SDK client here does).
    pub async fn resolve(&self) -> Result<String, ConfigError> {
        match self {
            DatabaseSource::Url(url) => Ok(url.clone()),
            DatabaseSource::Secret(source) => source.fetch_url(&secrets_client().await).await,
        }
    }
}

/// Never shows a password: a URL's is masked.
impl fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseSource::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            DatabaseSource::Secret(source) => f.debug_tuple("Secret").field(source).finish(),
        }
    }
}

/// A Secrets Manager client from the default AWS configuration, whose time bounds
/// (`crate::aws::timeouts`) make a function without a route to the service fail at start
/// with a clear error instead of hanging until its timeout.
pub async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(crate::aws::sdk_config().await)
}

impl DatabaseSecretSource {
    /// Fetches the secret's current value and builds the URL from it.
    pub async fn fetch_url(
        &self,
        client: &aws_sdk_secretsmanager::Client,
    ) -> Result<String, ConfigError> {
        let secret = fetch_secret_string(client, &self.secret_id).await?;
        self.url_from_secret(&secret)
    }

    /// The URL from the secret's JSON and this source's overrides. User, password and
    /// database name are percent-encoded, so any character in them survives. Errors name the
    /// secret and the field, never a value.
    pub fn url_from_secret(&self, secret_json: &str) -> Result<String, ConfigError> {
        let secret = CredentialsSecret::parse("database", &self.secret_id, secret_json)?;
        let username = secret.required("username")?;
        let password = secret.required("password")?;
        let host = match &self.host {
            Some(host) => host.as_str(),
            None => secret
                .text("host")?
                .ok_or_else(|| secret.invalid("has no `host` and DATABASE_HOST is not set"))?,
        };
        let port = match self.port {
            Some(port) => port,
            None => secret.port()?,
        };
        let dbname = match &self.dbname {
            Some(name) => name.as_str(),
            None => secret.text("dbname")?.unwrap_or(DEFAULT_DATABASE_NAME),
        };
        Ok(postgres_url(
            username,
            password,
            host,
            port,
            dbname,
            &self.ssl_mode,
            self.ssl_root_cert.as_deref(),
        ))
    }
}

/// The `SecretString` of a secret.
async fn fetch_secret_string(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<String, ConfigError> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            ConfigError(format!(
                "reading the secret {secret_id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            ))
        })?;
    output.secret_string().map(str::to_string).ok_or_else(|| {
        ConfigError(format!(
            "the database secret {secret_id} has no SecretString"
        ))
    })
}

/// A credentials secret's JSON object (RDS's shape: `username`, `password`, ...). Errors name
/// the secret and the field, never a value.
struct CredentialsSecret<'a> {
    /// What the secret is for, for errors: "database", "cache".
    purpose: &'static str,
    secret_id: &'a str,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl<'a> CredentialsSecret<'a> {
    fn parse(
        purpose: &'static str,
        secret_id: &'a str,
        secret_json: &str,
    ) -> Result<CredentialsSecret<'a>, ConfigError> {
        // Parsed as a map rather than into a struct: serde's type errors quote the value,
        // which could be the password.
        match serde_json::from_str(secret_json) {
            Ok(fields) => Ok(CredentialsSecret {
                purpose,
                secret_id,
                fields,
            }),
            Err(_) => Err(ConfigError(format!(
                "the {purpose} secret {secret_id} is not a JSON object"
            ))),
        }
    }

    fn invalid(&self, what: &str) -> ConfigError {
        ConfigError(format!(
            "the {} secret {} {what}",
            self.purpose, self.secret_id
        ))
    }

    /// A string field; absent, null and empty are `None`.
    fn text(&self, name: &str) -> Result<Option<&str>, ConfigError> {
        match self.fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(&format!("has a `{name}` that is not a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.text(name)?
            .ok_or_else(|| self.invalid(&format!("has no `{name}`")))
    }

    /// `port`, default 5432: RDS writes a number; hand-made secrets often hold a string.
    fn port(&self) -> Result<u16, ConfigError> {
        let not_a_port = || self.invalid("has a `port` that is not a port number");
        match self.fields.get("port") {
            None | Some(serde_json::Value::Null) => Ok(DEFAULT_DATABASE_PORT),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(not_a_port),
            Some(serde_json::Value::String(s)) => s.parse().map_err(|_| not_a_port()),
            Some(_) => Err(not_a_port()),
        }
    }
}

/// Where the migrate step finds a function role's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleLoginSource {
    /// `DATABASE_<ROLE>_SECRET_ARN` (on AWS): a secret in RDS's shape whose `username` is the
    /// role's name; the function connects with the same secret.
    Secret(String),
    /// `DATABASE_<ROLE>_URL` (locally): the URL the function connects with; its user must be
    /// the role's name. Only its password is used here.
    Url(String),
}

/// The function roles the migrate step lets log in: for each role (`API`, `EXECUTOR`,
/// `INGEST`), `DATABASE_<ROLE>_SECRET_ARN` or else `DATABASE_<ROLE>_URL`; a role with
/// neither keeps its password (or stays without a login).
pub fn role_login_sources() -> Vec<(FunctionRole, RoleLoginSource)> {
    FunctionRole::ALL
        .into_iter()
        .filter_map(|role| {
            let name = role.env_name();
            let source = match var(&format!("DATABASE_{name}_SECRET_ARN")) {
                Some(arn) => RoleLoginSource::Secret(arn),
                None => RoleLoginSource::Url(var(&format!("DATABASE_{name}_URL"))?),
            };
            Some((role, source))
        })
        .collect()
}

/// The logins of [`role_login_sources`], secrets fetched (only if there are any).
pub async fn role_logins_from_env() -> Result<Vec<RoleLogin>, ConfigError> {
    let sources = role_login_sources();
    let mut client = None;
    let mut logins = Vec::with_capacity(sources.len());
    for (role, source) in sources {
        let login = match source {
            RoleLoginSource::Url(url) => role_login_from_url(role, &url)?,
            RoleLoginSource::Secret(secret_id) => {
                let client = match &client {
                    Some(client) => client,
                    None => client.insert(secrets_client().await),
                };
                let secret = fetch_secret_string(client, &secret_id).await?;
                role_login_from_secret(role, &secret_id, &secret)?
            }
        };
        logins.push(login);
    }
    Ok(logins)
}

/// The role's login from its secret, whose `username` must be the role's name.
pub fn role_login_from_secret(
    role: FunctionRole,
    secret_id: &str,
    secret_json: &str,
) -> Result<RoleLogin, ConfigError> {
    let secret = CredentialsSecret::parse("database", secret_id, secret_json)?;
    let username = secret.required("username")?;
    if username != role.role_name() {
        return Err(secret.invalid(&format!(
            "has the username {username:?}, not the role {}",
            role.role_name()
        )));
    }
    Ok(RoleLogin::new(role, secret.required("password")?))
}

/// The role's login from the URL its function connects with, whose user must be the role's
/// name.
pub fn role_login_from_url(role: FunctionRole, url: &str) -> Result<RoleLogin, ConfigError> {
    let variable = format!("DATABASE_{}_URL", role.env_name());
    let username = url_username(url).and_then(percent_decode);
    if username.as_deref() != Some(role.role_name()) {
        return Err(ConfigError(format!(
            "{variable}: its user must be {}",
            role.role_name()
        )));
    }
    let password = url_password(url)
        .and_then(percent_decode)
        .ok_or_else(|| ConfigError(format!("{variable}: it has no password")))?;
    Ok(RoleLogin::new(role, password))
}

/// What the migrate step works on: the database (as its owner) and the function roles'
/// logins.
#[derive(Debug, Clone)]
pub struct MigrationTarget {
    /// The owner's URL (`DATABASE_URL` or `DATABASE_SECRET_ARN`).
    pub database_url: String,
    pub logins: Vec<RoleLogin>,
}

/// The [`MigrationTarget`] from the environment; secrets are fetched.
pub async fn migration_target_from_env() -> Result<MigrationTarget, ConfigError> {
    Ok(MigrationTarget {
        database_url: database_url_from_env().await?,
        logins: role_logins_from_env().await?,
    })
}

/// `postgres://user:password@host:port/dbname?sslmode=…[&sslrootcert=…]`, user, password,
/// database name and file percent-encoded.
pub fn postgres_url(
    username: &str,
    password: &str,
    host: &str,
    port: u16,
    dbname: &str,
    ssl_mode: &str,
    ssl_root_cert: Option<&str>,
) -> String {
    // An IPv6 literal needs brackets to be told from the port.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let root_cert = ssl_root_cert
        .map(|file| format!("&sslrootcert={}", percent_encode(file)))
        .unwrap_or_default();
    format!(
        "postgres://{}:{}@{host}:{port}/{}?sslmode={}{root_cert}",
        percent_encode(username),
        percent_encode(password),
        percent_encode(dbname),
        percent_encode(ssl_mode),
    )
}

/// Every byte but the URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`, so the result is
/// safe in any part of a URL. (The `url` crate leaves `%` in user info as is, which would
/// turn a password's `%41` into `A` on decoding.)
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The `user:password` of a `scheme://user:password@host/…` URL, as written.
fn url_userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(userinfo)
}

/// The password of a `scheme://user:password@host/…` URL as written (still percent-encoded),
/// if it has one.
fn url_password(url: &str) -> Option<&str> {
    let (_, password) = url_userinfo(url)?.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// The user of a `scheme://user:password@host/…` URL as written (still percent-encoded).
fn url_username(url: &str) -> Option<&str> {
    let userinfo = url_userinfo(url)?;
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    (!user.is_empty()).then_some(user)
}

/// The URL with its password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some(password) => url.replacen(&format!(":{password}@"), ":***@", 1),
        None => url.to_string(),
    }
}

/// `text` with every occurrence of the password of `database_url` (as written in the URL and
/// percent-decoded) replaced by `***`: for error messages that leave the process, in case a
/// library quoted its connection string.
pub fn scrub_password(text: &str, database_url: &str) -> String {
    let Some(encoded) = url_password(database_url) else {
        return text.to_string();
    };
    let mut scrubbed = text.replace(encoded, "***");
    if let Some(decoded) = percent_decode(encoded) {
        if !decoded.is_empty() {
            scrubbed = scrubbed.replace(&decoded, "***");
        }
    }
    scrubbed
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowed_origin_matches_only_what_a_browser_on_it_sends() {
        let exact: AllowedOrigin = "https://terminal.example.com".parse().unwrap();
        assert!(exact.matches("https://terminal.example.com"));
        for other in [
            "http://terminal.example.com",
            "https://terminal.example.com:8443",
            "https://terminal.example.com.evil.io",
            "https://evil.io",
            "null",
            "",
        ] {
            assert!(!exact.matches(other), "{other}");
        }
        let any_port: AllowedOrigin = "http://127.0.0.1:*".parse().unwrap();
        for ok in [
            "http://127.0.0.1",
            "http://127.0.0.1:3000",
            "http://127.0.0.1:65535",
        ] {
            assert!(any_port.matches(ok), "{ok}");
        }
        for other in [
            "http://127.0.0.1:",
            "http://127.0.0.1:3000x",
            "http://127.0.0.1.evil.io",
            "http://127.0.0.10:3000",
            "https://127.0.0.1:3000",
        ] {
            assert!(!any_port.matches(other), "{other}");
        }
    }

    #[test]
    fn an_origin_that_no_browser_sends_is_refused_at_start() {
        for bad in [
            "terminal.example.com",
            "ftp://x.io",
            "https://x.io/",
            "https://X.io",
            "https://",
            "*",
            "https://x.io/path",
        ] {
            assert!(bad.parse::<AllowedOrigin>().is_err(), "{bad}");
        }
        let settings = CorsSettings {
            allowed_origins: vec![
                "https://a.io".parse().unwrap(),
                "http://localhost:*".parse().unwrap(),
            ],
            check_websocket_origin: false,
        };
        assert!(settings.allows("https://a.io"));
        assert!(settings.allows("http://localhost:5173"));
        assert!(!settings.allows("https://b.io"));
        assert!(!CorsSettings::default().allows("https://a.io"));
    }

    fn source() -> DatabaseSecretSource {
        DatabaseSecretSource {
            secret_id: "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".into(),
            host: None,
            port: None,
            dbname: None,
            ssl_mode: "require".into(),
            ssl_root_cert: None,
        }
    }

    const RDS_SECRET: &str = r#"{"username":"ledger","password":"p@ss:w/rd%41?#&= +ü","engine":"postgres","host":"cluster.cluster-abc.us-east-1.rds.amazonaws.com","port":5432,"dbname":"ledgerdb","dbClusterIdentifier":"cluster"}"#;

    #[test]
    fn special_characters_of_the_password_are_percent_encoded() {
        let url = source().url_from_secret(RDS_SECRET).unwrap();
        assert_eq!(
            url,
            "postgres://ledger:p%40ss%3Aw%2Frd%2541%3F%23%26%3D%20%2B%C3%BC@cluster.cluster-abc.us-east-1.rds.amazonaws.com:5432/ledgerdb?sslmode=require"
        );
    }

    #[test]
    fn sqlx_reads_back_the_exact_credentials() {
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        let url = source().url_from_secret(RDS_SECRET).unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_username(), "ledger");
        assert_eq!(
            options.get_host(),
            "cluster.cluster-abc.us-east-1.rds.amazonaws.com"
        );
        assert_eq!(options.get_port(), 5432);
        assert_eq!(options.get_database(), Some("ledgerdb"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        // PgConnectOptions has no password getter: decode it as sqlx does.
        assert_eq!(
            percent_decode(url_password(&url).unwrap()).unwrap(),
            "p@ss:w/rd%41?#&= +ü"
        );
    }

    #[test]
    fn the_environment_overrides_host_port_and_database() {
        let source = DatabaseSecretSource {
            host: Some("proxy.proxy-abc.us-east-1.rds.amazonaws.com".into()),
            port: Some(6432),
            dbname: Some("trading".into()),
            ssl_mode: "verify-full".into(),
            ssl_root_cert: None,
            ..source()
        };
        assert_eq!(
            source.url_from_secret(RDS_SECRET).unwrap(),
            "postgres://ledger:p%40ss%3Aw%2Frd%2541%3F%23%26%3D%20%2B%C3%BC@proxy.proxy-abc.us-east-1.rds.amazonaws.com:6432/trading?sslmode=verify-full"
        );
    }

    #[test]
    fn a_secret_with_credentials_only_takes_defaults_and_needs_a_host() {
        // The shape of an RDS-managed master user secret.
        let secret = r#"{"username":"postgres","password":"secret"}"#;
        let error = source().url_from_secret(secret).unwrap_err().to_string();
        assert!(error.contains("DATABASE_HOST"), "{error}");
        let with_host = DatabaseSecretSource {
            host: Some("proxy.example".into()),
            ..source()
        };
        assert_eq!(
            with_host.url_from_secret(secret).unwrap(),
            "postgres://postgres:secret@proxy.example:5432/trading?sslmode=require"
        );
    }

    #[test]
    fn a_port_may_be_a_string_and_ipv6_hosts_get_brackets() {
        let secret = r#"{"username":"u","password":"p","host":"::1","port":"5433"}"#;
        assert_eq!(
            source().url_from_secret(secret).unwrap(),
            "postgres://u:p@[::1]:5433/trading?sslmode=require"
        );
    }

    #[test]
    fn errors_never_show_the_password() {
        let password = "hunter2-very-secret";
        for secret in [
            format!(r#"{{"username":"u","password":"{password}","port":"{password}","host":"h"}}"#),
            format!(r#"{{"username":"u","password":"{password}","port":{{"x":1}},"host":"h"}}"#),
            format!(r#"{{"username":{{"p":"{password}"}},"password":"{password}"}}"#),
            format!(r#"["{password}"]"#),
            password.to_string(),
            format!(r#"{{"username":"u","password":"{password}""#),
        ] {
            let error = source().url_from_secret(&secret).unwrap_err().to_string();
            assert!(!error.contains(password), "{error}");
            assert!(error.contains(&source().secret_id), "{error}");
        }
    }

    #[test]
    fn passwords_are_redacted_and_scrubbed() {
        let url = "postgres://ledger:p%40ss%3Aw@host:5432/trading?sslmode=require";
        assert_eq!(
            redact_url(url),
            "postgres://ledger:***@host:5432/trading?sslmode=require"
        );
        assert_eq!(
            format!("{:?}", DatabaseSource::Url(url.into())),
            r#"Url("postgres://ledger:***@host:5432/trading?sslmode=require")"#
        );
        assert_eq!(
            scrub_password("failed for p@ss:w and p%40ss%3Aw", url),
            "failed for *** and ***"
        );
        assert_eq!(redact_url("postgres://host/db"), "postgres://host/db");
        let mut config = Config::from_env().unwrap();
        config.database.url = url.into();
        let shown = format!("{config:?}");
        assert!(shown.contains("ledger:***@host"), "{shown}");
        assert!(!shown.contains("p%40ss"), "{shown}");
        assert_eq!(scrub_password("text", "postgres://u@host/db"), "text");
    }

    #[test]
    fn a_role_login_comes_from_its_url_or_its_secret_and_must_name_the_role() {
        let api = FunctionRole::Api;
        let login =
            role_login_from_url(api, "postgres://trading_api:p%40ss@127.0.0.1:5432/x").unwrap();
        assert_eq!(login, RoleLogin::new(api, "p@ss"));
        assert!(!format!("{login:?}").contains("p@ss"));
        for wrong in [
            "postgres://trading_executor:pw@host/db",
            "postgres://pw@host/db",
            "postgres://host/db",
        ] {
            let error = role_login_from_url(api, wrong).unwrap_err().to_string();
            assert!(
                error.contains("DATABASE_API_URL: its user must be trading_api"),
                "{error}"
            );
        }
        let error = role_login_from_url(api, "postgres://trading_api@host/db").unwrap_err();
        assert!(error.to_string().contains("no password"), "{error}");

        let secret = r#"{"username":"trading_executor","password":"s3cret","engine":"postgres"}"#;
        let executor = FunctionRole::Executor;
        assert_eq!(
            role_login_from_secret(executor, "arn:x", secret).unwrap(),
            RoleLogin::new(executor, "s3cret")
        );
        let error = role_login_from_secret(api, "arn:x", secret)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not the role trading_api"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let error =
            role_login_from_secret(api, "arn:x", r#"{"username":"trading_api"}"#).unwrap_err();
        assert!(error.to_string().contains("has no `password`"), "{error}");
    }

    #[test]
    fn the_cache_login_goes_into_the_redis_url_and_never_into_debug_output() {
        let settings = RedisSettings {
            url: "rediss://old:gone@cache.example:6379/0".into(),
            key_prefix: "{trading}:".into(),
        };
        let secret = r#"{"username":"trading-functions","password":"p@ss/w:rd"}"#;
        let url = settings
            .with_credentials_from_secret("arn:c", secret)
            .unwrap();
        assert_eq!(
            url,
            "rediss://trading-functions:p%40ss%2Fw%3Ard@cache.example:6379/0"
        );
        let plain = RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            ..settings.clone()
        };
        assert_eq!(
            plain.with_credentials_from_secret("arn:c", secret).unwrap(),
            "redis://trading-functions:p%40ss%2Fw%3Ard@127.0.0.1:6379"
        );
        let shown = format!(
            "{:?}",
            RedisSettings {
                url,
                ..settings.clone()
            }
        );
        assert!(
            shown.contains("trading-functions:***@cache.example"),
            "{shown}"
        );
        assert!(!shown.contains("p%40ss"), "{shown}");
        let error = settings
            .with_credentials_from_secret("arn:c", r#"{"username":"u"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "configuration: the cache secret arn:c has no `password`"
        );
        let not_redis = RedisSettings {
            url: "http://x".into(),
            ..settings
        };
        assert!(not_redis
            .with_credentials_from_secret("arn:c", secret)
            .is_err());
    }
}

#[cfg(test)]
mod retry_schedule {
    use super::RetrySettings;

    #[test]
    fn the_default_schedule_outlasts_an_hour_of_outage_and_sends_a_bad_command_on_in_minutes() {
        let r = RetrySettings::default();
        let hidings: Vec<u32> = (1..=7).map(|n| r.outage_hiding_secs(n)).collect();
        assert_eq!(hidings, [15, 30, 60, 120, 240, 300, 300]);
        // 15 + 30 + 60 + 120 + 240 + 14 × 300 (deliveries 6 to 19): DEPLOY.md's figure.
        assert_eq!(r.outage_covered_secs(), 4_665);
        assert!(r.outage_covered_secs() >= 3_600);
        // A bad command: 19 hidings of 5 s before its last delivery.
        assert_eq!(u64::from(r.bad_secs) * u64::from(r.max_receives - 1), 95);
    }

    #[test]
    fn hidings_never_overflow_or_pass_sqs_limit() {
        let r = RetrySettings {
            max_receives: u32::MAX,
            outage_first_secs: u32::MAX,
            outage_max_secs: u32::MAX,
            bad_secs: 0,
        };
        assert_eq!(r.outage_hiding_secs(0), 43_200);
        assert_eq!(r.outage_hiding_secs(u32::MAX), 43_200);
    }
}
