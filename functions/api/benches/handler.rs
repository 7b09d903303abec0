//! api handler latency: `api::handle(&deps, req)` called directly (no Lambda runtime), one
//! request at a time as a Lambda instance serves them, against the Postgres and Redis of
//! `DATABASE_URL` / `REDIS_URL`, with an API key created through the ledger.
//!
//! - `GET /v2/positions` (an account holding two positions, priced from Redis);
//! - `POST /v2/orders` (market buy, a new `client_order_id` each time) in three forms:
//!   1. without the queue call: the handler's own steps in the handler's order
//!      (authenticate, parse, validate, ledger lookup, `pre_trade_checks`, pending copy)
//!      with only `CommandQueue::send` left out — a reconstruction, since the api crate has
//!      no seam to leave the send out of `api::handle` itself;
//!   2. the real `api::handle`, with the SQS endpoint a loopback stub that answers
//!      `SendMessage` at once (our code + the AWS SDK's signing and HTTP, ~no queue);
//!   3. the real `api::handle` against moto (`AWS_ENDPOINT_URL`, `COMMANDS_QUEUE_URL`),
//!      for information only: moto is slow and is not SQS.
//!
//! Plus `CommandQueue::send` alone against the stub and against moto.
//!
//! Bounded: each figure takes at most `BENCH_SECS` (default 5) seconds or 3,000 requests.
//! Env: DATABASE_URL, REDIS_URL (required); AWS_ENDPOINT_URL + COMMANDS_QUEUE_URL (optional,
//! moto); BENCH_SECS; BENCH_REPORT (a file to write the markdown to).
//! Run: `cargo bench -p api --bench handler` (see infra/scripts/bench.sh).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use adapters::auth::{digest, new_key_id, random_secret};
use adapters::cache::{Cache, PendingPut};
use adapters::config::Config;
use adapters::ledger::Ledger;
use adapters::now_ms;
use adapters::queue::CommandQueue;
use api::Deps;
use app::ApiError;
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::engine::ExecutionParams;
use domain::order::{NewOrder, OrderRequest};
use lambda_http::{Body, Request, Response};
use rust_decimal_macros::dec;
use testkit::events::RestEvent;
use testkit::{measure, Figure};
use uuid::Uuid;

fn opt_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An API Gateway REST proxy event (payload 1.0, as the devstack and API Gateway send it),
/// parsed by lambda_http exactly as the runtime does.
fn request(method: &str, path: &str, key_id: &str, secret: &str, body: Option<&str>) -> Request {
    let event = RestEvent::new(method.parse().expect("an HTTP method"), path)
        .stage("bench")
        .header("Accept", "application/json")
        .header("APCA-API-KEY-ID", key_id)
        .header("APCA-API-SECRET-KEY", secret)
        .header("Content-Type", "application/json")
        .header("Host", "127.0.0.1:3000")
        .user_agent("bench")
        .body(body.unwrap_or_default());
    lambda_http::request::from_str(&event.to_json()).expect("a REST proxy event")
}

fn order_body(client_order_id: &str) -> String {
    format!(
        r#"{{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"{client_order_id}"}}"#
    )
}

/// A `POST /v2/orders` of `order_body` with the client order id `{tag}-{i}`.
fn order_post(key_id: &str, secret: &str, tag: &str, i: usize) -> Request {
    request(
        "POST",
        "/v2/orders",
        key_id,
        secret,
        Some(&order_body(&format!("{tag}-{i}"))),
    )
}

/// Times `api::handle` on the request `req(i)` builds (built outside the timed region).
async fn measure_handle(name: &str, secs: f64, d: &Deps, req: impl Fn(usize) -> Request) -> Figure {
    testkit::measure_call(name, secs, |i| status_of(d, req(i))).await
}

/// The status `api::handle` answers `req` with.
async fn status_of(d: &Deps, req: Request) -> u16 {
    api::handle(d, req).await.status().as_u16()
}

/// A queue whose SDK client is built now, with `endpoint` as `AWS_ENDPOINT_URL` (the SDK
/// reads it when its config loads, on first use).
async fn queue_at(endpoint: &str, queue_url: &str) -> CommandQueue {
    std::env::set_var("AWS_ENDPOINT_URL", endpoint);
    let q = CommandQueue::new(queue_url);
    q.client().await;
    q
}

fn deps(config: &Config, queue: CommandQueue) -> Deps {
    Deps::with(
        config.clone(),
        Ledger::connect_lazy(&config.database.url, config.database.max_connections)
            .expect("database url"),
        Cache::new(&config.redis.url, &config.redis.key_prefix).expect("redis url"),
        queue,
    )
    .expect("redis url")
}

/// `POST /v2/orders` as `app::orders::place` does it, minus `CommandQueue::send`
async fn place_without_send(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = api::auth::authenticate(deps, req).await?;
    let request: OrderRequest = rest::json_body(req)?;
    let (valid, inst) = request.validate(deps.catalog)?;
    let order = NewOrder::new(p.account_id, valid, inst.asset_id, Utc::now());
    if let Some(existing) = deps
        .ledger
        .order(domain::order::OrderRef {
            account_id: order.account_id,
            order_id: order.id,
        })
        .await?
    {
        return Ok(rest::json(200, &alpaca::order_json(&existing)));
    }
    app::orders::pre_trade_checks(deps, &order).await?;
    match deps.cache.put_pending_order(&order).await? {
        PendingPut::Created | PendingPut::Exists(_) => {}
    }
    let _command = Command::place(order.clone());
    // (CommandQueue::send would be here.)
    let stored = deps
        .cache
        .pending_order(domain::order::OrderRef {
            account_id: order.account_id,
            order_id: order.id,
        })
        .await?
        .unwrap_or(order);
    Ok(rest::json(200, &alpaca::order_json(&stored.pending())))
}

async fn run() -> String {
    let secs = testkit::bench_secs();
    let mut config = testkit::bench_config();
    // One account sends every request: the per-account rate limits would measure 429s.
    let off = adapters::ratelimit::BucketSpec {
        burst: 0,
        per_minute: 0,
    };
    config.rates.requests = off;
    config.rates.orders = off;
    // The SDK needs credentials and a region to sign, even for loopback endpoints.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if opt_env(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let moto = match (opt_env("AWS_ENDPOINT_URL"), opt_env("COMMANDS_QUEUE_URL")) {
        (Some(e), Some(q)) => Some((e, q)),
        _ => None,
    };

    // An account with two positions and an API key, made through the ledger.
    let ledger = Ledger::connect_lazy(&config.database.url, 2).expect("database url");
    ledger.migrate().await.expect("migrations apply");
    let email = format!("bench-{}@example.com", Uuid::new_v4().simple());
    let (user_id, account_id) = ledger
        .create_user(&email, "bench-not-a-hash", dec!(1000000000))
        .await
        .expect("user");
    let key_id = new_key_id();
    let secret = random_secret();
    ledger
        .insert_api_key(&key_id, user_id, account_id, &digest(&secret))
        .await
        .expect("api key");
    let quote_cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("redis url");
    testkit::put_bench_quotes(&quote_cache).await;
    for (symbol, qty) in [("BTCUSDT", "0.01"), ("ETHUSDT", "0.5")] {
        let req: OrderRequest = serde_json::from_str(&format!(
            r#"{{"symbol":"{symbol}","qty":"{qty}","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"seed-{symbol}"}}"#
        ))
        .unwrap();
        let (v, inst) = req.validate(Catalog::builtin()).unwrap();
        let order = NewOrder::new(account_id, v, inst.asset_id, Utc::now());
        let quote = quote_cache.quote(symbol).await.unwrap();
        let out = ledger
            .place_order(
                order.id,
                &order,
                quote.as_ref(),
                now_ms(),
                &ExecutionParams::default(),
            )
            .await
            .expect("seed fill");
        assert!(out.fill.is_some(), "seed order did not fill");
    }
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            testkit::put_bench_quotes(&quote_cache).await;
        }
    });

    let stub = testkit::sqs_stub().await;
    let stub_endpoint = format!("http://{stub}");
    let stub_queue_url = format!("http://{stub}/123456789012/bench.fifo");
    let run_tag = Uuid::new_v4().simple().to_string();
    let mut figures = Vec::new();

    // GET /v2/positions
    {
        let d = deps(&config, queue_at(&stub_endpoint, &stub_queue_url).await);
        let (k, s) = (key_id.clone(), secret.clone());
        figures.push(
            measure_handle("`GET /v2/positions` (2 positions)", secs, &d, |_| {
                request("GET", "/v2/positions", &k, &s, None)
            })
            .await,
        );
    }
    // POST /v2/orders without the queue call (reconstruction).
    {
        let d = deps(&config, queue_at(&stub_endpoint, &stub_queue_url).await);
        let (k, s, tag) = (key_id.clone(), secret.clone(), format!("{run_tag}-noq"));
        figures.push(
            measure(
                "`POST /v2/orders` without the queue call (handler steps minus `send`)",
                secs,
                |i| {
                    let req = order_post(&k, &s, &tag, i);
                    let d = &d;
                    async move {
                        let t = Instant::now();
                        let r = match place_without_send(d, &req).await {
                            Ok(r) => r,
                            Err(e) => rest::error_response(&e),
                        };
                        (t.elapsed(), r.status().as_u16())
                    }
                },
            )
            .await,
        );
    }
    // POST /v2/orders, real handler, stub SQS.
    {
        let d = deps(&config, queue_at(&stub_endpoint, &stub_queue_url).await);
        let (k, s, tag) = (key_id.clone(), secret.clone(), format!("{run_tag}-stub"));
        figures.push(
            measure_handle(
                "`POST /v2/orders` via `api::handle`, SQS = loopback stub",
                secs,
                &d,
                |i| order_post(&k, &s, &tag, i),
            )
            .await,
        );
        let cmd = |i: usize| {
            let req: OrderRequest =
                serde_json::from_str(&order_body(&format!("{run_tag}-send-{i}"))).unwrap();
            let (v, inst) = req.validate(Catalog::builtin()).unwrap();
            Command::place(NewOrder::new(account_id, v, inst.asset_id, Utc::now()))
        };
        let q = &d.queue;
        figures.push(
            measure(
                "`CommandQueue::send` alone, SQS = loopback stub",
                secs,
                |i| {
                    let c = cmd(i);
                    async move {
                        let t = Instant::now();
                        let ok = q.send(&c).await.is_ok();
                        (t.elapsed(), if ok { 200 } else { 503 })
                    }
                },
            )
            .await,
        );
    }
    // POST /v2/orders, real handler, moto.
    let mut moto_note = String::new();
    match &moto {
        Some((endpoint, commands_url)) => {
            // A queue of the benchmark's own beside the commands queue, so that no devstack
            // polling that queue executes the benchmark's orders; deleted afterwards.
            let probe_q = queue_at(endpoint, commands_url).await;
            let name = format!("bench-{}.fifo", &run_tag[..12]);
            let created = probe_q
                .client()
                .await
                .create_queue()
                .queue_name(&name)
                .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
                .send()
                .await;
            match created.ok().and_then(|o| o.queue_url) {
                None => {
                    moto_note =
                        format!("moto figures skipped: moto at {endpoint} did not create a queue.")
                }
                Some(queue_url) => {
                    let d = deps(&config, queue_at(endpoint, &queue_url).await);
                    let (k, s, tag) = (key_id.clone(), secret.clone(), format!("{run_tag}-moto"));
                    let moto_secs = (secs / 2.0).max(1.0);
                    figures.push(
                        measure_handle(
                            "`POST /v2/orders` via `api::handle`, SQS = moto (information only)",
                            moto_secs,
                            &d,
                            |i| order_post(&k, &s, &tag, i),
                        )
                        .await,
                    );
                    let _ = d
                        .queue
                        .client()
                        .await
                        .delete_queue()
                        .queue_url(&queue_url)
                        .send()
                        .await;
                }
            }
        }
        None => {
            moto_note =
                "moto figures skipped: AWS_ENDPOINT_URL and COMMANDS_QUEUE_URL are not both set."
                    .into()
        }
    }
    refresher.abort();

    let mut md = String::new();
    writeln!(
        md,
        "#### api: `api::handle` called directly, one request at a time"
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(
        md,
        "Requests are API Gateway REST proxy events parsed by `lambda_http` (outside the timed region), \
         authenticated by `APCA-API-KEY-ID`/`APCA-API-SECRET-KEY` of a key made through the ledger; \
         each POST has a new `client_order_id` (the non-idempotent path). Warm pools (20 warm-up requests). \
         Latencies in µs."
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(md, "| request | n | mean | p50 | p99 | p99.9 | statuses |").unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|").unwrap();
    for f in &figures {
        writeln!(md, "{}", f.row()).unwrap();
    }
    writeln!(md).unwrap();
    if !moto_note.is_empty() {
        writeln!(md, "{moto_note}").unwrap();
        writeln!(md).unwrap();
    }
    // Clean up the pending copies this run left in Redis (no executor consumed them).
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("redis url");
    if let Ok(pending) = cache.pending_orders(account_id).await {
        for o in pending {
            let _ = cache
                .clear_pending_order(domain::order::OrderRef {
                    account_id,
                    order_id: o.id,
                })
                .await;
        }
    }
    md
}

fn main() {
    testkit::bench_main(tokio::runtime::Builder::new_multi_thread(), run());
}
