//! `chaos`: starts a stack on the chaos env's services, drives it with a seeded client mix
//! while faults are injected, drains it, audits the ledger and exits non-zero on any
//! violation (printing the account, the order and the rule). Run by `make chaos` and, as a
//! smoke run (`--smoke`), by `make test`; both through `infra/scripts/chaos.sh`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::audit::{audit, PriceRules};
use chaos::driver::{Account, ClientSettings, Clients, Prices, MARKETS};
use chaos::faults::{self, Fault, FaultSettings};
use chaos::record::{now_ms, Record};
use chaos::report::{self, RunInfo};
use chaos::snapshot::Snapshot;
use clap::Parser;
use e2e::{Stack, StackOptions};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Chaos suite: load, faults, drain, audit")]
struct Args {
    /// Seed of the client mix and the price walk.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accounts (each signs up, logs in and gets an API key; one in four a webhook).
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 48)]
    workers: usize,
    /// Client actions a second in all (0: as fast as the clients go). 70 sent 81,000
    /// commands in 25 minutes (outages slow the clients down); 90 aims at 100,000.
    #[arg(long, default_value_t = 90)]
    actions_per_sec: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 1500)]
    duration_secs: u64,
    /// How long PostgreSQL, Redis and the queue stay down, and the feed stalls.
    #[arg(long, default_value_t = 30)]
    outage_secs: u64,
    /// Instances of the api function.
    #[arg(long, default_value_t = 8)]
    api_instances: usize,
    /// Instances of the executor, each behind an SQS poller of its own (Lambda's SQS event
    /// source polls with several).
    #[arg(long, default_value_t = 3)]
    executor_instances: usize,
    /// The executor is killed every this many seconds.
    #[arg(long, default_value_t = 60)]
    executor_kill_every_secs: u64,
    /// Faults to leave out (all are on by default).
    #[arg(long, value_delimiter = ',')]
    without: Vec<Fault>,
    /// No faults at all (a baseline).
    #[arg(long)]
    no_faults: bool,
    /// The bounded run of `make test`: 40 accounts, 10 clients unpaced, 2 api and 2
    /// executor instances, 100 s, outages of 6 s.
    #[arg(long)]
    smoke: bool,
    /// `make soak`: 200 accounts, 16 clients, 40 actions a second for 30 minutes, no faults,
    /// sampled every 10 s into reliability/soak.csv and plotted into reliability/soak.png.
    #[arg(long)]
    soak: bool,
    /// Write the figures into this Markdown file (its `make chaos` section).
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// The services env whose services the faults stop (only `chaos` is allowed).
    #[arg(long, default_value = "chaos")]
    services_env: String,
}

/// The functions' price age limit in this run (their default).
const MAX_PRICE_AGE_MS: i64 = 5_000;
/// The executor's invocation timeout here: long enough for a batch on a saturated 2-core
/// machine in a debug build (5 s was not: batches timed out under load alone).
const EXECUTOR_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.accounts = 40;
        args.workers = 10;
        args.api_instances = 2;
        args.executor_instances = 2;
        args.actions_per_sec = 0;
        args.duration_secs = 100;
        args.outage_secs = 6;
        args.executor_kill_every_secs = 30;
    }
    if args.soak {
        args.accounts = 200;
        args.workers = 16;
        args.actions_per_sec = 40;
        args.duration_secs = 1800;
        args.no_faults = true;
    }
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let faults: Vec<Fault> = if args.no_faults {
        Vec::new()
    } else {
        Fault::ALL
            .into_iter()
            .filter(|f| !args.without.contains(f))
            .collect()
    };
    eprintln!(
        "chaos: seed {} · {} accounts · {} clients · {} s · faults: {}",
        args.seed,
        args.accounts,
        args.workers,
        args.duration_secs,
        faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut devstack_env = vec![(
        "DEVSTACK_EXECUTOR_TIMEOUT_SECS".to_string(),
        EXECUTOR_TIMEOUT.as_secs().to_string(),
    )];
    if faults.contains(&Fault::DuplicateDelivery) {
        devstack_env.push(("DEVSTACK_LOSE_DELETE_EVERY".into(), "7".into()));
    }
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let stack = Arc::new(
        Stack::start_with(StackOptions {
            function_env: env(&[
                ("RATE_SIGNUPS_BURST", "1000000"),
                ("RATE_SIGNUPS_PER_MINUTE", "1000000"),
                // Shortened from 15 s / 300 s so that the run drains in minutes after a
                // 30 s outage; DEPLOY.md has the production arithmetic.
                ("COMMAND_OUTAGE_RETRY_SECS", "3"),
                ("COMMAND_OUTAGE_RETRY_MAX_SECS", "20"),
            ]),
            devstack_env,
            // Several pollers, as Lambda's SQS event source has: infra/scripts/moto_server.py
            // makes moto's receive atomic, so pollers at once keep a FIFO group's order as SQS
            // does (RELIABILITY.md, "moto can reorder a FIFO group").
            executor_instances: Some(args.executor_instances),
            // Lambda runs one request per instance at a time: the clients' concurrency needs
            // instances (API Gateway would scale them out).
            api_instances: Some(args.api_instances),
            // Longer than the executor's timeout, as AWS requires (6 × there): a message comes
            // back only once its invocation has ended.
            visibility_timeout_secs: Some(12),
            ..StackOptions::default()
        })
        .await,
    );
    let record = Arc::new(Record::default());
    let prices = Arc::new(Prices::new());
    prices.publish_all(&stack, &record).await;
    for m in MARKETS {
        let (bid, _) = prices.current(m.symbol);
        stack
            .wait_for_quote(m.symbol, "scripted", |q| q.bid == bid)
            .await;
    }
    let clients = Arc::new(Clients {
        stack: stack.clone(),
        record: record.clone(),
        settings: ClientSettings {
            timeout: Duration::from_secs(30),
            retry_bound: Duration::from_secs(120),
        },
        seed: args.seed,
        latencies: Arc::new(chaos::soak::Latencies::default()),
    });

    // Accounts, as clients sign up: 8 at a time.
    let setup = Instant::now();
    // One probe account per scheduled fault (their probes run side by side with the next
    // faults) and one for the final health check.
    let probes = Fault::ALL.len() + 1;
    let mut accounts: Vec<Account> = futures_util::stream::iter(0..args.accounts + probes)
        .map(|i| {
            let clients = clients.clone();
            async move {
                let user = clients.stack.new_user().await;
                let mut a = Account {
                    id: user.account_uuid(),
                    user,
                    hook: None,
                    open: Vec::new(),
                    n: 0,
                    killed: false,
                };
                if i % 4 == 0 {
                    clients.add_webhook(&mut a).await;
                }
                a
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut probe_accounts = accounts.split_off(args.accounts);
    let mut probe = probe_accounts.pop().expect("the final probe account");
    eprintln!(
        "chaos: {} accounts ready in {:.1} s",
        accounts.len(),
        setup.elapsed().as_secs_f64()
    );

    let stop_prices = Arc::new(AtomicBool::new(false));
    let price_task = tokio::spawn(prices.clone().run(
        stack.clone(),
        record.clone(),
        args.seed,
        Duration::from_millis(300),
        stop_prices.clone(),
    ));
    let stop_load = Arc::new(AtomicBool::new(false));
    let load_until = Instant::now() + Duration::from_secs(args.duration_secs);

    // The clients: each worker owns every `workers`-th account.
    let mut owned: Vec<Vec<Account>> = (0..args.workers).map(|_| Vec::new()).collect();
    for (i, a) in accounts.into_iter().enumerate() {
        owned[i % args.workers].push(a);
    }
    let pacer = Arc::new(chaos::driver::Pacer::new(args.actions_per_sec));
    let mut workers = Vec::new();
    for (w, mut mine) in owned.into_iter().enumerate() {
        let (clients, prices, stop) = (clients.clone(), prices.clone(), stop_load.clone());
        let pacer = pacer.clone();
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(w as u64);
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while !mine.is_empty() && !stop.load(Ordering::Relaxed) && Instant::now() < load_until {
                if let Some(p) = pacer.as_ref() {
                    p.turn().await;
                }
                let i = rng.random_range(0..mine.len());
                clients.act(&mut mine[i], &mut rng, &prices).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
            }
            mine
        }));
    }

    let stop_sampler = Arc::new(AtomicBool::new(false));
    let soak_csv = std::path::PathBuf::from("reliability/soak.csv");
    let sampler = args.soak.then(|| {
        tokio::spawn(chaos::soak::sampler(
            stack.clone(),
            clients.latencies.clone(),
            Duration::from_secs(10),
            soak_csv.clone(),
            stop_sampler.clone(),
        ))
    });
    let killer = faults.contains(&Fault::ExecutorKill).then(|| {
        tokio::spawn(faults::executor_killer(
            stack.clone(),
            record.clone(),
            Duration::from_secs(args.executor_kill_every_secs),
            stop_load.clone(),
        ))
    });

    // The scheduled faults, spread from 10 % to 75 % of the load; after each, a probe order
    // measures the recovery.
    let fault_settings = FaultSettings {
        services_env: args.services_env.clone(),
        outage: Duration::from_secs(args.outage_secs),
        executor_timeout: EXECUTOR_TIMEOUT,
    };
    let scheduled: Vec<Fault> = faults.iter().copied().filter(|f| f.scheduled()).collect();
    let load = Duration::from_secs(args.duration_secs);
    let first = load.mul_f64(0.10);
    let gap = if scheduled.is_empty() {
        Duration::ZERO
    } else {
        load.mul_f64(0.65) / u32::try_from(scheduled.len()).unwrap_or(1)
    };
    let load_started = Instant::now();
    let mut last_fault_end = None;
    let mut recoveries = Vec::new();
    for (i, fault) in scheduled.iter().enumerate() {
        let at = first + gap * u32::try_from(i).unwrap_or(0);
        if let Some(wait) = at.checked_sub(load_started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let mut event = faults::inject(*fault, &stack, &record, &fault_settings)
            .await
            .map_err(anyhow::Error::msg)?;
        let ended = Instant::now();
        last_fault_end = Some(ended);
        // The recovery: until a probe order of an account of its own fills, measured while
        // the schedule goes on (a backlog after one fault must not push the next ones back).
        let (clients, record) = (clients.clone(), record.clone());
        let mut account = probe_accounts.pop().expect("a probe account per fault");
        recoveries.push(tokio::spawn(async move {
            if let Some(filled) = clients.probe(&mut account, Duration::from_secs(120)).await {
                event.recovery_ms = i64::try_from(filled.duration_since(ended).as_millis()).ok();
            }
            eprintln!(
                "chaos: {} recovered in {:?} ms",
                event.kind, event.recovery_ms
            );
            record.fault(event);
        }));
    }
    // Healthy again after the last fault, while the load goes on: a probe order fills,
    // prices are fresh, a WebSocket push arrives.
    let final_recovery = healthy(&stack, &clients, &mut probe).await;
    let since = last_fault_end.unwrap_or(load_started);
    let final_recovery_secs = final_recovery.map(|t| t.duration_since(since).as_secs_f64());
    eprintln!("chaos: healthy {final_recovery_secs:?} s after the last fault");
    for r in recoveries {
        let _ = r.await;
    }
    if faults.contains(&Fault::DuplicateDelivery) {
        let t = now_ms();
        record.fault(chaos::record::FaultEvent {
            kind: Fault::DuplicateDelivery.name(),
            start_ms: t,
            end_ms: t,
            recovery_ms: None,
        });
    }

    // The end of the load.
    let mut accounts = Vec::new();
    for w in workers {
        accounts.extend(w.await.unwrap_or_default());
    }
    stop_load.store(true, Ordering::Relaxed);
    if let Some(k) = killer {
        k.abort();
    }
    stop_sampler.store(true, Ordering::Relaxed);
    let samples = match sampler {
        Some(task) => Some(task.await??),
        None => None,
    };

    // Drain: prices frozen (the feed keeps re-sending them), until the queue is empty and
    // the ledger stops changing.
    prices.frozen.store(true, Ordering::Relaxed);
    let drain_started = Instant::now();
    let drained = drain(&stack).await;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    stop_prices.store(true, Ordering::Relaxed);
    let _ = price_task.await;

    let snapshot = Snapshot::load(&stack.database_url).await?;
    // What the logs say the faults did: deliveries applied again as no-ops, and executor
    // instances the devstack replaced.
    let logs = strip_ansi(&stack.logs());
    let count = |pred: &dyn Fn(&str) -> bool| logs.lines().filter(|l| pred(l)).count();
    let evidence = report::Evidence {
        lost_deletes: count(&|l| l.contains("fault injection: the deletes of")),
        duplicates_ignored: count(&|l| {
            l.contains("applied")
                && (l.contains("\"duplicate\":true") || l.contains("duplicate=true"))
        }),
        executor_restarts: count(&|l| l.contains("executor") && l.contains("; restarting in")),
    };
    let mut result = audit(
        &snapshot,
        &record,
        PriceRules {
            max_price_age_ms: MAX_PRICE_AGE_MS,
            slack_ms: 1_500,
        },
    );
    if !drained {
        result.violations.push(chaos::audit::Violation {
            rule: "not_drained",
            account_id: None,
            order: None,
            detail: "the queue never emptied and the ledger never settled within 180 s".into(),
        });
    }
    if final_recovery.is_none() {
        result.violations.push(chaos::audit::Violation {
            rule: "not_recovered",
            account_id: None,
            order: None,
            detail: "no probe fill, fresh price and WebSocket push within 180 s of the last fault"
                .into(),
        });
    }
    let info = RunInfo {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seed: args.seed,
        accounts: accounts.len(),
        workers: args.workers,
        instances: (args.api_instances, args.executor_instances),
        actions_per_sec: args.actions_per_sec,
        duration_secs: args.duration_secs,
        outage_secs: args.outage_secs,
        faults: faults.iter().map(|f| f.name()).collect(),
        machine: report::machine(),
        final_recovery_secs,
        drain_secs,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let md = match &samples {
        Some(samples) => {
            let png = soak_csv.with_extension("png");
            plot(&soak_csv, &png);
            report::soak_markdown(&info, &record, &snapshot, &result, samples, &soak_csv, &png)
        }
        None => report::markdown(&info, &record, &snapshot, &result, &evidence),
    };
    println!("{md}");
    if let Some(path) = &args.report {
        let head = if samples.is_some() {
            "## `make soak`"
        } else {
            "## `make chaos`"
        };
        write_section(path, head, &md)?;
    }
    for v in &result.violations {
        eprintln!("chaos: VIOLATION {v}");
    }
    if !result.violations.is_empty() {
        stack.keep_logs();
    }
    Ok(result.violations.is_empty())
}

/// Waits (at most 180 s) until a probe order fills, every quote in the cache is fresh and a
/// WebSocket subscriber gets a newly scripted price; when that was.
async fn healthy(stack: &Stack, clients: &Clients, probe: &mut Account) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(180);
    clients.probe(probe, Duration::from_secs(180)).await?;
    while Instant::now() < deadline {
        let mut fresh = true;
        for m in MARKETS {
            let q = stack.cache.quote(m.symbol).await.ok().flatten();
            fresh &= q.is_some_and(|q| now_ms() - q.ts < 2_000);
        }
        if fresh && ws_push_arrives(stack, probe).await {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// A subscriber of SOLUSDT gets a pushed `prices` message (the walk goes on) within 10 s.
async fn ws_push_arrives(stack: &Stack, probe: &Account) -> bool {
    let query = format!(
        "key_id={}&secret_key={}",
        probe.user.key_id, probe.user.secret_key
    );
    let Ok(mut ws) = stack.ws_connect(&query).await else {
        return false;
    };
    ws.send_json(&json!({"action": "subscribe", "symbols": ["SOLUSDT"]}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.try_next(Duration::from_millis(500)).await {
            Ok(Some(m)) if m["type"] == "prices" => {
                let pushed = m["prices"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["symbol"] == "SOLUSDT"));
                if pushed {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Until the queue has been empty three times in a row, a second apart, and the ledger's
/// fill count stood still meanwhile (at most 180 s); whether that happened.
async fn drain(stack: &Stack) -> bool {
    let Ok(pool) = sqlx::PgPool::connect(&stack.database_url).await else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut quiet, mut last_fills) = (0, -1i64);
    while Instant::now() < deadline {
        let in_queue = stack.queue_depth().await.unwrap_or(u64::MAX);
        let fills: i64 = sqlx::query_scalar("SELECT count(*) FROM fills")
            .fetch_one(&pool)
            .await
            .unwrap_or(-2);
        if in_queue == 0 && fills == last_fills {
            quiet += 1;
            if quiet >= 3 {
                return true;
            }
        } else {
            quiet = 0;
        }
        last_fills = fills;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// Plots the soak's CSV into `png` with infra/scripts/plot_soak.py (matplotlib, in the venv);
/// a failure to plot is reported, the CSV stays.
fn plot(csv: &std::path::Path, png: &std::path::Path) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/scripts/plot_soak.py"
    );
    match std::process::Command::new(python)
        .arg(script)
        .arg(csv)
        .arg(png)
        .status()
    {
        Ok(s) if s.success() => {}
        other => eprintln!("chaos: plotting {} failed: {other:?}", csv.display()),
    }
}

/// Replaces the `head` section (`## ...`) of `path` (or adds it, or writes the file).
fn write_section(path: &std::path::Path, head: &str, section: &str) -> anyhow::Result<()> {
    let head_len = head.len();
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Reliability\n\nWritten by `make chaos` and `make soak` (`infra/scripts/chaos.sh`).\n\n"
            .to_string()
    });
    let new = match old.find(head) {
        Some(start) => {
            let rest = &old[start + head_len..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |i| start + head_len + i + 1);
            format!("{}{}\n{}", &old[..start], section.trim_end(), &old[end..])
        }
        None => format!("{}\n{}\n", old.trim_end(), section.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// `text` without ANSI colour escapes (the functions log in colour to a terminal).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
