//! The trigger runner against real Redis (`REDIS_URL`) and moto SQS (`AWS_ENDPOINT_URL`),
//! as `make test` provides them. Each test has its own key prefix and its own FIFO queue.
//! The "ledger" is a list the test edits exactly as the executor would commit (ledger first,
//! then the Redis index), read by the runner's loader on rebuilds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::error::DependencyError;
use adapters::queue::CommandQueue;
use adapters::watch::WatchIndex;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use domain::command::Command;
use domain::order::{Side, Trail};
use domain::quote::Quote;
use domain::trigger::{Condition, Watch};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use testkit::service_env;
use testkit::wait::poll;
use tokio::task::JoinHandle;
use triggers::{
    quote_channel, run, CommandSink, FlushTap, TriggerConfig, TriggerStats, WatchLoader,
};
use uuid::Uuid;

/// A FIFO queue of the test's own on moto.
async fn queue() -> (aws_sdk_sqs::Client, String) {
    testkit::fifo_queue("trig").await
}

/// The ledger as the loader sees it, and the Redis index as the executor writes it.
#[derive(Clone)]
struct Ledger {
    live: Arc<Mutex<Vec<Watch>>>,
    reads: Arc<AtomicUsize>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            live: Arc::default(),
            reads: Arc::default(),
        }
    }

    fn loader(&self) -> WatchLoader {
        let me = self.clone();
        Box::new(move || {
            let me = me.clone();
            Box::pin(async move {
                me.reads.fetch_add(1, Ordering::SeqCst);
                Ok(me.live.lock().unwrap().clone())
            })
        })
    }

    /// Commit, then update the Redis index: what the executor does for new orders.
    async fn place(&self, index: &WatchIndex, watches: &[Watch]) {
        self.live.lock().unwrap().extend(watches.iter().cloned());
        index.apply(watches, &[]).await.unwrap();
    }
}

struct Harness {
    index: WatchIndex,
    ledger: Ledger,
    sqs: aws_sdk_sqs::Client,
    url: String,
    tap: FlushTap,
    stats: Arc<TriggerStats>,
    task: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn prefix() -> String {
    format!("t{}:", Uuid::new_v4().simple())
}

async fn start_with<S: CommandSink + 'static>(
    cooldown_ms: i64,
    sink: impl FnOnce(&aws_sdk_sqs::Client, &str) -> S,
) -> Harness {
    start_configured(cooldown_ms, 0, sink).await
}

/// `reconcile_ms` 0: never (the tests of the marker-driven rebuilds count rebuilds exactly).
async fn start_configured<S: CommandSink + 'static>(
    cooldown_ms: i64,
    reconcile_ms: u64,
    sink: impl FnOnce(&aws_sdk_sqs::Client, &str) -> S,
) -> Harness {
    let redis_url = service_env("REDIS_URL");
    let prefix = prefix();
    let (sqs, url) = queue().await;
    let ledger = Ledger::new();
    let mut cfg = TriggerConfig::new(&redis_url, &prefix);
    cfg.cooldown_ms = cooldown_ms;
    cfg.rebuild_check_ms = 200;
    cfg.reconcile_ms = reconcile_ms;
    let (tap, rx) = quote_channel();
    let stats = Arc::new(TriggerStats::default());
    let task = tokio::spawn(run(
        cfg,
        WatchIndex::new(&redis_url, &prefix).unwrap(),
        Some(ledger.loader()),
        sink(&sqs, &url),
        rx,
        stats.clone(),
    ));
    let h = Harness {
        index: WatchIndex::new(&redis_url, &prefix).unwrap(),
        ledger,
        sqs,
        url,
        tap,
        stats,
        task,
    };
    // The runner finds no index and builds it from the (empty) ledger.
    h.until("the first build", |h| h.stats.snapshot().rebuilds == 1)
        .await;
    assert!(h.index.is_built().await.unwrap());
    h
}

async fn start(cooldown_ms: i64) -> Harness {
    start_with(cooldown_ms, |sqs, url| {
        CommandQueue::from_client(url, sqs.clone())
    })
    .await
}

impl Harness {
    async fn until(&self, what: &str, done: impl Fn(&Harness) -> bool) {
        poll(
            Duration::from_secs(20),
            Duration::from_millis(20),
            async || {
                if done(self) {
                    Ok(())
                } else {
                    let stats = self.stats.snapshot();
                    Err(format!("timed out waiting for {what}: {stats:?}"))
                }
            },
        )
        .await
    }

    fn flush(&mut self, quotes: &[Quote]) {
        self.tap.on_flush(quotes);
    }

    /// Receives (and deletes) messages until `want` have come, then for `settle` longer to
    /// catch any extra: returns every command with its message group.
    async fn receive(&self, want: usize, settle: Duration) -> Vec<(Command, String)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut settle_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if got.len() >= want && settle_until.is_none() {
                settle_until = Some(now + settle);
            }
            if settle_until.is_some_and(|t| now >= t) {
                break;
            }
            assert!(
                now < deadline,
                "only {} of {want} commands came: {got:?}",
                got.len()
            );
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            for m in out.messages.unwrap_or_default() {
                let cmd: Command = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
                let group = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_default();
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
                got.push((cmd, group));
            }
        }
        got
    }
}

fn quote(symbol: &str, bid: Decimal, ask: Decimal) -> Quote {
    Quote {
        symbol: symbol.into(),
        bid,
        ask,
        last: Some(bid),
        ts: adapters::now_ms(),
    }
}

fn watch(account: Uuid, symbol: &str, side: Side, condition: Condition) -> Watch {
    Watch {
        order_id: Uuid::new_v4(),
        account_id: account,
        symbol: symbol.into(),
        side,
        condition,
        expires_at_ms: None,
    }
}

/// Order id → how many trigger commands named it.
fn triggers(got: &[(Command, String)]) -> HashMap<Uuid, usize> {
    let mut n = HashMap::new();
    for (c, _) in got {
        if let Command::TriggerOrder { order_id, .. } = c {
            *n.entry(*order_id).or_default() += 1;
        }
    }
    n
}

#[tokio::test]
async fn every_crossed_order_is_triggered_once_through_sqs() {
    let mut h = start(60_000).await;
    let accounts: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    // 12 buy limits at 100 on AAAUSDT (more than one SendMessageBatch), a sell stop at 90 on
    // BBBUSDT, a trailing sell 5 below its mark on CCCUSDT, and a buy limit at 50 that the
    // prices never reach.
    let limits: Vec<Watch> = (0..12)
        .map(|i| {
            watch(
                accounts[i % 4],
                "AAAUSDT",
                Side::Buy,
                Condition::Limit { price: dec!(100) },
            )
        })
        .collect();
    let stop = watch(
        accounts[0],
        "BBBUSDT",
        Side::Sell,
        Condition::Stop { price: dec!(90) },
    );
    let trailing = watch(
        accounts[1],
        "CCCUSDT",
        Side::Sell,
        Condition::Trailing {
            trail: Trail::Price(dec!(5)),
            hwm: dec!(100),
        },
    );
    let never = watch(
        accounts[2],
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(50) },
    );
    let mut all = limits.clone();
    all.extend([stop.clone(), trailing.clone(), never.clone()]);
    h.ledger.place(&h.index, &all).await;

    // Not crossed yet; the trailing mark moves up to 110 (stop 105).
    h.flush(&[
        quote("AAAUSDT", dec!(100.5), dec!(100.6)),
        quote("BBBUSDT", dec!(91), dec!(91.1)),
        quote("CCCUSDT", dec!(110), dec!(110.1)),
    ]);
    h.until("the first flush", |h| {
        h.stats.snapshot().watches == 15 && h.stats.snapshot().quote_batches >= 1
    })
    .await;
    assert_eq!(h.stats.snapshot().triggers_sent, 0);
    // Everything crosses, and stays crossed for several flushes.
    for _ in 0..5 {
        h.flush(&[
            quote("AAAUSDT", dec!(99.8), dec!(99.9)),
            quote("BBBUSDT", dec!(89), dec!(89.1)),
            quote("CCCUSDT", dec!(104), dec!(104.2)),
        ]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = h.receive(14, Duration::from_millis(1500)).await;
    let n = triggers(&got);
    assert_eq!(got.len(), 14, "{got:?}");
    for w in limits.iter().chain([&stop, &trailing]) {
        assert_eq!(n.get(&w.order_id), Some(&1), "{w:?}");
    }
    assert!(!n.contains_key(&never.order_id));
    for (cmd, group) in &got {
        let Command::TriggerOrder {
            account_id,
            order_id,
            symbol,
            hwm,
            ..
        } = cmd
        else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            group,
            &account_id.to_string(),
            "the account's message group"
        );
        let w = all.iter().find(|w| w.order_id == *order_id).unwrap();
        assert_eq!((&w.symbol, w.account_id), (symbol, *account_id));
        let want = (*order_id == trailing.order_id).then_some(dec!(110));
        assert_eq!(*hwm, want, "the trailing stop carries its mark");
    }
    let s = h.stats.snapshot();
    assert_eq!(
        (s.triggers_sent, s.expiries_sent, s.send_failures),
        (14, 0, 0)
    );
    // The moved mark was written back to the Redis copy.
    h.until("the mark saved", |h| h.stats.snapshot().marks_saved >= 1)
        .await;
    let (stored, _) = h.index.load().await.unwrap().unwrap();
    let t = stored
        .iter()
        .find(|w| w.order_id == trailing.order_id)
        .unwrap();
    assert_eq!(
        t.condition,
        Condition::Trailing {
            trail: Trail::Price(dec!(5)),
            hwm: dec!(110)
        }
    );
}

#[tokio::test]
async fn a_flushed_redis_is_rebuilt_and_no_order_is_lost_or_triggered_twice() {
    let mut h = start(60_000).await;
    let acct = Uuid::new_v4();
    let a = watch(
        acct,
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(100) },
    );
    let b = watch(
        acct,
        "AAAUSDT",
        Side::Sell,
        Condition::Stop { price: dec!(90) },
    );
    let c = watch(
        acct,
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(50) },
    );
    h.ledger
        .place(&h.index, &[a.clone(), b.clone(), c.clone()])
        .await;
    // a crosses and is in flight (the executor has not filled it yet).
    h.flush(&[quote("AAAUSDT", dec!(99), dec!(99.5))]);
    let got = h.receive(1, Duration::from_millis(300)).await;
    assert_eq!(triggers(&got), HashMap::from([(a.order_id, 1)]));

    // Redis loses the index (marker included); an order placed right after lands in the
    // empty Redis before the runner notices.
    h.index.drop_all().await.unwrap();
    let reads = h.ledger.reads.load(Ordering::SeqCst);
    let d = watch(
        acct,
        "DDDUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(10) },
    );
    h.ledger.place(&h.index, std::slice::from_ref(&d)).await;
    h.until("the rebuild", |h| h.stats.snapshot().rebuilds == 2)
        .await;
    assert!(
        h.ledger.reads.load(Ordering::SeqCst) > reads,
        "read the ledger"
    );
    let mut stored: Vec<Uuid> = h
        .index
        .load()
        .await
        .unwrap()
        .expect("built again")
        .0
        .iter()
        .map(|w| w.order_id)
        .collect();
    stored.sort();
    let mut want = vec![a.order_id, b.order_id, c.order_id, d.order_id];
    want.sort();
    assert_eq!(stored, want, "nothing lost in redis");

    // a is still crossed: it stays in flight, not triggered again. b and d cross now.
    for _ in 0..3 {
        h.flush(&[
            quote("AAAUSDT", dec!(89), dec!(89.5)),
            quote("DDDUSDT", dec!(9.9), dec!(9.95)),
        ]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = h.receive(2, Duration::from_millis(1500)).await;
    assert_eq!(
        triggers(&got),
        HashMap::from([(b.order_id, 1), (d.order_id, 1)]),
        "{got:?}"
    );
    assert_eq!(h.stats.snapshot().triggers_sent, 3);
}

#[tokio::test]
async fn day_orders_expire_on_time_without_any_quote() {
    let h = start(60_000).await;
    let acct = Uuid::new_v4();
    let mut day = watch(
        acct,
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(1) },
    );
    day.expires_at_ms = Some(adapters::now_ms() + 800);
    let gtc = watch(
        acct,
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(1) },
    );
    h.ledger.place(&h.index, &[day.clone(), gtc]).await;
    let got = h.receive(1, Duration::from_millis(1000)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Command::expire(acct, day.order_id));
    assert_eq!(got[0].1, acct.to_string());
    let s = h.stats.snapshot();
    assert_eq!(
        (s.expiries_sent, s.triggers_sent, s.quote_batches),
        (1, 0, 0)
    );
}

/// The real queue, except that the first call fails.
struct FailsOnce {
    queue: CommandQueue,
    failed: AtomicBool,
}

impl CommandSink for FailsOnce {
    async fn send_batch(&self, commands: &[Command]) -> Result<(), DependencyError> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err(DependencyError::queue("injected failure"));
        }
        self.queue.send_batch(commands).await
    }
}

#[tokio::test]
async fn a_failed_send_is_counted_and_the_order_fires_again_after_the_cooldown() {
    let mut h = start_with(500, |sqs, url| FailsOnce {
        queue: CommandQueue::from_client(url, sqs.clone()),
        failed: AtomicBool::new(false),
    })
    .await;
    let acct = Uuid::new_v4();
    let a = watch(
        acct,
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(100) },
    );
    h.ledger.place(&h.index, std::slice::from_ref(&a)).await;
    h.flush(&[quote("AAAUSDT", dec!(99), dec!(99.5))]);
    h.until("the failed send", |h| h.stats.snapshot().send_failures == 1)
        .await;
    // Still crossed on later flushes: sent once the cooldown has passed.
    let started = Instant::now();
    while h.stats.snapshot().triggers_sent == 0 {
        // A wait limit, not a bound on speed: past it the order was never sent again.
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the order was never sent again after the cooldown");
        }
        h.flush(&[quote("AAAUSDT", dec!(99), dec!(99.5))]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the cooldown"
    );
    let got = h.receive(1, Duration::from_millis(300)).await;
    assert_eq!(triggers(&got), HashMap::from([(a.order_id, 1)]));
    let s = h.stats.snapshot();
    assert_eq!((s.send_failures, s.commands_not_sent), (1, 1));
}

/// An executor committed a resting order but could not update the Redis copy (Redis out of
/// reach for that one call, and for the marker's removal too): the copy looks complete and
/// lacks the order. The periodic reconcile rebuilds it from the ledger, and the order fires.
/// (With `reconcile_ms` 0 it would never fire: the first assertion below shows it missing.)
#[tokio::test]
async fn an_index_update_the_executor_could_not_make_is_repaired_by_the_reconcile() {
    let mut h = start_configured(2_000, 3_000, |sqs, url| {
        CommandQueue::from_client(url, sqs.clone())
    })
    .await;
    let acct = Uuid::new_v4();
    let a = watch(
        acct,
        "AAAUSDT",
        Side::Buy,
        Condition::Limit { price: dec!(100) },
    );
    // The commit, without the index update.
    h.ledger.live.lock().unwrap().push(a.clone());
    let before = h.stats.snapshot().reconciles;
    let copy = h.index.load().await.unwrap().expect("built").0;
    if before == 0 && h.stats.snapshot().reconciles == 0 {
        assert!(
            copy.iter().all(|w| w.order_id != a.order_id),
            "not in the copy yet"
        );
    }
    h.until("a reconcile", |h| h.stats.snapshot().reconciles >= 1)
        .await;
    let loaded = h.index.load().await.unwrap().expect("built").0;
    assert!(
        loaded.iter().any(|w| w.order_id == a.order_id),
        "repaired: {loaded:?}"
    );
    h.flush(&[quote("AAAUSDT", dec!(99), dec!(99.5))]);
    let got = h.receive(1, Duration::from_secs(5)).await;
    assert_eq!(triggers(&got), HashMap::from([(a.order_id, 1)]));
}
