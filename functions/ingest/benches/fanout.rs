//! The fan-out planner (`fanout::plan`), in-process, one thread: one flush's work
//! for 5,000 connections of 10 symbols each over 500 symbols, every symbol changing every
//! flush (simulated time, 100 ms per flush): `on_quotes` (500 quotes), `plan` (every
//! message built) and `complete` (each message acknowledged as sent).
//!
//! - `rate100`: every connection at `max_rate_ms` = 100: 5,000 messages per flush.
//! - `rate500`: the default 500 ms: 1,000 messages per flush.
//! - `rate100_pnl`: as `rate100`, with 2,500 accounts (two connections each) holding 3
//!   positions each: every account's PnL recomputed every flush and carried.
//!
//! Run: `cargo bench -p ingest --bench fanout`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use domain::accounting::Position;
use domain::quote::Quote;
use domain::realtime::{Connection, PositionsSnapshot, SnapshotPosition};
use fanout::{Fanout, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

const CONNECTIONS: usize = 5_000;
const PER_CONNECTION: usize = 10;
const SYMBOLS: usize = 500;
const T0: i64 = 1_723_161_255_000;

fn symbol(i: usize) -> String {
    format!("S{i:03}USDT")
}

fn setup(rate: u32, accounts: usize, positions: usize) -> Fanout {
    let mut rng = StdRng::seed_from_u64(7);
    let mut f = Fanout::new();
    let accounts = accounts.max(1);
    for i in 0..CONNECTIONS {
        let account = Uuid::from_u128((i % accounts) as u128 + 1);
        let mut c = Connection::new(&format!("conn{i:05}="), account, T0);
        let mut syms: Vec<String> = Vec::new();
        while syms.len() < PER_CONNECTION {
            let s = symbol(rng.random_range(0..SYMBOLS));
            if !syms.contains(&s) {
                syms.push(s);
            }
        }
        syms.sort();
        c.symbols = syms;
        c.max_rate_ms = rate;
        f.put(c, T0);
    }
    f.take_snapshot_requests();
    if positions > 0 {
        for a in 0..accounts {
            let snap = PositionsSnapshot {
                account_id: Uuid::from_u128(a as u128 + 1),
                cash: Decimal::from(10_000),
                positions: (0..positions)
                    .map(|_| SnapshotPosition {
                        symbol: symbol(rng.random_range(0..SYMBOLS)),
                        position: Position {
                            qty: Decimal::new(rng.random_range(-500..500), 2),
                            avg_entry_price: Decimal::from(100),
                            realized_pnl: Decimal::ZERO,
                        },
                    })
                    .collect(),
                at: 1,
            };
            f.set_snapshot(snap);
        }
    }
    f
}

/// Two alternating flushes, every symbol changed in each.
fn flushes() -> [Vec<Quote>; 2] {
    let make = |k: i64| {
        (0..SYMBOLS)
            .map(|i| Quote {
                symbol: symbol(i),
                bid: Decimal::new(10_000 + i as i64 * 7 + k, 2),
                ask: Decimal::new(10_001 + i as i64 * 7 + k, 2),
                last: Some(Decimal::new(10_000 + i as i64 * 7, 2)),
                ts: T0,
            })
            .collect()
    };
    [make(0), make(3)]
}

fn bench(c: &mut Criterion) {
    let quotes = flushes();
    let mut group = c.benchmark_group("fanout_flush_5000x10of500");
    group.throughput(Throughput::Elements(CONNECTIONS as u64));
    for (name, rate, accounts, positions) in [
        ("rate100", 100u32, CONNECTIONS, 0usize),
        ("rate500", 500, CONNECTIONS, 0),
        ("rate100_pnl", 100, CONNECTIONS / 2, 3),
    ] {
        let mut f = setup(rate, accounts, positions);
        let mut now = T0;
        let mut flush = 0usize;
        let mut messages = 0u64;
        let mut bytes = 0u64;
        let mut rounds = 0u64;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                now += 100;
                flush += 1;
                f.on_quotes(&quotes[flush % 2]);
                let out = f.plan(now);
                for m in &out {
                    bytes += m.body.len() as u64;
                    f.complete(&m.connection_id, m.generation, Outcome::Sent, now);
                }
                messages += out.len() as u64;
                rounds += 1;
                black_box(out.len())
            })
        });
        if rounds > 0 {
            println!(
                "{name}: {:.0} messages per flush, {:.0} bytes per message on average",
                messages as f64 / rounds as f64,
                bytes as f64 / messages.max(1) as f64
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
