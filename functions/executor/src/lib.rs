//! The `executor` Lambda: the only writer of the ledger. It takes batches of trade commands
//! from the SQS FIFO queue and applies each in one Postgres transaction, idempotent on its
//! command id.
//!
//! FIFO-safe partial batch failure: message groups (accounts) are processed concurrently,
//! each group strictly in order; at the first failure in a group, that message and every
//! later message of the group are reported in `batchItemFailures`, so nothing runs ahead of
//! a command that must be retried.

use std::collections::HashMap;

use adapters::cache::Cache;
use adapters::config::Config;
use adapters::ledger::{ExecOutcome, Ledger};
use adapters::{now_ms, DependencyError};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsMessage};
use domain::catalog::Catalog;
use domain::command::Command;
use domain::execution::ExecutionParams;

pub struct Deps {
    pub ledger: Ledger,
    pub cache: Cache,
    pub catalog: &'static Catalog,
    pub params: ExecutionParams,
}

impl Deps {
    pub fn from_config(config: &Config) -> anyhow::Result<Deps> {
        Ok(Deps {
            ledger: Ledger::connect_lazy(&config.database_url, config.database_max_connections)?,
            cache: Cache::new(&config.redis_url, &config.key_prefix)?,
            catalog: Catalog::builtin(),
            params: config.execution_params(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("message has no body")]
    NoBody,
    #[error("message body is not a command: {0}")]
    Malformed(String),
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// The SQS batch failed as a whole (Lambda retries every message): only when a record has no
/// message id, since an empty identifier in `batchItemFailures` would fail it anyway.
#[derive(Debug, thiserror::Error)]
#[error("record without a messageId in the batch")]
pub struct BatchError;

/// Applies one command. A redelivered command changes nothing.
pub async fn apply(deps: &Deps, command: &Command) -> Result<ExecOutcome, CommandError> {
    match command {
        Command::PlaceOrder { command_id, order } => {
            let inst = match deps.catalog.get(&order.symbol) {
                Some(i) => i.clone(),
                None => {
                    return Err(CommandError::Malformed(format!(
                        "unknown symbol {}",
                        order.symbol
                    )))
                }
            };
            let quote = deps.cache.quote(&order.symbol).await?;
            let outcome = deps
                .ledger
                .place_order(
                    *command_id,
                    order,
                    &inst,
                    quote.as_ref(),
                    now_ms(),
                    &deps.params,
                )
                .await?;
            // The ledger holds the order now; its pending copy may go. Failing to remove it is
            // harmless (readers prefer the ledger and the copy expires), so it is not retried.
            if let Err(e) = deps
                .cache
                .clear_pending_order(order.account_id, order.id)
                .await
            {
                tracing::warn!(order_id = %order.id, error = %e, "could not clear the pending copy");
            }
            Ok(outcome)
        }
        Command::CancelOrder {
            command_id,
            account_id,
            order_id,
        } => Ok(deps
            .ledger
            .cancel_order(*command_id, *account_id, *order_id)
            .await?),
    }
}

fn parse(record: &SqsMessage) -> Result<Command, CommandError> {
    let body = record.body.as_deref().ok_or(CommandError::NoBody)?;
    serde_json::from_str(body).map_err(|e| CommandError::Malformed(e.to_string()))
}

async fn run_group(deps: &Deps, records: Vec<&SqsMessage>) -> Vec<String> {
    let mut failed = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let id = record.message_id.clone().unwrap_or_default();
        let result = match parse(record) {
            Ok(cmd) => apply(deps, &cmd).await.map(|o| (cmd, o)),
            Err(e) => Err(e),
        };
        match result {
            Ok((cmd, outcome)) => {
                let status = outcome
                    .order
                    .as_ref()
                    .map(|o| o.status.as_str())
                    .unwrap_or("-");
                tracing::info!(message_id = %id, command_id = %cmd.command_id(), status, duplicate = outcome.duplicate, "applied");
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, later = records.len() - i - 1, "command failed; it and the rest of its group will be retried");
                failed.extend(records[i..].iter().filter_map(|r| r.message_id.clone()));
                break;
            }
        }
    }
    failed
}

/// Handles one SQS batch: groups concurrently, each in order, FIFO-safe failure reporting.
pub async fn handle_batch(
    deps: &Deps,
    records: &[SqsMessage],
) -> Result<SqsBatchResponse, BatchError> {
    if records
        .iter()
        .any(|r| r.message_id.as_deref().unwrap_or("").is_empty())
    {
        return Err(BatchError);
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<&SqsMessage>> = HashMap::new();
    for r in records {
        let group = r
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        if !groups.contains_key(&group) {
            order.push(group.clone());
        }
        groups.entry(group).or_default().push(r);
    }
    let runs = order
        .into_iter()
        .filter_map(|g| groups.remove(&g))
        .map(|recs| run_group(deps, recs));
    let failures: Vec<String> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut response = SqsBatchResponse::default();
    // Report in the batch's own order.
    for r in records {
        if let Some(id) = r
            .message_id
            .as_deref()
            .filter(|id| failures.iter().any(|f| f == id))
        {
            response.add_failure(id);
        }
    }
    Ok(response)
}
