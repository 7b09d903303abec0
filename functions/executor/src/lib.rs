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
use adapters::ledger::{CommandInput, ExecOutcome, Ledger};
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

/// Applies one command in its own transaction. A redelivered command changes nothing.
pub async fn apply(deps: &Deps, command: &Command) -> Result<ExecOutcome, CommandError> {
    let mut outcomes = apply_group(deps, std::slice::from_ref(command)).await?;
    Ok(outcomes.remove(0))
}

/// Applies one account's commands, in order, in one transaction: the quotes they need are
/// read in one round trip first, and the pending copies cleared in one round trip after.
pub async fn apply_group(
    deps: &Deps,
    commands: &[Command],
) -> Result<Vec<ExecOutcome>, CommandError> {
    let mut symbols: Vec<String> = commands
        .iter()
        .filter_map(|c| match c {
            Command::PlaceOrder { order, .. } => Some(order.symbol.clone()),
            Command::CancelOrder { .. } => None,
        })
        .collect();
    symbols.sort();
    symbols.dedup();
    let quotes = deps.cache.quotes(&symbols).await?;
    let inputs: Vec<CommandInput> = commands
        .iter()
        .map(|command| match command {
            Command::PlaceOrder { order, .. } => CommandInput {
                command,
                instrument: deps.catalog.get(&order.symbol),
                quote: quotes.get(&order.symbol),
            },
            Command::CancelOrder { .. } => CommandInput {
                command,
                instrument: None,
                quote: None,
            },
        })
        .collect();
    let outcomes = deps
        .ledger
        .apply_commands(&inputs, now_ms(), &deps.params)
        .await?;
    // The ledger holds these orders now; their pending copies may go. Failing to remove them
    // is harmless (readers prefer the ledger and the copies expire), so it is not retried.
    let mut by_account: HashMap<uuid::Uuid, Vec<uuid::Uuid>> = HashMap::new();
    for c in commands {
        if let Command::PlaceOrder { order, .. } = c {
            by_account
                .entry(order.account_id)
                .or_default()
                .push(order.id);
        }
    }
    for (account, ids) in by_account {
        if let Err(e) = deps.cache.clear_pending_orders(account, &ids).await {
            tracing::warn!(%account, error = %e, "could not clear pending copies");
        }
    }
    Ok(outcomes)
}

fn parse(record: &SqsMessage) -> Result<Command, CommandError> {
    let body = record.body.as_deref().ok_or(CommandError::NoBody)?;
    serde_json::from_str(body).map_err(|e| CommandError::Malformed(e.to_string()))
}

/// One message group: every command up to the first malformed message is applied in one
/// transaction. Returns the ids to report: from the malformed message on, or the whole group
/// when the transaction failed (then none of it took effect).
async fn run_group(deps: &Deps, records: Vec<&SqsMessage>) -> Vec<String> {
    let mut commands = Vec::with_capacity(records.len());
    let mut first_bad = records.len();
    for (i, record) in records.iter().enumerate() {
        match parse(record) {
            Ok(c) => commands.push(c),
            Err(e) => {
                let id = record.message_id.as_deref().unwrap_or_default();
                tracing::warn!(message_id = %id, error = %e, later = records.len() - i - 1, "malformed command; it and the rest of its group will be retried");
                first_bad = i;
                break;
            }
        }
    }
    let ids = |from: usize| {
        records[from..]
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect::<Vec<_>>()
    };
    if commands.is_empty() {
        return ids(first_bad);
    }
    match apply_group(deps, &commands).await {
        Ok(outcomes) => {
            for (cmd, o) in commands.iter().zip(&outcomes) {
                let status = o.order.as_ref().map(|o| o.status.as_str()).unwrap_or("-");
                tracing::info!(command_id = %cmd.command_id(), status, duplicate = o.duplicate, "applied");
            }
            ids(first_bad)
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = records.len(), "group failed; none of it applied, all of it will be retried");
            ids(0)
        }
    }
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
