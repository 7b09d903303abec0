//! One lazily connected Redis connection manager, as the cache and the trigger index use it:
//! nothing connects at init (lean Lambda start), the first command connects, and a Redis that
//! does not answer fails fast with a dependency error instead of hanging the caller.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::error::DependencyError;

pub struct LazyRedis {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    response_timeout: Duration,
}

impl LazyRedis {
    /// Parses `url`; connects on first use. Commands taking longer than `response_timeout`
    /// fail.
    pub fn new(url: &str, response_timeout: Duration) -> Result<LazyRedis, DependencyError> {
        crate::tls::install_crypto_provider();
        Ok(LazyRedis {
            client: redis::Client::open(url).map_err(DependencyError::redis)?,
            conn: OnceCell::new(),
            response_timeout,
        })
    }

    /// `DEL keys`: how many of them existed.
    pub async fn del(&self, keys: impl redis::ToRedisArgs) -> Result<i64, DependencyError> {
        let mut c = self.conn().await?;
        redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    /// The connection (a cheap clone of the shared manager), connecting the first time.
    pub async fn conn(&self) -> Result<ConnectionManager, DependencyError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(self.response_timeout)
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(DependencyError::redis)?;
        Ok(conn.clone())
    }
}
