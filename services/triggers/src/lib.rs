//! Triggers: after every flush, find the resting orders the new prices crossed (and the `day`
//! orders whose time is up) and send their trigger (expire) commands through the SQS FIFO
//! queue, in their account's message group. The executor re-checks each against the current
//! price and fills it, or leaves it resting.
//!
//! The runner keeps the whole trigger index in memory ([`domain::trigger_index`]) and follows
//! the Redis copy ([`adapters::watch`]), which the executor updates after each commit:
//!
//! - at start it loads the Redis copy, or rebuilds it from the ledger when it is missing;
//! - on every flush it first applies the changes logged since the last look (one Redis round
//!   trip), then evaluates the flushed quotes, then sends what fired (SendMessageBatch, ten a
//!   call, up to eight calls at once);
//! - every `rebuild_check_ms`, with or without quotes, it does the same with no quotes (so
//!   `day` orders expire on time), and writes moved trailing marks back to Redis;
//! - every `reconcile_ms` (default 5 minutes), it rebuilds the copy from the ledger even
//!   when the marker says it is complete: an executor whose index update failed after its
//!   commit (Redis unreachable for that one call) leaves the copy behind the ledger with the
//!   marker still set, and this repairs it;
//! - whenever it finds the build marker missing (Redis flushed), it rebuilds the copy from
//!   the ledger (at most once per `rebuild_check_ms`) while it goes on evaluating on its
//!   in-memory index, so no order is missed meanwhile. Orders in flight stay suppressed across
//!   a rebuild, so none fires twice.
//!
//! A fired order is not fired again for `cooldown_ms` (the executor normally fills it and
//! removes it before that). A send that fails is counted and logged, never fatal: the order
//! fires again after the cooldown if the price still crosses it.
//!
//! One of the three services the `ingest` task runs. Depends on `domain`, `adapters` and
//! `market_data` (for the [`QuoteFeed`] of flushed quotes); never on a function crate.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::config::{DatabaseSource, QueueSettings, RedisSettings, TradingSettings};
use adapters::error::DependencyError;
use adapters::ledger::Ledger;
use adapters::queue::CommandQueue;
use adapters::watch::{Poll, WatchChange, WatchIndex};
use domain::command::Command;
use domain::quote::Quote;
use domain::trigger::Watch;
use domain::trigger_index::{Fired, FiredKind, TriggerIndex, DEFAULT_COOLDOWN_MS};
use futures_util::future::BoxFuture;

pub use market_data::tap::{quote_channel, FlushTap, QuoteFeed};

/// SendMessageBatch calls in flight at once (ten commands each).
const SEND_CONCURRENCY: usize = 8;
/// A send that takes longer than this counts as failed (the runner must not stall).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// `REDIS_URL`: where the trigger index lives.
    pub redis_url: String,
    /// `KEY_PREFIX`: prefix of every Redis key.
    pub key_prefix: String,
    /// The ledger the index is rebuilt from (none: no rebuilds): `DATABASE_URL`, or on AWS
    /// the URL built from the `DATABASE_SECRET_ARN` secret (see [`spawn_configured`]).
    pub database_url: Option<String>,
    /// `COMMANDS_QUEUE_URL`: the SQS FIFO queue commands go to (none: no triggers).
    pub queue_url: Option<String>,
    /// `TRIGGER_COOLDOWN_MS` (default 2000): a fired order is not fired again sooner.
    pub cooldown_ms: i64,
    /// `TRIGGER_REBUILD_CHECK_MS` (default 1000): how often the runner checks the Redis copy,
    /// expires `day` orders without quotes, and saves moved trailing marks.
    pub rebuild_check_ms: u64,
    /// `MAX_PRICE_AGE_MS` (default 5000): older quotes never trigger anything.
    pub max_quote_age_ms: Option<i64>,
    /// `TRIGGER_RECONCILE_MS` (default 300000; 0: never): how often the copy is rebuilt from
    /// the ledger even when it looks complete.
    pub reconcile_ms: u64,
}

impl TriggerConfig {
    pub fn new(redis_url: &str, key_prefix: &str) -> TriggerConfig {
        TriggerConfig {
            redis_url: redis_url.to_string(),
            key_prefix: key_prefix.to_string(),
            database_url: None,
            queue_url: None,
            cooldown_ms: DEFAULT_COOLDOWN_MS,
            rebuild_check_ms: 1_000,
            max_quote_age_ms: Some(5_000),
            reconcile_ms: DEFAULT_RECONCILE_MS,
        }
    }

    /// From the configuration sections: the shared Redis, queue and trading ones and this
    /// service's own [`TriggerArgs`]. The database URL is resolved by the caller.
    pub fn from_sections(
        redis: &RedisSettings,
        queue: &QueueSettings,
        trading: &TradingSettings,
        args: &TriggerArgs,
    ) -> anyhow::Result<TriggerConfig> {
        let mut cfg = TriggerConfig::new(&redis.url, &redis.key_prefix);
        cfg.queue_url = queue.url.clone();
        cfg.cooldown_ms = args.trigger_cooldown_ms;
        cfg.rebuild_check_ms = args.trigger_rebuild_check_ms;
        cfg.reconcile_ms = args.trigger_reconcile_ms;
        cfg.max_quote_age_ms = Some(trading.max_price_age_ms);
        if cfg.rebuild_check_ms == 0 {
            anyhow::bail!("TRIGGER_REBUILD_CHECK_MS must be > 0");
        }
        Ok(cfg)
    }
}

/// The trigger section of the ingest command line (flattened into the `ingest` binary's).
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// A fired order is not fired again sooner, in milliseconds.
    #[arg(long, env = "TRIGGER_COOLDOWN_MS", default_value_t = DEFAULT_COOLDOWN_MS)]
    pub trigger_cooldown_ms: i64,
    /// How often the runner checks the Redis copy, expires `day` orders without quotes, and
    /// saves moved trailing marks, in milliseconds.
    #[arg(long, env = "TRIGGER_REBUILD_CHECK_MS", default_value_t = 1_000)]
    pub trigger_rebuild_check_ms: u64,
    /// How often the trigger index is rebuilt from the ledger even when it looks complete
    /// (repairs an index update an executor could not make), in milliseconds; 0: never.
    #[arg(long, env = "TRIGGER_RECONCILE_MS", default_value_t = DEFAULT_RECONCILE_MS)]
    pub trigger_reconcile_ms: u64,
}

/// Five minutes: one ledger read of the live orders per ingest task every five minutes.
pub const DEFAULT_RECONCILE_MS: u64 = 300_000;

/// Where trigger and expire commands go: the SQS FIFO queue, or anything else in tests.
pub trait CommandSink: Send + Sync {
    /// Sends the commands (at most ten per call from the runner); an error means some or all
    /// were not sent.
    fn send_batch(
        &self,
        commands: &[Command],
    ) -> impl Future<Output = Result<(), DependencyError>> + Send;
}

impl CommandSink for CommandQueue {
    fn send_batch(
        &self,
        commands: &[Command],
    ) -> impl Future<Output = Result<(), DependencyError>> + Send {
        CommandQueue::send_batch(self, commands)
    }
}

impl<T: CommandSink> CommandSink for Arc<T> {
    fn send_batch(
        &self,
        commands: &[Command],
    ) -> impl Future<Output = Result<(), DependencyError>> + Send {
        T::send_batch(self, commands)
    }
}

/// Reads every live resting order's watch from the truth (the ledger), for rebuilds.
pub type WatchLoader =
    Box<dyn Fn() -> BoxFuture<'static, Result<Vec<Watch>, DependencyError>> + Send + Sync>;

/// The loader of the real system: every live order of the ledger that can fire.
pub fn ledger_loader(ledger: Ledger) -> WatchLoader {
    Box::new(move || {
        let ledger = ledger.clone();
        Box::pin(async move {
            let orders = ledger.live_orders().await?;
            Ok(orders.iter().filter_map(Watch::of).collect())
        })
    })
}

/// Counters of the runner.
#[derive(Debug, Default)]
pub struct TriggerStats {
    /// Quote batches evaluated (flushes; batches that queued up are evaluated together).
    pub quote_batches: AtomicU64,
    /// Evaluations, with or without quotes.
    pub evaluations: AtomicU64,
    /// Duration of the latest evaluation, in microseconds.
    pub last_evaluation_us: AtomicU64,
    pub triggers_sent: AtomicU64,
    pub expiries_sent: AtomicU64,
    /// Failed SendMessageBatch calls (their orders fire again after the cooldown).
    pub send_failures: AtomicU64,
    /// Commands in failed calls (some may have gone through: SQS reports per entry).
    pub commands_not_sent: AtomicU64,
    /// Rebuilds of the Redis copy from the ledger.
    pub rebuilds: AtomicU64,
    /// Of those, the periodic ones (`reconcile_ms`) made whatever the marker said.
    pub reconciles: AtomicU64,
    /// Loads of the Redis copy into memory (at start, or after unread log entries were
    /// trimmed).
    pub reloads: AtomicU64,
    /// Changes applied from the log.
    pub changes_applied: AtomicU64,
    /// Failed Redis or ledger calls (retried after `rebuild_check_ms`).
    pub dependency_failures: AtomicU64,
    /// Trailing marks written back to Redis.
    pub marks_saved: AtomicU64,
    /// Orders in the in-memory index.
    pub watches: AtomicU64,
}

/// A plain copy of [`TriggerStats`], for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerCounts {
    pub quote_batches: u64,
    pub evaluations: u64,
    pub last_evaluation_us: u64,
    pub triggers_sent: u64,
    pub expiries_sent: u64,
    pub send_failures: u64,
    pub commands_not_sent: u64,
    pub rebuilds: u64,
    pub reconciles: u64,
    pub reloads: u64,
    pub changes_applied: u64,
    pub dependency_failures: u64,
    pub marks_saved: u64,
    pub watches: u64,
}

impl TriggerStats {
    pub fn snapshot(&self) -> TriggerCounts {
        TriggerCounts {
            quote_batches: self.quote_batches.load(Relaxed),
            evaluations: self.evaluations.load(Relaxed),
            last_evaluation_us: self.last_evaluation_us.load(Relaxed),
            triggers_sent: self.triggers_sent.load(Relaxed),
            expiries_sent: self.expiries_sent.load(Relaxed),
            send_failures: self.send_failures.load(Relaxed),
            commands_not_sent: self.commands_not_sent.load(Relaxed),
            rebuilds: self.rebuilds.load(Relaxed),
            reconciles: self.reconciles.load(Relaxed),
            reloads: self.reloads.load(Relaxed),
            changes_applied: self.changes_applied.load(Relaxed),
            dependency_failures: self.dependency_failures.load(Relaxed),
            marks_saved: self.marks_saved.load(Relaxed),
            watches: self.watches.load(Relaxed),
        }
    }
}

struct Runner<S> {
    index: WatchIndex,
    loader: Option<WatchLoader>,
    sink: S,
    stats: Arc<TriggerStats>,
    memory: TriggerIndex,
    /// The log position applied so far; `None` until the first load.
    last_id: Option<String>,
    check_every: Duration,
    /// No Redis call before this (backoff after a failure).
    redis_after: Instant,
    /// No rebuild before this.
    rebuild_after: Instant,
    /// How often the copy is rebuilt from the ledger anyway (`None`: never).
    reconcile_every: Option<Duration>,
    /// The next such rebuild (pushed back by every rebuild).
    reconcile_after: Instant,
    /// Moved marks not yet written back.
    marks: Vec<Watch>,
}

/// One SendMessageBatch call, bounded in time.
async fn send_chunk<S: CommandSink>(
    sink: &S,
    chunk: &[(FiredKind, Command)],
) -> Result<(), DependencyError> {
    let batch: Vec<Command> = chunk.iter().map(|(_, c)| c.clone()).collect();
    match tokio::time::timeout(SEND_TIMEOUT, sink.send_batch(&batch)).await {
        Ok(result) => result,
        Err(_) => Err(DependencyError::queue("send timed out")),
    }
}

/// Runs the trigger loop until the quote channel closes. `loader` reads the ledger for
/// rebuilds (see [`ledger_loader`]); without one, a missing Redis copy is only logged.
pub async fn run<S: CommandSink>(
    cfg: TriggerConfig,
    index: WatchIndex,
    loader: Option<WatchLoader>,
    sink: S,
    mut quotes: QuoteFeed,
    stats: Arc<TriggerStats>,
) {
    let check_every = Duration::from_millis(cfg.rebuild_check_ms.max(1));
    let now = Instant::now();
    let mut runner = Runner {
        index,
        loader,
        sink,
        stats,
        memory: TriggerIndex::new(cfg.cooldown_ms).with_max_quote_age_ms(cfg.max_quote_age_ms),
        last_id: None,
        check_every,
        redis_after: now,
        rebuild_after: now,
        reconcile_every: (cfg.reconcile_ms > 0).then(|| Duration::from_millis(cfg.reconcile_ms)),
        reconcile_after: now + Duration::from_millis(cfg.reconcile_ms),
        marks: Vec::new(),
    };
    tracing::info!(prefix = %cfg.key_prefix, cooldown_ms = cfg.cooldown_ms,
        check_ms = cfg.rebuild_check_ms, "trigger runner starting");
    runner.sync().await;
    let mut tick = tokio::time::interval(check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            flushed = quotes.next_merged() => {
                let Some(flushed) = flushed else { break };
                runner.stats.quote_batches.fetch_add(flushed.batches, Relaxed);
                runner.sync().await;
                runner.evaluate(&flushed.quotes).await;
            }
            _ = tick.tick() => {
                runner.reconcile().await;
                runner.sync().await;
                runner.evaluate(&[]).await;
                runner.save_marks().await;
            }
        }
    }
    runner.save_marks().await;
    tracing::info!(stats = ?runner.stats.snapshot(), "trigger runner stopped");
}

impl<S: CommandSink> Runner<S> {
    fn failed(&mut self, what: &str, e: &DependencyError) {
        self.stats.dependency_failures.fetch_add(1, Relaxed);
        self.redis_after = Instant::now() + self.check_every;
        tracing::warn!(error = %e, "trigger index: {what} failed; retrying");
    }

    /// Brings the in-memory index up to date with Redis; rebuilds or reloads when needed.
    async fn sync(&mut self) {
        if Instant::now() < self.redis_after {
            return;
        }
        match self.last_id.clone() {
            None => self.load().await,
            Some(since) => match self.index.poll(&since).await {
                Ok(poll) => {
                    let (built, gap) = (poll.built, poll.gap);
                    self.apply(poll);
                    if !built {
                        self.rebuild().await;
                    } else if gap {
                        tracing::warn!("trigger index log trimmed unread: reloading");
                        self.load().await;
                    }
                }
                Err(e) => self.failed("poll", &e),
            },
        }
        self.stats.watches.store(self.memory.len() as u64, Relaxed);
    }

    /// Loads the Redis copy into memory (unchanged orders keep their suppression), or
    /// rebuilds it when it is missing.
    async fn load(&mut self) {
        match self.index.load().await {
            Ok(Some((watches, id))) => {
                self.memory.replace_all(watches);
                self.last_id = Some(id);
                self.stats.reloads.fetch_add(1, Relaxed);
                tracing::info!(watches = self.memory.len(), "trigger index loaded");
                self.follow().await;
            }
            Ok(None) => self.rebuild().await,
            Err(e) => self.failed("load", &e),
        }
    }

    fn apply(&mut self, poll: Poll) {
        self.stats
            .changes_applied
            .fetch_add(poll.changes.len() as u64, Relaxed);
        for change in poll.changes {
            match change {
                WatchChange::Put(w) => self.memory.upsert(w),
                WatchChange::Remove { order_id, .. } => {
                    self.memory.remove(order_id);
                }
            }
        }
        self.last_id = Some(poll.last_id);
    }

    /// Applies what was logged since the last look (no marker or gap handling).
    async fn follow(&mut self) {
        let Some(since) = self.last_id.clone() else {
            return;
        };
        match self.index.poll(&since).await {
            Ok(poll) => self.apply(poll),
            Err(e) => self.failed("poll", &e),
        }
    }

    /// Rebuilds the copy from the ledger when the reconcile period has passed, whatever the
    /// marker says.
    async fn reconcile(&mut self) {
        let (Some(every), true) = (self.reconcile_every, self.loader.is_some()) else {
            return;
        };
        let now = Instant::now();
        if now < self.reconcile_after || now < self.redis_after {
            return;
        }
        self.reconcile_after = now + every;
        self.rebuild_after = now;
        self.stats.reconciles.fetch_add(1, Relaxed);
        self.rebuild().await;
    }

    /// Rebuilds the Redis copy from the ledger: note the log position, read the ledger,
    /// write the snapshot with the changes logged since replayed on top, then make memory
    /// match (unchanged orders keep their suppression) and follow the log from that position.
    async fn rebuild(&mut self) {
        let now = Instant::now();
        if now < self.rebuild_after {
            return;
        }
        self.rebuild_after = now + self.check_every;
        let Some(loader) = &self.loader else {
            tracing::warn!("trigger index missing in redis and no ledger to rebuild it from");
            if self.last_id.is_none() {
                // Nothing to load: follow the log from its start.
                self.last_id = Some(adapters::watch::START_ID.to_string());
            }
            return;
        };
        let since = match self.index.last_id().await {
            Ok(id) => id,
            Err(e) => return self.failed("rebuild (log position)", &e),
        };
        let watches = match loader().await {
            Ok(w) => w,
            Err(e) => return self.failed("rebuild (ledger read)", &e),
        };
        let count = watches.len();
        if let Err(e) = self.index.rebuild_since(watches.clone(), &since).await {
            return self.failed("rebuild (redis write)", &e);
        }
        self.memory.replace_all(watches);
        self.last_id = Some(since);
        self.follow().await;
        self.stats.rebuilds.fetch_add(1, Relaxed);
        if let Some(every) = self.reconcile_every {
            self.reconcile_after = Instant::now() + every;
        }
        tracing::info!(
            watches = count,
            took_ms = now.elapsed().as_millis() as u64,
            "trigger index rebuilt from the ledger"
        );
    }

    async fn evaluate(&mut self, quotes: &[Quote]) {
        let started = Instant::now();
        let fired = self.memory.evaluate(quotes, adapters::now_ms());
        self.stats.evaluations.fetch_add(1, Relaxed);
        self.stats
            .last_evaluation_us
            .store(started.elapsed().as_micros() as u64, Relaxed);
        if !fired.is_empty() {
            self.send(fired).await;
        }
    }

    /// Sends the commands of what fired, grouped by account so that an account's commands
    /// share calls and keep their order within a call.
    async fn send(&mut self, mut fired: Vec<Fired>) {
        fired.sort_by_key(|f| f.account_id);
        let commands: Vec<(FiredKind, Command)> =
            fired.iter().map(|f| (f.kind, f.command())).collect();
        let mut results = Vec::with_capacity(commands.len().div_ceil(10));
        for wave in commands.chunks(10 * SEND_CONCURRENCY) {
            let calls: Vec<_> = wave
                .chunks(10)
                .map(|chunk| send_chunk(&self.sink, chunk))
                .collect();
            let done = futures_util::future::join_all(calls).await;
            results.extend(wave.chunks(10).zip(done));
        }
        for (chunk, result) in results {
            match result {
                Ok(()) => {
                    let expiries = chunk
                        .iter()
                        .filter(|(k, _)| *k == FiredKind::Expire)
                        .count() as u64;
                    self.stats.expiries_sent.fetch_add(expiries, Relaxed);
                    self.stats
                        .triggers_sent
                        .fetch_add(chunk.len() as u64 - expiries, Relaxed);
                }
                Err(e) => {
                    self.stats.send_failures.fetch_add(1, Relaxed);
                    self.stats
                        .commands_not_sent
                        .fetch_add(chunk.len() as u64, Relaxed);
                    tracing::warn!(error = %e, commands = chunk.len(),
                        "trigger commands not sent; they fire again after the cooldown");
                }
            }
        }
    }

    /// Writes moved trailing marks back to Redis (kept for the next try on failure).
    async fn save_marks(&mut self) {
        let moved = self.memory.take_moved_marks();
        if !moved.is_empty() {
            let ids: std::collections::HashSet<_> = moved.iter().map(|w| w.order_id).collect();
            self.marks.retain(|w| !ids.contains(&w.order_id));
            self.marks.extend(moved);
        }
        if self.marks.is_empty() || Instant::now() < self.redis_after {
            return;
        }
        match self.index.save_marks(&self.marks).await {
            Ok(n) => {
                self.stats.marks_saved.fetch_add(n as u64, Relaxed);
                self.marks.clear();
            }
            Err(e) => self.failed("save marks", &e),
        }
    }
}

/// Starts the trigger engine from its configuration: the hook to give the flusher, and the
/// runner's counters. Without `COMMANDS_QUEUE_URL` there is nowhere to send triggers, so the
/// engine is off (prices alone, as a price-only deployment wants). `database` is the
/// ledger the index is rebuilt from: with `DATABASE_SECRET_ARN` (AWS) the URL is built from
/// that secret here, one Secrets Manager call whose failure fails the start (a broken
/// deployment fails now rather than when a rebuild is needed); without a database a lost
/// index cannot be rebuilt, which is logged. `stats_every` paces the `trigger stats` line
/// (`None`: never).
pub async fn spawn_configured(
    mut cfg: TriggerConfig,
    database: Option<&DatabaseSource>,
    stats_every: Option<Duration>,
) -> anyhow::Result<Option<(FlushTap, Arc<TriggerStats>)>> {
    let Some(queue_url) = cfg.queue_url.clone() else {
        tracing::warn!("COMMANDS_QUEUE_URL is not set: resting orders will not be triggered");
        return Ok(None);
    };
    cfg.database_url = match database {
        Some(source) => Some(source.resolve().await?),
        None => None,
    };
    let index = WatchIndex::new(&cfg.redis_url, &cfg.key_prefix)?;
    let loader = match cfg.database_url.as_deref() {
        Some(url) => Some(ledger_loader(Ledger::connect_lazy(url, 2)?)),
        None => {
            tracing::warn!(
                "neither DATABASE_URL nor DATABASE_SECRET_ARN is set: a lost trigger index cannot be rebuilt"
            );
            None
        }
    };
    let (tap, quotes) = quote_channel();
    let stats = Arc::new(TriggerStats::default());
    tokio::spawn(run(
        cfg,
        index,
        loader,
        CommandQueue::new(&queue_url),
        quotes,
        stats.clone(),
    ));
    if let Some(every) = stats_every {
        let counters = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let c = counters.snapshot();
                tracing::info!(
                    watches = c.watches,
                    triggers_sent = c.triggers_sent,
                    expiries_sent = c.expiries_sent,
                    send_failures = c.send_failures,
                    rebuilds = c.rebuilds,
                    last_evaluation_us = c.last_evaluation_us,
                    dependency_failures = c.dependency_failures,
                    "trigger stats"
                );
            }
        });
    }
    Ok(Some((tap, stats)))
}
