use std::collections::{BTreeSet, HashMap, HashSet};

use domain::accounting::Position;
use domain::realtime::{update_message, SnapshotPosition, DEFAULT_MAX_RATE_MS};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::Value;

use super::*;

const T0: i64 = 1_723_161_255_000;

fn acct(n: u8) -> Uuid {
    Uuid::from_u128(0xA000 + u128::from(n))
}

fn conn(id: &str, account: Uuid, symbols: &[&str], rate: u32) -> Connection {
    let mut c = Connection::new(id, account, T0);
    let set: BTreeSet<String> = symbols.iter().map(|s| s.to_string()).collect();
    c.symbols = set.into_iter().collect();
    c.max_rate_ms = rate;
    c
}

fn quote(symbol: &str, bid: i64, ts: i64) -> Quote {
    Quote {
        symbol: symbol.into(),
        bid: Decimal::from(bid),
        ask: Decimal::from(bid + 1),
        last: (bid % 2 == 0).then(|| Decimal::from(bid)),
        ts,
    }
}

fn snapshot(
    account: Uuid,
    cash: i64,
    positions: &[(&str, i64, i64)],
    at: i64,
) -> PositionsSnapshot {
    PositionsSnapshot {
        account_id: account,
        cash: Decimal::from(cash),
        positions: positions
            .iter()
            .map(|(s, qty, avg)| SnapshotPosition {
                symbol: s.to_string(),
                position: Position {
                    qty: Decimal::from(*qty),
                    avg_entry_price: Decimal::from(*avg),
                    realized_pnl: Decimal::ZERO,
                },
            })
            .collect(),
        at,
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// (id, symbols carried, pnl object if any) of each message, sorted by id.
fn summary(out: &[Outgoing]) -> Vec<(String, Vec<String>, Option<Value>)> {
    let mut v: Vec<_> = out
        .iter()
        .map(|m| {
            let body = json(&m.body);
            let mut syms: Vec<String> = body["prices"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| p["symbol"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            syms.sort();
            (m.connection_id.to_string(), syms, body.get("pnl").cloned())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn ids(out: &[Outgoing]) -> Vec<String> {
    let mut v: Vec<String> = out.iter().map(|m| m.connection_id.to_string()).collect();
    v.sort();
    v
}

fn complete_all(f: &mut Fanout, out: &[Outgoing], outcome: Outcome, now: i64) {
    for m in out {
        assert!(f.complete(&m.connection_id, m.generation, outcome, now));
    }
}

/// A fan-out with "x" (account 1) subscribed to BTCUSDT at `rate_ms`, BTCUSDT quoted at T0.
fn btc_watcher(rate_ms: u32) -> Fanout {
    let mut f = Fanout::new();
    f.put(conn("x", acct(1), &["BTCUSDT"], rate_ms), T0);
    f.on_quotes(&[quote("BTCUSDT", 1, T0)]);
    f
}

/// Plans at `now` and completes every message of the plan as sent, at `now`.
fn send_all(f: &mut Fanout, now: i64) {
    let out = f.plan(now);
    complete_all(f, &out, Outcome::Sent, now);
}

#[test]
fn the_body_is_the_same_json_as_update_message() {
    let a = quote("BTCUSDT", 61_000, 5);
    let b = Quote {
        last: Some("3000.50".parse().unwrap()),
        ..quote("ETHUSDT", 3_000, 6)
    };
    let pnl_text = r#"{"cash":"1","equity":null,"unrealized_pl":"0","positions":[]}"#;
    let pnl = json(pnl_text);
    let frags = [quote_fragment(&a), quote_fragment(&b)];
    for (quotes, with_pnl) in [
        (vec![&a, &b], true),
        (vec![&a], false),
        (vec![], true),
        (vec![&b, &a], false),
    ] {
        let fr: Vec<&str> = quotes
            .iter()
            .map(|q| {
                if q.symbol == "BTCUSDT" {
                    frags[0].as_str()
                } else {
                    frags[1].as_str()
                }
            })
            .collect();
        let ours = message_body(7, fr, with_pnl.then_some(pnl_text));
        let theirs = update_message(7, &quotes, with_pnl.then_some(&pnl));
        assert_eq!(json(&ours), json(&theirs), "{ours} vs {theirs}");
    }
}

#[test]
fn the_pnl_text_is_the_same_json_as_to_json() {
    let snap = snapshot(
        acct(1),
        1_000,
        &[
            ("BTCUSDT", 2, 60_000),
            ("ETHUSDT", -3, 3_000),
            ("ODD\"SYM", 1, 1),
        ],
        1,
    );
    let btc = Quote {
        bid: "61000.10".parse().unwrap(),
        ..quote("BTCUSDT", 0, 1)
    };
    let eth = quote("ETHUSDT", 2_900, 1);
    for priced in [0, 1, 2] {
        let pnl = AccountPnl::value(&snap, |s| match (s, priced) {
            ("BTCUSDT", 1..) => Some(&btc),
            ("ETHUSDT", 2..) => Some(&eth),
            _ => None,
        });
        assert_eq!(json(&pnl_json(&pnl)), pnl.to_json(), "{}", pnl_json(&pnl));
    }
    let empty = AccountPnl::value(&snapshot(acct(1), 5, &[], 1), |_| None);
    assert_eq!(json(&pnl_json(&empty)), empty.to_json());
    let odd = Quote {
        symbol: "A\"B\\C".into(),
        last: Some("0.000100".parse().unwrap()),
        ..quote("X", 1, -3)
    };
    let m = json(&message_body(1, [quote_fragment(&odd).as_str()], None));
    assert_eq!(m, json(&update_message(1, &[&odd], None)));
    assert_eq!(m["prices"][0]["last"], "0.0001");
}

#[test]
fn one_message_per_connection_with_every_changed_subscribed_symbol() {
    let mut f = Fanout::new();
    f.put(conn("a=", acct(1), &["BTCUSDT", "ETHUSDT"], 100), T0);
    f.put(conn("b=", acct(2), &["ETHUSDT"], 100), T0);
    f.put(conn("c=", acct(2), &["XRPUSDT"], 100), T0);
    assert!(f.plan(T0).is_empty(), "nothing changed yet");
    f.on_quotes(&[
        quote("BTCUSDT", 61_000, T0),
        quote("ETHUSDT", 3_000, T0),
        quote("SOLUSDT", 150, T0),
    ]);
    let out = f.plan(T0 + 1);
    assert_eq!(
        summary(&out),
        vec![
            ("a=".into(), vec!["BTCUSDT".into(), "ETHUSDT".into()], None),
            ("b=".into(), vec!["ETHUSDT".into()], None),
        ]
    );
    let body = json(&out.iter().find(|m| &*m.connection_id == "a=").unwrap().body);
    assert_eq!(body["type"], "prices");
    assert_eq!(body["ts"], T0 + 1);
    assert_eq!(f.in_flight(), 2);
    complete_all(&mut f, &out, Outcome::Sent, T0 + 2);
    assert!(f.plan(T0 + 500).is_empty(), "only if changed");
}

#[test]
fn the_rate_holds_back_changes_which_accumulate_and_go_on_a_tick() {
    let mut f = Fanout::new();
    f.put(
        conn(
            "slow",
            acct(1),
            &["BTCUSDT", "ETHUSDT"],
            DEFAULT_MAX_RATE_MS,
        ),
        T0,
    );
    f.put(conn("fast", acct(1), &["BTCUSDT", "ETHUSDT"], 100), T0);
    f.on_quotes(&[quote("BTCUSDT", 1, T0)]);
    let out = f.plan(T0);
    assert_eq!(ids(&out), ["fast", "slow"]);
    complete_all(&mut f, &out, Outcome::Sent, T0 + 5);
    // Flushes every 100 ms: the fast one gets each, the slow one waits.
    for (i, bid) in [(1, 2), (2, 3), (3, 4)] {
        let t = T0 + i * 100;
        f.on_quotes(&[quote(if i == 2 { "ETHUSDT" } else { "BTCUSDT" }, bid, t)]);
        let out = f.plan(t);
        assert_eq!(ids(&out), ["fast"], "at +{}", i * 100);
        complete_all(&mut f, &out, Outcome::Sent, t + 5);
    }
    // No new flush: the timer tick at +489 is too early, +490 (the rate less the jitter
    // tolerance) sends the accumulated ones.
    assert!(f.plan(T0 + 500 - RATE_JITTER_MS - 1).is_empty());
    let out = f.plan(T0 + 500 - RATE_JITTER_MS);
    assert_eq!(ids(&out), ["slow"]);
    let body = json(&out[0].body);
    let prices = body["prices"].as_array().unwrap();
    assert_eq!(prices.len(), 2, "{body}");
    let btc = prices.iter().find(|p| p["symbol"] == "BTCUSDT").unwrap();
    assert_eq!(btc["bid"], "4", "latest quote wins");
    assert!(f.counts().coalesced >= 1);
}

#[test]
fn the_rate_is_clamped_to_the_minimum() {
    let mut f = btc_watcher(10);
    send_all(&mut f, T0);
    f.on_quotes(&[quote("BTCUSDT", 2, T0 + 50)]);
    assert!(f.plan(T0 + 50).is_empty());
    assert!(f.plan(T0 + 100 - RATE_JITTER_MS - 1).is_empty());
    assert_eq!(f.plan(T0 + 100 - RATE_JITTER_MS).len(), 1);
}

#[test]
fn a_push_in_flight_holds_later_changes_until_it_completes() {
    let mut f = btc_watcher(100);
    let first = f.plan(T0);
    assert_eq!(first.len(), 1);
    f.on_quotes(&[quote("BTCUSDT", 2, T0 + 100)]);
    assert!(f.plan(T0 + 100).is_empty(), "in flight");
    f.on_quotes(&[quote("BTCUSDT", 3, T0 + 200)]);
    assert!(f.plan(T0 + 200).is_empty(), "still in flight");
    complete_all(&mut f, &first, Outcome::Sent, T0 + 250);
    let out = f.plan(T0 + 250);
    assert_eq!(out.len(), 1);
    assert_eq!(json(&out[0].body)["prices"][0]["bid"], "3");
}

#[test]
fn a_failed_push_is_retried_with_backoff_carrying_the_latest_quote() {
    let mut f = Fanout::new();
    f.put(conn("x", acct(1), &["BTCUSDT", "ETHUSDT"], 100), T0);
    f.on_quotes(&[quote("BTCUSDT", 1, T0), quote("ETHUSDT", 7, T0)]);
    let out = f.plan(T0);
    complete_all(&mut f, &out, Outcome::Failed, T0 + 10);
    f.on_quotes(&[quote("BTCUSDT", 2, T0 + 50)]);
    // 100 ms after the failure, and the rate: not before T0 + 110.
    assert!(f.plan(T0 + 100).is_empty());
    let out = f.plan(T0 + 110);
    assert_eq!(summary(&out)[0].1, ["BTCUSDT", "ETHUSDT"], "both again");
    assert_eq!(
        json(&out[0].body)["prices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["symbol"] == "BTCUSDT")
            .unwrap()["bid"],
        "2"
    );
    // Second failure: 200 ms.
    complete_all(&mut f, &out, Outcome::Failed, T0 + 120);
    assert!(f.plan(T0 + 319).is_empty());
    let out = f.plan(T0 + 320);
    assert_eq!(out.len(), 1);
    complete_all(&mut f, &out, Outcome::Sent, T0 + 330);
    // Success resets the backoff; nothing pending.
    assert!(f.plan(T0 + 1_000).is_empty());
    assert_eq!(retry_delay_ms(1), 100);
    assert_eq!(retry_delay_ms(3), 400);
    assert_eq!(retry_delay_ms(7), 5_000);
    assert_eq!(retry_delay_ms(1_000), 5_000);
}

#[test]
fn a_gone_connection_is_dropped_and_never_planned_again() {
    let mut f = Fanout::new();
    f.put(conn("gone", acct(1), &["BTCUSDT"], 100), T0);
    f.put(conn("kept", acct(1), &["BTCUSDT"], 100), T0);
    f.on_quotes(&[quote("BTCUSDT", 1, T0)]);
    let out = f.plan(T0);
    for m in &out {
        let outcome = if &*m.connection_id == "gone" {
            Outcome::Gone
        } else {
            Outcome::Sent
        };
        assert!(f.complete(&m.connection_id, m.generation, outcome, T0 + 1));
    }
    assert!(!f.contains("gone"));
    assert_eq!(f.len(), 1);
    assert_eq!(f.accounts(), 1);
    f.on_quotes(&[quote("BTCUSDT", 2, T0 + 100)]);
    assert_eq!(ids(&f.plan(T0 + 100)), ["kept"]);
}

#[test]
fn a_completion_for_an_earlier_incarnation_is_ignored() {
    let mut f = btc_watcher(100);
    let old = f.plan(T0);
    f.remove("x");
    f.put(conn("x", acct(1), &["BTCUSDT"], 100), T0);
    f.on_quotes(&[quote("BTCUSDT", 2, T0 + 1)]);
    let new = f.plan(T0 + 1);
    assert_eq!(new.len(), 1, "a new incarnation has nothing in flight");
    assert!(!f.is_current("x", old[0].generation));
    assert!(f.is_current("x", new[0].generation));
    assert!(!f.complete("x", old[0].generation, Outcome::Gone, T0 + 2));
    assert!(f.contains("x"));
}

#[test]
fn a_snapshot_sends_pnl_to_every_connection_of_its_account_and_no_other() {
    let mut f = Fanout::new();
    f.put(conn("p1", acct(1), &["BTCUSDT"], 100), T0);
    f.put(conn("p2", acct(1), &[], 500), T0);
    f.put(conn("q", acct(2), &["BTCUSDT"], 100), T0);
    let mut wanted = f.take_snapshot_requests();
    wanted.sort();
    assert_eq!(wanted, [acct(1), acct(2)]);
    assert!(f.take_snapshot_requests().is_empty());
    f.on_quotes(&[quote("BTCUSDT", 61_000, T0)]);
    let out = f.plan(T0);
    assert!(out.iter().all(|m| !m.pnl), "no snapshot yet");
    complete_all(&mut f, &out, Outcome::Sent, T0);

    assert!(f.set_snapshot(snapshot(acct(1), 1_000, &[("BTCUSDT", 2, 60_000)], 10)));
    assert!(
        !f.set_snapshot(snapshot(acct(9), 1_000, &[], 10)),
        "no connection"
    );
    let out = f.plan(T0 + 100);
    let s = summary(&out);
    assert_eq!(ids(&out), ["p1", "p2"]);
    for (_, syms, pnl) in &s {
        assert!(syms.is_empty());
        let pnl = pnl.as_ref().unwrap();
        // 2 × (61000 − 60000)
        assert_eq!(pnl["unrealized_pl"], "2000");
        assert_eq!(pnl["equity"], "123000");
    }
    assert!(out.iter().all(|m| json(&m.body)["type"] == "pnl"));
    complete_all(&mut f, &out, Outcome::Sent, T0 + 100);
    assert!(f.plan(T0 + 1_000).is_empty());

    // A reload asks for every account, with or without a snapshot.
    f.reload_snapshots();
    let mut all = f.take_snapshot_requests();
    all.sort();
    assert_eq!(all, [acct(1), acct(2)]);
    assert!(f.take_snapshot_requests().is_empty());

    // An older snapshot is ignored; the same PnL again sends nothing.
    assert!(!f.set_snapshot(snapshot(acct(1), 5, &[], 9)));
    assert!(f.set_snapshot(snapshot(acct(1), 1_000, &[("BTCUSDT", 2, 60_000)], 11)));
    assert!(f.plan(T0 + 2_000).is_empty(), "PnL unchanged");
}

#[test]
fn pnl_moves_with_held_prices_and_rides_along_with_prices() {
    let mut f = Fanout::new();
    f.put(conn("p", acct(1), &["BTCUSDT"], 100), T0);
    f.put(conn("watch-eth", acct(1), &["ETHUSDT"], 100), T0);
    f.set_snapshot(snapshot(acct(1), 0, &[("BTCUSDT", 1, 60_000)], 1));
    f.on_quotes(&[quote("BTCUSDT", 61_000, T0)]);
    let out = f.plan(T0);
    let s = summary(&out);
    assert_eq!(s[0].0, "p");
    assert_eq!(s[0].1, ["BTCUSDT"]);
    assert_eq!(s[0].2.as_ref().unwrap()["unrealized_pl"], "1000");
    assert_eq!(json(&out[0].body)["type"], "prices");
    // The ETH watcher gets the PnL alone (a price it does not watch moved it).
    assert_eq!(s[1].0, "watch-eth");
    assert!(s[1].1.is_empty());
    assert!(s[1].2.is_some());
    complete_all(&mut f, &out, Outcome::Sent, T0);

    // Only the ask moved: a long is marked at the bid, so the PnL text is the same.
    f.on_quotes(&[Quote {
        ask: Decimal::from(61_005),
        ..quote("BTCUSDT", 61_000, T0 + 100)
    }]);
    let out = f.plan(T0 + 100);
    let s = summary(&out);
    assert_eq!(ids(&out), ["p"]);
    assert_eq!(s[0].2, None, "PnL unchanged: not carried");
    complete_all(&mut f, &out, Outcome::Sent, T0 + 100);

    // ETH moves: p gets nothing (not subscribed, PnL unaffected).
    f.on_quotes(&[quote("ETHUSDT", 3_000, T0 + 200)]);
    let out = f.plan(T0 + 200);
    assert_eq!(
        summary(&out),
        [("watch-eth".into(), vec!["ETHUSDT".into()], None)]
    );
}

#[test]
fn seeded_quotes_price_the_pnl_but_are_not_sent_as_changes() {
    let mut f = Fanout::new();
    f.put(conn("p", acct(1), &["BTCUSDT", "ETHUSDT"], 100), T0);
    f.on_quotes(&[quote("ETHUSDT", 3_000, T0)]);
    send_all(&mut f, T0);
    f.set_snapshot(snapshot(
        acct(1),
        0,
        &[("BTCUSDT", 1, 60_000), ("ETHUSDT", 1, 2_000)],
        1,
    ));
    // ETH was flushed already: the cache's (older) ETH is not taken.
    f.seed_quotes([
        quote("BTCUSDT", 61_000, T0 - 5),
        quote("ETHUSDT", 1, T0 - 5),
    ]);
    let out = f.plan(T0 + 100);
    let s = summary(&out);
    assert_eq!(s.len(), 1);
    assert!(s[0].1.is_empty(), "no prices: {s:?}");
    // 1 × (61000 − 60000) + 1 × (3000 − 2000)
    assert_eq!(s[0].2.as_ref().unwrap()["unrealized_pl"], "2000");
    assert_eq!(f.quote("ETHUSDT").unwrap().bid, Decimal::from(3_000));
}

#[test]
fn a_failed_pnl_is_sent_again() {
    let mut f = Fanout::new();
    f.put(conn("p", acct(1), &[], 100), T0);
    f.set_snapshot(snapshot(acct(1), 5, &[], 1));
    let out = f.plan(T0);
    assert!(out[0].pnl);
    complete_all(&mut f, &out, Outcome::Failed, T0);
    let out = f.plan(T0 + 100);
    assert_eq!(out.len(), 1);
    assert!(out[0].pnl);
    complete_all(&mut f, &out, Outcome::Sent, T0 + 100);
    assert!(f.plan(T0 + 1_000).is_empty());
}

#[test]
fn a_new_subscription_drops_pending_symbols_no_longer_wanted() {
    let mut f = Fanout::new();
    f.put(conn("x", acct(1), &["BTCUSDT", "ETHUSDT"], 1_000), T0);
    f.on_quotes(&[quote("BTCUSDT", 1, T0)]);
    send_all(&mut f, T0);
    f.on_quotes(&[quote("BTCUSDT", 2, T0 + 100), quote("ETHUSDT", 3, T0 + 100)]);
    assert!(f.plan(T0 + 100).is_empty(), "rate");
    f.put(conn("x", acct(1), &["ETHUSDT", "SOLUSDT"], 1_000), T0 + 200);
    f.on_quotes(&[quote("BTCUSDT", 4, T0 + 300)]);
    assert!(
        f.plan(T0 + 1_000 - RATE_JITTER_MS - 1).is_empty(),
        "the rate survives a re-subscribe"
    );
    let out = f.plan(T0 + 1_000 - RATE_JITTER_MS);
    assert_eq!(summary(&out), [("x".into(), vec!["ETHUSDT".into()], None)]);
}

#[test]
fn a_subscription_of_many_symbols_keeps_every_pending_change() {
    let names: Vec<String> = (0..150).map(|i| format!("S{i:03}USDT")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut f = Fanout::new();
    // Symbols known in another order first, so ids and positions differ.
    f.on_quotes(&[quote("S149USDT", 1, T0), quote("S070USDT", 1, T0)]);
    f.put(conn("many", acct(1), &all, 100), T0);
    f.put(conn("other", acct(2), &all[60..80], 100), T0);
    let picked = [0usize, 63, 64, 65, 70, 127, 128, 149];
    let quotes: Vec<Quote> = picked.iter().map(|&i| quote(all[i], 10, T0)).collect();
    f.on_quotes(&quotes);
    let out = f.plan(T0);
    let s = summary(&out);
    let mut want: Vec<String> = picked.iter().map(|&i| names[i].clone()).collect();
    want.sort();
    assert_eq!(s[0].1, want);
    assert_eq!(s[1].1, ["S063USDT", "S064USDT", "S065USDT", "S070USDT"]);
    complete_all(&mut f, &out, Outcome::Failed, T0);
    // Re-subscribed to fewer (positions move): pending changes of kept symbols stay.
    f.put(conn("many", acct(1), &all[60..150], 100), T0);
    let out = f.plan(T0 + 200);
    assert_eq!(
        summary(&out)[0].1,
        ["S063USDT", "S064USDT", "S065USDT", "S070USDT", "S127USDT", "S128USDT", "S149USDT"]
    );
    complete_all(&mut f, &out, Outcome::Sent, T0 + 200);
    f.on_quotes(&[
        quote("S000USDT", 2, T0 + 300),
        quote("S149USDT", 2, T0 + 300),
    ]);
    let out = f.plan(T0 + 300);
    assert_eq!(summary(&out)[0].1, ["S149USDT"]);
}

#[test]
fn expired_connections_are_ignored_and_dropped() {
    let mut f = Fanout::new();
    let mut old = conn("old", acct(1), &["BTCUSDT"], 100);
    old.ttl = T0 / 1000 - 1;
    f.put(old.clone(), T0);
    assert!(!f.contains("old"), "expired on arrival");
    old.ttl = T0 / 1000 + 10;
    f.put(old, T0);
    f.put(conn("young", acct(2), &["BTCUSDT"], 100), T0);
    assert_eq!(f.drop_expired(T0 + 5_000), 0);
    f.on_quotes(&[quote("BTCUSDT", 1, T0 + 10_000)]);
    let out = f.plan(T0 + 10_000);
    assert_eq!(ids(&out), ["young"], "expired when planned");
    assert!(!f.contains("old"));
    assert_eq!(f.accounts(), 1);
    assert_eq!(f.counts().expired, 1);
    assert_eq!(f.drop_expired(T0 + 7_200_000), 1);
    assert!(f.is_empty());
}

#[test]
fn a_scan_replaces_the_index_but_newer_notifications_win() {
    let mut f = Fanout::new();
    f.put(conn("stale", acct(1), &["BTCUSDT"], 100), T0);
    f.put(conn("deleted-during-scan", acct(1), &["BTCUSDT"], 100), T0);
    f.put(conn("resubscribed", acct(1), &["BTCUSDT"], 100), T0);
    f.put(conn("kept", acct(1), &["BTCUSDT"], 100), T0);
    f.begin_scan();
    assert!(f.scanning());
    // Notifications while the table is read.
    f.remove("deleted-during-scan");
    f.remove("never-indexed");
    f.put(conn("resubscribed", acct(1), &["ETHUSDT"], 100), T0);
    f.put(conn("put-during-scan", acct(2), &["ETHUSDT"], 100), T0);
    // What the scan read (partly before the notifications).
    let scanned = vec![
        conn("deleted-during-scan", acct(1), &["BTCUSDT"], 100),
        conn("never-indexed", acct(3), &["BTCUSDT"], 100),
        conn("resubscribed", acct(1), &["BTCUSDT"], 100),
        conn("kept", acct(1), &["BTCUSDT", "XRPUSDT"], 250),
        conn("missed", acct(4), &["BTCUSDT"], 100),
    ];
    let report = f.finish_scan(scanned, T0);
    assert!(!f.scanning());
    let mut all = f.connection_ids();
    all.sort();
    assert_eq!(all, ["kept", "missed", "put-during-scan", "resubscribed"]);
    assert_eq!(f.connection("resubscribed").unwrap().symbols, ["ETHUSDT"]);
    assert_eq!(f.connection("kept").unwrap().max_rate_ms, 250);
    assert_eq!(
        report,
        ScanReport {
            scanned: 5,
            added: 1,
            updated: 1,
            removed: 1
        }
    );
    assert_eq!(f.take_snapshot_requests().len(), 3, "accounts 1, 2 and 4");
}

// ---- property: a random history against a model ---------------------------------------

const SYMS: [&str; 5] = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        conn: u8,
        account: u8,
        symbols: Vec<u8>,
        rate: u32,
    },
    Delete(u8),
    Quotes(Vec<(u8, u16)>),
    Snapshot {
        account: u8,
        symbol: u8,
        qty: i8,
        at: i64,
    },
    Advance(u16),
    Plan,
    Complete {
        pick: usize,
        outcome: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..6, 0u8..3, prop::collection::vec(0u8..5, 0..4), 50u32..1_200)
            .prop_map(|(conn, account, symbols, rate)| Op::Put { conn, account, symbols, rate }),
        1 => (0u8..6).prop_map(Op::Delete),
        4 => prop::collection::vec((0u8..5, 1u16..50), 1..4).prop_map(Op::Quotes),
        1 => (0u8..3, 0u8..5, -3i8..4, 0i64..20)
            .prop_map(|(account, symbol, qty, at)| Op::Snapshot { account, symbol, qty, at }),
        3 => (0u16..400).prop_map(Op::Advance),
        4 => Just(Op::Plan),
        4 => (0usize..8, 0u8..10).prop_map(|(pick, outcome)| Op::Complete { pick, outcome }),
    ]
}

struct ModelConn {
    incarnation: u64,
    account: Uuid,
    symbols: BTreeSet<String>,
    rate: i64,
    last_plan: Option<i64>,
    in_flight: bool,
    pnl_sent: Option<Value>,
    delivered: HashMap<String, Value>,
    delivered_pnl: Option<Value>,
    /// Symbols that got a quote while subscribed.
    owed: HashSet<String>,
}

struct Flight {
    msg: Outgoing,
    incarnation: u64,
    prev_pnl: Option<Value>,
}

#[derive(Default)]
struct Model {
    conns: HashMap<String, ModelConn>,
    latest: HashMap<String, Quote>,
    snapshots: HashMap<Uuid, PositionsSnapshot>,
    flights: Vec<Flight>,
    incarnations: u64,
}

impl Model {
    fn pnl(&self, account: Uuid) -> Option<Value> {
        let snap = self.snapshots.get(&account)?;
        Some(AccountPnl::value(snap, |s| self.latest.get(s)).to_json())
    }

    fn drop_account_if_unused(&mut self, account: Uuid) {
        if !self.conns.values().any(|c| c.account == account) {
            self.snapshots.remove(&account);
        }
    }

    /// Checks one plan against the model and records it.
    fn planned(&mut self, out: Vec<Outgoing>, now: i64) {
        let mut seen = HashSet::new();
        for m in out {
            let id = m.connection_id.to_string();
            assert!(seen.insert(id.clone()), "two messages for {id} in one plan");
            let expected_pnl = self.conns.get(&id).and_then(|c| self.pnl(c.account));
            let c = self
                .conns
                .get_mut(&id)
                .unwrap_or_else(|| panic!("{id} is not connected"));
            assert!(!c.in_flight, "{id}: a push is already in flight");
            if let Some(t) = c.last_plan {
                assert!(
                    now - t >= c.rate - RATE_JITTER_MS,
                    "{id}: {} ms after the last message, rate {}",
                    now - t,
                    c.rate
                );
            }
            let body = json(&m.body);
            let prices = body["prices"].as_array().cloned().unwrap_or_default();
            assert_eq!(prices.len(), m.prices);
            assert_eq!(
                body["type"],
                if prices.is_empty() { "pnl" } else { "prices" }
            );
            for p in &prices {
                let sym = p["symbol"].as_str().unwrap().to_string();
                assert!(c.symbols.contains(&sym), "{id} got {sym}, not subscribed");
                let latest = json(&quote_fragment(&self.latest[&sym]));
                assert_eq!(p, &latest, "{id}: not the latest {sym}");
            }
            let pnl = body.get("pnl").cloned();
            assert_eq!(pnl.is_some(), m.pnl);
            if let Some(p) = &pnl {
                assert_eq!(
                    Some(p),
                    expected_pnl.as_ref(),
                    "{id}: PnL not on the latest quotes"
                );
                assert_ne!(
                    Some(p),
                    c.pnl_sent.as_ref(),
                    "{id}: PnL sent again unchanged"
                );
            } else {
                assert!(!prices.is_empty(), "{id}: an empty message");
            }
            let prev_pnl = c.pnl_sent.clone();
            if pnl.is_some() {
                c.pnl_sent = pnl;
            }
            c.in_flight = true;
            c.last_plan = Some(now);
            self.flights.push(Flight {
                msg: m,
                incarnation: c.incarnation,
                prev_pnl,
            });
        }
    }

    fn complete(&mut self, f: &mut Fanout, i: usize, outcome: Outcome, now: i64) {
        let flight = self.flights.remove(i);
        let id = flight.msg.connection_id.to_string();
        let current = self
            .conns
            .get(&id)
            .is_some_and(|c| c.incarnation == flight.incarnation);
        assert_eq!(
            f.complete(&id, flight.msg.generation, outcome, now),
            current,
            "{id}: completion"
        );
        if !current {
            return;
        }
        let c = self.conns.get_mut(&id).unwrap();
        c.in_flight = false;
        match outcome {
            Outcome::Sent => {
                let body = json(&flight.msg.body);
                for p in body["prices"].as_array().cloned().unwrap_or_default() {
                    c.delivered
                        .insert(p["symbol"].as_str().unwrap().to_string(), p);
                }
                if let Some(p) = body.get("pnl") {
                    c.delivered_pnl = Some(p.clone());
                }
            }
            Outcome::Failed => {
                if flight.msg.pnl {
                    c.pnl_sent = flight.prev_pnl;
                }
            }
            Outcome::Gone => {
                let account = c.account;
                self.conns.remove(&id);
                self.drop_account_if_unused(account);
            }
            Outcome::TooLarge => unreachable!(),
        }
    }
}

fn run_history(ops: Vec<Op>) {
    let mut f = Fanout::new();
    let mut m = Model::default();
    let mut now = T0;
    for op in ops {
        match op {
            Op::Put {
                conn: n,
                account,
                symbols,
                rate,
            } => {
                let id = format!("c{n}=");
                let syms: Vec<&str> = symbols.iter().map(|&s| SYMS[s as usize]).collect();
                let c = conn(&id, acct(account), &syms, rate);
                let record_symbols: BTreeSet<String> = c.symbols.iter().cloned().collect();
                f.put(c, now);
                let clamped = i64::from(rate.clamp(MIN_RATE_MS, MAX_RATE_MS));
                match m.conns.get_mut(&id) {
                    Some(mc) => {
                        mc.owed.retain(|s| record_symbols.contains(s));
                        mc.symbols = record_symbols;
                        mc.rate = clamped;
                        if mc.account != acct(account) {
                            let old = mc.account;
                            mc.account = acct(account);
                            mc.pnl_sent = None;
                            m.drop_account_if_unused(old);
                        }
                    }
                    None => {
                        m.incarnations += 1;
                        m.conns.insert(
                            id,
                            ModelConn {
                                incarnation: m.incarnations,
                                account: acct(account),
                                symbols: record_symbols,
                                rate: clamped,
                                last_plan: None,
                                in_flight: false,
                                pnl_sent: None,
                                delivered: HashMap::new(),
                                delivered_pnl: None,
                                owed: HashSet::new(),
                            },
                        );
                    }
                }
                f.take_snapshot_requests();
            }
            Op::Delete(n) => {
                let id = format!("c{n}=");
                assert_eq!(f.remove(&id), m.conns.contains_key(&id));
                if let Some(c) = m.conns.remove(&id) {
                    m.drop_account_if_unused(c.account);
                }
            }
            Op::Quotes(list) => {
                let quotes: Vec<Quote> = list
                    .iter()
                    .map(|&(s, bid)| quote(SYMS[s as usize], i64::from(bid), now))
                    .collect();
                f.on_quotes(&quotes);
                for q in quotes {
                    // The same prices again are no change: nobody is owed them.
                    let changed = m
                        .latest
                        .get(&q.symbol)
                        .is_none_or(|old| (old.bid, old.ask, old.last) != (q.bid, q.ask, q.last));
                    if changed {
                        for c in m.conns.values_mut() {
                            if c.symbols.contains(&q.symbol) {
                                c.owed.insert(q.symbol.clone());
                            }
                        }
                    }
                    m.latest.insert(q.symbol.clone(), q);
                }
            }
            Op::Snapshot {
                account,
                symbol,
                qty,
                at,
            } => {
                let positions: Vec<(&str, i64, i64)> = if qty == 0 {
                    vec![]
                } else {
                    vec![(SYMS[symbol as usize], i64::from(qty), 20)]
                };
                let snap = snapshot(acct(account), 1_000, &positions, at);
                let connected = m.conns.values().any(|c| c.account == acct(account));
                let newer = m.snapshots.get(&acct(account)).is_none_or(|s| s.at <= at);
                assert_eq!(f.set_snapshot(snap.clone()), connected && newer);
                if connected && newer {
                    m.snapshots.insert(acct(account), snap);
                }
            }
            Op::Advance(ms) => now += i64::from(ms),
            Op::Plan => {
                let out = f.plan(now);
                m.planned(out, now);
            }
            Op::Complete { pick, outcome } => {
                if !m.flights.is_empty() {
                    let i = pick % m.flights.len();
                    let outcome = match outcome {
                        0 => Outcome::Gone,
                        1..=2 => Outcome::Failed,
                        _ => Outcome::Sent,
                    };
                    m.complete(&mut f, i, outcome, now);
                }
            }
        }
        assert_eq!(f.len(), m.conns.len());
    }
    // Deliver everything: every connection ends with the latest of what it is owed.
    for _ in 0..20 {
        while !m.flights.is_empty() {
            m.complete(&mut f, 0, Outcome::Sent, now);
        }
        now += 10_000;
        let out = f.plan(now);
        if out.is_empty() {
            break;
        }
        m.planned(out, now);
    }
    assert!(m.flights.is_empty(), "never quiescent");
    for (id, c) in &m.conns {
        // The same prices again are no change (not re-sent), so the latest delivery may
        // carry an older `ts` than the latest quote: compare the prices.
        let prices = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("ts");
            }
            v
        };
        for s in &c.owed {
            assert_eq!(
                c.delivered.get(s).map(prices),
                Some(prices(&json(&quote_fragment(&m.latest[s])))),
                "{id}: {s} not delivered at its latest"
            );
        }
        if let Some(p) = m.pnl(c.account) {
            assert_eq!(
                c.delivered_pnl.as_ref(),
                Some(&p),
                "{id}: PnL not delivered"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// At most one message per connection per plan and none while one is in flight; the
    /// rate holds; only subscribed symbols, each at its latest quote; PnL only when it
    /// moved, on the latest quotes; never an empty message; and nothing is lost: after
    /// everything is delivered each connection has the latest quote of every symbol it was
    /// sent a change of, and its account's current PnL.
    #[test]
    fn plans_follow_the_rules_and_lose_nothing(ops in prop::collection::vec(op(), 1..80)) {
        run_history(ops);
    }
}
