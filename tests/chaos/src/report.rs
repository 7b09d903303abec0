//! The run's figures as Markdown (the `make chaos` section of RELIABILITY.md).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::audit::Audit;
use crate::record::{Counters, Record};
use crate::snapshot::Snapshot;

/// What a run was, for the report's header.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub command: String,
    pub seed: u64,
    pub accounts: usize,
    pub workers: usize,
    /// api and executor instances (the executor's each with an SQS poller).
    pub instances: (usize, usize),
    /// The clients' actions a second in all (0: unpaced).
    pub actions_per_sec: u32,
    pub duration_secs: u64,
    pub outage_secs: u64,
    pub faults: Vec<&'static str>,
    pub machine: String,
    /// Seconds from the last fault's end until a probe order filled, prices were fresh and
    /// a WebSocket push arrived.
    pub final_recovery_secs: Option<f64>,
    pub drain_secs: f64,
    pub elapsed_secs: f64,
}

/// What the stack's logs show the faults did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence {
    /// Batches whose deletes the devstack lost on purpose (duplicate deliveries).
    pub lost_deletes: usize,
    /// Commands the executor found already applied (redeliveries that changed nothing).
    pub duplicates_ignored: usize,
    /// Executor instances the devstack replaced (killed, hung past the timeout).
    pub executor_restarts: usize,
}

/// The machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cpu}, {cores} cores, {mem_gib} GiB")
}

/// The Markdown section.
pub fn markdown(
    info: &RunInfo,
    record: &Record,
    snapshot: &Snapshot,
    audit: &Audit,
    evidence: &Evidence,
) -> String {
    let c = &record.counters;
    let mut s = String::new();
    let _ = writeln!(s, "## `make chaos`\n");
    let _ = writeln!(
        s,
        "Machine: {}. Command: `{}`. Seed {}. {} accounts, {} client workers ({}), {} api and {} executor instances, {} s of load, outages of {} s.\n",
        info.machine, info.command, info.seed, info.accounts, info.workers, pace(info.actions_per_sec), info.instances.0, info.instances.1, info.duration_secs, info.outage_secs
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let rows = [
        ("commands sent", Counters::get(&c.sent).to_string()),
        (
            "commands accepted (2xx)",
            Counters::get(&c.accepted).to_string(),
        ),
        (
            "commands applied by the executor",
            snapshot.applied_commands.to_string(),
        ),
        (
            "refused with a documented 4xx",
            Counters::get(&c.refused).to_string(),
        ),
        (
            "503 + Retry-After, retried",
            Counters::get(&c.unavailable).to_string(),
        ),
        (
            "requests given up after the retry bound",
            Counters::get(&c.gave_up).to_string(),
        ),
        ("reads answered", Counters::get(&c.reads).to_string()),
        ("orders in the ledger", snapshot.orders.len().to_string()),
        ("fills in the ledger", snapshot.fills.len().to_string()),
        (
            "batches delivered again (deletes lost on purpose)",
            evidence.lost_deletes.to_string(),
        ),
        (
            "redelivered commands found already applied",
            evidence.duplicates_ignored.to_string(),
        ),
        (
            "executor instances replaced by the devstack",
            evidence.executor_restarts.to_string(),
        ),
        ("orders lost (goal 0)", audit.lost.to_string()),
        ("fills doubled (goal 0)", audit.doubled.to_string()),
        (
            "invariant violations (goal 0)",
            audit.violations.len().to_string(),
        ),
        (
            "recovery after the last fault",
            info.final_recovery_secs
                .map_or("not within the bound".into(), |s| format!("{s:.1} s")),
        ),
        ("drain after the load", format!("{:.1} s", info.drain_secs)),
        ("whole run", format!("{:.0} s", info.elapsed_secs)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let mut by_kind: BTreeMap<&str, (usize, Vec<i64>)> = BTreeMap::new();
    for f in record.faults() {
        let e = by_kind.entry(f.kind).or_default();
        e.0 += 1;
        if let Some(r) = f.recovery_ms {
            e.1.push(r);
        }
    }
    let _ = writeln!(
        s,
        "\n| fault | injected | recovery (probe order filled after the fault ended), worst |\n|---|---|---|"
    );
    for kind in &info.faults {
        let (n, rec) = by_kind.get(kind).cloned().unwrap_or_default();
        let worst = rec
            .iter()
            .max()
            .map_or("–".into(), |ms| format!("{:.1} s", *ms as f64 / 1000.0));
        let _ = writeln!(s, "| {kind} | {n} | {worst} |");
    }
    let mut timeline: Vec<_> = record.faults();
    timeline.retain(|f| f.end_ms > f.start_ms);
    timeline.sort_by_key(|f| f.start_ms);
    if !timeline.is_empty() {
        let _ = writeln!(
            s,
            "\nFault windows (ms since the epoch): {}",
            timeline
                .iter()
                .map(|f| format!("{} {}..{}", f.kind, f.start_ms, f.end_ms))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !audit.violations.is_empty() {
        let _ = writeln!(s, "\nViolations (first 50):\n");
        for v in audit.violations.iter().take(50) {
            let _ = writeln!(s, "- {v}");
        }
    }
    s
}

/// The `make soak` section: the run, the audit, and each sampled series' growth over the
/// later two thirds of the run.
pub fn soak_markdown(
    info: &RunInfo,
    record: &Record,
    snapshot: &Snapshot,
    audit: &Audit,
    samples: &[crate::soak::Sample],
    csv: &std::path::Path,
    png: &std::path::Path,
) -> String {
    let c = &record.counters;
    let mut s = String::new();
    let _ = writeln!(s, "## `make soak`\n");
    let _ = writeln!(
        s,
        "Machine: {}. Command: `{}`. Seed {}. {} accounts, {} client workers ({}), {} s of steady mixed load (no faults), sampled every 10 s: [{}]({}), plotted below.\n",
        info.machine,
        info.command,
        info.seed,
        info.accounts,
        info.workers,
        pace(info.actions_per_sec),
        info.duration_secs,
        csv.display(),
        csv.display()
    );
    let _ = writeln!(
        s,
        "Commands sent {}, accepted {}, applied {}; orders {}, fills {}; invariant violations {} (goal 0).\n",
        Counters::get(&c.sent),
        Counters::get(&c.accepted),
        snapshot.applied_commands,
        snapshot.orders.len(),
        snapshot.fills.len(),
        audit.violations.len()
    );
    let _ = writeln!(
        s,
        "Growth over the later two thirds of the run (the first third is warm-up), least-squares slope:\n\n| series | at one third | at the end | slope per hour | bounded? |\n|---|---|---|---|---|"
    );
    for name in crate::soak::series(samples) {
        let Some((first, last, slope)) = crate::soak::growth(samples, &name) else {
            continue;
        };
        let verdict = if name.ends_with("_rss_mib") || name == "redis_keys" {
            // Memory and keys must level off: a slope under 10 % of the level per hour (or
            // under 5 MiB / 50 keys per hour) is noise, not growth.
            let level = last.abs().max(first.abs());
            let floor = if name == "redis_keys" { 50.0 } else { 5.0 };
            if slope.abs() <= (level * 0.10).max(floor) {
                "yes"
            } else {
                "**no: grows**"
            }
        } else if name.ends_with("_mib") {
            "grows with the ledger (retention prunes the bookkeeping)"
        } else {
            "–"
        };
        let _ = writeln!(
            s,
            "| {name} | {first:.2} | {last:.2} | {slope:+.2} | {verdict} |"
        );
    }
    let _ = writeln!(s, "\n![soak]({})", png.display());
    if !audit.violations.is_empty() {
        let _ = writeln!(s, "\nViolations (first 50):\n");
        for v in audit.violations.iter().take(50) {
            let _ = writeln!(s, "- {v}");
        }
    }
    s
}

/// How the clients were paced, in words.
fn pace(actions_per_sec: u32) -> String {
    match actions_per_sec {
        0 => "unpaced".into(),
        n => format!("{n} actions a second in all"),
    }
}
