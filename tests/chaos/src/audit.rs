//! The auditor: the rules a run must keep, checked on the ledger's rows (a [`Snapshot`])
//! against what the driver saw (a [`Record`]). Its own code path: it recomputes the books
//! from the fills with its own average-cost arithmetic, never with the domain crate's.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::record::{Published, Record};
use crate::snapshot::{FillRow, Snapshot};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub account_id: Option<Uuid>,
    /// The order (its id or client order id), when the rule is about one.
    pub order: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.rule)?;
        if let Some(a) = self.account_id {
            write!(f, " account={a}")?;
        }
        if let Some(o) = &self.order {
            write!(f, " order={o}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a fill's price is checked against.
#[derive(Debug, Clone, Copy)]
pub struct PriceRules {
    /// The functions' `MAX_PRICE_AGE_MS`: a quote older than that may not fill.
    pub max_price_age_ms: i64,
    /// Clock and pipeline slack between the driver's view and the ledger's timestamps.
    pub slack_ms: i64,
}

/// The audit's result: every violation, and the figures it counted.
#[derive(Debug, Default)]
pub struct Audit {
    pub violations: Vec<Violation>,
    pub orders_checked: usize,
    pub fills_checked: usize,
    pub accounts_checked: usize,
    /// Accepted client order ids found in the ledger exactly once.
    pub accepted_found: usize,
    /// Accepted client order ids not in the ledger.
    pub lost: usize,
    /// Orders with more than one fill.
    pub doubled: usize,
}

/// Statuses that end an order.
const TERMINAL: &[&str] = &["filled", "canceled", "expired", "rejected", "replaced"];
/// Statuses an order may legitimately rest in after the drain.
const RESTING: &[&str] = &["new", "accepted", "held", "partially_filled"];

/// Runs every rule.
pub fn audit(snapshot: &Snapshot, record: &Record, prices: PriceRules) -> Audit {
    let mut a = Audit {
        orders_checked: snapshot.orders.len(),
        fills_checked: snapshot.fills.len(),
        accounts_checked: snapshot.accounts.len(),
        ..Audit::default()
    };
    check_accepted(snapshot, record, &mut a);
    check_orders(snapshot, record, &mut a);
    check_fill_prices(snapshot, record, prices, &mut a);
    check_books(snapshot, &mut a);
    for b in record.bad_answers() {
        a.violations.push(Violation {
            rule: "bad_answer",
            account_id: b.account_id,
            order: None,
            detail: format!(
                "{} → {}: {}",
                b.what,
                b.status.map_or("no answer".to_string(), |s| s.to_string()),
                b.detail
            ),
        });
    }
    for (account, command, reason) in &snapshot.dead_letters {
        a.violations.push(Violation {
            rule: "command_dead_lettered",
            account_id: Some(*account),
            order: None,
            detail: format!("command {command}: {reason}"),
        });
    }
    a
}

/// Every order that got a 2xx exists exactly once, by its client order id.
fn check_accepted(snapshot: &Snapshot, record: &Record, a: &mut Audit) {
    let by_coid = snapshot.orders_by_client_id();
    let mut seen = HashSet::new();
    for acc in record.accepted() {
        if !seen.insert((acc.account_id, acc.client_order_id.clone())) {
            continue; // the same order accepted twice (a re-sent alert): one order
        }
        match by_coid.get(&(acc.account_id, acc.client_order_id.as_str())) {
            None => {
                a.lost += 1;
                a.violations.push(Violation {
                    rule: "accepted_order_missing",
                    account_id: Some(acc.account_id),
                    order: Some(acc.client_order_id.clone()),
                    detail: format!(
                        "answered 2xx ({}) at {} ms, not in the ledger",
                        acc.via, acc.at_ms
                    ),
                });
            }
            Some(rows) if rows.len() > 1 => a.violations.push(Violation {
                rule: "order_duplicated",
                account_id: Some(acc.account_id),
                order: Some(acc.client_order_id.clone()),
                detail: format!("{} orders with this client order id", rows.len()),
            }),
            Some(_) => a.accepted_found += 1,
        }
    }
}

/// Each order is terminal or legitimately resting; no order both filled and canceled; at
/// most one fill per order (orders fill whole); at most one exit of an OCO pair or bracket
/// filled; every accepted cancel ended its order.
fn check_orders(snapshot: &Snapshot, record: &Record, a: &mut Audit) {
    let mut fills_of: HashMap<Uuid, Vec<&FillRow>> = HashMap::new();
    for f in &snapshot.fills {
        fills_of.entry(f.order_id).or_default().push(f);
    }
    let by_id: HashMap<Uuid, _> = snapshot.orders.iter().map(|o| (o.id, o)).collect();
    for o in &snapshot.orders {
        let v = |rule, detail: String| Violation {
            rule,
            account_id: Some(o.account_id),
            order: Some(format!("{} ({})", o.id, o.client_order_id)),
            detail,
        };
        let status = o.status.as_str();
        if !TERMINAL.contains(&status) {
            let may_rest = o.order_type != "market" && RESTING.contains(&status);
            if !may_rest {
                a.violations.push(v(
                    "order_not_settled",
                    format!("a {} order left {status} after the drain", o.order_type),
                ));
            }
        }
        let fills = fills_of.get(&o.id).map(Vec::as_slice).unwrap_or_default();
        let filled: Decimal = fills.iter().map(|f| f.qty).sum();
        if fills.len() > 1 {
            a.doubled += 1;
            a.violations.push(v(
                "fill_doubled",
                format!(
                    "{} fills of one order: {:?}",
                    fills.len(),
                    fills.iter().map(|f| f.id).collect::<Vec<_>>()
                ),
            ));
        }
        if filled != o.filled_qty {
            a.violations.push(v(
                "filled_qty_mismatch",
                format!("filled_qty {} but its fills sum to {filled}", o.filled_qty),
            ));
        }
        if let Some(q) = o.qty {
            if filled > q {
                a.violations
                    .push(v("overfilled", format!("{filled} filled of {q}")));
            }
        }
        if !fills.is_empty() && !matches!(status, "filled" | "partially_filled") {
            a.violations.push(v(
                "filled_and_canceled",
                format!("status {status} with {} fill(s)", fills.len()),
            ));
        }
        if status == "filled" && fills.is_empty() {
            a.violations.push(v(
                "filled_without_fill",
                "status filled, no fill row".into(),
            ));
        }
    }
    // Exits that cancel each other: an OCO order and its leg; a bracket's two legs.
    let mut groups: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for o in &snapshot.orders {
        if let Some(parent) = o.parent_id {
            groups.entry(parent).or_default().push(o.id);
        }
    }
    for (parent, mut members) in groups {
        let Some(p) = by_id.get(&parent) else {
            continue;
        };
        match p.order_class.as_str() {
            "oco" => members.push(parent),
            "bracket" => {}
            _ => continue,
        }
        let filled: Vec<Uuid> = members
            .iter()
            .copied()
            .filter(|id| fills_of.contains_key(id))
            .collect();
        if filled.len() > 1 {
            a.violations.push(Violation {
                rule: "both_exits_filled",
                account_id: Some(p.account_id),
                order: Some(parent.to_string()),
                detail: format!(
                    "{} {} exits filled: {filled:?}",
                    filled.len(),
                    p.order_class
                ),
            });
        }
    }
    for c in record.cancels() {
        match by_id.get(&c.order_id) {
            Some(o) if !TERMINAL.contains(&o.status.as_str()) => a.violations.push(Violation {
                rule: "cancel_not_applied",
                account_id: Some(c.account_id),
                order: Some(c.order_id.to_string()),
                detail: format!(
                    "the cancel was answered 2xx at {} ms, the order is {}",
                    c.at_ms, o.status
                ),
            }),
            _ => {}
        }
    }
}

/// Every fill's price was the touch (ask for a buy, bid for a sell) of a quote the driver
/// published, live at that moment: published before the fill, superseded no earlier than
/// the price age limit before it, and not inside a feed stall longer than that limit.
fn check_fill_prices(snapshot: &Snapshot, record: &Record, rules: PriceRules, a: &mut Audit) {
    let quotes = record.quotes();
    let silent = record.silent_feed();
    for f in &snapshot.fills {
        let v = |detail: String| Violation {
            rule: "fill_price_not_live",
            account_id: Some(f.account_id),
            order: Some(f.order_id.to_string()),
            detail,
        };
        let Some(series) = quotes.get(&f.symbol) else {
            a.violations.push(v(format!("{} never scripted", f.symbol)));
            continue;
        };
        if !price_was_live(series, f, rules) {
            a.violations.push(v(format!(
                "{} {} {} at {} (t={} ms): no live scripted quote had that touch",
                f.side, f.qty, f.symbol, f.price, f.at_ms
            )));
            continue;
        }
        // Inside a stall, nothing new reached the cache: after the age limit, the price
        // was stale and may not fill.
        if let Some((from, to)) = silent.iter().find(|(from, to)| {
            f.at_ms > from + rules.max_price_age_ms + rules.slack_ms && f.at_ms < *to
        }) {
            a.violations.push(v(format!(
                "filled at t={} ms in a feed stall {from}..{to} ms, past the price age limit",
                f.at_ms
            )));
        }
    }
}

fn price_was_live(series: &[Published], f: &FillRow, rules: PriceRules) -> bool {
    series.iter().enumerate().any(|(i, q)| {
        let touch = if f.side == "buy" { q.ask } else { q.bid };
        let until = series.get(i + 1).map_or(i64::MAX, |next| next.at_ms);
        touch == f.price
            && q.at_ms <= f.at_ms + rules.slack_ms
            && until.saturating_add(rules.max_price_age_ms + rules.slack_ms) >= f.at_ms
    })
}

/// Per account: cash, fees, realized PnL, and per symbol quantity, average entry price and
/// realized PnL, recomputed from the fills in booking order, equal the ledger's (cash,
/// quantities and fees exactly; averages and PnL, which involve a division, to the cent).
fn check_books(snapshot: &Snapshot, a: &mut Audit) {
    #[derive(Default)]
    struct Book {
        qty: Decimal,
        avg: Decimal,
        realized: Decimal,
    }
    let cent = Decimal::new(1, 2);
    let mut fills_of: HashMap<Uuid, Vec<&FillRow>> = HashMap::new();
    for f in &snapshot.fills {
        fills_of.entry(f.account_id).or_default().push(f);
    }
    let positions: HashMap<(Uuid, &str), _> = snapshot
        .positions
        .iter()
        .map(|p| ((p.account_id, p.symbol.as_str()), p))
        .collect();
    for acct in &snapshot.accounts {
        let mut cash = acct.initial_cash;
        let mut fees = Decimal::ZERO;
        let mut books: HashMap<&str, Book> = HashMap::new();
        for f in fills_of
            .get(&acct.id)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let notional = f.qty * f.price;
            fees += f.fee;
            let b = books.entry(f.symbol.as_str()).or_default();
            if f.side == "buy" {
                cash -= notional + f.fee;
                // Long only (spot): a buy adds at its price.
                let cost = b.avg * b.qty + notional;
                b.qty += f.qty;
                b.avg = cost / b.qty;
                b.realized -= f.fee;
            } else {
                cash += notional - f.fee;
                b.realized += (f.price - b.avg) * f.qty - f.fee;
                b.qty -= f.qty;
                if b.qty.is_zero() {
                    b.avg = Decimal::ZERO;
                }
            }
        }
        let v = |rule, detail: String| Violation {
            rule,
            account_id: Some(acct.id),
            order: None,
            detail,
        };
        if cash != acct.cash {
            a.violations.push(v(
                "cash_mismatch",
                format!("ledger {} recomputed {cash}", acct.cash),
            ));
        }
        if fees != acct.fees_paid {
            a.violations.push(v(
                "fees_mismatch",
                format!("ledger {} recomputed {fees}", acct.fees_paid),
            ));
        }
        let realized_total: Decimal = books.values().map(|b| b.realized).sum();
        if (realized_total - acct.realized_pnl).abs() >= cent {
            a.violations.push(v(
                "realized_pnl_mismatch",
                format!("ledger {} recomputed {realized_total}", acct.realized_pnl),
            ));
        }
        for (symbol, b) in &books {
            let (qty, avg) = positions
                .get(&(acct.id, *symbol))
                .map_or((Decimal::ZERO, Decimal::ZERO), |p| {
                    (p.qty, p.avg_entry_price)
                });
            if qty != b.qty {
                a.violations.push(v(
                    "position_mismatch",
                    format!("{symbol}: ledger qty {qty} recomputed {}", b.qty),
                ));
            } else if !b.qty.is_zero() && (avg - b.avg).abs() >= cent {
                a.violations.push(v(
                    "avg_entry_mismatch",
                    format!("{symbol}: ledger {avg} recomputed {}", b.avg),
                ));
            }
        }
        for p in snapshot
            .positions
            .iter()
            .filter(|p| p.account_id == acct.id)
        {
            if !p.qty.is_zero() && !books.contains_key(p.symbol.as_str()) {
                a.violations.push(v(
                    "position_without_fills",
                    format!("{} {} held, no fill", p.qty, p.symbol),
                ));
            }
        }
    }
}
