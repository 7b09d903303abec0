//! The WebSocket connection table (DynamoDB, on demand): one item per open connection, keyed
//! by `connection_id`, with a global secondary index `by_account` on `account_id` and a TTL
//! attribute `ttl` (2 h, API Gateway's maximum connection time).
//!
//! DynamoDB deletes expired items up to days late, so every read here drops items whose
//! `ttl` has passed.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use domain::realtime::Connection;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::error::DependencyError;

/// The name of the index on `account_id` (template.yaml defines the same).
pub const BY_ACCOUNT_INDEX: &str = "by_account";

pub struct ConnectionTable {
    table: String,
    client: OnceCell<Client>,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn to_item(c: &Connection) -> Item {
    let mut item = HashMap::from([
        ("connection_id".to_string(), s(&c.connection_id)),
        ("account_id".to_string(), s(&c.account_id.to_string())),
        (
            "symbols".to_string(),
            AttributeValue::L(c.symbols.iter().map(|x| s(x)).collect()),
        ),
        ("max_rate_ms".to_string(), n(c.max_rate_ms)),
        ("connected_at".to_string(), n(c.connected_at)),
        ("ttl".to_string(), n(c.ttl)),
    ]);
    if let Some(by) = &c.opened_by {
        item.insert("opened_by".to_string(), s(by));
    }
    item
}

fn from_item(item: &Item) -> Option<Connection> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok());
    Some(Connection {
        connection_id: text("connection_id")?.clone(),
        account_id: text("account_id")?.parse().ok()?,
        symbols: item
            .get("symbols")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|x| x.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        max_rate_ms: num("max_rate_ms")?.parse().ok()?,
        connected_at: num("connected_at")?.parse().ok()?,
        ttl: num("ttl")?.parse().ok()?,
        opened_by: text("opened_by").cloned(),
    })
}

fn dynamo<E>(e: aws_sdk_dynamodb::error::SdkError<E>) -> DependencyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    DependencyError::dynamodb(aws_sdk_dynamodb::error::DisplayErrorContext(e))
}

impl ConnectionTable {
    /// The SDK client is built on first use, like the queue's.
    pub fn new(table: &str) -> ConnectionTable {
        ConnectionTable {
            table: table.to_string(),
            client: OnceCell::new(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(crate::aws::sdk_config().await) })
            .await
    }

    /// Stores a new connection, or the new subscription of an existing one.
    pub async fn put(&self, c: &Connection) -> Result<(), DependencyError> {
        self.client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(c)))
            .send()
            .await
            .map_err(dynamo)?;
        Ok(())
    }

    /// Replaces the subscription of a connection that is still in the table; `false` when it
    /// is gone (a subscribe racing its own disconnect must not bring the item back).
    pub async fn update(&self, c: &Connection) -> Result<bool, DependencyError> {
        let r = self
            .client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(c)))
            .condition_expression("attribute_exists(connection_id)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(dynamo(e)),
        }
    }

    /// The connection, unless it is gone or expired at `now_ms`.
    pub async fn get(
        &self,
        connection_id: &str,
        now_ms: i64,
    ) -> Result<Option<Connection>, DependencyError> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .key("connection_id", s(connection_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)?;
        Ok(out
            .item()
            .and_then(from_item)
            .filter(|c| !c.is_expired(now_ms)))
    }

    /// Deletes the item; deleting one that is gone is not an error.
    pub async fn delete(&self, connection_id: &str) -> Result<(), DependencyError> {
        self.client()
            .await
            .delete_item()
            .table_name(&self.table)
            .key("connection_id", s(connection_id))
            .send()
            .await
            .map_err(dynamo)?;
        Ok(())
    }

    /// The live connections of an account (the `by_account` index; eventually consistent,
    /// as every GSI read is).
    pub async fn by_account(
        &self,
        account_id: Uuid,
        now_ms: i64,
    ) -> Result<Vec<Connection>, DependencyError> {
        let items = self
            .client()
            .await
            .query()
            .table_name(&self.table)
            .index_name(BY_ACCOUNT_INDEX)
            .key_condition_expression("account_id = :a")
            .expression_attribute_values(":a", s(&account_id.to_string()))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo)?;
        Ok(live(&items, now_ms))
    }

    /// Every live connection: what the fan-out index starts from. One paginated scan at
    /// start; after that the index follows change notifications.
    pub async fn scan(&self, now_ms: i64) -> Result<Vec<Connection>, DependencyError> {
        let items = self
            .client()
            .await
            .scan()
            .table_name(&self.table)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo)?;
        Ok(live(&items, now_ms))
    }
}

/// The readable, unexpired connections among `items`.
fn live(items: &[Item], now_ms: i64) -> Vec<Connection> {
    items
        .iter()
        .filter_map(from_item)
        .filter(|c| !c.is_expired(now_ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let mut c = Connection::new("L0SM9cOFvHcCIhw=", Uuid::new_v4(), 1_700_000_000_123);
        c.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
        c.max_rate_ms = 250;
        assert_eq!(from_item(&to_item(&c)), Some(c.clone()));
        c.symbols.clear();
        assert_eq!(from_item(&to_item(&c)), Some(c));
        assert_eq!(from_item(&HashMap::new()), None);
    }
}
