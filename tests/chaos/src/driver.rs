//! The clients and the price script: a seeded mix over many accounts, each request retried
//! as a careful client would (the same `client_order_id`, after the `Retry-After` a 503 or
//! 429 names), every answer judged and recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Auth, Resp, Stack, User};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::record::{Accepted, BadAnswer, CancelAccepted, Counters, Published, Record};

/// The instruments the clients trade, with the scripted walk's centre and spread and the
/// quantity range of an order (above the 10 USDT minimum notional at any walked price).
#[derive(Debug, Clone, Copy)]
pub struct Market {
    pub symbol: &'static str,
    pub centre: i64,
    /// Ask − bid, in cents.
    pub spread_cents: i64,
    /// Order quantities: `lo..=hi` steps of `10^-dp`.
    pub qty_lo: i64,
    pub qty_hi: i64,
    pub qty_dp: u32,
}

pub const MARKETS: [Market; 3] = [
    Market {
        symbol: "BTCUSDT",
        centre: 60_000,
        spread_cents: 50,
        qty_lo: 20,
        qty_hi: 200,
        qty_dp: 5,
    },
    Market {
        symbol: "ETHUSDT",
        centre: 3_000,
        spread_cents: 5,
        qty_lo: 40,
        qty_hi: 400,
        qty_dp: 4,
    },
    Market {
        symbol: "SOLUSDT",
        centre: 150,
        spread_cents: 1,
        qty_lo: 10,
        qty_hi: 100,
        qty_dp: 2,
    },
];

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// No answer within this is a hang (recorded) and the request is tried again.
    pub timeout: Duration,
    /// A request still refused (503/429/no answer) after this is given up.
    pub retry_bound: Duration,
}

/// One account of the run, owned by one worker.
pub struct Account {
    pub user: User,
    pub id: Uuid,
    /// Its TradingView webhook (id, the strategy alert template), if it has one.
    pub hook: Option<(String, String)>,
    /// Orders it placed that may still rest (candidates for replace and cancel).
    pub open: Vec<Uuid>,
    /// Sequence of its client order ids.
    pub n: u64,
    /// Whether its kill switch is engaged.
    pub killed: bool,
}

impl Account {
    /// The next of its client order ids, unique across accounts and runs of other seeds.
    fn next_client_order_id(&mut self, seed: u64) -> String {
        self.n += 1;
        let id = self.id.simple().to_string();
        format!("c{seed}-{}-{}", id.get(..8).unwrap_or(&id), self.n)
    }
}

/// An order of `kind` (`market`, `limit`, …), good till canceled, with the fields its type
/// needs in `extra` (an object).
fn order(symbol: &str, qty: Decimal, side: &str, kind: &str, extra: Value) -> Value {
    let mut order = json!({"symbol": symbol, "qty": qty.to_string(), "side": side, "type": kind, "time_in_force": "gtc"});
    if let (Some(o), Value::Object(extra)) = (order.as_object_mut(), extra) {
        o.extend(extra);
    }
    order
}

/// What one request came to.
pub enum Answer {
    /// 2xx.
    Done(Resp),
    /// A documented 4xx (a JSON `{code, message}` error).
    Refused(Resp),
    /// Still refused or unanswered after the retry bound.
    GaveUp,
}

/// Spaces the clients' actions to at most a given rate in all: the rate the local stack
/// applies with room to catch up after an outage (unpaced, 48 clients send about 200
/// commands a second, twice what one machine's executor and moto apply, and the queue
/// only grows).
pub struct Pacer {
    next: std::sync::Mutex<tokio::time::Instant>,
    gap: Duration,
}

impl Pacer {
    /// `per_sec` actions a second (`None` for 0: unpaced).
    pub fn new(per_sec: u32) -> Option<Pacer> {
        (per_sec > 0).then(|| Pacer {
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
            gap: Duration::from_secs(1) / per_sec,
        })
    }

    /// Waits for the next action's turn.
    pub async fn turn(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The shared state of the clients.
pub struct Clients {
    pub stack: Arc<Stack>,
    pub record: Arc<Record>,
    pub settings: ClientSettings,
    pub seed: u64,
    /// Every request's latency, for the soak's sampler.
    pub latencies: Arc<crate::soak::Latencies>,
}

impl Clients {
    /// One request, retried until it is answered 2xx or a documented 4xx, or the retry
    /// bound passes. Every answer no client may get is recorded.
    pub async fn call(
        &self,
        account: Option<Uuid>,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(
            account,
            method,
            path,
            auth,
            body.map(|b| ("application/json", b.to_string())),
        )
        .await
    }

    pub async fn call_with(
        &self,
        account: Option<Uuid>,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<(&str, String)>,
    ) -> Answer {
        let what = format!("{method} {}", route_of(path));
        let deadline = Instant::now() + self.settings.retry_bound;
        let bad = |status: Option<u16>, detail: String| {
            self.record.bad(BadAnswer {
                account_id: account,
                what: what.clone(),
                status,
                detail,
                at_ms: crate::record::now_ms(),
            })
        };
        loop {
            if Instant::now() > deadline {
                Counters::add(&self.record.counters.gave_up);
                return Answer::GaveUp;
            }
            let sent = Instant::now();
            let r = self
                .stack
                .try_request(
                    method.clone(),
                    path,
                    auth,
                    body.clone(),
                    self.settings.timeout,
                )
                .await;
            self.latencies.add(sent.elapsed());
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    bad(None, e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let retry_after = r.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok());
            match r.status {
                200..=299 => return Answer::Done(r),
                503 => {
                    match retry_after {
                        Some(s) if s >= 1 => Counters::add(&self.record.counters.unavailable),
                        _ => bad(
                            Some(503),
                            format!("a 503 without Retry-After: {}", short(&r.text)),
                        ),
                    }
                    if !is_error_json(&r.json) {
                        bad(Some(503), format!("not a JSON error: {}", short(&r.text)));
                    }
                    sleep_retry(retry_after).await;
                }
                429 => {
                    if retry_after.is_none() {
                        bad(
                            Some(429),
                            format!("a 429 without Retry-After: {}", short(&r.text)),
                        );
                    }
                    sleep_retry(retry_after).await;
                }
                400..=499 => {
                    if !is_error_json(&r.json) {
                        bad(
                            Some(r.status),
                            format!("not a JSON error: {}", short(&r.text)),
                        );
                    }
                    Counters::add(&self.record.counters.refused);
                    return Answer::Refused(r);
                }
                s => {
                    bad(Some(s), short(&r.text));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// A command (a mutating request): counted as sent, and as accepted on a 2xx.
    async fn command(
        &self,
        account: &Account,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> Answer {
        Counters::add(&self.record.counters.sent);
        let a = self.call(Some(account.id), method, path, auth, body).await;
        if matches!(a, Answer::Done(_)) {
            Counters::add(&self.record.counters.accepted);
        }
        a
    }

    /// A `DELETE` command of `account` with its API key.
    async fn delete(&self, account: &Account, path: &str) -> Answer {
        self.command(account, Method::DELETE, path, &account.user.key(), None)
            .await
    }

    /// Places `order` (its JSON without a client order id) for `account` and records it.
    pub async fn place(
        &self,
        account: &mut Account,
        via: &'static str,
        mut order: Value,
    ) -> Option<Value> {
        let coid = account.next_client_order_id(self.seed);
        order["client_order_id"] = json!(coid);
        let at_ms = crate::record::now_ms();
        match self
            .command(
                account,
                Method::POST,
                "/v2/orders",
                &account.user.key(),
                Some(order),
            )
            .await
        {
            Answer::Done(r) => {
                self.record.accept(Accepted {
                    account_id: account.id,
                    client_order_id: coid,
                    via,
                    at_ms,
                });
                let id = r.json["id"].as_str().and_then(|s| s.parse().ok());
                if let Some(id) = id {
                    if via != "market" {
                        account.open.push(id);
                    }
                }
                Some(r.json)
            }
            _ => None,
        }
    }

    /// One action of `account`, picked by `rng`.
    pub async fn act(&self, account: &mut Account, rng: &mut StdRng, prices: &Prices) {
        let m = MARKETS[rng.random_range(0..MARKETS.len())];
        let qty = Decimal::new(rng.random_range(m.qty_lo..=m.qty_hi), m.qty_dp);
        let (bid, ask) = prices.current(m.symbol);
        let pct = |p: Decimal, bps: i64| {
            (p * (Decimal::from(10_000 + bps)) / Decimal::from(10_000)).round_dp(2)
        };
        let roll = rng.random_range(0..100);
        // A new order: (how it was placed, side, type, the fields its type needs).
        let new_order = match roll {
            0..=19 => Some(("market", "buy", "market", json!({}))),
            20..=27 => Some(("market", "sell", "market", json!({}))),
            28..=37 => {
                let limit = pct(ask, -rng.random_range(0..150));
                Some((
                    "limit",
                    "buy",
                    "limit",
                    json!({"limit_price": limit.to_string()}),
                ))
            }
            38..=41 => {
                let limit = pct(bid, rng.random_range(0..150));
                Some((
                    "limit",
                    "sell",
                    "limit",
                    json!({"limit_price": limit.to_string()}),
                ))
            }
            42..=45 => {
                let stop = pct(bid, -rng.random_range(20..150));
                Some((
                    "stop",
                    "sell",
                    "stop",
                    json!({"stop_price": stop.to_string()}),
                ))
            }
            46..=49 => {
                let stop = pct(ask, rng.random_range(20..150));
                Some((
                    "stop",
                    "buy",
                    "stop",
                    json!({"stop_price": stop.to_string()}),
                ))
            }
            50..=53 => Some((
                "trailing_stop",
                "sell",
                "trailing_stop",
                json!({"trail_percent": "0.5"}),
            )),
            54..=58 => {
                let tp = pct(ask, rng.random_range(30..150));
                let sl = pct(bid, -rng.random_range(30..150));
                let sl_limit = pct(sl, -20);
                Some((
                    "bracket",
                    "buy",
                    "market",
                    json!({"order_class": "bracket", "take_profit": {"limit_price": tp.to_string()}, "stop_loss": {"stop_price": sl.to_string(), "limit_price": sl_limit.to_string()}}),
                ))
            }
            59..=61 => {
                let tp = pct(bid, rng.random_range(30..150));
                let sl = pct(bid, -rng.random_range(30..150));
                Some((
                    "oco",
                    "sell",
                    "limit",
                    json!({"order_class": "oco", "take_profit": {"limit_price": tp.to_string()}, "stop_loss": {"stop_price": sl.to_string()}}),
                ))
            }
            _ => None,
        };
        match (roll, new_order) {
            (_, Some((via, side, kind, extra))) => {
                self.place(account, via, order(m.symbol, qty, side, kind, extra))
                    .await;
            }
            (62..=69, None) => self.replace(account, rng).await,
            (70..=77, None) => self.cancel(account, rng).await,
            (78..=79, None) => {
                self.command(
                    account,
                    Method::DELETE,
                    "/v2/orders",
                    &account.user.key(),
                    None,
                )
                .await;
                account.open.clear();
            }
            (80..=82, None) => self.close(account, m.symbol).await,
            (83..=88, None) => self.alert(account, rng, m, qty).await,
            (89, None) => self.kill_switch(account).await,
            (_, None) => {
                let path = [
                    "/v2/account",
                    "/v2/positions",
                    "/v2/orders?status=all&limit=20",
                ][rng.random_range(0..3)];
                if let Answer::Done(_) = self
                    .call(
                        Some(account.id),
                        Method::GET,
                        path,
                        &account.user.key(),
                        None,
                    )
                    .await
                {
                    Counters::add(&self.record.counters.reads);
                }
            }
        }
        if account.killed && rng.random_range(0..4) == 0 {
            self.reset_kill(account).await;
        }
    }

    /// Replaces a resting order of the account at a new limit (racing its fill).
    async fn replace(&self, account: &mut Account, rng: &mut StdRng) {
        let Some(i) = (!account.open.is_empty()).then(|| rng.random_range(0..account.open.len()))
        else {
            return;
        };
        let id = account.open[i];
        // Ask for the order first, as a client would, to replace it at a price near its own.
        let Answer::Done(r) = self
            .call(
                Some(account.id),
                Method::GET,
                &format!("/v2/orders/{id}"),
                &account.user.key(),
                None,
            )
            .await
        else {
            return;
        };
        let Some(limit) = r.json["limit_price"]
            .as_str()
            .and_then(|s| s.parse::<Decimal>().ok())
        else {
            account.open.swap_remove(i);
            return;
        };
        let bps = rng.random_range(-80..80);
        let new_limit = (limit * Decimal::from(10_000 + bps) / Decimal::from(10_000)).round_dp(2);
        let coid = account.next_client_order_id(self.seed);
        let at_ms = crate::record::now_ms();
        match self
            .command(
                account,
                Method::PATCH,
                &format!("/v2/orders/{id}"),
                &account.user.key(),
                Some(json!({"limit_price": new_limit.to_string(), "client_order_id": coid})),
            )
            .await
        {
            Answer::Done(r) => {
                self.record.accept(Accepted {
                    account_id: account.id,
                    client_order_id: coid,
                    via: "replace",
                    at_ms,
                });
                account.open[i] = r.json["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(id);
            }
            _ => {
                account.open.swap_remove(i);
            }
        }
    }

    /// Cancels a resting order of the account (racing its fill).
    async fn cancel(&self, account: &mut Account, rng: &mut StdRng) {
        if account.open.is_empty() {
            return;
        }
        let id = account
            .open
            .swap_remove(rng.random_range(0..account.open.len()));
        let at_ms = crate::record::now_ms();
        if let Answer::Done(_) = self.delete(account, &format!("/v2/orders/{id}")).await {
            self.record.cancel(CancelAccepted {
                account_id: account.id,
                order_id: id,
                at_ms,
            });
        }
    }

    /// Closes the account's position in `symbol` (a 404 when it holds none).
    async fn close(&self, account: &mut Account, symbol: &str) {
        let at_ms = crate::record::now_ms();
        if let Answer::Done(r) = self
            .delete(account, &format!("/v2/positions/{symbol}"))
            .await
        {
            if let Some(coid) = r.json["client_order_id"].as_str() {
                self.record.accept(Accepted {
                    account_id: account.id,
                    client_order_id: coid.to_string(),
                    via: "close",
                    at_ms,
                });
            }
        }
    }

    /// A TradingView strategy alert, sent twice (TradingView re-sends when unsure): one order.
    async fn alert(&self, account: &mut Account, rng: &mut StdRng, m: Market, qty: Decimal) {
        let Some((hook_id, template)) = account.hook.clone() else {
            return;
        };
        account.n += 1;
        let side = if rng.random_range(0..3) == 0 {
            "sell"
        } else {
            "buy"
        };
        let body = [
            ("{{strategy.order.action}}", side.to_string()),
            ("{{strategy.order.contracts}}", qty.to_string()),
            ("{{strategy.order.id}}", format!("tv{}", account.n)),
            (
                "{{timenow}}",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            ("{{exchange}}", "BINANCE".to_string()),
            ("{{ticker}}", m.symbol.to_string()),
            ("{{interval}}", "15".to_string()),
        ]
        .iter()
        .fold(template, |t, (k, v)| t.replace(k, v));
        let path = format!("/v2/hooks/tradingview/{hook_id}");
        for _ in 0..2 {
            let at_ms = crate::record::now_ms();
            Counters::add(&self.record.counters.sent);
            let a = self
                .call_with(
                    Some(account.id),
                    Method::POST,
                    &path,
                    &Auth::None,
                    Some(("application/json", body.clone())),
                )
                .await;
            if let Answer::Done(r) = a {
                Counters::add(&self.record.counters.accepted);
                if let Some(coid) = r.json["client_order_id"].as_str() {
                    if r.json["status"] == "accepted" {
                        self.record.accept(Accepted {
                            account_id: account.id,
                            client_order_id: coid.to_string(),
                            via: "alert",
                            at_ms,
                        });
                    }
                }
            }
        }
    }

    /// Engages the account's kill switch (with its API key).
    async fn kill_switch(&self, account: &mut Account) {
        if let Answer::Done(_) = self
            .command(
                account,
                Method::POST,
                "/v2/account/kill",
                &account.user.key(),
                Some(json!({"reason": "chaos"})),
            )
            .await
        {
            account.killed = true;
        }
    }

    /// Resets it (only a login session may), logging in again if the session is gone (a
    /// Redis flush loses sessions, as their TTL would).
    async fn reset_kill(&self, account: &mut Account) {
        for _ in 0..2 {
            match self
                .command(
                    account,
                    Method::DELETE,
                    "/v2/account/kill",
                    &account.user.bearer(),
                    None,
                )
                .await
            {
                Answer::Done(_) => {
                    account.killed = false;
                    return;
                }
                Answer::Refused(r) if r.status == 401 => self.login(account).await,
                _ => return,
            }
        }
    }

    async fn login(&self, account: &mut Account) {
        let creds = json!({"email": account.user.email, "password": account.user.password});
        if let Answer::Done(r) = self
            .call(
                Some(account.id),
                Method::POST,
                "/v2/auth/login",
                &Auth::None,
                Some(creds),
            )
            .await
        {
            if let Some(t) = r.json["token"].as_str() {
                account.user.token = t.to_string();
            }
        }
    }

    /// Gives `account` a TradingView webhook.
    pub async fn add_webhook(&self, account: &mut Account) {
        if let Answer::Done(r) = self
            .call(
                Some(account.id),
                Method::POST,
                "/v2/webhooks",
                &account.user.bearer(),
                Some(json!({"name": "chaos"})),
            )
            .await
        {
            if let (Some(id), Some(t)) = (
                r.json["id"].as_str(),
                r.json["alert_templates"]["strategy"].as_str(),
            ) {
                account.hook = Some((id.to_string(), t.to_string()));
            }
        }
    }

    /// A probe: a market buy on `account`, followed until it fills. `Some(filled at)` if it
    /// did within `bound`.
    pub async fn probe(&self, account: &mut Account, bound: Duration) -> Option<Instant> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            let order = self
                .place(
                    account,
                    "probe",
                    order("SOLUSDT", Decimal::new(1, 1), "buy", "market", json!({})),
                )
                .await;
            let Some(id) = order.and_then(|o| o["id"].as_str().map(str::to_string)) else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            while Instant::now() < deadline {
                let r = self
                    .stack
                    .try_request(
                        Method::GET,
                        &format!("/v2/orders/{id}"),
                        &account.user.key(),
                        None,
                        self.settings.timeout,
                    )
                    .await;
                match r
                    .ok()
                    .and_then(|r| r.json["status"].as_str().map(str::to_string))
                    .as_deref()
                {
                    Some("filled") => return Some(Instant::now()),
                    // Refused (no fresh price yet, say): place another.
                    Some("rejected" | "canceled") => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        None
    }
}

/// Waits as a 503 or 429 says (at most 2 s: the run is short, and retrying sooner than told
/// only costs another refusal).
async fn sleep_retry(retry_after: Option<u64>) {
    let secs = retry_after.unwrap_or(1).clamp(1, 2);
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

fn is_error_json(v: &Value) -> bool {
    v["code"].as_str().is_some_and(|c| !c.is_empty())
        && v["message"].as_str().is_some_and(|m| !m.is_empty())
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

/// A path with its ids replaced, to group answers by route.
fn route_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    path.split('/')
        .map(|seg| {
            if seg.parse::<Uuid>().is_ok() || seg.starts_with("wh_") {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The scripted prices: a seeded random walk per market around its centre, posted to the
/// feed and recorded.
pub struct Prices {
    current: std::sync::Mutex<Vec<(Decimal, Decimal)>>,
    pub frozen: AtomicBool,
}

impl Prices {
    pub fn new() -> Prices {
        Prices {
            current: std::sync::Mutex::new(
                MARKETS
                    .iter()
                    .map(|m| {
                        let bid = Decimal::from(m.centre);
                        (bid, bid + Decimal::new(m.spread_cents, 2))
                    })
                    .collect(),
            ),
            frozen: AtomicBool::new(false),
        }
    }

    /// The bid and ask last scripted for `symbol`.
    pub fn current(&self, symbol: &str) -> (Decimal, Decimal) {
        let i = MARKETS.iter().position(|m| m.symbol == symbol).unwrap_or(0);
        self.current.lock().unwrap_or_else(|e| e.into_inner())[i]
    }

    /// Scripts every market once at its current price (and records it).
    pub async fn publish_all(&self, stack: &Stack, record: &Record) {
        for (i, m) in MARKETS.iter().enumerate() {
            let (bid, ask) = self.current.lock().unwrap_or_else(|e| e.into_inner())[i];
            let at_ms = crate::record::now_ms();
            stack
                .script_quote(m.symbol, &bid.to_string(), &ask.to_string())
                .await;
            record.publish(m.symbol, Published { at_ms, bid, ask });
        }
    }

    /// Walks every market one step (at most ±0.15 %, kept within ±4 % of its centre).
    pub fn step(&self, rng: &mut StdRng) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        for (i, m) in MARKETS.iter().enumerate() {
            let (bid, _) = cur[i];
            let centre = Decimal::from(m.centre);
            let bps = rng.random_range(-15..=15);
            let mut next = (bid * Decimal::from(10_000 + bps) / Decimal::from(10_000)).round_dp(2);
            let band = centre * Decimal::new(4, 2);
            if next > centre + band || next < centre - band {
                next = (bid * Decimal::from(10_000 - bps) / Decimal::from(10_000)).round_dp(2);
            }
            cur[i] = (next, next + Decimal::new(m.spread_cents, 2));
        }
    }

    /// Walks and publishes every `every` until `stop` (frozen: publishes nothing new; the
    /// feed keeps re-sending the last quote).
    pub async fn run(
        self: Arc<Self>,
        stack: Arc<Stack>,
        record: Arc<Record>,
        seed: u64,
        every: Duration,
        stop: Arc<AtomicBool>,
    ) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
        while !stop.load(Ordering::Relaxed) {
            if !self.frozen.load(Ordering::Relaxed) {
                self.step(&mut rng);
                self.publish_all(&stack, &record).await;
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl Default for Prices {
    fn default() -> Self {
        Prices::new()
    }
}
