//! The `executor` Lambda: the only writer of the ledger. It takes batches of trade commands
//! from the SQS FIFO queue and applies each in one Postgres transaction, idempotent on its
//! command id.
//!
//! Depends on `adapters` (the ledger, cache, trigger index, pushes, the queue), `alpaca`
//! (the `trade_updates` it pushes) and `domain`; no crate depends on it, and its `main.rs`
//! only wires.
//!
//! A whole batch applies in one transaction with a fixed number of multi-row statements
//! (see `adapters::ledger::execute`). FIFO-safe partial batch failure: each message group
//! (account) applies in order; a message that cannot apply is reported in
//! `batchItemFailures` with every later message of its group, so nothing runs ahead of a
//! command that must be retried.
//!
//! Two ways a batch fails, told apart because they want opposite retries (see
//! [`Failure`]): a dependency out of reach fails every command alike, and they are hidden
//! for a growing time so that an outage of an hour does not use up the queue's deliveries;
//! a command that is itself bad (PostgreSQL refuses it, or applying it panics) would sink
//! every batch it is in, so the batch is applied again by parts (per account, then per
//! command) until only it and the later commands of its account are left, and those are
//! hidden briefly so that it reaches the dead-letter queue within minutes. On its last
//! delivery a failing command is recorded in `dead_letters`, where its account sees the
//! order as `suspended` with a reason.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod updates;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;

use adapters::cache::Cache;
use adapters::config::{Config, RetentionSettings, RetrySettings};
use adapters::connections::ConnectionTable;
use adapters::ledger::{DeadLetter, ExecOutcome, Ledger};
use adapters::push::Pusher;
use adapters::queue::CommandQueue;
use adapters::watch::WatchIndex;
use adapters::{now_ms, DependencyError};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsMessage};
use domain::catalog::Catalog;
use domain::command::Command;
use domain::engine::ExecutionParams;
use domain::trigger::Watch;
use futures_util::FutureExt;

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
    /// The command queue, to space the retries of what failed; `None` without
    /// `COMMANDS_QUEUE_URL` (failed commands come back after the queue's visibility timeout).
    pub queue: Option<CommandQueue>,
    pub retries: RetrySettings,
    /// How long the bookkeeping keeps its rows (the scheduled prune).
    pub retention: RetentionSettings,
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
            queue: config.queue.url.as_deref().map(CommandQueue::new),
            retries: config.queue.retries,
            retention: config.retention,
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

/// Why a command was not applied, which decides when it comes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A dependency was out of reach: the command may well apply later. Hidden for a
    /// growing time ([`RetrySettings::outage_hiding_secs`]).
    Outage(String),
    /// The command itself cannot apply (it is malformed, PostgreSQL refused it, applying it
    /// panicked): it will fail the same way. Hidden briefly, so it reaches the dead-letter
    /// queue soon.
    Bad(String),
    /// Behind a bad command of its account (FIFO: it must not run ahead of it).
    Behind(String),
}

impl Failure {
    fn of(e: &CommandError) -> Failure {
        match e {
            CommandError::Dependency(d) if !d.refused => Failure::Outage(e.to_string()),
            _ => Failure::Bad(e.to_string()),
        }
    }

    fn detail(&self) -> &str {
        match self {
            Failure::Outage(d) | Failure::Bad(d) | Failure::Behind(d) => d,
        }
    }
}

/// [`apply_all`] with a panic taken as the commands' fault (a bug they run into): the
/// process goes on with the rest of the batch, which the release profile's unwinding allows.
async fn apply_guarded(deps: &Deps, commands: &[Command]) -> Result<(), Failure> {
    match AssertUnwindSafe(apply_all(deps, commands))
        .catch_unwind()
        .await
    {
        Ok(Ok(outcomes)) => {
            for (cmd, o) in commands.iter().zip(&outcomes) {
                let status = o.order.as_ref().map(|o| o.status.as_str()).unwrap_or("-");
                tracing::info!(command_id = %cmd.command_id(), status, duplicate = o.duplicate, "applied");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(Failure::of(&e)),
        Err(_) => {
            tracing::error!(
                metric = "panics_caught",
                function = "executor",
                commands = commands.len(),
                "applying commands panicked; they are isolated"
            );
            Err(Failure::Bad("applying the command panicked".into()))
        }
    }
}

/// One message of the batch that parsed.
struct Parsed<'a> {
    record: &'a SqsMessage,
    command: Command,
}

/// Applies the commands of a batch, isolating a bad one: all in one transaction; if that
/// fails on the commands (not on an outage), each account's in one of its own; where that
/// fails, the account's commands one by one, in order, up to the first that fails. Returns
/// the failed messages' ids with why. A redelivery of what applied in an earlier part
/// changes nothing, so the parts are safe to retry in any later delivery.
async fn apply_isolating<'a>(
    deps: &Deps,
    groups: &[(String, Vec<Parsed<'a>>)],
) -> Vec<(&'a SqsMessage, Failure)> {
    let all: Vec<Command> = groups
        .iter()
        .flat_map(|(_, g)| g.iter().map(|p| p.command.clone()))
        .collect();
    if all.is_empty() {
        return Vec::new();
    }
    let everything_failed = |f: &Failure| -> Vec<(&'a SqsMessage, Failure)> {
        groups
            .iter()
            .flat_map(|(_, g)| g.iter().map(|p| (p.record, f.clone())))
            .collect()
    };
    match apply_guarded(deps, &all).await {
        Ok(()) => return Vec::new(),
        Err(f @ Failure::Outage(_)) => {
            tracing::warn!(error = %f.detail(), messages = all.len(), "batch failed on an outage; none of it applied, all of it will be retried");
            return everything_failed(&f);
        }
        Err(f) if groups.len() == 1 && all.len() == 1 => return everything_failed(&f),
        Err(f) => {
            tracing::warn!(error = %f.detail(), messages = all.len(), "batch failed on its commands; applying it by parts");
        }
    }
    let mut failed = Vec::new();
    for (group, parsed) in groups {
        let commands: Vec<Command> = parsed.iter().map(|p| p.command.clone()).collect();
        let result = if groups.len() == 1 {
            // The whole batch was this group: it failed already.
            Err(Failure::Bad(String::new()))
        } else {
            apply_guarded(deps, &commands).await
        };
        match result {
            Ok(()) => {}
            Err(f @ Failure::Outage(_)) => {
                failed.extend(parsed.iter().map(|p| (p.record, f.clone())));
            }
            Err(f) if parsed.len() == 1 => failed.push((parsed[0].record, f)),
            Err(_) => failed.extend(apply_one_by_one(deps, group, parsed).await),
        }
    }
    failed
}

/// The commands of one account one at a time, in order: the first that fails stops the
/// rest, which are reported behind it.
async fn apply_one_by_one<'a>(
    deps: &Deps,
    group: &str,
    parsed: &[Parsed<'a>],
) -> Vec<(&'a SqsMessage, Failure)> {
    let mut failed = Vec::new();
    let mut stopped: Option<String> = None;
    for p in parsed {
        if let Some(first) = &stopped {
            failed.push((
                p.record,
                Failure::Behind(format!("behind command {first} of its account")),
            ));
            continue;
        }
        if let Err(f) = apply_guarded(deps, std::slice::from_ref(&p.command)).await {
            if let Failure::Bad(why) = &f {
                tracing::warn!(command_id = %p.command.command_id(), %group, error = %why, "bad command isolated; it and the rest of its group will be retried");
            }
            stopped = Some(p.command.command_id().to_string());
            failed.push((p.record, f));
        }
    }
    failed
}

/// SQS's count of this message's deliveries (1 on the first).
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// Spaces the retries of the failed messages (see [`Failure`]). A failure to do so leaves
/// them to the queue's visibility timeout, which is no loss.
async fn schedule_retries(deps: &Deps, failed: &[(&SqsMessage, Failure)]) {
    let Some(queue) = &deps.queue else { return };
    let hidings: Vec<(String, u32)> = failed
        .iter()
        .filter_map(|(r, f)| {
            let secs = match f {
                Failure::Outage(_) => deps.retries.outage_hiding_secs(receive_count(r)),
                Failure::Bad(_) | Failure::Behind(_) => deps.retries.bad_secs,
            };
            Some((r.receipt_handle.clone()?, secs))
        })
        .collect();
    if hidings.is_empty() {
        return;
    }
    if let Err(e) = queue.hide(&hidings).await {
        tracing::warn!(error = %e, "could not space the retries; the queue's visibility timeout applies");
    }
}

/// What the account is told about a command given up on (the detail stays in the log and
/// in `dead_letters.detail`).
fn dead_reason(f: &Failure, deliveries: u32) -> String {
    match f {
        Failure::Outage(_) => format!(
            "not applied after {deliveries} attempts: the service was unavailable; kept for the operator to retry"
        ),
        Failure::Bad(_) => format!(
            "not applied after {deliveries} attempts: the command could not be processed; kept for the operator to inspect"
        ),
        Failure::Behind(_) => format!(
            "not applied after {deliveries} attempts: an earlier command of the account could not be processed; kept for the operator to retry"
        ),
    }
}

/// Records the failed messages that were on their last delivery: SQS moves them to the
/// dead-letter queue next. The pending copies of their orders go (the ledger's record shows
/// them now). Best effort: without PostgreSQL the order shows `pending_new` until its
/// pending copy expires, and the message is in the dead-letter queue all the same.
async fn record_last_deliveries(deps: &Deps, failed: &[(&SqsMessage, Failure)]) {
    let mut letters = Vec::new();
    for (record, f) in failed {
        let count = receive_count(record);
        if count < deps.retries.max_receives {
            continue;
        }
        let Ok(command) = parse(record) else {
            // Not a command: nothing to show its account; the log and the queue have it.
            tracing::error!(
                message_id = record.message_id.as_deref().unwrap_or_default(),
                "malformed message on its last delivery; it goes to the dead-letter queue"
            );
            continue;
        };
        tracing::error!(metric = "commands_dead_lettered", command_id = %command.command_id(), account_id = %command.account_id(), error = %f.detail(), "last delivery failed; the command goes to the dead-letter queue");
        letters.push(DeadLetter {
            reason: dead_reason(f, count),
            detail: f.detail().chars().take(2000).collect(),
            receive_count: i32::try_from(count).unwrap_or(i32::MAX),
            command,
        });
    }
    if letters.is_empty() {
        return;
    }
    if let Err(e) = deps.ledger.record_dead_letters(&letters).await {
        tracing::error!(error = %e, commands = letters.len(), "could not record dead-lettered commands");
        return;
    }
    let mut by_account: HashMap<uuid::Uuid, Vec<uuid::Uuid>> = HashMap::new();
    for l in &letters {
        if let Command::PlaceOrder { order, .. } = &l.command {
            by_account
                .entry(order.account_id)
                .or_default()
                .push(order.id);
        }
    }
    if let Err(e) = deps.cache.clear_pending_many(&by_account).await {
        tracing::warn!(error = %e, "could not clear pending copies of dead-lettered orders");
    }
}

/// Handles one SQS batch. Within each message group (account) commands apply in order; a
/// malformed or bad command is reported with every later message of its group, while the
/// other groups' commands apply (see [`apply_isolating`]); on an outage the whole batch is
/// reported. Failed messages are hidden by the retry schedule, and those on their last
/// delivery are recorded as dead-lettered.
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
    let mut failed: Vec<(&SqsMessage, Failure)> = Vec::new();
    let mut stopped: HashMap<String, String> = HashMap::new();
    let mut groups: Vec<(String, Vec<Parsed>)> = Vec::new();
    for r in records {
        let group = group_of(r);
        let id = r.message_id.as_deref().unwrap_or_default();
        if let Some(first) = stopped.get(&group) {
            failed.push((r, Failure::Behind(format!("behind message {first}"))));
            continue;
        }
        match parse(r) {
            Ok(command) => match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, g)) => g.push(Parsed { record: r, command }),
                None => groups.push((group, vec![Parsed { record: r, command }])),
            },
            Err(e) => {
                tracing::warn!(message_id = %id, %group, error = %e, "malformed command; it and the rest of its group will be retried");
                failed.push((r, Failure::Bad(e.to_string())));
                stopped.insert(group, id.to_string());
            }
        }
    }
    // A group stopped by a malformed message keeps the commands before it: they apply.
    failed.extend(apply_isolating(deps, &groups).await);
    schedule_retries(deps, &failed).await;
    record_last_deliveries(deps, &failed).await;
    let failed_ids: HashSet<&str> = failed
        .iter()
        .filter_map(|(r, _)| r.message_id.as_deref())
        .collect();
    let mut response = SqsBatchResponse::default();
    // Reported in the batch's own order.
    for r in records {
        if let Some(id) = r.message_id.as_deref().filter(|id| failed_ids.contains(id)) {
            response.add_failure(id);
        }
    }
    Ok(response)
}

/// What invoked the executor: the command queue's event source, or the hourly schedule
/// (EventBridge's `Scheduled Event`; locally the devstack's timer) that prunes the
/// bookkeeping.
#[derive(Debug)]
pub enum Event {
    Batch(Vec<SqsMessage>),
    Prune,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("an event of neither the command queue nor the schedule")]
    Unknown,
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Prune(#[from] DependencyError),
}

impl Event {
    pub fn read(event: serde_json::Value) -> Result<Event, EventError> {
        if event.get("Records").is_some() {
            let sqs: aws_lambda_events::sqs::SqsEvent =
                serde_json::from_value(event).map_err(|_| EventError::Unknown)?;
            return Ok(Event::Batch(sqs.records));
        }
        if event.get("detail-type").and_then(serde_json::Value::as_str) == Some("Scheduled Event") {
            return Ok(Event::Prune);
        }
        Err(EventError::Unknown)
    }
}

/// Handles one invocation: a batch answers Lambda's partial batch response; a prune, what
/// it deleted (an error has the schedule's next run try again).
pub async fn handle_event(
    deps: &Deps,
    event: serde_json::Value,
) -> Result<serde_json::Value, EventError> {
    match Event::read(event)? {
        Event::Batch(records) => {
            let response = handle_batch(deps, &records).await?;
            serde_json::to_value(response).map_err(|_| EventError::Unknown)
        }
        Event::Prune => {
            let days = i64::from(deps.retention.days);
            let before = chrono::Utc::now() - chrono::Duration::days(days);
            let pruned = deps.ledger.prune(before).await?;
            tracing::info!(
                metric = "bookkeeping_pruned",
                processed_commands = pruned.processed_commands,
                webhook_deliveries = pruned.webhook_deliveries,
                dead_letters = pruned.dead_letters,
                %before,
                "pruned the bookkeeping"
            );
            Ok(serde_json::json!({
                "processed_commands": pruned.processed_commands,
                "webhook_deliveries": pruned.webhook_deliveries,
                "dead_letters": pruned.dead_letters,
            }))
        }
    }
}
