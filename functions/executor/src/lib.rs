//! The `executor` Lambda: the only writer of the ledger. It takes batches of trade commands
//! from the SQS FIFO queue and applies each in one Postgres transaction, idempotent on its
//! command id.
//!
//! Depends on `adapters` (the ledger, cache, trigger index, pushes), `alpaca` (the
//! `trade_updates` it pushes) and `domain`; no crate depends on it, and its `main.rs` only
//! wires.
//!
//! A whole batch applies in one transaction with a fixed number of multi-row statements
//! (see `adapters::ledger::execute`). FIFO-safe partial batch failure: each message group
//! (account) applies in order; a message that cannot apply is reported in
//! `batchItemFailures` with every later message of its group, so nothing runs ahead of a
//! command that must be retried.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod updates;

use std::collections::{HashMap, HashSet};

use adapters::cache::Cache;
use adapters::config::Config;
use adapters::connections::ConnectionTable;
use adapters::ledger::{ExecOutcome, Ledger};
use adapters::push::Pusher;
use adapters::watch::WatchIndex;
use adapters::{now_ms, DependencyError};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsMessage};
use domain::catalog::Catalog;
use domain::command::Command;
use domain::engine::ExecutionParams;
use domain::trigger::Watch;

pub struct Deps {
    pub ledger: Ledger,
    pub cache: Cache,
    pub catalog: &'static Catalog,
    pub params: ExecutionParams,
    /// The trigger index in Redis (a derived copy of the resting orders).
    pub watches: WatchIndex,
    /// The WebSocket connections, for order updates.
    pub connections: ConnectionTable,
    /// `None` without `WS_MANAGEMENT_URL`: no WebSocket API, no order updates.
    pub pusher: Option<Pusher>,
}

impl Deps {
    pub fn from_config(config: &Config) -> anyhow::Result<Deps> {
        Ok(Deps {
            ledger: Ledger::connect_lazy(&config.database.url, config.database.max_connections)?,
            cache: Cache::new(&config.redis.url, &config.redis.key_prefix)?,
            catalog: Catalog::builtin(),
            params: config.execution_params(),
            watches: WatchIndex::new(&config.redis.url, &config.redis.key_prefix)?,
            connections: ConnectionTable::new(&config.connections.table),
            pusher: Pusher::configured(&config.connections),
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
    let mut outcomes = apply_all(deps, std::slice::from_ref(command)).await?;
    Ok(outcomes.remove(0))
}

/// Applies commands in order in one transaction: the quotes they need are read in one round
/// trip first, the ledger takes them in a fixed number of statements, and after the commit
/// the derived copies in Redis follow in one round trip each: pending copies of placed
/// orders are cleared, the trigger index learns which orders rest and which stopped, and
/// the accounts' positions snapshots are replaced; then order updates go to the accounts'
/// WebSocket connections (see [`updates`]).
pub async fn apply_all(
    deps: &Deps,
    commands: &[Command],
) -> Result<Vec<ExecOutcome>, CommandError> {
    let mut symbols: Vec<String> = commands
        .iter()
        .filter_map(|c| match c {
            Command::PlaceOrder { order, .. } => Some(order.spec.symbol.clone()),
            Command::TriggerOrder { symbol, .. } => Some(symbol.clone()),
            Command::CancelOrder { .. } | Command::ExpireOrder { .. } | Command::Flatten { .. } => {
                None
            }
        })
        .collect();
    symbols.sort();
    symbols.dedup();
    // New orders are checked against gross exposure, and a flatten sells every position:
    // both need the quotes of what the account holds.
    let mut exposed: Vec<uuid::Uuid> = commands
        .iter()
        .filter(|c| matches!(c, Command::PlaceOrder { .. } | Command::Flatten { .. }))
        .map(Command::account_id)
        .collect();
    exposed.sort();
    exposed.dedup();
    let (held, quotes) = tokio::join!(
        deps.ledger.held_symbols(&exposed),
        deps.cache.quotes(&symbols)
    );
    let mut quotes = quotes?;
    let more: Vec<String> = held?
        .into_iter()
        .filter(|s| !quotes.contains_key(s))
        .collect();
    if !more.is_empty() {
        quotes.extend(deps.cache.quotes(&more).await?);
    }
    let result = deps
        .ledger
        .apply_commands(commands, &quotes, deps.catalog, now_ms(), &deps.params)
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
    if let Err(e) = deps.cache.clear_pending_many(&by_account).await {
        tracing::warn!(error = %e, "could not clear pending copies");
    }
    update_watches(deps, &result.changed).await;
    updates::publish(deps, &result).await;
    Ok(result.outcomes)
}

/// Tells the trigger index which changed orders now rest on a price and which no longer do.
/// A failure leaves the index behind the ledger until the ingest task rebuilds it; a trigger
/// for an order that is no longer open changes nothing, and one never sent for a new order is
/// sent after the rebuild.
async fn update_watches(deps: &Deps, changed: &[domain::order::Order]) {
    if changed.is_empty() {
        return;
    }
    let mut puts = Vec::new();
    let mut removes = Vec::new();
    for o in changed {
        match Watch::of(o) {
            Some(w) => puts.push(w),
            None => removes.push((o.symbol.clone(), o.id)),
        }
    }
    if let Err(e) = deps.watches.apply(&puts, &removes).await {
        tracing::warn!(error = %e, "could not update the trigger index; it will be rebuilt");
        let _ = deps.watches.drop_all().await;
    }
}

fn parse(record: &SqsMessage) -> Result<Command, CommandError> {
    let body = record.body.as_deref().ok_or(CommandError::NoBody)?;
    serde_json::from_str(body).map_err(|e| CommandError::Malformed(e.to_string()))
}

/// Handles one SQS batch in one transaction. Within each message group (account) commands
/// apply in order; a malformed message is reported with every later message of its group,
/// and those are left out, while the other groups go ahead. If the transaction fails, none
/// of the batch took effect and every message is reported.
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
    let group_of = |r: &SqsMessage| {
        r.attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default()
    };
    let mut stopped: HashSet<String> = HashSet::new();
    let mut failed: HashSet<&str> = HashSet::new();
    let mut commands = Vec::with_capacity(records.len());
    for r in records {
        let group = group_of(r);
        let id = r.message_id.as_deref().unwrap_or_default();
        if stopped.contains(&group) {
            failed.insert(id);
            continue;
        }
        match parse(r) {
            Ok(c) => commands.push(c),
            Err(e) => {
                tracing::warn!(message_id = %id, %group, error = %e, "malformed command; it and the rest of its group will be retried");
                stopped.insert(group);
                failed.insert(id);
            }
        }
    }
    if !commands.is_empty() {
        match apply_all(deps, &commands).await {
            Ok(outcomes) => {
                for (cmd, o) in commands.iter().zip(&outcomes) {
                    let status = o.order.as_ref().map(|o| o.status.as_str()).unwrap_or("-");
                    tracing::info!(command_id = %cmd.command_id(), status, duplicate = o.duplicate, "applied");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, messages = records.len(), "batch failed; none of it applied, all of it will be retried");
                failed.extend(records.iter().filter_map(|r| r.message_id.as_deref()));
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    // Reported in the batch's own order.
    for r in records {
        if let Some(id) = r.message_id.as_deref().filter(|id| failed.contains(id)) {
            response.add_failure(id);
        }
    }
    Ok(response)
}
