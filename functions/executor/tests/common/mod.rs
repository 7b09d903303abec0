//! What the executor's integration tests share.

use domain::catalog::Catalog;
use executor::Deps;
use uuid::Uuid;

/// The executor's dependencies on the real PostgreSQL and Redis, under a fresh key prefix;
/// no connection table or pushes.
pub async fn deps() -> Deps {
    let redis = testkit::service_env("REDIS_URL");
    let prefix = format!("t{}:", Uuid::new_v4().simple());
    Deps {
        ledger: testkit::ledger().await,
        cache: adapters::cache::Cache::new(&redis, &prefix).unwrap(),
        catalog: Catalog::builtin(),
        params: domain::engine::ExecutionParams::default(),
        watches: adapters::watch::WatchIndex::new(&redis, &prefix).unwrap(),
        connections: adapters::connections::ConnectionTable::new("unused"),
        pusher: None,
        queue: None,
        retries: adapters::config::RetrySettings::default(),
        retention: adapters::config::RetentionSettings { days: 30 },
    }
}
