//! The [`Report`] as Markdown or JSON. Money is rounded to cents, half to even (banker's
//! rounding), only here; JSON carries every number as a string so nothing passes through a
//! float.

use std::fmt::Write as _;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Map, Value};

use crate::{
    Report, Workload, API_GATEWAY_ACCOUNT_BURST, API_GATEWAY_ACCOUNT_RPS, HOURS_PER_DAY,
    SQS_FIFO_CALLS_PER_S, WEBSOCKET_NEW_CONNECTIONS_PER_S,
};

/// How money is rounded for printing.
pub const ROUNDING: &str = "Money rounded to cents, half to even; the total is the exact sum, rounded once, so rows may differ from it by a cent";

/// `value` rounded half to even to `dp` places.
pub fn round(value: Decimal, dp: u32) -> Decimal {
    value.round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven)
}

/// Dollars and cents with thousands separators, e.g. `18,123.46`.
pub fn cents(value: Decimal) -> String {
    let mut rounded = round(value, 2);
    rounded.rescale(2);
    separate_thousands(rounded)
}

/// Dollars and cents without separators, e.g. `18123.46` (for JSON).
pub fn money(value: Decimal) -> String {
    let mut rounded = round(value, 2);
    rounded.rescale(2);
    rounded.to_string()
}

/// `value` rounded to at most `dp` places, trailing zeros dropped, with thousands separators.
pub fn group(value: Decimal, dp: u32) -> String {
    separate_thousands(round(value, dp).normalize())
}

fn separate_thousands(rounded: Decimal) -> String {
    let text = rounded.abs().to_string();
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    if rounded.is_sign_negative() && !rounded.is_zero() {
        out.push('-');
    }
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// A unit price as `$1.00 / 1M messages`: at least two decimals, every significant digit.
pub fn unit_price(usd: Decimal, per: Decimal, unit: &str) -> String {
    let mut price = usd.normalize();
    if price.scale() < 2 {
        price.rescale(2);
    }
    let per = match per {
        p if p == Decimal::ONE => String::new(),
        p if p == Decimal::from(1_000_000) => "1M ".to_string(),
        p => format!("{} ", group(p, 0)),
    };
    format!("${price} / {per}{unit}")
}

/// Which reading of the REST rate was used.
pub fn rest_reading(w: &Workload) -> String {
    let rps = group(w.rest_rps, 2);
    if w.rest_hours_per_day == HOURS_PER_DAY {
        format!("{rps} req/s sustained 24 h/day (the conservative reading)")
    } else {
        format!(
            "{rps} req/s for {} h/day, none otherwise",
            w.rest_hours_per_day.normalize()
        )
    }
}

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let w = &r.workload;
    let u = &r.usage;
    let l = &r.limits;
    let mut s = String::new();
    let _ = writeln!(s, "# Monthly AWS cost at list prices (us-east-1)\n");
    let _ = writeln!(
        s,
        "{} users connected {} h/day, one coalesced message per connection every {} ms; {} orders/day; REST {}; {}.\n",
        group(w.users.into(), 0),
        w.hours_per_day.normalize(),
        w.flush_ms,
        group(w.orders_per_day.into(), 0),
        rest_reading(w),
        w.arch.name(),
    );
    let _ = writeln!(
        s,
        "A month is 730 hours (730 / 24 = 30.42 days). Free tiers are ignored. GB = 2^30 bytes.\n"
    );

    let _ = writeln!(s, "## Inputs\n\n| flag | value | meaning |\n|---|---:|---|");
    for (flag, value, meaning) in w.inputs() {
        let _ = writeln!(s, "| `--{flag}` | {value} | {meaning} |");
    }

    let _ = writeln!(s, "\n## Monthly volumes\n");
    for (what, value) in [
        ("price/PnL messages pushed by the ingest", u.price_messages),
        ("order events pushed by the executor", u.order_messages),
        ("subscribe messages and their replies", u.subscribe_messages),
        ("WebSocket messages billed (per 32 KB)", u.billed_messages),
        (
            "WebSocket connections (one per user per 2 h connected)",
            u.connections,
        ),
        ("REST requests to the api function", u.rest_requests),
        ("orders", u.orders),
        ("webhook deliveries", u.webhook_requests),
        ("Lambda invocations, all functions", u.lambda_invocations),
        (
            "PostToConnection payload GB",
            u.push_bytes / crate::BYTES_PER_GB,
        ),
        ("data transfer out GB", u.data_out_gb),
    ] {
        let _ = writeln!(s, "- {what}: {}", group(value, 2));
    }

    let _ = writeln!(
        s,
        "\n## Line items\n\n| item | quantity | unit price | $/month |\n|---|---:|---:|---:|"
    );
    for i in &r.line_items {
        let _ = writeln!(
            s,
            "| {} | {} {} | {} | {} |",
            i.item,
            group(i.quantity, 2),
            i.rate.unit,
            unit_price(i.rate.usd, i.rate.per, i.rate.unit),
            cents(i.monthly_usd),
        );
    }
    let _ = writeln!(s, "| **Total** | | | **{}** |\n", cents(r.total_usd));
    let _ = writeln!(
        s,
        "**Total: ${} per month; ${} per user-month** ({} users).\n\n{ROUNDING}.\n",
        cents(r.total_usd),
        cents(r.per_user_month_usd),
        group(w.users.into(), 0),
    );

    let _ = writeln!(
        s,
        "## Limits (rates, not cost)\n\n| rate | per second | limit |\n|---|---:|---|"
    );
    let account = format!(
        "{}/s per account, burst {}, shared by all APIs and PostToConnection",
        group(API_GATEWAY_ACCOUNT_RPS, 0),
        group(API_GATEWAY_ACCOUNT_BURST, 0)
    );
    for (what, value, limit) in [
        (
            "PostToConnection, every user connected at once",
            l.push_peak_per_s,
            String::new(),
        ),
        (
            "PostToConnection, daily average",
            l.push_average_per_s,
            String::new(),
        ),
        ("REST, while its rate holds", l.rest_per_s, String::new()),
        ("REST, daily average", l.rest_average_per_s, String::new()),
        (
            "API Gateway total, peak",
            l.peak_total_per_s,
            account.clone(),
        ),
        (
            "API Gateway total, daily average",
            l.average_total_per_s,
            account,
        ),
        (
            "new WebSocket connections, daily average",
            l.new_connections_average_per_s,
            format!("{}/s", group(WEBSOCKET_NEW_CONNECTIONS_PER_S, 0)),
        ),
        (
            "SQS FIFO sends, daily average",
            l.sqs_sends_average_per_s,
            format!("{}/s per action", group(SQS_FIFO_CALLS_PER_S, 0)),
        ),
    ] {
        let _ = writeln!(s, "| {what} | {} | {limit} |", group(value, 2));
    }
    let _ = writeln!(
        s,
        "\nReconnecting every user at once takes {} s at the new-connection limit.\n",
        group(l.seconds_to_connect_everyone, 1)
    );
    if l.warnings.is_empty() {
        let _ = writeln!(s, "No limit exceeded.");
    }
    for warning in &l.warnings {
        let _ = writeln!(s, "{warning}\n");
    }
    s
}

/// The same report as JSON; money and quantities are strings.
pub fn json(r: &Report) -> Value {
    let text = |d: Decimal| d.normalize().to_string();
    let inputs: Map<String, Value> = r
        .workload
        .inputs()
        .into_iter()
        .map(|(flag, value, _)| (flag.to_string(), Value::String(value)))
        .collect();
    let items: Vec<Value> = r
        .line_items
        .iter()
        .map(|i| {
            json!({
                "item": i.item,
                "quantity": text(i.quantity),
                "unit": i.rate.unit,
                "unit_price_usd": text(i.rate.usd),
                "per": text(i.rate.per),
                "monthly_usd": money(i.monthly_usd),
            })
        })
        .collect();
    let u = &r.usage;
    let l = &r.limits;
    json!({
        "region": "us-east-1",
        "hours_per_month": "730",
        "rounding": ROUNDING,
        "rest_reading": rest_reading(&r.workload),
        "inputs": inputs,
        "usage": {
            "price_messages": text(u.price_messages),
            "order_messages": text(u.order_messages),
            "subscribe_messages": text(u.subscribe_messages),
            "billed_messages": text(u.billed_messages),
            "connections": text(u.connections),
            "connection_minutes": text(u.connection_minutes),
            "rest_requests": text(u.rest_requests),
            "orders": text(u.orders),
            "webhook_requests": text(u.webhook_requests),
            "executor_invocations": text(u.executor_invocations),
            "ws_invocations": text(u.ws_invocations),
            "lambda_invocations": text(u.lambda_invocations),
            "push_bytes": text(u.push_bytes),
            "data_out_gb": text(u.data_out_gb),
        },
        "line_items": items,
        "total_usd": money(r.total_usd),
        "per_user_month_usd": money(r.per_user_month_usd),
        "limits": {
            "push_peak_per_s": text(l.push_peak_per_s),
            "push_average_per_s": text(l.push_average_per_s),
            "rest_per_s": text(l.rest_per_s),
            "rest_average_per_s": text(l.rest_average_per_s),
            "peak_total_per_s": text(l.peak_total_per_s),
            "average_total_per_s": text(l.average_total_per_s),
            "account_limit_per_s": text(API_GATEWAY_ACCOUNT_RPS),
            "new_connections_average_per_s": text(l.new_connections_average_per_s),
            "new_connections_limit_per_s": text(WEBSOCKET_NEW_CONNECTIONS_PER_S),
            "seconds_to_connect_everyone": text(l.seconds_to_connect_everyone),
            "sqs_sends_average_per_s": text(l.sqs_sends_average_per_s),
            "warnings": l.warnings,
        },
    })
}
