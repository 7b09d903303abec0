//! webhook handler latency: `webhook::handle(&deps, req)` called directly (no Lambda
//! runtime), one alert at a time as a Lambda instance serves them, against the Postgres and
//! Redis of `DATABASE_URL` / `REDIS_URL`.
//!
//! The queue is a loopback stub that answers `SendMessage` at once (`testkit::sqs_stub`):
//! the figures include our code, the AWS SDK's signing and one loopback HTTP round trip,
//! but no queue. `CommandQueue::send` to the stub alone is measured too; "without the queue
//! call" is the handler's figure minus that one.
//!
//! Alerts: a strategy buy alert (a new alert id each time: webhook lookup, passphrase check,
//! parse, rate-limit bucket, ledger lookup, pre-trade and risk reads, pending copy, send,
//! delivery record); a re-sent alert (the same body: answered from the pending copy); a
//! wrong passphrase and an unknown webhook id (which must take the same time).
//!
//! Bounded: each figure takes at most `BENCH_SECS` (default 5) seconds or 3,000 alerts
//! (`testkit::measure`).
//! Env: DATABASE_URL, REDIS_URL (required); BENCH_SECS; BENCH_REPORT (markdown output).
//! Run: `cargo bench -p webhook --bench webhook` (see infra/scripts/bench.sh).

use std::fmt::Write as _;
use std::time::Instant;

use adapters::auth::{digest, random_secret};
use adapters::cache::Cache;
use adapters::ledger::Ledger;
use adapters::queue::CommandQueue;
use adapters::ratelimit::BucketSpec;
use app::Deps;
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest};
use lambda_http::http::Method;
use lambda_http::Request;
use rust_decimal_macros::dec;
use testkit::events::RestEvent;
use testkit::{measure, pct, Figure};
use uuid::Uuid;

/// An API Gateway REST event for `/v2/hooks/tradingview/{webhook_id}`, as TradingView's
/// POST arrives (JSON body, no custom headers).
fn alert(webhook_id: &str, body: &str) -> Request {
    let event = RestEvent::new(Method::POST, &format!("/v2/hooks/tradingview/{webhook_id}"))
        .resource("/v2/hooks/tradingview/{webhook_id}", "hook01")
        .path_parameter("webhook_id", webhook_id)
        .stage("bench")
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Host", "127.0.0.1:3000")
        .header("User-Agent", "Go-http-client/1.1")
        .source_ip("52.89.214.238")
        .body(body);
    lambda_http::request::from_str(&event.to_json()).expect("a REST proxy event")
}

/// A strategy alert as TradingView sends it after substituting the documented template.
fn strategy_alert(passphrase: &str, id: usize) -> String {
    format!(
        r#"{{"passphrase":"{passphrase}","symbol":"BINANCE:BTCUSDT","action":"buy","qty":"0.001","id":"Long-{id}-2026-11-21T10:00:00Z"}}"#
    )
}

/// Times `webhook::handle` on the request `req(i)` builds (built outside the timed region).
async fn measure_handle(
    name: &str,
    secs: f64,
    deps: &Deps,
    req: impl Fn(usize) -> Request,
) -> Figure {
    testkit::measure_call(name, secs, |i| status_of(deps, req(i))).await
}

/// The status `webhook::handle` answers `req` with.
async fn status_of(deps: &Deps, req: Request) -> u16 {
    webhook::handle(deps, req).await.status().as_u16()
}

async fn run() -> String {
    let secs = testkit::bench_secs();
    let mut config = testkit::bench_config();
    // One webhook sends every alert: the per-account order bucket would measure 429s.
    config.rates.orders = BucketSpec {
        burst: 0,
        per_minute: 0,
    };
    // The SDK signs even for loopback endpoints.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        std::env::set_var(k, v);
    }
    let stub = testkit::sqs_stub().await;
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://{stub}"));
    let queue = CommandQueue::new(&format!("http://{stub}/123456789012/bench.fifo"));
    queue.client().await;
    let ledger = Ledger::connect_lazy(&config.database.url, config.database.max_connections)
        .expect("database url");
    ledger.migrate().await.expect("migrations");
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("redis url");
    testkit::put_quote(&cache, "BTCUSDT", dec!(60000), dec!(60000.01)).await;
    let deps = Deps::with(config, ledger, cache, queue).expect("redis url");

    let (_, account) = deps
        .ledger
        .create_user(
            &format!("bench-{}@example.com", Uuid::new_v4().simple()),
            "not-a-hash",
            dec!(1000000000),
        )
        .await
        .expect("account");
    // Thousands of orders on one account would reach the open-order and position limits.
    deps.ledger
        .set_risk_limits(account, &domain::risk::RiskLimits::none())
        .await
        .expect("limits");
    let passphrase = random_secret();
    let hook = deps
        .ledger
        .create_webhook(account, "bench", &digest(&passphrase), None, 1)
        .await
        .expect("webhook")
        .expect("the account's first webhook");

    let mut figures = Vec::new();
    let deps = &deps;
    let id = hook.id.clone();
    figures.push(
        measure_handle(
            "strategy alert → order (new alert id each time)",
            secs,
            deps,
            |i| alert(&id, &strategy_alert(&passphrase, i)),
        )
        .await,
    );
    let resent = strategy_alert(&passphrase, 42);
    figures.push(
        measure_handle(
            "re-sent alert (same body: the order it made)",
            secs,
            deps,
            |_| alert(&id, &resent),
        )
        .await,
    );
    let wrong = strategy_alert("not-the-passphrase", 1);
    figures.push(
        measure_handle("wrong passphrase → 401", secs, deps, |_| {
            alert(&id, &wrong)
        })
        .await,
    );
    let unknown = format!("wh_{}", random_secret());
    figures.push(
        measure_handle("unknown webhook id → 401", secs, deps, |_| {
            alert(&unknown, &wrong)
        })
        .await,
    );
    // The send alone, to subtract.
    let req: OrderRequest = serde_json::from_str(
        r#"{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"market","time_in_force":"gtc"}"#,
    )
    .expect("order");
    let (valid, inst) = req.validate(deps.catalog).expect("valid");
    let command = Command::place(NewOrder::new(
        account,
        valid,
        inst.asset_id,
        chrono::Utc::now(),
    ));
    figures.push(
        measure("`CommandQueue::send` alone (loopback stub)", secs, |_| {
            let c = command.clone();
            async move {
                let t = Instant::now();
                let ok = deps.queue.send(&c).await.is_ok();
                (t.elapsed(), if ok { 200 } else { 503 })
            }
        })
        .await,
    );

    let mut md = String::new();
    let _ = writeln!(
        md,
        "| Alert | n | mean µs | p50 µs | p99 µs | p99.9 µs | statuses |\n|---|---|---|---|---|---|---|"
    );
    for f in &figures {
        let _ = writeln!(md, "{}", f.row());
    }
    let (p50, p99) = (pct(&figures[0].lat, 0.5), pct(&figures[0].lat, 0.99));
    let (s50, s99) = (pct(&figures[4].lat, 0.5), pct(&figures[4].lat, 0.99));
    let _ = writeln!(
        md,
        "\nWithout the queue call (strategy alert minus the send alone): p50 ≈ {} µs, p99 ≈ {} µs.",
        p50.saturating_sub(s50),
        p99.saturating_sub(s99)
    );
    md
}

fn main() {
    testkit::bench_main(tokio::runtime::Builder::new_current_thread(), run());
}
