//! Monthly AWS cost of the deployment at list prices (us-east-1), from a [`Workload`].
//!
//! A pure model with no workspace dependency.
//!
//! A pure model: [`estimate`] turns a workload and [`Prices`] into line items (quantity, unit
//! price, monthly dollars), a total, the total per user-month, and the request rates that
//! matter for account limits rather than cost ([`Limits`]). [`render`] prints it as Markdown
//! or JSON; `main.rs` only parses the flags.
//!
//! Conventions:
//! - Money and rates are [`Decimal`]; nothing is rounded inside the model except the count of
//!   WebSocket price messages (whole messages). Output rounds money to cents, half to even.
//! - A month is 730 hours ([`HOURS_PER_MONTH`], AWS's own monthly convention: 8,760 h / 12),
//!   so it has 730 / 24 = 30.41666… days; daily volumes are multiplied by 730 and then divided
//!   by 24, which keeps round inputs exact.
//! - A GB is 2^30 bytes, as AWS bills data; 1 TB in the data-transfer tiers is 1,024 GB.
//! - Free tiers (Lambda's 1M requests and 400,000 GB-s, DynamoDB's 25 GB, 100 GB of data
//!   transfer out, API Gateway's first-year allowance, …) are ignored: the model prices a
//!   deployment past its first small month.

pub mod render;

use clap::{Args, Parser, ValueEnum};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// Hours in a billing month (AWS prices monthly figures at 730 h = 8,760 h / 12).
pub const HOURS_PER_MONTH: Decimal = dec!(730);
/// Hours in a day; days per month = [`HOURS_PER_MONTH`] / 24 = 30.41666….
pub const HOURS_PER_DAY: Decimal = dec!(24);
const SECONDS_PER_HOUR: Decimal = dec!(3600);
const SECONDS_PER_DAY: Decimal = dec!(86400);
const MILLION: Decimal = dec!(1000000);
/// AWS bills data in GB of 2^30 bytes.
pub const BYTES_PER_GB: Decimal = dec!(1073741824);
/// Lambda memory: 1,024 MB make the GB of a GB-second.
const MB_PER_GB: Decimal = dec!(1024);

/// API Gateway meters WebSocket messages in 32 KB increments (REFERENCE.md).
pub const WEBSOCKET_METERING_BYTES: u64 = 32 * 1024;
/// API Gateway closes a WebSocket connection after 2 hours (REFERENCE.md), so a client
/// connected longer reconnects.
pub const WEBSOCKET_MAX_CONNECTION_HOURS: Decimal = dec!(2);
/// The ingest task writes its prices to ElastiCache every 100 ms, around the clock (crypto
/// markets never close).
pub const INGEST_FLUSH_MS: u64 = 100;
/// Lambda delivers at most 10 messages of a FIFO queue per invocation (REFERENCE.md).
pub const SQS_FIFO_MAX_BATCH: u64 = 10;

/// API Gateway's account-wide rate limit in us-east-1: 10,000 requests/s (burst 5,000),
/// shared by every API and by PostToConnection (REFERENCE.md).
pub const API_GATEWAY_ACCOUNT_RPS: Decimal = dec!(10000);
/// API Gateway's account-wide burst (REFERENCE.md).
pub const API_GATEWAY_ACCOUNT_BURST: Decimal = dec!(5000);
/// New WebSocket connections per second per account and region (REFERENCE.md).
pub const WEBSOCKET_NEW_CONNECTIONS_PER_S: Decimal = dec!(500);
/// SQS FIFO API calls per second per action without high-throughput mode (REFERENCE.md).
pub const SQS_FIFO_CALLS_PER_S: Decimal = dec!(300);

/// DynamoDB writes per WebSocket connection, one write request unit each (items < 1 KB):
/// `$connect` puts the item, `subscribe` updates it, `$disconnect` deletes it.
const DYNAMODB_WRITES_PER_CONNECTION: Decimal = dec!(3);
/// DynamoDB reads per WebSocket connection, as the ws function does them: `$connect` queries
/// the account's open connections (`by_account`), `subscribe` reads the item (consistent).
const DYNAMODB_READS_PER_CONNECTION: Decimal = dec!(2);
/// Lambda invocations of the ws function per connection: `$connect`, one `subscribe`,
/// `$disconnect`.
const WS_INVOCATIONS_PER_CONNECTION: Decimal = dec!(3);
/// A DynamoDB read request unit reads up to 4 KB (the ingest's table scans are billed by size).
const DYNAMODB_READ_UNIT_BYTES: Decimal = dec!(4096);
/// Size of a connection item without its symbols (id, account, rate, ttl, timestamps,
/// attribute names), and per subscribed symbol; estimates for the scan's read units.
const CONNECTION_ITEM_BASE_BYTES: Decimal = dec!(150);
const CONNECTION_ITEM_BYTES_PER_SYMBOL: Decimal = dec!(12);
/// Bytes through the SQS interface endpoint per order: the message sent (~1 KB with its
/// attributes) and received again.
const SQS_ENDPOINT_BYTES_PER_ORDER: Decimal = dec!(2048);

/// Lambda and Fargate CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    #[value(name = "arm64")]
    Arm64,
    #[value(name = "x86_64")]
    X86_64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// How the ingest task reaches API Gateway's `@connections` endpoint for PostToConnection
/// (the executor's order pushes always leave through the NAT gateway).
///
/// Not through an `execute-api` interface endpoint: WebSocket APIs cannot be private, and an
/// `execute-api` endpoint only serves private REST APIs (with private DNS on, PostToConnection
/// from the VPC fails with ForbiddenException; AWS re:Post, "VPC endpoint … WebSocket API").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FanoutEgress {
    /// Task in a private subnet: every push (and the Binance stream) goes through the NAT
    /// gateway and pays its per-GB processing.
    #[value(name = "nat")]
    Nat,
    /// Task in a public subnet with a public IPv4 address: pushes to a same-region AWS public
    /// endpoint and the Binance stream in cost no data charge; the address is billed hourly.
    #[value(name = "public-ip")]
    PublicIp,
}

impl FanoutEgress {
    pub fn name(self) -> &'static str {
        match self {
            FanoutEgress::Nat => "nat",
            FanoutEgress::PublicIp => "public-ip",
        }
    }
}

/// The workload and the modelling knobs. Every default is the reference workload.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Workload {
    /// Users (each with one WebSocket connection while connected).
    #[arg(long, default_value_t = 5000)]
    pub users: u64,
    /// Connected hours per user per day.
    #[arg(long, default_value = "8")]
    pub hours_per_day: Decimal,
    /// Symbols each user follows (only sizes the connection items; the message size is
    /// --message-bytes).
    #[arg(long, default_value_t = 10)]
    pub symbols_per_user: u64,
    /// Flush interval per connection in ms: one coalesced WebSocket message per connection
    /// per interval, carrying its symbols' prices and PnL.
    #[arg(long, default_value_t = 500)]
    pub flush_ms: u64,
    /// Orders executed per day.
    #[arg(long, default_value_t = 50000)]
    pub orders_per_day: u64,
    /// Average REST requests per second (to the api function).
    #[arg(long, default_value = "1000")]
    pub rest_rps: Decimal,
    /// Hours per day the REST rate holds (24 = sustained, the conservative reading).
    #[arg(long, default_value = "24")]
    pub rest_hours_per_day: Decimal,
    /// Lambda and Fargate architecture.
    #[arg(long, value_enum, default_value_t = Arch::Arm64)]
    pub arch: Arch,

    /// Size of one pushed WebSocket message in bytes.
    #[arg(long, default_value_t = 400)]
    pub message_bytes: u64,
    /// Order events pushed per order (a market order: `new`, then `fill`).
    #[arg(long, default_value_t = 2)]
    pub order_events_per_order: u64,
    /// Aurora Serverless v2 average ACU.
    #[arg(long, default_value = "2")]
    pub aurora_avg_acu: Decimal,
    /// Aurora Serverless v2 minimum ACU (billed when the average is below it).
    #[arg(long, default_value = "0.5")]
    pub aurora_min_acu: Decimal,
    /// Aurora storage in GB.
    #[arg(long, default_value = "20")]
    pub aurora_storage_gb: Decimal,
    /// Aurora I/Os per executed order.
    #[arg(long, default_value = "20")]
    pub aurora_ios_per_order: Decimal,
    /// Aurora I/Os per REST request (reads that miss the buffer cache).
    #[arg(long, default_value = "2")]
    pub aurora_ios_per_rest_request: Decimal,
    /// ElastiCache Serverless data stored, GB.
    #[arg(long, default_value = "1")]
    pub cache_gb: Decimal,
    /// ElastiCache ECPUs per REST request (session, rate-limit script, prices).
    #[arg(long, default_value = "5")]
    pub ecpus_per_rest_request: Decimal,
    /// Distinct symbols across users: the ingest writes each every 100 ms (one ECPU each).
    #[arg(long, default_value_t = 50)]
    pub distinct_symbols: u64,
    /// Ingest Fargate task vCPU.
    #[arg(long, default_value = "0.5")]
    pub ingest_vcpu: Decimal,
    /// Ingest Fargate task memory, GB.
    #[arg(long, default_value = "1")]
    pub ingest_memory_gb: Decimal,
    /// api function memory, MB.
    #[arg(long, default_value_t = 512)]
    pub api_memory_mb: u64,
    /// api function average billed ms per invocation (cold-start init included).
    #[arg(long, default_value = "6")]
    pub api_billed_ms: Decimal,
    /// webhook function memory, MB.
    #[arg(long, default_value_t = 512)]
    pub webhook_memory_mb: u64,
    /// webhook function average billed ms per invocation.
    #[arg(long, default_value = "6")]
    pub webhook_billed_ms: Decimal,
    /// executor function memory, MB.
    #[arg(long, default_value_t = 512)]
    pub executor_memory_mb: u64,
    /// executor function average billed ms per invocation (a batch of up to 10 orders).
    #[arg(long, default_value = "25")]
    pub executor_billed_ms: Decimal,
    /// Orders per executor invocation (1..=10; at 50k orders/day batches rarely fill).
    #[arg(long, default_value_t = 1)]
    pub orders_per_executor_invocation: u64,
    /// ws function memory, MB.
    #[arg(long, default_value_t = 256)]
    pub ws_memory_mb: u64,
    /// ws function average billed ms per invocation.
    #[arg(long, default_value = "5")]
    pub ws_billed_ms: Decimal,
    /// Share of orders that arrive by TradingView webhook (0..=1).
    #[arg(long, default_value = "0.1")]
    pub webhook_order_share: Decimal,
    /// CloudWatch Logs bytes per REST request.
    #[arg(long, default_value_t = 150)]
    pub log_bytes_per_rest_request: u64,
    /// REST response bytes (data transfer out).
    #[arg(long, default_value_t = 1024)]
    pub rest_response_bytes: u64,
    /// Availability zones (interface endpoints are billed per AZ).
    #[arg(long, default_value_t = 2)]
    pub azs: u64,
    /// Interface VPC endpoints (SQS, Secrets Manager, as DEPLOY.md's network has them; the
    /// DynamoDB and S3 gateway endpoints are free; execute-api cannot carry PostToConnection).
    #[arg(long, default_value_t = 2)]
    pub interface_endpoints: u64,
    /// NAT gateways.
    #[arg(long, default_value_t = 1)]
    pub nat_gateways: u64,
    /// GB per month of the Binance stream into the ingest task (a NAT charge only with
    /// `--fanout-egress nat`).
    #[arg(long, default_value = "30")]
    pub binance_gb: Decimal,
    /// How the ingest's pushes (and the Binance stream) leave the VPC (DEPLOY.md: the task's
    /// public IP).
    #[arg(long, value_enum, default_value_t = FanoutEgress::PublicIp)]
    pub fanout_egress: FanoutEgress,
    /// HTTP bytes per PostToConnection beyond the payload through the NAT gateway (signed
    /// request headers and the response); 0 counts payloads only.
    #[arg(long, default_value_t = 0)]
    pub push_overhead_bytes: u64,
    /// CloudWatch alarms.
    #[arg(long, default_value_t = 6)]
    pub alarms: u64,
    /// Secrets Manager secrets: the owner's and one login per function role (api, executor,
    /// ingest), as template.yaml has them.
    #[arg(long, default_value_t = 4)]
    pub secrets: u64,
    /// Secrets Manager calls per 1,000 Lambda invocations (one per cold start).
    #[arg(long, default_value = "1")]
    pub secret_calls_per_1000_invocations: Decimal,
    /// Seconds between the ingest's repair scans of the connection table.
    #[arg(long, default_value_t = 300)]
    pub rescan_secs: u64,
}

impl Default for Workload {
    /// The reference workload: the flags' defaults (one source of truth).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            workload: Workload,
        }
        Defaults::parse_from(["cost"]).workload
    }
}

/// A workload the model cannot price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct InvalidWorkload {
    pub flag: &'static str,
    pub problem: &'static str,
}

impl Workload {
    /// Rejects values that would divide by zero or mean nothing (negative amounts, more than
    /// 24 hours a day, shares above 1).
    pub fn validate(&self) -> Result<(), InvalidWorkload> {
        let fail = |flag, problem| Err(InvalidWorkload { flag, problem });
        for (flag, value) in [
            ("users", self.users),
            ("flush-ms", self.flush_ms),
            ("rescan-secs", self.rescan_secs),
        ] {
            if value == 0 {
                return fail(flag, "must be at least 1");
            }
        }
        if !(1..=SQS_FIFO_MAX_BATCH).contains(&self.orders_per_executor_invocation) {
            return fail(
                "orders-per-executor-invocation",
                "must be 1 to 10 (the FIFO batch limit)",
            );
        }
        for (flag, hours) in [
            ("hours-per-day", self.hours_per_day),
            ("rest-hours-per-day", self.rest_hours_per_day),
        ] {
            if hours.is_sign_negative() || hours > HOURS_PER_DAY {
                return fail(flag, "must be 0 to 24");
            }
        }
        if self.webhook_order_share.is_sign_negative() || self.webhook_order_share > Decimal::ONE {
            return fail("webhook-order-share", "must be 0 to 1");
        }
        for (flag, value) in [
            ("rest-rps", self.rest_rps),
            ("aurora-avg-acu", self.aurora_avg_acu),
            ("aurora-min-acu", self.aurora_min_acu),
            ("aurora-storage-gb", self.aurora_storage_gb),
            ("aurora-ios-per-order", self.aurora_ios_per_order),
            (
                "aurora-ios-per-rest-request",
                self.aurora_ios_per_rest_request,
            ),
            ("cache-gb", self.cache_gb),
            ("ecpus-per-rest-request", self.ecpus_per_rest_request),
            ("ingest-vcpu", self.ingest_vcpu),
            ("ingest-memory-gb", self.ingest_memory_gb),
            ("api-billed-ms", self.api_billed_ms),
            ("webhook-billed-ms", self.webhook_billed_ms),
            ("executor-billed-ms", self.executor_billed_ms),
            ("ws-billed-ms", self.ws_billed_ms),
            ("binance-gb", self.binance_gb),
            (
                "secret-calls-per-1000-invocations",
                self.secret_calls_per_1000_invocations,
            ),
        ] {
            if value.is_sign_negative() && !value.is_zero() {
                return fail(flag, "must not be negative");
            }
        }
        Ok(())
    }

    /// Every input as (flag, value, meaning), for the report.
    pub fn inputs(&self) -> Vec<(&'static str, String, &'static str)> {
        let d = |v: Decimal| v.normalize().to_string();
        vec![
            ("users", self.users.to_string(), "users"),
            (
                "hours-per-day",
                d(self.hours_per_day),
                "connected hours per user per day",
            ),
            (
                "symbols-per-user",
                self.symbols_per_user.to_string(),
                "symbols each user follows",
            ),
            (
                "flush-ms",
                self.flush_ms.to_string(),
                "one coalesced message per connection per interval",
            ),
            (
                "orders-per-day",
                self.orders_per_day.to_string(),
                "orders executed per day",
            ),
            ("rest-rps", d(self.rest_rps), "average REST requests/s"),
            (
                "rest-hours-per-day",
                d(self.rest_hours_per_day),
                "hours per day the REST rate holds",
            ),
            (
                "arch",
                self.arch.name().to_string(),
                "Lambda and Fargate architecture",
            ),
            (
                "message-bytes",
                self.message_bytes.to_string(),
                "bytes per pushed message",
            ),
            (
                "order-events-per-order",
                self.order_events_per_order.to_string(),
                "order events pushed per order",
            ),
            (
                "aurora-avg-acu",
                d(self.aurora_avg_acu),
                "Aurora Serverless v2 average ACU",
            ),
            (
                "aurora-min-acu",
                d(self.aurora_min_acu),
                "Aurora Serverless v2 minimum ACU",
            ),
            (
                "aurora-storage-gb",
                d(self.aurora_storage_gb),
                "Aurora storage GB",
            ),
            (
                "aurora-ios-per-order",
                d(self.aurora_ios_per_order),
                "Aurora I/Os per order",
            ),
            (
                "aurora-ios-per-rest-request",
                d(self.aurora_ios_per_rest_request),
                "Aurora I/Os per REST request",
            ),
            ("cache-gb", d(self.cache_gb), "ElastiCache GB stored"),
            (
                "ecpus-per-rest-request",
                d(self.ecpus_per_rest_request),
                "ElastiCache ECPUs per REST request",
            ),
            (
                "distinct-symbols",
                self.distinct_symbols.to_string(),
                "symbols the ingest writes every 100 ms",
            ),
            ("ingest-vcpu", d(self.ingest_vcpu), "ingest Fargate vCPU"),
            (
                "ingest-memory-gb",
                d(self.ingest_memory_gb),
                "ingest Fargate memory GB",
            ),
            (
                "api-memory-mb",
                self.api_memory_mb.to_string(),
                "api Lambda memory MB",
            ),
            (
                "api-billed-ms",
                d(self.api_billed_ms),
                "api Lambda billed ms per invocation",
            ),
            (
                "webhook-memory-mb",
                self.webhook_memory_mb.to_string(),
                "webhook Lambda memory MB",
            ),
            (
                "webhook-billed-ms",
                d(self.webhook_billed_ms),
                "webhook Lambda billed ms per invocation",
            ),
            (
                "executor-memory-mb",
                self.executor_memory_mb.to_string(),
                "executor Lambda memory MB",
            ),
            (
                "executor-billed-ms",
                d(self.executor_billed_ms),
                "executor Lambda billed ms per invocation",
            ),
            (
                "orders-per-executor-invocation",
                self.orders_per_executor_invocation.to_string(),
                "orders per executor invocation",
            ),
            (
                "ws-memory-mb",
                self.ws_memory_mb.to_string(),
                "ws Lambda memory MB",
            ),
            (
                "ws-billed-ms",
                d(self.ws_billed_ms),
                "ws Lambda billed ms per invocation",
            ),
            (
                "webhook-order-share",
                d(self.webhook_order_share),
                "share of orders arriving by webhook",
            ),
            (
                "log-bytes-per-rest-request",
                self.log_bytes_per_rest_request.to_string(),
                "CloudWatch Logs bytes per REST request",
            ),
            (
                "rest-response-bytes",
                self.rest_response_bytes.to_string(),
                "bytes per REST response",
            ),
            ("azs", self.azs.to_string(), "availability zones"),
            (
                "interface-endpoints",
                self.interface_endpoints.to_string(),
                "interface VPC endpoints",
            ),
            (
                "nat-gateways",
                self.nat_gateways.to_string(),
                "NAT gateways",
            ),
            ("binance-gb", d(self.binance_gb), "Binance stream GB/month"),
            (
                "fanout-egress",
                self.fanout_egress.name().to_string(),
                "how pushes leave the VPC",
            ),
            (
                "push-overhead-bytes",
                self.push_overhead_bytes.to_string(),
                "HTTP bytes per push beyond the payload",
            ),
            ("alarms", self.alarms.to_string(), "CloudWatch alarms"),
            (
                "secrets",
                self.secrets.to_string(),
                "Secrets Manager secrets",
            ),
            (
                "secret-calls-per-1000-invocations",
                d(self.secret_calls_per_1000_invocations),
                "secret reads per 1,000 Lambda invocations",
            ),
            (
                "rescan-secs",
                self.rescan_secs.to_string(),
                "ingest's connection-table scan interval",
            ),
        ]
    }
}

/// A unit price: `usd` per `per` units (e.g. $1.00 per 1,000,000 messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub usd: Decimal,
    pub per: Decimal,
    pub unit: &'static str,
}

impl Rate {
    const fn new(usd: Decimal, per: Decimal, unit: &'static str) -> Self {
        Rate { usd, per, unit }
    }

    /// The price of `quantity` units.
    pub fn cost(&self, quantity: Decimal) -> Decimal {
        quantity * self.usd / self.per
    }
}

/// One band of a tiered price; `up_to` is the cumulative monthly quantity where it ends
/// (`None`: no end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub label: &'static str,
    pub up_to: Option<Decimal>,
    pub usd: Decimal,
}

impl Tier {
    const fn new(label: &'static str, up_to: Option<Decimal>, usd: Decimal) -> Self {
        Tier { label, up_to, usd }
    }
}

/// A price that falls with monthly volume: each band's quantity at its own price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiered {
    pub per: Decimal,
    pub unit: &'static str,
    pub tiers: Vec<Tier>,
}

impl Tiered {
    /// `quantity` split into bands, one line item per band used (the first band, at zero,
    /// when nothing is used).
    pub fn items(&self, name: &str, quantity: Decimal) -> Vec<LineItem> {
        let mut items = Vec::new();
        let mut floor = Decimal::ZERO;
        for tier in &self.tiers {
            let ceiling = tier.up_to.map_or(quantity, |up_to| up_to.min(quantity));
            if ceiling > floor {
                let rate = Rate::new(tier.usd, self.per, self.unit);
                items.push(LineItem::new(
                    format!("{name} ({})", tier.label),
                    ceiling - floor,
                    rate,
                ));
            }
            match tier.up_to {
                Some(up_to) if up_to < quantity => floor = up_to,
                _ => break,
            }
        }
        if items.is_empty() {
            let first = &self.tiers[0];
            let rate = Rate::new(first.usd, self.per, self.unit);
            items.push(LineItem::new(
                format!("{name} ({})", first.label),
                Decimal::ZERO,
                rate,
            ));
        }
        items
    }

    /// The total price of `quantity`.
    pub fn cost(&self, quantity: Decimal) -> Decimal {
        self.items("", quantity).iter().map(|i| i.monthly_usd).sum()
    }
}

/// List prices, us-east-1, on-demand, as of November 2026. Sources: `/work/shared/REFERENCE.md`
/// ("AWS facts that shape the design") where it gives the price; otherwise the AWS public
/// pricing page named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    /// API Gateway WebSocket messages (metered per 32 KB): $1.00 per million for the first
    /// billion a month (REFERENCE.md), $0.80 per million above (Amazon API Gateway pricing,
    /// WebSocket APIs).
    pub websocket_messages: Tiered,
    /// API Gateway WebSocket: $0.25 per million connection-minutes (REFERENCE.md).
    pub websocket_connection_minutes: Rate,
    /// API Gateway REST requests per million: first 333M $3.50 (REFERENCE.md); next 667M
    /// $2.80, next 19B $2.38, over 20B $1.51 (Amazon API Gateway pricing, REST APIs).
    pub rest_requests: Tiered,
    /// Lambda: $0.20 per million requests (REFERENCE.md).
    pub lambda_requests: Rate,
    /// Lambda duration, arm64: $0.0000133334 per GB-second (REFERENCE.md).
    pub lambda_gb_second_arm64: Rate,
    /// Lambda duration, x86_64: $0.0000166667 per GB-second (REFERENCE.md).
    pub lambda_gb_second_x86_64: Rate,
    /// SQS FIFO: $0.50 per million requests, each 64 KB chunk a request (Amazon SQS pricing).
    pub sqs_fifo_requests: Rate,
    /// DynamoDB on-demand: $0.625 per million write request units (REFERENCE.md).
    pub dynamodb_writes: Rate,
    /// DynamoDB on-demand: $0.125 per million read request units (REFERENCE.md).
    pub dynamodb_reads: Rate,
    /// Aurora Serverless v2 (Aurora Standard): $0.12 per ACU-hour (REFERENCE.md).
    pub aurora_acu_hour: Rate,
    /// Aurora Standard storage: $0.10 per GB-month (Amazon Aurora pricing).
    pub aurora_storage_gb_month: Rate,
    /// Aurora Standard I/O: $0.20 per million requests (Amazon Aurora pricing).
    pub aurora_io: Rate,
    /// RDS Proxy for Aurora Serverless v2: $0.015 per ACU-hour (Amazon RDS Proxy pricing).
    pub rds_proxy_acu_hour: Rate,
    /// RDS Proxy bills at least 8 ACU for Aurora Serverless v2 (REFERENCE.md; Amazon RDS
    /// Proxy pricing).
    pub rds_proxy_min_acu: Decimal,
    /// ElastiCache Serverless for Valkey: $0.0837 per GB-hour of data stored (REFERENCE.md).
    pub elasticache_gb_hour: Rate,
    /// ElastiCache Serverless for Valkey: $0.00227 per million ECPUs (REFERENCE.md).
    pub elasticache_ecpu: Rate,
    /// Fargate Linux/arm64: $0.03238 per vCPU-hour (REFERENCE.md).
    pub fargate_vcpu_hour_arm64: Rate,
    /// Fargate Linux/arm64: $0.00356 per GB-hour (REFERENCE.md).
    pub fargate_gb_hour_arm64: Rate,
    /// Fargate Linux/x86: $0.04048 per vCPU-hour (AWS Fargate pricing).
    pub fargate_vcpu_hour_x86_64: Rate,
    /// Fargate Linux/x86: $0.004445 per GB-hour (AWS Fargate pricing).
    pub fargate_gb_hour_x86_64: Rate,
    /// Interface VPC endpoint: $0.01 per endpoint per AZ-hour (AWS PrivateLink pricing).
    pub interface_endpoint_az_hour: Rate,
    /// Interface VPC endpoint: $0.01 per GB processed, first PB (AWS PrivateLink pricing).
    pub interface_endpoint_gb: Rate,
    /// NAT gateway: $0.045 per hour (Amazon VPC pricing).
    pub nat_gateway_hour: Rate,
    /// NAT gateway: $0.045 per GB processed (Amazon VPC pricing).
    pub nat_gateway_gb: Rate,
    /// Public IPv4 address, in use or idle (a NAT gateway's included): $0.005 per hour
    /// (Amazon VPC pricing, public IPv4 addresses).
    pub public_ipv4_hour: Rate,
    /// Data transfer out to the internet per GB: first 10 TB $0.09, next 40 TB $0.085, next
    /// 100 TB $0.07, over 150 TB $0.05 (Amazon EC2 on-demand pricing, data transfer; API
    /// Gateway bills its data out at these rates).
    pub data_transfer_out: Tiered,
    /// CloudWatch Logs: $0.50 per GB ingested, standard class (Amazon CloudWatch pricing).
    pub logs_ingestion_gb: Rate,
    /// Secrets Manager: $0.40 per secret-month (AWS Secrets Manager pricing).
    pub secret_month: Rate,
    /// Secrets Manager: $0.05 per 10,000 API calls (AWS Secrets Manager pricing).
    pub secret_calls: Rate,
    /// CloudWatch: $0.10 per standard-resolution alarm-month (Amazon CloudWatch pricing).
    pub alarm_month: Rate,
}

impl Default for Prices {
    fn default() -> Self {
        let gb = |gb: Decimal| Some(gb);
        Prices {
            websocket_messages: Tiered {
                per: MILLION,
                unit: "messages",
                tiers: vec![
                    Tier::new("first 1B", Some(dec!(1000000000)), dec!(1.00)),
                    Tier::new("over 1B", None, dec!(0.80)),
                ],
            },
            websocket_connection_minutes: Rate::new(dec!(0.25), MILLION, "connection-minutes"),
            rest_requests: Tiered {
                per: MILLION,
                unit: "requests",
                tiers: vec![
                    Tier::new("first 333M", Some(dec!(333000000)), dec!(3.50)),
                    Tier::new("333M to 1B", Some(dec!(1000000000)), dec!(2.80)),
                    Tier::new("1B to 20B", Some(dec!(20000000000)), dec!(2.38)),
                    Tier::new("over 20B", None, dec!(1.51)),
                ],
            },
            lambda_requests: Rate::new(dec!(0.20), MILLION, "requests"),
            lambda_gb_second_arm64: Rate::new(dec!(0.0000133334), Decimal::ONE, "GB-s"),
            lambda_gb_second_x86_64: Rate::new(dec!(0.0000166667), Decimal::ONE, "GB-s"),
            sqs_fifo_requests: Rate::new(dec!(0.50), MILLION, "requests"),
            dynamodb_writes: Rate::new(dec!(0.625), MILLION, "write units"),
            dynamodb_reads: Rate::new(dec!(0.125), MILLION, "read units"),
            aurora_acu_hour: Rate::new(dec!(0.12), Decimal::ONE, "ACU-h"),
            aurora_storage_gb_month: Rate::new(dec!(0.10), Decimal::ONE, "GB-mo"),
            aurora_io: Rate::new(dec!(0.20), MILLION, "I/Os"),
            rds_proxy_acu_hour: Rate::new(dec!(0.015), Decimal::ONE, "ACU-h"),
            rds_proxy_min_acu: dec!(8),
            elasticache_gb_hour: Rate::new(dec!(0.0837), Decimal::ONE, "GB-h"),
            elasticache_ecpu: Rate::new(dec!(0.00227), MILLION, "ECPUs"),
            fargate_vcpu_hour_arm64: Rate::new(dec!(0.03238), Decimal::ONE, "vCPU-h"),
            fargate_gb_hour_arm64: Rate::new(dec!(0.00356), Decimal::ONE, "GB-h"),
            fargate_vcpu_hour_x86_64: Rate::new(dec!(0.04048), Decimal::ONE, "vCPU-h"),
            fargate_gb_hour_x86_64: Rate::new(dec!(0.004445), Decimal::ONE, "GB-h"),
            interface_endpoint_az_hour: Rate::new(dec!(0.01), Decimal::ONE, "endpoint-AZ-h"),
            interface_endpoint_gb: Rate::new(dec!(0.01), Decimal::ONE, "GB"),
            nat_gateway_hour: Rate::new(dec!(0.045), Decimal::ONE, "gateway-h"),
            nat_gateway_gb: Rate::new(dec!(0.045), Decimal::ONE, "GB"),
            public_ipv4_hour: Rate::new(dec!(0.005), Decimal::ONE, "address-h"),
            data_transfer_out: Tiered {
                per: Decimal::ONE,
                unit: "GB",
                tiers: vec![
                    Tier::new("first 10 TB", gb(dec!(10240)), dec!(0.09)),
                    Tier::new("next 40 TB", gb(dec!(51200)), dec!(0.085)),
                    Tier::new("next 100 TB", gb(dec!(153600)), dec!(0.07)),
                    Tier::new("over 150 TB", None, dec!(0.05)),
                ],
            },
            logs_ingestion_gb: Rate::new(dec!(0.50), Decimal::ONE, "GB"),
            secret_month: Rate::new(dec!(0.40), Decimal::ONE, "secret-mo"),
            secret_calls: Rate::new(dec!(0.05), dec!(10000), "API calls"),
            alarm_month: Rate::new(dec!(0.10), Decimal::ONE, "alarm-mo"),
        }
    }
}

/// One row of the bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub item: String,
    pub quantity: Decimal,
    pub rate: Rate,
    /// Exact; rounded only when printed.
    pub monthly_usd: Decimal,
}

impl LineItem {
    pub fn new(item: impl Into<String>, quantity: Decimal, rate: Rate) -> Self {
        LineItem {
            item: item.into(),
            quantity,
            monthly_usd: rate.cost(quantity),
            rate,
        }
    }
}

/// The monthly volumes the bill is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Coalesced price/PnL messages pushed by the ingest, whole messages.
    pub price_messages: Decimal,
    /// Order events pushed by the executor (one connection per account assumed).
    pub order_messages: Decimal,
    /// `subscribe` messages in plus their snapshot replies.
    pub subscribe_messages: Decimal,
    /// Messages as API Gateway meters them (per 32 KB).
    pub billed_messages: Decimal,
    pub connections: Decimal,
    pub connection_minutes: Decimal,
    /// Requests to the api function.
    pub rest_requests: Decimal,
    pub orders: Decimal,
    pub webhook_requests: Decimal,
    pub executor_invocations: Decimal,
    pub ws_invocations: Decimal,
    pub lambda_invocations: Decimal,
    /// Bytes of PostToConnection payloads (ingest and executor).
    pub push_bytes: Decimal,
    pub data_out_gb: Decimal,
}

/// Request rates that meet account limits (not cost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// PostToConnection/s with every user connected at once.
    pub push_peak_per_s: Decimal,
    /// PostToConnection/s averaged over the day.
    pub push_average_per_s: Decimal,
    /// REST requests/s while the REST rate holds.
    pub rest_per_s: Decimal,
    /// REST requests/s averaged over the day.
    pub rest_average_per_s: Decimal,
    pub peak_total_per_s: Decimal,
    pub average_total_per_s: Decimal,
    pub new_connections_average_per_s: Decimal,
    /// Seconds to admit every user at the new-connection limit (a mass reconnect).
    pub seconds_to_connect_everyone: Decimal,
    pub sqs_sends_average_per_s: Decimal,
    /// One line per limit exceeded, each starting with `WARNING:`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub workload: Workload,
    pub usage: Usage,
    pub line_items: Vec<LineItem>,
    pub total_usd: Decimal,
    pub per_user_month_usd: Decimal,
    pub limits: Limits,
}

/// A daily volume over a 730-hour month (multiplied before dividing, to stay exact).
fn monthly(per_day: Decimal) -> Decimal {
    per_day * HOURS_PER_MONTH / HOURS_PER_DAY
}

fn gb(bytes: Decimal) -> Decimal {
    bytes / BYTES_PER_GB
}

fn lambda_gb_seconds(invocations: Decimal, memory_mb: u64, billed_ms: Decimal) -> Decimal {
    invocations * Decimal::from(memory_mb) * billed_ms / (MB_PER_GB * dec!(1000))
}

/// WebSocket connections per user per day: one session a day, reconnected every 2 hours.
fn connections_per_user_day(hours_per_day: Decimal) -> Decimal {
    (hours_per_day / WEBSOCKET_MAX_CONNECTION_HOURS).ceil()
}

/// The bill and the limits of `workload` at `prices`.
pub fn estimate(workload: &Workload, prices: &Prices) -> Result<Report, InvalidWorkload> {
    workload.validate()?;
    let w = workload;
    let users = Decimal::from(w.users);
    let flush_ms = Decimal::from(w.flush_ms);
    let message_bytes = Decimal::from(w.message_bytes);
    let metered_units_per_message =
        Decimal::from(w.message_bytes.div_ceil(WEBSOCKET_METERING_BYTES).max(1));

    // WebSocket: one message per connected second × 1000 / flush_ms.
    let price_messages =
        monthly(users * w.hours_per_day * SECONDS_PER_HOUR * dec!(1000) / flush_ms).round();
    let orders = monthly(Decimal::from(w.orders_per_day));
    let order_messages = orders * Decimal::from(w.order_events_per_order);
    let connections = monthly(users * connections_per_user_day(w.hours_per_day));
    let subscribe_messages = connections * dec!(2);
    let outbound_messages = price_messages + order_messages + connections;
    let billed_messages = outbound_messages * metered_units_per_message + connections;
    let connection_minutes = monthly(users * w.hours_per_day * dec!(60));

    // REST: the api function's requests, and the webhook deliveries on the same REST API.
    let rest_requests = monthly(w.rest_rps * SECONDS_PER_HOUR * w.rest_hours_per_day);
    let webhook_requests = orders * w.webhook_order_share;
    let executor_invocations = orders / Decimal::from(w.orders_per_executor_invocation);
    let ws_invocations = connections * WS_INVOCATIONS_PER_CONNECTION;
    let lambda_invocations =
        rest_requests + webhook_requests + executor_invocations + ws_invocations;

    let push_bytes = (price_messages + order_messages) * message_bytes;
    let data_out_bytes =
        outbound_messages * message_bytes + rest_requests * Decimal::from(w.rest_response_bytes);
    let data_out_gb = gb(data_out_bytes);

    let mut items = Vec::new();
    items.extend(
        prices
            .websocket_messages
            .items("WebSocket messages", billed_messages),
    );
    items.push(LineItem::new(
        "WebSocket connection-minutes",
        connection_minutes,
        prices.websocket_connection_minutes,
    ));
    items.extend(
        prices
            .rest_requests
            .items("REST API requests", rest_requests + webhook_requests),
    );

    let gb_second = match w.arch {
        Arch::Arm64 => prices.lambda_gb_second_arm64,
        Arch::X86_64 => prices.lambda_gb_second_x86_64,
    };
    let functions = [
        ("api", rest_requests, w.api_memory_mb, w.api_billed_ms),
        (
            "webhook",
            webhook_requests,
            w.webhook_memory_mb,
            w.webhook_billed_ms,
        ),
        (
            "executor",
            executor_invocations,
            w.executor_memory_mb,
            w.executor_billed_ms,
        ),
        ("ws", ws_invocations, w.ws_memory_mb, w.ws_billed_ms),
    ];
    for (name, invocations, memory_mb, billed_ms) in functions {
        items.push(LineItem::new(
            format!("Lambda {name} requests"),
            invocations,
            prices.lambda_requests,
        ));
        items.push(LineItem::new(
            format!("Lambda {name} compute ({memory_mb} MB)"),
            lambda_gb_seconds(invocations, memory_mb, billed_ms),
            gb_second,
        ));
    }

    // SQS FIFO: one send per order; one receive and one delete per executor batch.
    let sqs_requests = orders + dec!(2) * executor_invocations;
    items.push(LineItem::new(
        "SQS FIFO requests",
        sqs_requests,
        prices.sqs_fifo_requests,
    ));

    // DynamoDB: connection lifecycle, the executor's by-account Query per order (to push its
    // events), and the ingest's repair scans of the connected items. Every read is counted
    // as a whole read unit (eventually consistent reads cost half: this overstates a little).
    let dynamodb_writes = connections * DYNAMODB_WRITES_PER_CONNECTION;
    let scans = HOURS_PER_MONTH * SECONDS_PER_HOUR / Decimal::from(w.rescan_secs);
    let item_bytes = CONNECTION_ITEM_BASE_BYTES
        + CONNECTION_ITEM_BYTES_PER_SYMBOL * Decimal::from(w.symbols_per_user);
    let connected_on_average = users * w.hours_per_day / HOURS_PER_DAY;
    let read_units_per_scan = (connected_on_average * item_bytes / DYNAMODB_READ_UNIT_BYTES).ceil();
    let dynamodb_reads =
        connections * DYNAMODB_READS_PER_CONNECTION + orders + scans * read_units_per_scan;
    items.push(LineItem::new(
        "DynamoDB writes",
        dynamodb_writes,
        prices.dynamodb_writes,
    ));
    items.push(LineItem::new(
        "DynamoDB reads",
        dynamodb_reads,
        prices.dynamodb_reads,
    ));

    let aurora_acu = w.aurora_avg_acu.max(w.aurora_min_acu);
    items.push(LineItem::new(
        "Aurora Serverless v2 capacity",
        aurora_acu * HOURS_PER_MONTH,
        prices.aurora_acu_hour,
    ));
    items.push(LineItem::new(
        "Aurora storage",
        w.aurora_storage_gb,
        prices.aurora_storage_gb_month,
    ));
    let aurora_ios =
        orders * w.aurora_ios_per_order + rest_requests * w.aurora_ios_per_rest_request;
    items.push(LineItem::new("Aurora I/O", aurora_ios, prices.aurora_io));
    let proxy_acu = aurora_acu.max(prices.rds_proxy_min_acu);
    items.push(LineItem::new(
        format!("RDS Proxy ({} ACU billed)", proxy_acu.normalize()),
        proxy_acu * HOURS_PER_MONTH,
        prices.rds_proxy_acu_hour,
    ));

    items.push(LineItem::new(
        "ElastiCache Serverless storage",
        w.cache_gb * HOURS_PER_MONTH,
        prices.elasticache_gb_hour,
    ));
    let ingest_writes = Decimal::from(w.distinct_symbols) * dec!(1000)
        / Decimal::from(INGEST_FLUSH_MS)
        * SECONDS_PER_HOUR
        * HOURS_PER_MONTH;
    let ecpus = rest_requests * w.ecpus_per_rest_request + ingest_writes;
    items.push(LineItem::new(
        "ElastiCache Serverless ECPUs",
        ecpus,
        prices.elasticache_ecpu,
    ));

    let (vcpu_hour, memory_gb_hour) = match w.arch {
        Arch::Arm64 => (prices.fargate_vcpu_hour_arm64, prices.fargate_gb_hour_arm64),
        Arch::X86_64 => (
            prices.fargate_vcpu_hour_x86_64,
            prices.fargate_gb_hour_x86_64,
        ),
    };
    items.push(LineItem::new(
        "Fargate ingest vCPU",
        w.ingest_vcpu * HOURS_PER_MONTH,
        vcpu_hour,
    ));
    items.push(LineItem::new(
        "Fargate ingest memory",
        w.ingest_memory_gb * HOURS_PER_MONTH,
        memory_gb_hour,
    ));

    let endpoint_az_hours = Decimal::from(w.interface_endpoints * w.azs) * HOURS_PER_MONTH;
    items.push(LineItem::new(
        "Interface VPC endpoints",
        endpoint_az_hours,
        prices.interface_endpoint_az_hour,
    ));
    if w.interface_endpoints > 0 {
        let sqs_gb = gb(orders * SQS_ENDPOINT_BYTES_PER_ORDER);
        items.push(LineItem::new(
            "Interface endpoint data (SQS)",
            sqs_gb,
            prices.interface_endpoint_gb,
        ));
    }

    items.push(LineItem::new(
        "NAT gateway hours",
        Decimal::from(w.nat_gateways) * HOURS_PER_MONTH,
        prices.nat_gateway_hour,
    ));
    let mut public_addresses = Decimal::from(w.nat_gateways);
    match w.fanout_egress {
        FanoutEgress::Nat => {
            items.push(LineItem::new(
                "NAT gateway data (Binance stream)",
                w.binance_gb,
                prices.nat_gateway_gb,
            ));
            let push_gb = gb(push_bytes
                + (price_messages + order_messages) * Decimal::from(w.push_overhead_bytes));
            items.push(LineItem::new(
                "NAT gateway data (PostToConnection)",
                push_gb,
                prices.nat_gateway_gb,
            ));
        }
        FanoutEgress::PublicIp => {
            // The executor's order pushes still leave through the NAT gateway.
            let push_gb =
                gb(order_messages * (message_bytes + Decimal::from(w.push_overhead_bytes)));
            items.push(LineItem::new(
                "NAT gateway data (order pushes)",
                push_gb,
                prices.nat_gateway_gb,
            ));
            public_addresses += Decimal::ONE;
        }
    }
    items.push(LineItem::new(
        "Public IPv4 addresses",
        public_addresses * HOURS_PER_MONTH,
        prices.public_ipv4_hour,
    ));

    items.extend(
        prices
            .data_transfer_out
            .items("Data transfer out", data_out_gb),
    );
    let log_gb = gb(rest_requests * Decimal::from(w.log_bytes_per_rest_request));
    items.push(LineItem::new(
        "CloudWatch Logs ingestion",
        log_gb,
        prices.logs_ingestion_gb,
    ));
    items.push(LineItem::new(
        "Secrets Manager secrets",
        Decimal::from(w.secrets),
        prices.secret_month,
    ));
    let secret_calls = lambda_invocations * w.secret_calls_per_1000_invocations / dec!(1000);
    items.push(LineItem::new(
        "Secrets Manager API calls",
        secret_calls,
        prices.secret_calls,
    ));
    items.push(LineItem::new(
        "CloudWatch alarms",
        Decimal::from(w.alarms),
        prices.alarm_month,
    ));

    let total_usd: Decimal = items.iter().map(|i| i.monthly_usd).sum();
    Ok(Report {
        workload: w.clone(),
        usage: Usage {
            price_messages,
            order_messages,
            subscribe_messages,
            billed_messages,
            connections,
            connection_minutes,
            rest_requests,
            orders,
            webhook_requests,
            executor_invocations,
            ws_invocations,
            lambda_invocations,
            push_bytes,
            data_out_gb,
        },
        line_items: items,
        per_user_month_usd: total_usd / users,
        total_usd,
        limits: limits(w),
    })
}

fn limits(w: &Workload) -> Limits {
    let users = Decimal::from(w.users);
    let push_peak_per_s = users * dec!(1000) / Decimal::from(w.flush_ms);
    let push_average_per_s = push_peak_per_s * w.hours_per_day / HOURS_PER_DAY;
    let rest_per_s = if w.rest_hours_per_day.is_zero() {
        Decimal::ZERO
    } else {
        w.rest_rps
    };
    let rest_average_per_s = w.rest_rps * w.rest_hours_per_day / HOURS_PER_DAY;
    let peak_total_per_s = push_peak_per_s + rest_per_s;
    let average_total_per_s = push_average_per_s + rest_average_per_s;
    let new_connections_average_per_s =
        users * connections_per_user_day(w.hours_per_day) / SECONDS_PER_DAY;
    let seconds_to_connect_everyone = users / WEBSOCKET_NEW_CONNECTIONS_PER_S;
    let sqs_sends_average_per_s = Decimal::from(w.orders_per_day) / SECONDS_PER_DAY;

    let mut warnings = Vec::new();
    if peak_total_per_s > API_GATEWAY_ACCOUNT_RPS {
        warnings.push(format!(
            "WARNING: peak API Gateway requests {}/s (PostToConnection {}/s + REST {}/s) exceed the account limit of {}/s shared by all APIs and PostToConnection: raise the quota or lengthen --flush-ms",
            render::group(peak_total_per_s, 1),
            render::group(push_peak_per_s, 1),
            render::group(rest_per_s, 1),
            render::group(API_GATEWAY_ACCOUNT_RPS, 0),
        ));
    }
    if average_total_per_s > API_GATEWAY_ACCOUNT_RPS {
        warnings.push(format!(
            "WARNING: even the daily average, {}/s, exceeds the account limit of {}/s",
            render::group(average_total_per_s, 1),
            render::group(API_GATEWAY_ACCOUNT_RPS, 0),
        ));
    }
    if new_connections_average_per_s > WEBSOCKET_NEW_CONNECTIONS_PER_S {
        warnings.push(format!(
            "WARNING: {}/s new WebSocket connections on average exceed the limit of {}/s",
            render::group(new_connections_average_per_s, 2),
            render::group(WEBSOCKET_NEW_CONNECTIONS_PER_S, 0),
        ));
    }
    if sqs_sends_average_per_s > SQS_FIFO_CALLS_PER_S {
        warnings.push(format!(
            "WARNING: {}/s SQS sends on average exceed FIFO's {}/s per action without high-throughput mode",
            render::group(sqs_sends_average_per_s, 2),
            render::group(SQS_FIFO_CALLS_PER_S, 0),
        ));
    }
    Limits {
        push_peak_per_s,
        push_average_per_s,
        rest_per_s,
        rest_average_per_s,
        peak_total_per_s,
        average_total_per_s,
        new_connections_average_per_s,
        seconds_to_connect_everyone,
        sqs_sends_average_per_s,
        warnings,
    }
}

#[cfg(test)]
mod tests;
