//! Trigger evaluation per flush: `TriggerIndex::evaluate` with 100,000 resting orders over
//! 500 symbols (35 % limits, 35 % stops, 30 % trailing stops, buys and sells alike), every
//! symbol quoted in every flush. Goal: ≤ 5 ms per flush.
//!
//! - `steady_flush`: a random walk (σ = 0.05 % of the price per 100 ms flush, Binance-style
//!   8-decimal quotes); the few orders a flush crosses are then removed and replaced by new
//!   ones near the current price, outside the timed region, as the executor would fill them
//!   and clients would place new ones. Only `evaluate` is timed.
//! - `gap_down_10pct`: every symbol gaps down 10 % in one flush: every buy limit, sell stop
//!   and sell trailing stop fires (about half of all orders) and every buy trailing stop's
//!   mark moves. Timed on a fresh copy of the index each time.
//! - `rebuild_100k`: building the index from 100,000 watches (`replace_all` on an empty
//!   index), what the ingest task does at start or after Redis was flushed.
//!
//! Besides criterion's output, a plain timing loop prints mean/p50/p99 per flush and the
//! number fired, and writes them as markdown to `BENCH_REPORT` when that is set.
//! Run: `cargo bench -p domain --bench trigger_index`.

use std::time::{Duration, Instant};

use criterion::{black_box, BatchSize, Criterion};
use domain::order::{Side, Trail};
use domain::quote::Quote;
use domain::trigger::{Condition, Watch};
use domain::trigger_index::TriggerIndex;
use rust_decimal::Decimal;
use uuid::Uuid;

const ORDERS: usize = 100_000;
const SYMBOLS: usize = 500;
const FLUSH_MS: i64 = 100;
const T0: i64 = 1_800_000_000_000;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal, mean 0, σ 1 (Irwin–Hall of 12).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// Test-data generation only: prices are made here as f64 and turned into exact decimals
/// with a fixed number of places, as an exchange would publish them.
fn dec(x: f64, dp: u32) -> Decimal {
    Decimal::from_f64_retain(x)
        .unwrap_or(Decimal::ONE)
        .round_dp(dp)
}

struct Market {
    mids: Vec<f64>,
    names: Vec<String>,
    rng: Rng,
}

impl Market {
    fn new(seed: u64) -> Market {
        let mut rng = Rng(seed);
        let mids = (0..SYMBOLS)
            .map(|_| 10f64.powf(rng.unit() * 4.0 + 0.5)) // 3 … 30,000
            .collect();
        let names = (0..SYMBOLS).map(|i| format!("S{i:03}USDT")).collect();
        Market { mids, names, rng }
    }

    fn quotes(&self, ts: i64) -> Vec<Quote> {
        self.mids
            .iter()
            .zip(&self.names)
            .map(|(&mid, name)| {
                let bid = dec(mid * (1.0 - 0.00005), 2).max(Decimal::new(1, 2));
                let spread = dec(mid * 0.0001, 2).max(Decimal::new(1, 2));
                let (mut bid, mut ask) = (bid, bid + spread);
                // Binance sends 8 decimal places.
                bid.rescale(8);
                ask.rescale(8);
                Quote::new(name.clone(), bid, ask, ts)
            })
            .collect()
    }

    fn step(&mut self, sigma: f64) {
        for m in &mut self.mids {
            *m *= 1.0 + sigma * self.rng.normal();
        }
    }

    fn shift(&mut self, factor: f64) {
        for m in &mut self.mids {
            *m *= factor;
        }
    }

    /// A new resting order on symbol `s`, 0.1 %–5 % away from the current price.
    fn order(&mut self, s: usize) -> Watch {
        let mid = self.mids[s];
        let away = 0.001 + self.rng.unit() * 0.049;
        let side = if self.rng.next().is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        };
        let sign = match side {
            Side::Buy => -1.0,
            Side::Sell => 1.0,
        };
        let kind = self.rng.next() % 100;
        let condition = if kind < 35 {
            Condition::Limit {
                price: dec(mid * (1.0 + sign * away), 2),
            }
        } else if kind < 70 {
            Condition::Stop {
                price: dec(mid * (1.0 - sign * away), 2),
            }
        } else {
            let trail = if self.rng.next().is_multiple_of(2) {
                Trail::Percent(dec(away * 100.0, 2))
            } else {
                Trail::Price(dec(mid * away, 2))
            };
            // The mark already tracked a little: at or beyond the current touch.
            let hwm = dec(mid * (1.0 + sign * self.rng.unit() * 0.002), 2);
            Condition::Trailing { trail, hwm }
        };
        Watch {
            order_id: Uuid::from_u64_pair(self.rng.next(), self.rng.next()),
            account_id: Uuid::from_u64_pair(0, self.rng.next() % 10_000),
            symbol: self.names[s].clone(),
            side,
            condition,
            expires_at_ms: self
                .rng
                .next()
                .is_multiple_of(10)
                .then_some(T0 + 86_400_000),
        }
    }

    fn orders(&mut self, n: usize) -> Vec<Watch> {
        (0..n).map(|i| self.order(i % SYMBOLS)).collect()
    }
}

fn setup() -> (Market, TriggerIndex, Vec<Watch>) {
    let mut market = Market::new(0x5eed_1234_abcd_ef01);
    let watches = market.orders(ORDERS);
    let mut index = TriggerIndex::default();
    index.replace_all(watches.clone());
    (market, index, watches)
}

/// One steady flush: move the market, evaluate (timed), replace what fired (untimed).
fn steady_flush(
    market: &mut Market,
    index: &mut TriggerIndex,
    now: &mut i64,
) -> (Duration, usize, usize) {
    market.step(0.0005);
    *now += FLUSH_MS;
    let quotes = market.quotes(*now);
    let start = Instant::now();
    let fired = index.evaluate(black_box(&quotes), *now);
    let took = start.elapsed();
    let n = fired.len();
    for f in fired {
        index.remove(f.order_id);
        let s = market
            .names
            .iter()
            .position(|x| *x == f.symbol)
            .unwrap_or(0);
        let w = market.order(s);
        index.upsert(w);
    }
    let moved = index.take_moved_marks().len();
    (took, n, moved)
}

fn gap_flush(market: &Market, index: &TriggerIndex) -> (Duration, usize) {
    let mut gapped = Market {
        mids: market.mids.clone(),
        names: market.names.clone(),
        rng: Rng(1),
    };
    gapped.shift(0.9);
    let quotes = gapped.quotes(T0 + FLUSH_MS);
    let mut fresh = index.clone();
    let start = Instant::now();
    let fired = fresh.evaluate(black_box(&quotes), T0 + FLUSH_MS);
    (start.elapsed(), fired.len())
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    let pct = |p: f64| ms(v[((v.len() as f64 - 1.0) * p).round() as usize]);
    (mean, pct(0.5), pct(0.99))
}

/// The plain timing loop behind the printed and reported figures.
fn figures() -> String {
    let (mut market, mut index, watches) = setup();
    let mut now = T0;
    for _ in 0..20 {
        steady_flush(&mut market, &mut index, &mut now);
    }
    let (mut times, mut fired, mut moved) = (Vec::new(), 0usize, 0usize);
    for _ in 0..1_000 {
        let (t, n, m) = steady_flush(&mut market, &mut index, &mut now);
        times.push(t);
        fired += n;
        moved += m;
    }
    let steady = stats(times);
    let steady_fired = fired as f64 / 1_000.0;
    let steady_moved = moved as f64 / 1_000.0;

    let (market, index, _) = setup();
    let (mut times, mut gap_fired) = (Vec::new(), 0);
    for _ in 0..20 {
        let (t, n) = gap_flush(&market, &index);
        times.push(t);
        gap_fired = n;
    }
    let gap = stats(times);

    let mut times = Vec::new();
    for _ in 0..10 {
        let copy = watches.clone();
        let start = Instant::now();
        let mut ix = TriggerIndex::default();
        ix.replace_all(copy);
        times.push(start.elapsed());
        black_box(ix);
    }
    let build = stats(times);

    let mut md = String::new();
    md.push_str(&format!(
        "#### Trigger evaluation per flush: {ORDERS} resting orders over {SYMBOLS} symbols\n\n\
         `TriggerIndex::evaluate` with a quote for every symbol (`cargo bench -p domain --bench trigger_index`), one core.\n\n\
         | case | flushes | orders fired per flush | trailing marks moved per flush | mean ms | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|\n"
    ));
    md.push_str(&format!(
        "| steady: random walk σ 0.05 %/flush, fired orders replaced | 1000 | {steady_fired:.1} | {steady_moved:.0} | **{:.3}** | {:.3} | {:.3} |\n",
        steady.0, steady.1, steady.2
    ));
    md.push_str(&format!(
        "| worst: every symbol gaps down 10 % | 20 | {gap_fired} | all buy trailing | **{:.3}** | {:.3} | {:.3} |\n",
        gap.0, gap.1, gap.2
    ));
    md.push_str(&format!(
        "| build the index from {ORDERS} watches (start / rebuild) | 10 | – | – | {:.3} | {:.3} | {:.3} |\n",
        build.0, build.1, build.2
    ));
    md
}

fn criterion_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("trigger_index_100k_orders_500_symbols");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));

    let (mut market, mut index, watches) = setup();
    let mut now = T0;
    group.bench_function("steady_flush", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| steady_flush(&mut market, &mut index, &mut now).0)
                .sum()
        })
    });

    let (market, index, _) = setup();
    group.bench_function("gap_down_10pct", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| gap_flush(&market, &index).0).sum())
    });

    group.sample_size(10);
    group.bench_function("rebuild_100k", |b| {
        b.iter_batched(
            || watches.clone(),
            |w| {
                let mut ix = TriggerIndex::default();
                ix.replace_all(w);
                ix
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
    // `cargo test --benches` runs this binary without `--bench`: skip the long loop there.
    if std::env::args().any(|a| a == "--bench") {
        let md = figures();
        println!("\n{md}");
        if let Ok(path) = std::env::var("BENCH_REPORT") {
            if let Err(e) = std::fs::write(&path, &md) {
                eprintln!("could not write {path}: {e}");
            }
        }
    }
}
