//! The ledger as the auditor reads it: PostgreSQL's rows, fetched with the auditor's own SQL
//! (none of the adapters' queries), after the run has drained.

use std::collections::HashMap;

use rust_decimal::Decimal;
use sqlx::Row;
use uuid::Uuid;

/// An `orders` row (the columns the rules need).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub client_order_id: String,
    pub symbol: String,
    pub side: String,
    pub order_type: String,
    pub order_class: String,
    pub qty: Option<Decimal>,
    pub filled_qty: Decimal,
    pub status: String,
    pub parent_id: Option<Uuid>,
}

/// A `fills` row.
#[derive(Debug, Clone, PartialEq)]
pub struct FillRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub order_id: Uuid,
    pub symbol: String,
    pub side: String,
    pub qty: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
    pub at_ms: i64,
}

/// An `accounts` row.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRow {
    pub id: Uuid,
    pub initial_cash: Decimal,
    pub cash: Decimal,
    pub realized_pnl: Decimal,
    pub fees_paid: Decimal,
}

/// A `positions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionRow {
    pub account_id: Uuid,
    pub symbol: String,
    pub qty: Decimal,
    pub avg_entry_price: Decimal,
    pub realized_pnl: Decimal,
}

/// Everything the auditor reads from PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub accounts: Vec<AccountRow>,
    pub orders: Vec<OrderRow>,
    pub fills: Vec<FillRow>,
    pub positions: Vec<PositionRow>,
    /// Dead-lettered commands: (account, command id, reason).
    pub dead_letters: Vec<(Uuid, Uuid, String)>,
    /// Rows of `processed_commands`: commands applied.
    pub applied_commands: u64,
}

impl Snapshot {
    /// Reads the ledger of the database at `url`.
    pub async fn load(url: &str) -> anyhow::Result<Snapshot> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await?;
        let accounts = sqlx::query(
            "SELECT id, initial_cash, cash, realized_pnl, fees_paid FROM accounts ORDER BY id",
        )
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| AccountRow {
            id: r.get("id"),
            initial_cash: r.get("initial_cash"),
            cash: r.get("cash"),
            realized_pnl: r.get("realized_pnl"),
            fees_paid: r.get("fees_paid"),
        })
        .collect();
        let orders = sqlx::query(
            "SELECT id, account_id, client_order_id, symbol, side, order_type, order_class, qty,
                    filled_qty, status, parent_id
             FROM orders ORDER BY account_id, submitted_at, id",
        )
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| OrderRow {
            id: r.get("id"),
            account_id: r.get("account_id"),
            client_order_id: r.get("client_order_id"),
            symbol: r.get("symbol"),
            side: r.get("side"),
            order_type: r.get("order_type"),
            order_class: r.get("order_class"),
            qty: r.get("qty"),
            filled_qty: r.get("filled_qty"),
            status: r.get("status"),
            parent_id: r.get("parent_id"),
        })
        .collect();
        // In the order they were booked: by time, then by the row's physical order of
        // insertion within one transaction (ctid), so that average prices replay exactly.
        let fills = sqlx::query(
            "SELECT id, account_id, order_id, symbol, side, qty, price, fee,
                    (extract(epoch FROM transaction_time) * 1000)::bigint AS at_ms
             FROM fills ORDER BY account_id, transaction_time, ctid",
        )
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| FillRow {
            id: r.get("id"),
            account_id: r.get("account_id"),
            order_id: r.get("order_id"),
            symbol: r.get("symbol"),
            side: r.get("side"),
            qty: r.get("qty"),
            price: r.get("price"),
            fee: r.get("fee"),
            at_ms: r.get("at_ms"),
        })
        .collect();
        let positions = sqlx::query(
            "SELECT account_id, symbol, qty, avg_entry_price, realized_pnl FROM positions",
        )
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| PositionRow {
            account_id: r.get("account_id"),
            symbol: r.get("symbol"),
            qty: r.get("qty"),
            avg_entry_price: r.get("avg_entry_price"),
            realized_pnl: r.get("realized_pnl"),
        })
        .collect();
        let dead_letters = sqlx::query("SELECT account_id, command_id, reason FROM dead_letters")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| (r.get("account_id"), r.get("command_id"), r.get("reason")))
            .collect();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_commands")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(Snapshot {
            accounts,
            orders,
            fills,
            positions,
            dead_letters,
            applied_commands: u64::try_from(applied).unwrap_or_default(),
        })
    }

    /// Orders by account and client order id (more than one per key is itself a finding).
    pub fn orders_by_client_id(&self) -> HashMap<(Uuid, &str), Vec<&OrderRow>> {
        let mut m: HashMap<(Uuid, &str), Vec<&OrderRow>> = HashMap::new();
        for o in &self.orders {
            m.entry((o.account_id, o.client_order_id.as_str()))
                .or_default()
                .push(o);
        }
        m
    }
}
