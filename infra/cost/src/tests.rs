//! Expected values are worked out here by hand from the brief's formulas and the list prices,
//! not copied from the program's output.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use crate::{estimate, render, LineItem, Prices, Report, Workload};

/// Days in a 730-hour month.
fn days() -> Decimal {
    dec!(730) / dec!(24)
}

fn reference() -> Report {
    estimate(&Workload::default(), &Prices::default()).unwrap()
}

fn with(change: impl FnOnce(&mut Workload)) -> Report {
    let mut w = Workload::default();
    change(&mut w);
    estimate(&w, &Prices::default()).unwrap()
}

fn item<'a>(r: &'a Report, name: &str) -> &'a LineItem {
    r.line_items
        .iter()
        .find(|i| i.item == name)
        .unwrap_or_else(|| panic!("no line item {name:?}"))
}

fn items_starting<'a>(r: &'a Report, prefix: &str) -> Vec<&'a LineItem> {
    r.line_items
        .iter()
        .filter(|i| i.item.starts_with(prefix))
        .collect()
}

fn usd_of(r: &Report, prefix: &str) -> Decimal {
    items_starting(r, prefix)
        .iter()
        .map(|i| i.monthly_usd)
        .sum()
}

/// Equal to a millionth: the model and the hand computation divide by 24 at different
/// points, so 30.41666… may round differently in the 28th digit.
fn assert_close(actual: Decimal, expected: Decimal) {
    assert!(
        (actual - expected).abs() < dec!(0.000001),
        "{actual} is not {expected}"
    );
}

#[test]
fn the_defaults_are_the_reference_workload() {
    let w = Workload::default();
    assert_eq!(w.users, 5000);
    assert_eq!(w.hours_per_day, dec!(8));
    assert_eq!(w.symbols_per_user, 10);
    assert_eq!(w.flush_ms, 500);
    assert_eq!(w.orders_per_day, 50000);
    assert_eq!(w.rest_rps, dec!(1000));
    assert_eq!(w.rest_hours_per_day, dec!(24));
    assert_eq!(w.arch, crate::Arch::Arm64);
    assert_eq!(w.message_bytes, 400);
    assert_eq!(
        (w.aurora_avg_acu, w.aurora_min_acu, w.aurora_storage_gb),
        (dec!(2), dec!(0.5), dec!(20))
    );
    assert_eq!(
        (w.cache_gb, w.ecpus_per_rest_request, w.distinct_symbols),
        (dec!(1), dec!(5), 50)
    );
    assert_eq!((w.ingest_vcpu, w.ingest_memory_gb), (dec!(0.5), dec!(1)));
    assert_eq!((w.api_memory_mb, w.api_billed_ms), (512, dec!(6)));
    assert_eq!((w.webhook_memory_mb, w.webhook_billed_ms), (512, dec!(6)));
    assert_eq!(
        (w.executor_memory_mb, w.executor_billed_ms),
        (512, dec!(25))
    );
    assert_eq!((w.ws_memory_mb, w.ws_billed_ms), (256, dec!(5)));
    assert_eq!(w.log_bytes_per_rest_request, 150);
    assert_eq!(
        (w.azs, w.nat_gateways, w.binance_gb, w.alarms),
        (2, 1, dec!(30), 6)
    );
    assert_eq!(
        (w.interface_endpoints, w.fanout_egress),
        (2, crate::FanoutEgress::PublicIp)
    );
}

#[test]
fn reference_websocket_messages_and_their_tiers() {
    let r = reference();
    // 5,000 users × 8 h × 3,600 s × 730/24 days × 2 messages/s.
    let price_messages = dec!(5000) * dec!(8) * dec!(3600) * days() * dec!(2);
    assert_close(r.usage.price_messages, price_messages);
    assert_eq!(r.usage.price_messages, dec!(8760000000));

    // Plus 2 order events per order, and per connection (4 a day: 8 h / 2 h) one subscribe
    // in and one reply out; 400-byte messages are one 32 KB unit each.
    let orders = dec!(50000) * days();
    let connections = dec!(5000) * dec!(4) * days();
    let billed = price_messages + dec!(2) * orders + dec!(2) * connections;
    assert_close(r.usage.billed_messages, billed);
    // The first billion at $1.00/M, the rest at $0.80/M.
    let expected =
        dec!(1000) * dec!(1.00) + (billed - dec!(1000000000)) / dec!(1000000) * dec!(0.80);
    assert_close(usd_of(&r, "WebSocket messages"), expected);
    assert_eq!(items_starting(&r, "WebSocket messages").len(), 2);
    // Connection-minutes: 5,000 × 8 h × 60 × 730/24 at $0.25/M.
    let minutes = dec!(5000) * dec!(8) * dec!(60) * days();
    assert_close(
        item(&r, "WebSocket connection-minutes").monthly_usd,
        minutes / dec!(1000000) * dec!(0.25),
    );
}

#[test]
fn below_a_billion_messages_cost_one_dollar_per_million() {
    let r = with(|w| w.users = 100);
    // 100 × 8 × 3,600 × 730/24 × 2 = 175.2M price messages.
    let price_messages = dec!(100) * dec!(8) * dec!(3600) * days() * dec!(2);
    let billed =
        price_messages + dec!(2) * dec!(50000) * days() + dec!(2) * dec!(100) * dec!(4) * days();
    assert_eq!(items_starting(&r, "WebSocket messages").len(), 1);
    assert_close(
        usd_of(&r, "WebSocket messages"),
        billed / dec!(1000000) * dec!(1.00),
    );
}

#[test]
fn messages_above_32_kb_are_metered_per_32_kb() {
    let small = with(|w| w.users = 10);
    let large = with(|w| {
        w.users = 10;
        w.message_bytes = 32 * 1024 + 1;
    });
    let outbound =
        small.usage.price_messages + small.usage.order_messages + small.usage.connections;
    assert_close(
        large.usage.billed_messages - small.usage.billed_messages,
        outbound,
    );
}

#[test]
fn rest_tiers_change_exactly_at_333m_1b_and_20b() {
    let rest = Prices::default().rest_requests;
    let first = dec!(333) * dec!(3.50);
    let second = dec!(667) * dec!(2.80);
    let third = dec!(19000) * dec!(2.38);
    assert_eq!(rest.cost(Decimal::ZERO), Decimal::ZERO);
    assert_eq!(rest.items("r", dec!(333000000)).len(), 1);
    assert_eq!(rest.cost(dec!(333000000)), first);
    assert_eq!(rest.cost(dec!(334000000)), first + dec!(2.80));
    assert_eq!(rest.items("r", dec!(1000000000)).len(), 2);
    assert_eq!(rest.cost(dec!(1000000000)), first + second);
    assert_eq!(rest.cost(dec!(1001000000)), first + second + dec!(2.38));
    assert_eq!(rest.cost(dec!(20000000000)), first + second + third);
    assert_eq!(rest.items("r", dec!(20001000000)).len(), 4);
    assert_eq!(
        rest.cost(dec!(20001000000)),
        first + second + third + dec!(1.51)
    );
}

#[test]
fn reference_rest_requests_include_the_webhook_deliveries() {
    let r = reference();
    // 1,000/s × 86,400 s × 730/24 = 2.628B, plus 10 % of 50,000 orders a day by webhook.
    let requests = dec!(1000) * dec!(86400) * days() + dec!(0.1) * dec!(50000) * days();
    let expected = dec!(333) * dec!(3.50)
        + dec!(667) * dec!(2.80)
        + (requests - dec!(1000000000)) / dec!(1000000) * dec!(2.38);
    assert_close(usd_of(&r, "REST API requests"), expected);
}

#[test]
fn executor_gb_seconds() {
    let r = reference();
    // One order per invocation: 50,000 × 730/24 invocations × 0.5 GB × 0.025 s.
    let gb_s = dec!(50000) * days() * dec!(0.5) * dec!(0.025);
    let compute = item(&r, "Lambda executor compute (512 MB)");
    assert_close(compute.quantity, gb_s);
    assert_close(compute.monthly_usd, gb_s * dec!(0.0000133334));
    let x86 = with(|w| w.arch = crate::Arch::X86_64);
    assert_close(
        item(&x86, "Lambda executor compute (512 MB)").monthly_usd,
        gb_s * dec!(0.0000166667),
    );
    // Ten orders per invocation: a tenth of the invocations.
    let batched = with(|w| w.orders_per_executor_invocation = 10);
    assert_close(
        item(&batched, "Lambda executor compute (512 MB)").quantity,
        gb_s / dec!(10),
    );
}

#[test]
fn api_lambda_requests_and_compute() {
    let r = reference();
    let invocations = dec!(1000) * dec!(86400) * days();
    assert_close(
        item(&r, "Lambda api requests").monthly_usd,
        invocations / dec!(1000000) * dec!(0.20),
    );
    // 512 MB = 0.5 GB for 6 ms.
    let gb_s = invocations * dec!(0.5) * dec!(0.006);
    assert_close(
        item(&r, "Lambda api compute (512 MB)").monthly_usd,
        gb_s * dec!(0.0000133334),
    );
}

#[test]
fn rds_proxy_bills_at_least_8_acu() {
    let r = reference();
    let proxy = items_starting(&r, "RDS Proxy");
    assert_eq!(proxy.len(), 1);
    assert_eq!(proxy[0].monthly_usd, dec!(8) * dec!(730) * dec!(0.015));
    let big = with(|w| w.aurora_avg_acu = dec!(12));
    assert_eq!(
        usd_of(&big, "RDS Proxy"),
        dec!(12) * dec!(730) * dec!(0.015)
    );
}

#[test]
fn aurora_capacity_io_and_the_minimum_acu() {
    let r = reference();
    assert_eq!(
        item(&r, "Aurora Serverless v2 capacity").monthly_usd,
        dec!(2) * dec!(730) * dec!(0.12)
    );
    let idle = with(|w| w.aurora_avg_acu = dec!(0.1));
    assert_eq!(
        item(&idle, "Aurora Serverless v2 capacity").monthly_usd,
        dec!(0.5) * dec!(730) * dec!(0.12)
    );
    // 20 I/Os per order and 2 per REST request at $0.20 per million.
    let ios = dec!(50000) * days() * dec!(20) + dec!(1000) * dec!(86400) * days() * dec!(2);
    assert_close(
        item(&r, "Aurora I/O").monthly_usd,
        ios / dec!(1000000) * dec!(0.20),
    );
}

#[test]
fn elasticache_ecpus_from_rest_and_ingest() {
    let r = reference();
    // 5 per REST request, plus 50 symbols × 10 flushes/s × 3,600 s × 730 h.
    let ecpus =
        dec!(1000) * dec!(86400) * days() * dec!(5) + dec!(50) * dec!(10) * dec!(3600) * dec!(730);
    assert_close(item(&r, "ElastiCache Serverless ECPUs").quantity, ecpus);
    assert_eq!(
        item(&r, "ElastiCache Serverless storage").monthly_usd,
        dec!(730) * dec!(0.0837)
    );
}

#[test]
fn websocket_connections_reconnect_every_two_hours() {
    // 3 h a day needs 2 connections; each is 3 ws invocations and 3 DynamoDB writes.
    let r = with(|w| w.hours_per_day = dec!(3));
    let connections = dec!(5000) * dec!(2) * days();
    assert_close(r.usage.connections, connections);
    assert_close(
        item(&r, "Lambda ws requests").quantity,
        connections * dec!(3),
    );
    assert_close(item(&r, "DynamoDB writes").quantity, connections * dec!(3));
}

#[test]
fn the_limit_warning_appears_for_the_reference_workload() {
    let r = reference();
    // 5,000 users × 2 pushes/s + 1,000 REST/s = 11,000/s > 10,000/s.
    assert_eq!(r.limits.push_peak_per_s, dec!(10000));
    assert_eq!(r.limits.peak_total_per_s, dec!(11000));
    assert_close(
        r.limits.push_average_per_s,
        dec!(10000) * dec!(8) / dec!(24),
    );
    assert_eq!(r.limits.warnings.len(), 1);
    assert!(r.limits.warnings[0].starts_with("WARNING:"));
    assert!(r.limits.warnings[0].contains("11,000/s"));
    assert!(render::markdown(&r).contains("\nWARNING: peak API Gateway requests 11,000/s"));
    // 20,000 connections a day over 86,400 s.
    assert_close(
        r.limits.new_connections_average_per_s,
        dec!(20000) / dec!(86400),
    );
}

#[test]
fn no_limit_warning_for_1000_users() {
    // 1,000 × 2 + 1,000 = 3,000/s.
    let r = with(|w| w.users = 1000);
    assert_eq!(r.limits.peak_total_per_s, dec!(3000));
    assert!(r.limits.warnings.is_empty());
    assert!(!render::markdown(&r).contains("WARNING"));
}

/// REFERENCE.md: each flush per second per connection adds about $0.69–$0.88 per user-month.
/// One message/s for 8 h/day is 3,600 × 8 = 28,800 messages a day; × 730/24 = 30.4166 days
/// is 876,000 messages a user-month: $0.876 at $1.00/M (under a billion messages a month)
/// and $0.7008 at $0.80/M (the messages above the first billion).
#[test]
fn each_flush_per_second_costs_069_to_088_per_user_month() {
    let per_user_month = |users: u64, from_ms: u64, to_ms: u64, extra_per_s: Decimal| {
        let slow = with(|w| {
            w.users = users;
            w.flush_ms = from_ms;
        });
        let fast = with(|w| {
            w.users = users;
            w.flush_ms = to_ms;
        });
        let delta = usd_of(&fast, "WebSocket messages") - usd_of(&slow, "WebSocket messages");
        delta / Decimal::from(users) / extra_per_s
    };
    let messages = dec!(3600) * dec!(8) * days();
    // 100 users: 1 → 2 messages/s, all under a billion.
    let small = per_user_month(100, 1000, 500, dec!(1));
    assert_close(small, messages / dec!(1000000) * dec!(1.00));
    // 5,000 users: 2 → 4 messages/s, the extra all above a billion.
    let large = per_user_month(5000, 500, 250, dec!(2));
    assert_close(large, messages / dec!(1000000) * dec!(0.80));
    for cost in [small, large] {
        assert!(dec!(0.69) <= cost && cost <= dec!(0.88), "{cost}");
    }
}

#[test]
fn the_total_is_the_sum_and_per_user_divides_it() {
    let r = reference();
    let sum: Decimal = r.line_items.iter().map(|i| i.monthly_usd).sum();
    assert_eq!(r.total_usd, sum);
    assert_eq!(r.per_user_month_usd, sum / dec!(5000));
    for i in &r.line_items {
        assert_eq!(
            i.monthly_usd,
            i.quantity * i.rate.usd / i.rate.per,
            "{}",
            i.item
        );
    }
}

#[test]
fn fanout_through_nat_or_a_public_address() {
    let nat = with(|w| w.fanout_egress = crate::FanoutEgress::Nat);
    // 8.76B price messages + 2 events per order, 400 bytes each, at $0.045/GB (2^30 bytes).
    let bytes = (dec!(8760000000) + dec!(2) * dec!(50000) * days()) * dec!(400);
    assert_close(
        item(&nat, "NAT gateway data (PostToConnection)").monthly_usd,
        bytes / dec!(1073741824) * dec!(0.045),
    );
    assert_eq!(
        item(&nat, "NAT gateway data (Binance stream)").monthly_usd,
        dec!(30) * dec!(0.045)
    );
    assert_eq!(item(&nat, "Public IPv4 addresses").quantity, dec!(730));

    // The reference (DEPLOY.md): the ingest pushes from its public address; only the
    // executor's order events (2 per order, 400 bytes) cross the NAT gateway.
    let public = reference();
    assert!(items_starting(&public, "NAT gateway data (PostToConnection)").is_empty());
    assert!(items_starting(&public, "NAT gateway data (Binance").is_empty());
    let order_bytes = dec!(2) * dec!(50000) * days() * dec!(400);
    assert_close(
        item(&public, "NAT gateway data (order pushes)").monthly_usd,
        order_bytes / dec!(1073741824) * dec!(0.045),
    );
    // The NAT gateway's address and the task's.
    assert_eq!(
        item(&public, "Public IPv4 addresses").monthly_usd,
        dec!(2) * dec!(730) * dec!(0.005)
    );
    // 2 interface endpoints in 2 AZs.
    assert_eq!(
        item(&public, "Interface VPC endpoints").monthly_usd,
        dec!(2) * dec!(2) * dec!(730) * dec!(0.01)
    );
}

#[test]
fn invalid_workloads_are_refused() {
    let bad = |change: fn(&mut Workload)| {
        let mut w = Workload::default();
        change(&mut w);
        estimate(&w, &Prices::default()).unwrap_err().flag
    };
    assert_eq!(bad(|w| w.flush_ms = 0), "flush-ms");
    assert_eq!(bad(|w| w.users = 0), "users");
    assert_eq!(bad(|w| w.hours_per_day = dec!(25)), "hours-per-day");
    assert_eq!(
        bad(|w| w.orders_per_executor_invocation = 11),
        "orders-per-executor-invocation"
    );
    assert_eq!(
        bad(|w| w.webhook_order_share = dec!(1.5)),
        "webhook-order-share"
    );
    assert_eq!(bad(|w| w.aurora_avg_acu = dec!(-1)), "aurora-avg-acu");
}

#[test]
fn money_is_rounded_half_to_even() {
    assert_eq!(render::cents(dec!(0.125)), "0.12");
    assert_eq!(render::cents(dec!(0.135)), "0.14");
    assert_eq!(render::cents(dec!(1234567.891)), "1,234,567.89");
    assert_eq!(render::cents(dec!(1000)), "1,000.00");
    assert_eq!(render::money(dec!(1000)), "1000.00");
    assert_eq!(render::group(dec!(8760000000), 2), "8,760,000,000");
    assert_eq!(
        render::unit_price(dec!(1), dec!(1000000), "messages"),
        "$1.00 / 1M messages"
    );
    assert_eq!(
        render::unit_price(dec!(0.0000133334), dec!(1), "GB-s"),
        "$0.0000133334 / GB-s"
    );
}

#[test]
fn json_carries_money_as_strings() {
    let r = reference();
    let v = render::json(&r);
    assert_eq!(
        v["total_usd"].as_str(),
        Some(render::money(r.total_usd).as_str())
    );
    assert!(v["per_user_month_usd"].is_string());
    let items = v["line_items"].as_array().unwrap();
    assert_eq!(items.len(), r.line_items.len());
    for i in items {
        let usd = i["monthly_usd"].as_str().unwrap();
        assert_eq!(
            usd.split_once('.').map(|(_, cents)| cents.len()),
            Some(2),
            "{usd}"
        );
        assert!(i["unit_price_usd"].is_string());
    }
    assert_eq!(v["inputs"]["users"], "5000");
    assert_eq!(v["limits"]["warnings"].as_array().unwrap().len(), 1);
    assert!(v["rest_reading"].as_str().unwrap().contains("sustained"));
}

#[test]
fn the_report_says_which_rest_reading_was_used() {
    let part_time = with(|w| w.rest_hours_per_day = dec!(8));
    assert!(render::markdown(&part_time).contains("REST 1,000 req/s for 8 h/day"));
    assert_close(
        part_time.usage.rest_requests,
        dec!(1000) * dec!(3600) * dec!(8) * days(),
    );
    assert!(render::markdown(&reference()).contains("sustained 24 h/day"));
}
