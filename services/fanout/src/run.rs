//! The fan-out runner: feeds the [`Fanout`] planner from the flusher (quotes), Redis pub/sub
//! (connection changes, positions snapshots), table scans and snapshot loads, and carries
//! out its plans with bounded concurrency. See the [module documentation](super).
//!
//! One task owns the planner and runs a loop over: quote batches from the flush hook, a
//! timer tick (the flush interval), events (notifications, scan and snapshot results), push
//! completions and the stats timer. Everything slow (pushes, scans, snapshot loads, item
//! deletes) runs in tasks of its own that report back through the event channel or the
//! push `JoinSet`; the loop itself never waits on I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::cache::Cache;
use adapters::connections::ConnectionTable;
use adapters::error::DependencyError;
use adapters::push::{PushError, Pusher};
use domain::quote::Quote;
use domain::realtime::{Connection, ConnectionChange, PositionsSnapshot};
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use crate::plan::{Fanout, Outcome, Outgoing};
use adapters::config::{ConnectionsSettings, RedisSettings};
use market_data::tap::{quote_channel, FlushTap, QuoteFeed};

/// A 410 this soon after `connected_at` means the handshake has not completed yet (the
/// connection was announced from inside `$connect`), not that the client left.
pub const NEW_CONNECTION_GRACE_MS: i64 = 10_000;

/// Default `FANOUT_CONCURRENCY`: posts in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 128;
/// Default `FANOUT_RESCAN_SECS`: how often the table is re-scanned as a repair.
pub const DEFAULT_RESCAN_SECS: u64 = 300;
/// A post that takes longer than this (the SDK's own retries included) counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// A scan that takes longer than this counts as failed.
const SCAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Redis calls of the runner (snapshot loads, subscribing, pings).
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired connections are swept this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A failed snapshot load is retried after this.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);
/// Accounts per `MGET`.
const SNAPSHOT_CHUNK: usize = 500;
/// Failure warnings of one kind are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// `REDIS_URL`: pub/sub and positions snapshots.
    pub redis_url: String,
    /// `KEY_PREFIX`: of the channels and keys.
    pub key_prefix: String,
    /// `CONNECTIONS_TABLE`: the DynamoDB connection table.
    pub table: String,
    /// `WS_MANAGEMENT_URL`: the `@connections` endpoint, stage included.
    pub management_url: String,
    /// `FLUSH_INTERVAL_MS`: the timer tick that sends what had to wait.
    pub tick: Duration,
    /// `FANOUT_CONCURRENCY` (default 128): posts in flight at once.
    pub concurrency: usize,
    /// `FANOUT_RESCAN_SECS` (default 300): periodic re-scan of the table.
    pub rescan_every: Duration,
    /// `STATS_INTERVAL_SECS` (0 = never): the `fanout stats` log line.
    pub stats_every: Option<Duration>,
    /// How often the pub/sub connection is pinged (a dead one is replaced, then re-scan).
    pub pubsub_ping: Duration,
}

impl FanoutConfig {
    pub fn new(redis_url: &str, key_prefix: &str, table: &str, management_url: &str) -> Self {
        FanoutConfig {
            redis_url: redis_url.to_string(),
            key_prefix: key_prefix.to_string(),
            table: table.to_string(),
            management_url: management_url.to_string(),
            tick: Duration::from_millis(100),
            concurrency: DEFAULT_CONCURRENCY,
            rescan_every: Duration::from_secs(DEFAULT_RESCAN_SECS),
            stats_every: Some(Duration::from_secs(60)),
            pubsub_ping: Duration::from_secs(15),
        }
    }

    /// From the configuration sections: the shared Redis and connections ones, this
    /// service's own [`FanoutArgs`], and the market data's pace (`flush_interval_ms` for the
    /// tick, `stats_interval_secs` for the `fanout stats` line, 0 = never). `None` (fan-out
    /// off, logged) without a management endpoint (`WS_MANAGEMENT_URL`).
    pub fn from_sections(
        redis: &RedisSettings,
        connections: &ConnectionsSettings,
        args: &FanoutArgs,
        flush_interval_ms: u64,
        stats_interval_secs: u64,
    ) -> anyhow::Result<Option<FanoutConfig>> {
        let Some(url) = connections.management_url.as_deref() else {
            tracing::warn!(
                missing = "WS_MANAGEMENT_URL",
                "WebSocket fan-out is off: prices and PnL will not be pushed to clients"
            );
            return Ok(None);
        };
        let mut cfg = FanoutConfig::new(&redis.url, &redis.key_prefix, &connections.table, url);
        cfg.tick = Duration::from_millis(flush_interval_ms.max(1));
        cfg.concurrency = args.fanout_concurrency;
        cfg.rescan_every = Duration::from_secs(args.fanout_rescan_secs);
        cfg.stats_every =
            (stats_interval_secs > 0).then(|| Duration::from_secs(stats_interval_secs));
        if cfg.concurrency == 0 || cfg.rescan_every.is_zero() {
            anyhow::bail!("FANOUT_CONCURRENCY and FANOUT_RESCAN_SECS must be > 0");
        }
        Ok(Some(cfg))
    }
}

/// The fan-out section of the ingest command line (flattened into the `ingest` binary's).
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Posts in flight at once.
    #[arg(long, env = "FANOUT_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub fanout_concurrency: usize,
    /// Periodic re-scan of the connection table, in seconds.
    #[arg(long, env = "FANOUT_RESCAN_SECS", default_value_t = DEFAULT_RESCAN_SECS)]
    pub fanout_rescan_secs: u64,
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters and gauges of the runner.
        #[derive(Debug, Default)]
        pub struct FanoutStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A plain copy of [`FanoutStats`], for logs and tests.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct FanoutCounts {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl FanoutStats {
            pub fn snapshot(&self) -> FanoutCounts {
                FanoutCounts { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Connections in the index (gauge).
    connections,
    /// Accounts with a connection (gauge).
    accounts,
    /// Accounts whose positions snapshot is known (gauge).
    snapshots,
    /// Messages delivered (200).
    messages_sent,
    /// Quotes in delivered messages.
    prices_sent,
    /// Delivered messages that carried PnL.
    pnl_sent,
    /// 410 answers: the connection was dropped and its item deleted.
    pushes_gone,
    /// Other failed posts (retried with backoff).
    push_failures,
    /// 413 answers (content dropped).
    pushes_too_large,
    /// Posts in flight (gauge).
    in_flight,
    /// Planned messages waiting for a free post slot (gauge).
    outbox,
    /// Quote batches received from the flusher.
    quote_batches,
    /// Plans run (per flush and per tick).
    plans,
    /// Duration of the latest plan, in microseconds.
    last_plan_us,
    /// Longest plan so far, in microseconds.
    max_plan_us,
    /// Symbol changes merged into one already pending for a connection.
    coalesced,
    /// Connections dropped because their TTL passed.
    expired,
    /// Connection changes applied from pub/sub.
    changes_applied,
    /// Snapshots applied (pub/sub and loads).
    snapshots_applied,
    /// Pub/sub messages that could not be read.
    bad_notifications,
    /// (Re)subscriptions to the channels.
    subscribes,
    /// Completed scans of the table.
    scans,
    /// Failed scans (retried with backoff).
    scan_failures,
    /// Failed snapshot loads (retried).
    snapshot_load_failures,
    /// Items deleted after a 410.
    items_deleted,
    /// Failed deletes (the next re-scan brings the item back, the next push deletes again).
    delete_failures,
}

/// The running fan-out. Dropping it stops its tasks.
pub struct FanoutHandle {
    tap: FlushTap,
    pub stats: Arc<FanoutStats>,
    control: UnboundedSender<Event>,
    tasks: Vec<JoinHandle<()>>,
}

impl FanoutHandle {
    /// The flush hook that feeds the fan-out.
    pub fn tap(&self) -> FlushTap {
        self.tap.clone()
    }

    /// Ids of the connections in the index now.
    pub async fn connection_ids(&self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Event::Inspect(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

impl Drop for FanoutHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Event {
    /// The pub/sub connection is (again) subscribed: scan.
    Subscribed,
    Change(ConnectionChange),
    Snapshot(PositionsSnapshot),
    Scanned(Result<Vec<Connection>, DependencyError>),
    Snapshots {
        /// The snapshots found, and the cached quotes of the symbols they hold.
        result: Result<(Vec<PositionsSnapshot>, Vec<Quote>), DependencyError>,
    },
    Inspect(oneshot::Sender<Vec<String>>),
}

/// Starts the fan-out: the runner and its pub/sub listener.
pub fn spawn(cfg: FanoutConfig) -> anyhow::Result<FanoutHandle> {
    let cache = Arc::new(Cache::new(&cfg.redis_url, &cfg.key_prefix)?);
    let client = redis::Client::open(cfg.redis_url.as_str())?;
    let table = Arc::new(ConnectionTable::new(&cfg.table));
    let pusher = Arc::new(Pusher::new(&cfg.management_url));
    let (tap, quotes) = quote_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let stats = Arc::new(FanoutStats::default());
    tracing::info!(table = %cfg.table, endpoint = %pusher.endpoint(), prefix = %cfg.key_prefix,
        concurrency = cfg.concurrency, rescan_secs = cfg.rescan_every.as_secs(),
        tick_ms = cfg.tick.as_millis() as u64, "fan-out starting");
    let listener = tokio::spawn(listen(
        client,
        cfg.key_prefix.clone(),
        cfg.pubsub_ping,
        events_tx.clone(),
        stats.clone(),
    ));
    let runner = Runner {
        fanout: Fanout::new(),
        table,
        cache,
        pusher,
        stats: stats.clone(),
        events: events_tx.clone(),
        outbox: VecDeque::new(),
        pushes: JoinSet::new(),
        pushing: HashMap::new(),
        scanning: false,
        rescan_wanted: false,
        next_scan: None,
        scan_failures_in_row: 0,
        snapshot_retry_at: None,
        last_sweep: Instant::now(),
        warned: HashMap::new(),
        cfg,
    };
    let main = tokio::spawn(runner.run(quotes, events));
    Ok(FanoutHandle {
        tap,
        stats,
        control: events_tx,
        tasks: vec![main, listener],
    })
}

struct Pushed {
    id: Arc<str>,
    generation: u64,
    prices: usize,
    pnl: bool,
    result: Result<(), PushError>,
}

struct Runner {
    cfg: FanoutConfig,
    fanout: Fanout,
    table: Arc<ConnectionTable>,
    cache: Arc<Cache>,
    pusher: Arc<Pusher>,
    stats: Arc<FanoutStats>,
    events: UnboundedSender<Event>,
    /// Planned, not posted yet (at most one per connection: it counts as in flight).
    outbox: VecDeque<Outgoing>,
    pushes: JoinSet<Pushed>,
    /// What each post task carries, should it panic.
    pushing: HashMap<tokio::task::Id, (Arc<str>, u64)>,
    scanning: bool,
    /// Subscribed again while a scan was running: scan once more after it.
    rescan_wanted: bool,
    /// When the next scan is due; `None` until the first subscription.
    next_scan: Option<Instant>,
    scan_failures_in_row: u32,
    /// A failed snapshot load: every snapshot is read again at this time.
    snapshot_retry_at: Option<Instant>,
    last_sweep: Instant,
    /// Last warning per kind, with the count of occurrences not logged since.
    warned: HashMap<&'static str, (Option<Instant>, u64)>,
}

impl Runner {
    async fn run(mut self, mut quotes: QuoteFeed, mut events: UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stats_every = self.cfg.stats_every;
        let mut stats_tick =
            tokio::time::interval(stats_every.unwrap_or(Duration::from_secs(3600)));
        stats_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        stats_tick.tick().await;
        loop {
            tokio::select! {
                flushed = quotes.next_merged() => {
                    let Some(flushed) = flushed else { break };
                    self.stats.quote_batches.fetch_add(flushed.batches, Relaxed);
                    self.fanout.on_quotes(&flushed.quotes);
                    self.plan();
                }
                _ = tick.tick() => {
                    self.housekeeping();
                    self.plan();
                }
                Some(event) = events.recv() => self.handle(event),
                Some(done) = self.pushes.join_next_with_id(), if !self.pushes.is_empty() => {
                    self.pushed(done);
                }
                _ = stats_tick.tick(), if stats_every.is_some() => self.log_stats(),
            }
            self.load_snapshots();
            self.gauges();
        }
        tracing::info!(stats = ?self.stats.snapshot(), "fan-out stopped");
    }

    fn gauges(&self) {
        let s = &self.stats;
        s.connections.store(self.fanout.len() as u64, Relaxed);
        s.accounts.store(self.fanout.accounts() as u64, Relaxed);
        s.in_flight.store(self.pushes.len() as u64, Relaxed);
        s.outbox.store(self.outbox.len() as u64, Relaxed);
    }

    /// Logs a warning of kind `what` unless one was logged in the last [`WARN_EVERY`]
    /// (those are counted and reported with the next).
    fn warn(&mut self, what: &'static str, detail: &dyn std::fmt::Display) {
        let now = Instant::now();
        let entry = self.warned.entry(what).or_insert((None, 0));
        if entry.0.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            tracing::warn!(error = %detail, suppressed = entry.1, "fan-out: {what}");
            *entry = (Some(now), 0);
        } else {
            entry.1 += 1;
        }
    }

    fn plan(&mut self) {
        let started = Instant::now();
        let out = self.fanout.plan(adapters::now_ms());
        let us = started.elapsed().as_micros() as u64;
        self.stats.plans.fetch_add(1, Relaxed);
        self.stats.last_plan_us.store(us, Relaxed);
        self.stats.max_plan_us.fetch_max(us, Relaxed);
        self.outbox.extend(out);
        self.start_pushes();
    }

    fn start_pushes(&mut self) {
        while self.pushes.len() < self.cfg.concurrency {
            let Some(m) = self.outbox.pop_front() else {
                break;
            };
            if !self.fanout.is_current(&m.connection_id, m.generation) {
                // Disconnected (or gone) while it waited: nothing to send it to.
                continue;
            }
            let pusher = self.pusher.clone();
            let (id, generation) = (m.connection_id.clone(), m.generation);
            let handle = self.pushes.spawn(async move {
                let result = match tokio::time::timeout(
                    PUSH_TIMEOUT,
                    pusher.post(&m.connection_id, m.body.into_bytes()),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(PushError::Failed("timed out".into())),
                };
                Pushed {
                    id: m.connection_id,
                    generation: m.generation,
                    prices: m.prices,
                    pnl: m.pnl,
                    result,
                }
            });
            self.pushing.insert(handle.id(), (id, generation));
        }
    }

    fn pushed(&mut self, done: Result<(tokio::task::Id, Pushed), tokio::task::JoinError>) {
        let (id, generation, outcome) = match done {
            Ok((task, p)) => {
                self.pushing.remove(&task);
                let outcome = match p.result {
                    Ok(()) => {
                        self.stats.messages_sent.fetch_add(1, Relaxed);
                        self.stats.prices_sent.fetch_add(p.prices as u64, Relaxed);
                        self.stats.pnl_sent.fetch_add(u64::from(p.pnl), Relaxed);
                        Outcome::Sent
                    }
                    Err(PushError::Gone) if self.just_connected(&p.id) => {
                        // API Gateway answers 410 until `$connect` has returned and the
                        // handshake completed, and the ws function announces a connection
                        // from inside `$connect`: not gone yet, try again shortly.
                        self.stats.push_failures.fetch_add(1, Relaxed);
                        Outcome::Failed
                    }
                    Err(PushError::Gone) => {
                        self.stats.pushes_gone.fetch_add(1, Relaxed);
                        self.delete_item(p.id.clone());
                        Outcome::Gone
                    }
                    Err(PushError::TooLarge) => {
                        self.stats.pushes_too_large.fetch_add(1, Relaxed);
                        self.warn("message over the size limit dropped", &p.id);
                        Outcome::TooLarge
                    }
                    Err(PushError::Failed(e)) => {
                        self.stats.push_failures.fetch_add(1, Relaxed);
                        self.warn("push failed; retrying with backoff", &e);
                        Outcome::Failed
                    }
                };
                (p.id, p.generation, outcome)
            }
            Err(e) => {
                self.stats.push_failures.fetch_add(1, Relaxed);
                let Some((id, generation)) = self.pushing.remove(&e.id()) else {
                    return;
                };
                self.warn("push task failed; retrying", &e);
                (id, generation, Outcome::Failed)
            }
        };
        self.fanout
            .complete(&id, generation, outcome, adapters::now_ms());
        self.start_pushes();
    }

    /// Whether the connection was accepted less than [`NEW_CONNECTION_GRACE_MS`] ago.
    fn just_connected(&self, id: &str) -> bool {
        self.fanout
            .connection(id)
            .is_some_and(|c| adapters::now_ms() - c.connected_at < NEW_CONNECTION_GRACE_MS)
    }

    /// 410: the client is gone for good; its item goes too (in the background).
    fn delete_item(&self, id: Arc<str>) {
        let (table, stats) = (self.table.clone(), self.stats.clone());
        tokio::spawn(async move {
            match table.delete(&id).await {
                Ok(()) => {
                    stats.items_deleted.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    stats.delete_failures.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, connection_id = %id, "fan-out: deleting a gone connection failed");
                }
            }
        });
    }

    fn handle(&mut self, event: Event) {
        let now = adapters::now_ms();
        match event {
            Event::Subscribed => {
                self.stats.subscribes.fetch_add(1, Relaxed);
                if self.scanning {
                    self.rescan_wanted = true;
                } else {
                    self.start_scan();
                }
            }
            Event::Change(change) => {
                self.fanout.apply(change, now);
                self.stats.changes_applied.fetch_add(1, Relaxed);
            }
            Event::Snapshot(snapshot) => {
                if self.fanout.set_snapshot(snapshot) {
                    self.stats.snapshots_applied.fetch_add(1, Relaxed);
                }
            }
            Event::Scanned(Ok(connections)) => {
                let report = self.fanout.finish_scan(connections, now);
                self.scanning = false;
                self.scan_failures_in_row = 0;
                let scans = self.stats.scans.fetch_add(1, Relaxed) + 1;
                if scans > 1 {
                    // Snapshots published while notifications were missed (the reason for
                    // a re-scan) are read back too.
                    self.fanout.reload_snapshots();
                }
                self.next_scan = Some(Instant::now() + self.cfg.rescan_every);
                let level_info = report.added + report.removed + report.updated > 0 || scans == 1;
                if level_info {
                    tracing::info!(
                        scanned = report.scanned,
                        added = report.added,
                        updated = report.updated,
                        removed = report.removed,
                        connections = self.fanout.len(),
                        "fan-out: connection table scanned"
                    );
                }
                if std::mem::take(&mut self.rescan_wanted) {
                    self.start_scan();
                }
            }
            Event::Scanned(Err(e)) => {
                self.fanout.abort_scan();
                self.scanning = false;
                self.scan_failures_in_row += 1;
                self.stats.scan_failures.fetch_add(1, Relaxed);
                let shift = (self.scan_failures_in_row - 1).min(5);
                let backoff = Duration::from_secs(1 << shift).min(Duration::from_secs(30));
                self.next_scan = Some(Instant::now() + backoff);
                self.rescan_wanted = false;
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "fan-out: scanning the connection table failed");
            }
            Event::Snapshots { result } => match result {
                Ok((snapshots, quotes)) => {
                    self.fanout.seed_quotes(quotes);
                    for s in snapshots {
                        if self.fanout.set_snapshot(s) {
                            self.stats.snapshots_applied.fetch_add(1, Relaxed);
                        }
                    }
                }
                Err(e) => {
                    self.stats.snapshot_load_failures.fetch_add(1, Relaxed);
                    self.warn("loading positions snapshots failed; retrying", &e);
                    self.snapshot_retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
                }
            },
            Event::Inspect(reply) => {
                let _ = reply.send(self.fanout.connection_ids());
            }
        }
    }

    fn start_scan(&mut self) {
        self.fanout.begin_scan();
        self.scanning = true;
        let (table, events) = (self.table.clone(), self.events.clone());
        tokio::spawn(async move {
            let result =
                match tokio::time::timeout(SCAN_TIMEOUT, table.scan(adapters::now_ms())).await {
                    Ok(r) => r,
                    Err(_) => Err(DependencyError::dynamodb("scan timed out")),
                };
            let _ = events.send(Event::Scanned(result));
        });
    }

    /// Loads the snapshots of accounts that just got their first connection, with the
    /// cached prices of what they hold.
    fn load_snapshots(&mut self) {
        let wanted = self.fanout.take_snapshot_requests();
        if wanted.is_empty() {
            return;
        }
        let (cache, events) = (self.cache.clone(), self.events.clone());
        tokio::spawn(async move {
            let mut found = Vec::new();
            let mut result = Ok(());
            for chunk in wanted.chunks(SNAPSHOT_CHUNK) {
                match tokio::time::timeout(REDIS_TIMEOUT, cache.snapshots(chunk)).await {
                    Ok(Ok(map)) => found.extend(map.into_values()),
                    Ok(Err(e)) => result = Err(e),
                    Err(_) => result = Err(DependencyError::redis("snapshot load timed out")),
                }
                if result.is_err() {
                    break;
                }
            }
            // The prices of what they hold, so that a PnL is priced before the next flush
            // of those symbols (best effort: a failure only leaves it unpriced until then).
            let mut quotes = Vec::new();
            if result.is_ok() {
                let mut held: Vec<String> = found
                    .iter()
                    .flat_map(|s| s.positions.iter().map(|p| p.symbol.clone()))
                    .collect();
                held.sort_unstable();
                held.dedup();
                for chunk in held.chunks(SNAPSHOT_CHUNK) {
                    if let Ok(Ok(map)) =
                        tokio::time::timeout(REDIS_TIMEOUT, cache.quotes(chunk)).await
                    {
                        quotes.extend(map.into_values());
                    }
                }
            }
            let _ = events.send(Event::Snapshots {
                result: result.map(|()| (found, quotes)),
            });
        });
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if !self.scanning && self.next_scan.is_some_and(|t| now >= t) {
            self.start_scan();
        }
        if self.snapshot_retry_at.is_some_and(|t| now >= t) {
            self.snapshot_retry_at = None;
            self.fanout.reload_snapshots();
        }
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.fanout.drop_expired(adapters::now_ms());
            self.stats
                .snapshots
                .store(self.fanout.snapshots() as u64, Relaxed);
        }
        let counts = self.fanout.counts();
        self.stats.coalesced.store(counts.coalesced, Relaxed);
        self.stats.expired.store(counts.expired, Relaxed);
    }

    fn log_stats(&self) {
        self.stats
            .snapshots
            .store(self.fanout.snapshots() as u64, Relaxed);
        let c = self.stats.snapshot();
        tracing::info!(
            connections = c.connections,
            accounts = c.accounts,
            snapshots = c.snapshots,
            messages_sent = c.messages_sent,
            prices_sent = c.prices_sent,
            pnl_sent = c.pnl_sent,
            pushes_gone = c.pushes_gone,
            push_failures = c.push_failures,
            pushes_too_large = c.pushes_too_large,
            in_flight = c.in_flight,
            outbox = c.outbox,
            coalesced = c.coalesced,
            expired = c.expired,
            last_plan_us = c.last_plan_us,
            max_plan_us = c.max_plan_us,
            changes_applied = c.changes_applied,
            snapshots_applied = c.snapshots_applied,
            bad_notifications = c.bad_notifications,
            subscribes = c.subscribes,
            scans = c.scans,
            scan_failures = c.scan_failures,
            items_deleted = c.items_deleted,
            delete_failures = c.delete_failures,
            "fanout stats"
        );
    }
}

/// Subscribes to the two channels and forwards what arrives, forever: after a lost
/// connection (stream ended, or a ping unanswered) it subscribes again after a jittered
/// backoff (100 ms doubling to 5 s) and reports [`Event::Subscribed`] each time, so the
/// runner re-scans what may have been missed.
async fn listen(
    client: redis::Client,
    prefix: String,
    ping_every: Duration,
    events: UnboundedSender<Event>,
    stats: Arc<FanoutStats>,
) {
    let keys = adapters::keyspace::Keyspace::new(&prefix);
    let (changes, positions) = (keys.connections_channel(), keys.positions_channel());
    let mut backoff = Duration::from_millis(100);
    loop {
        match subscribe(&client, &changes, &positions).await {
            Ok((mut sink, mut stream)) => {
                backoff = Duration::from_millis(100);
                tracing::info!(channels = %format!("{changes}, {positions}"), "fan-out subscribed");
                if events.send(Event::Subscribed).is_err() {
                    return;
                }
                let mut ping = tokio::time::interval(ping_every);
                ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
                ping.tick().await;
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            match decode(&msg, &changes) {
                                Ok(event) => {
                                    if events.send(event).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    stats.bad_notifications.fetch_add(1, Relaxed);
                                    tracing::warn!(error = %e, channel = msg.get_channel_name(),
                                        "fan-out: unreadable notification skipped");
                                }
                            }
                        }
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(
                    "fan-out: pub/sub connection lost; subscribing again, then re-scanning"
                );
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "fan-out: cannot subscribe; retrying");
            }
        }
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe(
    client: &redis::Client,
    changes: &str,
    positions: &str,
) -> anyhow::Result<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to Redis"))??;
    let (mut sink, stream) = pubsub.split();
    for channel in [changes, positions] {
        tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(channel))
            .await
            .map_err(|_| anyhow::anyhow!("SUBSCRIBE {channel} timed out"))??;
    }
    Ok((sink, stream))
}

fn decode(msg: &redis::Msg, changes: &str) -> anyhow::Result<Event> {
    let payload: String = msg.get_payload()?;
    Ok(if msg.get_channel_name() == changes {
        Event::Change(serde_json::from_str(&payload)?)
    } else {
        Event::Snapshot(serde_json::from_str(&payload)?)
    })
}
