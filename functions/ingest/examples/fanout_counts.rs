//! Figure for BENCHMARKS.md: WebSocket messages per connection per minute, coalesced by the
//! fan-out vs one message per market update, on the recorded Binance data
//! (`infra/feed/data/{btcusdt,ethusdt}_20240808.gz`, lines `<receive_ts_ns> <combined-stream
//! JSON>`).
//!
//! Replays both recordings merged in receive order, in simulated time: each message goes
//! through `market_data::parse` and `Book::apply` at its receive time; every 100 ms (the flush
//! interval) the book's changed quotes go to the fan-out planner (`Fanout::on_quotes`, then
//! `Fanout::plan` at the flush time) and every planned message is acknowledged at once.
//! "One message per update" counts every bookTicker and trade update of the subscribed
//! symbols. No I/O besides reading the files; the result is deterministic.
//!
//! Run: `cargo run -q -p ingest --example fanout_counts` (any profile gives the same
//! numbers). Prints one Markdown section (heading, caption, table) to stdout, or to the file
//! named by `BENCH_REPORT`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;

use domain::accounting::Position;
use domain::realtime::{Connection, PositionsSnapshot, SnapshotPosition, DEFAULT_MAX_RATE_MS};
use fanout::{Fanout, Outcome};
use market_data::parse::parse;
use market_data::Book;
use rust_decimal::Decimal;
use uuid::Uuid;

const FLUSH_MS: i64 = 100;
const FILES: [&str; 2] = ["btcusdt_20240808.gz", "ethusdt_20240808.gz"];

/// (receive time in ns, message) of every line of a recording.
fn read(name: &str) -> Vec<(i64, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/feed/data")
        .join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.expect("readable recording");
        if let Some((ts, json)) = line.split_once(' ') {
            if let Ok(ts) = ts.parse::<i64>() {
                out.push((ts, json.to_string()));
            }
        }
    }
    out
}

struct Row {
    label: &'static str,
    symbols: &'static [&'static str],
    /// Positions held by the connection's account: (symbol, qty).
    holds: &'static [(&'static str, i64)],
}

const ROWS: [Row; 5] = [
    Row {
        label: "BTCUSDT",
        symbols: &["BTCUSDT"],
        holds: &[],
    },
    Row {
        label: "ETHUSDT",
        symbols: &["ETHUSDT"],
        holds: &[],
    },
    Row {
        label: "BTCUSDT + ETHUSDT",
        symbols: &["BTCUSDT", "ETHUSDT"],
        holds: &[],
    },
    Row {
        label: "BTCUSDT + ETHUSDT, account long BTC (prices + PnL)",
        symbols: &["BTCUSDT", "ETHUSDT"],
        holds: &[("BTCUSDT", 1)],
    },
    Row {
        label: "no symbols, account long BTC and short ETH (PnL only)",
        symbols: &[],
        holds: &[("BTCUSDT", 1), ("ETHUSDT", -2)],
    },
];

const RATES: [u32; 2] = [100, DEFAULT_MAX_RATE_MS];

fn main() {
    let mut lines: Vec<(i64, String)> = FILES.iter().flat_map(|f| read(f)).collect();
    lines.sort_by_key(|(ts, _)| *ts);
    let first_ms = lines.first().map(|(t, _)| t / 1_000_000).expect("data");
    let last_ms = lines.last().map(|(t, _)| t / 1_000_000).expect("data");
    // Exact decimals: the counts feed a dollar figure.
    let minutes = Decimal::from(last_ms - first_ms) / Decimal::from(60_000);

    // One connection per (row, rate), each on an account of its own.
    let mut fanout = Fanout::new();
    let mut ids: Vec<(usize, u32, String)> = Vec::new();
    for (r, row) in ROWS.iter().enumerate() {
        for &rate in &RATES {
            let id = format!("row{r}-rate{rate}=");
            let account = Uuid::from_u128(((r as u128) << 32) | u128::from(rate));
            let mut c = Connection::new(&id, account, first_ms);
            c.symbols = row.symbols.iter().map(|s| s.to_string()).collect();
            c.max_rate_ms = rate;
            fanout.put(c, first_ms);
            if !row.holds.is_empty() {
                fanout.set_snapshot(PositionsSnapshot {
                    account_id: account,
                    cash: Decimal::from(100_000),
                    positions: row
                        .holds
                        .iter()
                        .map(|(s, qty)| SnapshotPosition {
                            symbol: s.to_string(),
                            position: Position {
                                qty: Decimal::from(*qty),
                                avg_entry_price: Decimal::from(if *s == "BTCUSDT" {
                                    60_000
                                } else {
                                    2_500
                                }),
                                realized_pnl: Decimal::ZERO,
                            },
                        })
                        .collect(),
                    at: first_ms,
                });
            }
            ids.push((r, rate, id));
        }
    }
    fanout.take_snapshot_requests();

    let mut book = Book::new();
    let mut updates: HashMap<String, u64> = HashMap::new();
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut flushes = 0u64;
    let mut next_flush = first_ms + FLUSH_MS;
    let mut flush =
        |book: &mut Book, fanout: &mut Fanout, at: i64, sent: &mut HashMap<String, u64>| {
            let quotes = book.take_dirty();
            if !quotes.is_empty() {
                fanout.on_quotes(&quotes);
            }
            let out = fanout.plan(at);
            for m in &out {
                *sent.entry(m.connection_id.to_string()).or_default() += 1;
                fanout.complete(&m.connection_id, m.generation, Outcome::Sent, at);
            }
            flushes += 1;
        };
    for (ts, msg) in &lines {
        let now = ts / 1_000_000;
        while now >= next_flush {
            flush(&mut book, &mut fanout, next_flush, &mut sent);
            next_flush += FLUSH_MS;
        }
        if let Ok(Some(u)) = parse(msg) {
            *updates.entry(u.symbol().to_string()).or_default() += 1;
            book.apply(&u, now);
        }
    }
    flush(&mut book, &mut fanout, next_flush, &mut sent);
    // A last tick: whatever had to wait goes out.
    flush(&mut book, &mut fanout, next_flush + 1_000, &mut sent);

    let per_min = |n: u64| Decimal::from(n) / minutes;
    // API Gateway WebSocket: $1.00 per million messages; a connection open all month.
    let month = |per_min: Decimal| per_min * Decimal::from(60 * 24 * 30) / Decimal::from(1_000_000);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "#### Fan-out: WebSocket messages per connection per minute"
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Recorded Binance data ({}, {:.1} min, {} bookTicker + trade updates) replayed in simulated time through `market_data::parse`, `Book` and the fan-out planner (`fanout::plan`), 100 ms flushes. \"One message per update\" sends every bookTicker and trade update of the subscribed symbols; coalesced sends at most one message per flush and per `max_rate_ms`, only if something changed, with the account's PnL inside. Cost: API Gateway's $1.00 per million messages for a connection open all month. `cargo run -q -p ingest --example fanout_counts`.",
        FILES.join(", "),
        minutes,
        updates.values().sum::<u64>()
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| connection subscribes to | one message per update | coalesced, `max_rate_ms` 100 | coalesced, `max_rate_ms` 500 (default) | per update → 500 ms, $ per connection-month |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (r, row) in ROWS.iter().enumerate() {
        let raw: u64 = row
            .symbols
            .iter()
            .map(|s| updates.get(*s).copied().unwrap_or(0))
            .sum();
        let count = |rate: u32| {
            ids.iter()
                .find(|(rr, ra, _)| *rr == r && *ra == rate)
                .and_then(|(_, _, id)| sent.get(id).copied())
                .unwrap_or(0)
        };
        let (fast, slow) = (per_min(count(100)), per_min(count(DEFAULT_MAX_RATE_MS)));
        let raw_cell = if row.symbols.is_empty() {
            "n/a".to_string()
        } else {
            format!("{:.0}", per_min(raw))
        };
        let cost = if row.symbols.is_empty() {
            format!("${:.2}", month(slow))
        } else {
            format!("${:.2} → ${:.2}", month(per_min(raw)), month(slow))
        };
        let _ = writeln!(
            md,
            "| {} | {raw_cell} | {fast:.0} | {slow:.0} | {cost} |",
            row.label
        );
    }
    match std::env::var("BENCH_REPORT") {
        Ok(path) if !path.is_empty() => {
            std::fs::write(&path, &md).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        _ => print!("{md}"),
    }
}
