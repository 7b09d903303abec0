//! The ledger (PostgreSQL / Aurora): users, accounts, API keys, orders, immutable fills,
//! positions and processed commands. The api reads it and writes only identities; the
//! executor is the only writer of orders, fills, positions and cash.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::accounting::{self, Position};
use domain::catalog::Instrument;
use domain::command::Command;
use domain::execution::{decide, AccountState, Decision, ExecutionParams};
use domain::order::{NewOrder, Order, OrderStatus, OrderType, Side, TimeInForce};
use domain::quote::Quote;
use rust_decimal::Decimal;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::error::DependencyError;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../infra/migrations");

#[derive(Clone)]
pub struct Ledger {
    pool: PgPool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: Uuid,
    pub account_number: String,
    pub currency: String,
    pub initial_cash: Decimal,
    pub cash: Decimal,
    pub realized_pnl: Decimal,
    pub fees_paid: Decimal,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRecord {
    pub symbol: String,
    pub asset_id: Uuid,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillRecord {
    pub id: Uuid,
    pub order_id: Uuid,
    pub symbol: String,
    pub side: Side,
    pub qty: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
    pub realized_pnl: Decimal,
    pub cum_qty: Decimal,
    pub leaves_qty: Decimal,
    pub transaction_time: DateTime<Utc>,
}

/// Which orders `GET /v2/orders` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Open,
    Closed,
    All,
}

#[derive(Debug, Clone)]
pub struct OrderQuery {
    pub status: StatusFilter,
    pub limit: i64,
    pub after: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub ascending: bool,
    pub symbols: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct FillQuery {
    pub after: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub ascending: bool,
    pub page_size: i64,
    /// Continue after this fill (the uuid part of an activity id).
    pub page_token: Option<Uuid>,
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub order: Option<Order>,
    pub fill: Option<FillRecord>,
    /// The command had been applied before: nothing changed.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

const OPEN_STATUSES: &str =
    "('new','partially_filled','accepted','pending_new','pending_cancel','pending_replace')";
const ORDER_COLUMNS: &str = "id, client_order_id, account_id, created_at, updated_at, submitted_at, filled_at, \
     canceled_at, failed_at, asset_id, symbol, notional, qty, filled_qty, filled_avg_price, order_type, side, \
     time_in_force, limit_price, status, reject_reason";

fn pg(e: sqlx::Error) -> DependencyError {
    DependencyError::postgres(e)
}

fn order_from_row(r: &PgRow) -> Result<Order, sqlx::Error> {
    let text = |name: &str| -> Result<String, sqlx::Error> { r.try_get::<String, _>(name) };
    let bad = |name: &str, v: String| {
        sqlx::Error::Decode(format!("orders.{name}: unexpected value '{v}'").into())
    };
    let order_type = text("order_type")?;
    let side = text("side")?;
    let tif = text("time_in_force")?;
    let status = text("status")?;
    Ok(Order {
        id: r.try_get("id")?,
        client_order_id: r.try_get("client_order_id")?,
        account_id: r.try_get("account_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        submitted_at: r.try_get("submitted_at")?,
        filled_at: r.try_get("filled_at")?,
        canceled_at: r.try_get("canceled_at")?,
        failed_at: r.try_get("failed_at")?,
        asset_id: r.try_get("asset_id")?,
        symbol: r.try_get("symbol")?,
        notional: r.try_get("notional")?,
        qty: r.try_get("qty")?,
        filled_qty: r.try_get("filled_qty")?,
        filled_avg_price: r.try_get("filled_avg_price")?,
        order_type: OrderType::parse(&order_type)
            .ok_or_else(|| bad("order_type", order_type.clone()))?,
        side: Side::parse(&side).ok_or_else(|| bad("side", side.clone()))?,
        time_in_force: TimeInForce::parse(&tif).ok_or_else(|| bad("time_in_force", tif.clone()))?,
        limit_price: r.try_get("limit_price")?,
        status: OrderStatus::parse(&status).ok_or_else(|| bad("status", status.clone()))?,
        reject_reason: r.try_get("reject_reason")?,
    })
}

fn fill_from_row(r: &PgRow) -> Result<FillRecord, sqlx::Error> {
    let side: String = r.try_get("side")?;
    Ok(FillRecord {
        id: r.try_get("id")?,
        order_id: r.try_get("order_id")?,
        symbol: r.try_get("symbol")?,
        side: Side::parse(&side)
            .ok_or_else(|| sqlx::Error::Decode(format!("fills.side '{side}'").into()))?,
        qty: r.try_get("qty")?,
        price: r.try_get("price")?,
        fee: r.try_get("fee")?,
        realized_pnl: r.try_get("realized_pnl")?,
        cum_qty: r.try_get("cum_qty")?,
        leaves_qty: r.try_get("leaves_qty")?,
        transaction_time: r.try_get("transaction_time")?,
    })
}

impl Ledger {
    /// A pool that connects on first use (lean Lambda init) and fails fast when Postgres is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Ledger, DependencyError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)
            .map_err(pg)?;
        Ok(Ledger { pool })
    }

    pub fn from_pool(pool: PgPool) -> Ledger {
        Ledger { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(())
    }

    // ---- identities (written by the api) ------------------------------------------------

    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        initial_cash: Decimal,
    ) -> Result<(Uuid, Uuid), SignupError> {
        let user_id = Uuid::new_v4();
        let account_id = Uuid::new_v4();
        let account_number = format!(
            "PA{}",
            &account_id.simple().to_string()[..10].to_uppercase()
        );
        let mut tx = self.pool.begin().await.map_err(pg)?;
        let inserted = sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
            .bind(user_id)
            .bind(email)
            .bind(password_hash)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        if inserted.rows_affected() == 0 {
            return Err(SignupError::EmailTaken);
        }
        sqlx::query(
            "INSERT INTO accounts (id, user_id, account_number, initial_cash, cash) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(account_id)
        .bind(user_id)
        .bind(account_number)
        .bind(initial_cash)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok((user_id, account_id))
    }

    pub async fn credentials_by_email(
        &self,
        email: &str,
    ) -> Result<Option<UserCredentials>, DependencyError> {
        let row = sqlx::query(
            "SELECT u.id AS user_id, a.id AS account_id, u.password_hash FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)?;
        row.map(|r| {
            Ok(UserCredentials {
                user_id: r.try_get("user_id")?,
                account_id: r.try_get("account_id")?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
        .map_err(pg)
    }

    pub async fn insert_api_key(
        &self,
        key_id: &str,
        user_id: Uuid,
        account_id: Uuid,
        secret_hash: &str,
    ) -> Result<DateTime<Utc>, DependencyError> {
        sqlx::query_scalar("INSERT INTO api_keys (key_id, user_id, account_id, secret_hash) VALUES ($1, $2, $3, $4) RETURNING created_at")
            .bind(key_id)
            .bind(user_id)
            .bind(account_id)
            .bind(secret_hash)
            .fetch_one(&self.pool)
            .await
            .map_err(pg)
    }

    fn api_key_from_row(r: &PgRow) -> Result<ApiKeyRecord, sqlx::Error> {
        Ok(ApiKeyRecord {
            key_id: r.try_get("key_id")?,
            user_id: r.try_get("user_id")?,
            account_id: r.try_get("account_id")?,
            secret_hash: r.try_get("secret_hash")?,
            created_at: r.try_get("created_at")?,
            revoked: r
                .try_get::<Option<DateTime<Utc>>, _>("revoked_at")?
                .is_some(),
        })
    }

    pub async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, DependencyError> {
        let row = sqlx::query("SELECT key_id, user_id, account_id, secret_hash, created_at, revoked_at FROM api_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        row.as_ref()
            .map(Self::api_key_from_row)
            .transpose()
            .map_err(pg)
    }

    pub async fn api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKeyRecord>, DependencyError> {
        let rows = sqlx::query(
            "SELECT key_id, user_id, account_id, secret_hash, created_at, revoked_at FROM api_keys \
             WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        rows.iter()
            .map(Self::api_key_from_row)
            .collect::<Result<_, _>>()
            .map_err(pg)
    }

    /// Revokes a key of `user_id`; false when the user has no such live key.
    pub async fn revoke_api_key(
        &self,
        user_id: Uuid,
        key_id: &str,
    ) -> Result<bool, DependencyError> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(key_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(r.rows_affected() == 1)
    }

    // ---- reads ---------------------------------------------------------------------------

    pub async fn account(
        &self,
        account_id: Uuid,
    ) -> Result<Option<AccountRecord>, DependencyError> {
        let row = sqlx::query(
            "SELECT id, account_number, currency, initial_cash, cash, realized_pnl, fees_paid, created_at FROM accounts WHERE id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)?;
        row.map(|r| {
            Ok(AccountRecord {
                id: r.try_get("id")?,
                account_number: r.try_get("account_number")?,
                currency: r.try_get("currency")?,
                initial_cash: r.try_get("initial_cash")?,
                cash: r.try_get("cash")?,
                realized_pnl: r.try_get("realized_pnl")?,
                fees_paid: r.try_get("fees_paid")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
        .map_err(pg)
    }

    pub async fn order(
        &self,
        account_id: Uuid,
        order_id: Uuid,
    ) -> Result<Option<Order>, DependencyError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account_id = $2");
        let row = sqlx::query(&sql)
            .bind(order_id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        row.as_ref().map(order_from_row).transpose().map_err(pg)
    }

    pub async fn order_by_client_order_id(
        &self,
        account_id: Uuid,
        client_order_id: &str,
    ) -> Result<Option<Order>, DependencyError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 AND client_order_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(account_id)
            .bind(client_order_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        row.as_ref().map(order_from_row).transpose().map_err(pg)
    }

    pub async fn orders(
        &self,
        account_id: Uuid,
        q: &OrderQuery,
    ) -> Result<Vec<Order>, DependencyError> {
        let status_clause = match q.status {
            StatusFilter::Open => format!("AND status IN {OPEN_STATUSES}"),
            StatusFilter::Closed => format!("AND status NOT IN {OPEN_STATUSES}"),
            StatusFilter::All => String::new(),
        };
        let dir = if q.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 {status_clause} \
             AND ($2::timestamptz IS NULL OR submitted_at > $2) AND ($3::timestamptz IS NULL OR submitted_at < $3) \
             AND ($4::text[] IS NULL OR symbol = ANY($4)) \
             ORDER BY submitted_at {dir}, id {dir} LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .bind(q.after)
            .bind(q.until)
            .bind(q.symbols.clone())
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await
            .map_err(pg)?;
        rows.iter()
            .map(order_from_row)
            .collect::<Result<_, _>>()
            .map_err(pg)
    }

    /// Open positions (quantity not zero), by symbol.
    pub async fn positions(
        &self,
        account_id: Uuid,
    ) -> Result<Vec<PositionRecord>, DependencyError> {
        let rows = sqlx::query(
            "SELECT symbol, asset_id, qty, avg_entry_price, realized_pnl FROM positions WHERE account_id = $1 AND qty <> 0 ORDER BY symbol",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        rows.iter()
            .map(position_from_row)
            .collect::<Result<_, _>>()
            .map_err(pg)
    }

    pub async fn position(
        &self,
        account_id: Uuid,
        symbol: &str,
    ) -> Result<Option<PositionRecord>, DependencyError> {
        let row = sqlx::query(
            "SELECT symbol, asset_id, qty, avg_entry_price, realized_pnl FROM positions WHERE account_id = $1 AND symbol = $2 AND qty <> 0",
        )
        .bind(account_id)
        .bind(symbol)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)?;
        row.as_ref().map(position_from_row).transpose().map_err(pg)
    }

    /// Notional of open buy orders at their limits (cash they hold back, before fees).
    pub async fn open_buy_notional(&self, account_id: Uuid) -> Result<Decimal, DependencyError> {
        sqlx::query_scalar(&format!(
            "SELECT coalesce(sum((qty - filled_qty) * limit_price), 0) FROM orders WHERE account_id = $1 AND side = 'buy' \
             AND limit_price IS NOT NULL AND qty IS NOT NULL AND status IN {OPEN_STATUSES}"
        ))
        .bind(account_id)
        .fetch_one(&self.pool)
        .await
        .map_err(pg)
    }

    /// Quantity held by open sell orders, per symbol (for `qty_available`).
    pub async fn held_for_sells(
        &self,
        account_id: Uuid,
    ) -> Result<Vec<(String, Decimal)>, DependencyError> {
        let rows = sqlx::query(&format!(
            "SELECT symbol, sum(qty - filled_qty) AS held FROM orders WHERE account_id = $1 AND side = 'sell' \
             AND qty IS NOT NULL AND status IN {OPEN_STATUSES} GROUP BY symbol"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((r.try_get("symbol")?, r.try_get("held")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(pg)
    }

    pub async fn fills(
        &self,
        account_id: Uuid,
        q: &FillQuery,
    ) -> Result<Vec<FillRecord>, DependencyError> {
        let (dir, cmp) = if q.ascending {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        let sql = format!(
            "SELECT f.id, f.order_id, f.symbol, f.side, f.qty, f.price, f.fee, f.realized_pnl, f.cum_qty, f.leaves_qty, f.transaction_time \
             FROM fills f WHERE f.account_id = $1 \
             AND ($2::timestamptz IS NULL OR f.transaction_time > $2) AND ($3::timestamptz IS NULL OR f.transaction_time < $3) \
             AND ($4::uuid IS NULL OR (f.transaction_time, f.id) {cmp} (SELECT transaction_time, id FROM fills WHERE id = $4 AND account_id = $1)) \
             ORDER BY f.transaction_time {dir}, f.id {dir} LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .bind(q.after)
            .bind(q.until)
            .bind(q.page_token)
            .bind(q.page_size)
            .fetch_all(&self.pool)
            .await
            .map_err(pg)?;
        rows.iter()
            .map(fill_from_row)
            .collect::<Result<_, _>>()
            .map_err(pg)
    }

    // ---- writes of the executor -------------------------------------------------------------

    /// Applies one place-order command in its own transaction, idempotent on `command_id`.
    pub async fn place_order(
        &self,
        command_id: Uuid,
        order: &NewOrder,
        inst: &Instrument,
        quote: Option<&Quote>,
        now_ms: i64,
        params: &ExecutionParams,
    ) -> Result<ExecOutcome, DependencyError> {
        let cmd = Command::PlaceOrder {
            command_id,
            order: order.clone(),
        };
        let input = CommandInput {
            command: &cmd,
            instrument: Some(inst),
            quote,
        };
        let mut out = self.apply_commands(&[input], now_ms, params).await?;
        Ok(out.remove(0))
    }

    /// Applies one cancel command in its own transaction: an open order becomes `canceled`;
    /// anything else is left as it is.
    pub async fn cancel_order(
        &self,
        command_id: Uuid,
        account_id: Uuid,
        order_id: Uuid,
    ) -> Result<ExecOutcome, DependencyError> {
        let cmd = Command::CancelOrder {
            command_id,
            account_id,
            order_id,
        };
        let input = CommandInput {
            command: &cmd,
            instrument: None,
            quote: None,
        };
        let mut out = self
            .apply_commands(&[input], 0, &ExecutionParams::default())
            .await?;
        Ok(out.remove(0))
    }

    /// Applies commands in order in ONE transaction (the executor passes one message group,
    /// i.e. one account's commands, at a time): either all take effect or none does. Each is
    /// idempotent on its command id, and costs three round trips: one statement that records
    /// the command and locks the account row, one that reads the account's state, one that
    /// writes the effects (order, fill, position, cash).
    pub async fn apply_commands(
        &self,
        commands: &[CommandInput<'_>],
        now_ms: i64,
        params: &ExecutionParams,
    ) -> Result<Vec<ExecOutcome>, DependencyError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        let mut outcomes = Vec::with_capacity(commands.len());
        for input in commands {
            let outcome = match input.command {
                Command::PlaceOrder { command_id, order } => {
                    place_in_tx(
                        &mut tx,
                        *command_id,
                        order,
                        input.instrument,
                        input.quote,
                        now_ms,
                        params,
                    )
                    .await?
                }
                Command::CancelOrder {
                    command_id,
                    account_id,
                    order_id,
                } => cancel_in_tx(&mut tx, *command_id, *account_id, *order_id).await?,
            };
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(pg)?;
        Ok(outcomes)
    }
}

/// A command with what the executor looked up for it beforehand.
pub struct CommandInput<'a> {
    pub command: &'a Command,
    /// The order's instrument (place commands); `None` rejects the order as unknown.
    pub instrument: Option<&'a Instrument>,
    /// The latest cached quote of the order's symbol, if any.
    pub quote: Option<&'a Quote>,
}

async fn order_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    account_id: Uuid,
    order_id: Uuid,
) -> Result<Option<Order>, DependencyError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account_id = $2");
    let row = sqlx::query(&sql)
        .bind(order_id)
        .bind(account_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(pg)?;
    row.as_ref().map(order_from_row).transpose().map_err(pg)
}

/// Records the command and reads, under the account's row lock, everything the decision
/// needs: cash, what open orders hold, and the position. `None` for a redelivered command;
/// `Some(None)` when the account does not exist.
async fn record_and_read(
    tx: &mut Transaction<'_, Postgres>,
    command_id: Uuid,
    order: &NewOrder,
) -> Result<Option<Option<(Decimal, Decimal, Decimal, Position)>>, DependencyError> {
    // Every writer of an account's orders, positions and cash locks the account row first.
    // The lock is taken in a statement of its own: a statement's snapshot is fixed when it
    // starts, so reads in the statement that waited for the lock could miss the changes of the
    // transaction it waited for. The next statement's snapshot sees them.
    let row = sqlx::query(
        "WITH cmd AS (
             INSERT INTO processed_commands (command_id, account_id, kind) VALUES ($1, $2, 'place_order')
             ON CONFLICT DO NOTHING RETURNING command_id)
         SELECT EXISTS (SELECT 1 FROM cmd) AS fresh,
                (SELECT cash FROM accounts WHERE id = $2 AND EXISTS (SELECT 1 FROM cmd) FOR UPDATE) AS cash",
    )
    .bind(command_id)
    .bind(order.account_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(pg)?;
    let fresh: bool = row.try_get("fresh").map_err(pg)?;
    if !fresh {
        return Ok(None);
    }
    let Some(cash) = row.try_get::<Option<Decimal>, _>("cash").map_err(pg)? else {
        return Ok(Some(None));
    };
    let row = sqlx::query(&format!(
        "SELECT (SELECT coalesce(sum((qty - filled_qty) * limit_price) FILTER (WHERE side = 'buy'), 0)
                   FROM orders WHERE account_id = $1 AND status IN {OPEN_STATUSES} AND qty IS NOT NULL) AS buy_notional,
                (SELECT coalesce(sum(qty - filled_qty), 0) FROM orders
                   WHERE account_id = $1 AND side = 'sell' AND symbol = $2 AND status IN {OPEN_STATUSES} AND qty IS NOT NULL) AS sell_qty,
                p.qty, p.avg_entry_price, p.realized_pnl
         FROM (SELECT 1) AS one LEFT JOIN positions p ON p.account_id = $1 AND p.symbol = $2"
    ))
    .bind(order.account_id)
    .bind(&order.symbol)
    .fetch_one(&mut **tx)
    .await
    .map_err(pg)?;
    let position = match row.try_get::<Option<Decimal>, _>("qty").map_err(pg)? {
        Some(qty) => Position {
            qty,
            avg_entry_price: row.try_get("avg_entry_price").map_err(pg)?,
            realized_pnl: row.try_get("realized_pnl").map_err(pg)?,
        },
        None => Position::default(),
    };
    let buy_notional: Decimal = row.try_get("buy_notional").map_err(pg)?;
    let sell_qty: Decimal = row.try_get("sell_qty").map_err(pg)?;
    Ok(Some(Some((cash, buy_notional, sell_qty, position))))
}

async fn place_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    command_id: Uuid,
    order: &NewOrder,
    inst: Option<&Instrument>,
    quote: Option<&Quote>,
    now_ms: i64,
    params: &ExecutionParams,
) -> Result<ExecOutcome, DependencyError> {
    let (cash, buy_notional, sell_qty, mut position) = match record_and_read(tx, command_id, order)
        .await?
    {
        None => {
            return Ok(ExecOutcome {
                order: order_in_tx(tx, order.account_id, order.id).await?,
                fill: None,
                duplicate: true,
            });
        }
        Some(None) => {
            // A command for an account that does not exist cannot apply; it stays recorded so
            // that a redelivery does not try again.
            tracing::error!(account_id = %order.account_id, order_id = %order.id, "place_order for unknown account dropped");
            return Ok(ExecOutcome {
                order: None,
                fill: None,
                duplicate: false,
            });
        }
        Some(Some(state)) => state,
    };
    let state = AccountState {
        cash,
        reserved_cash: buy_notional + accounting::fee(buy_notional, params.fee_bps),
        position_qty: position.qty,
        reserved_qty: sell_qty,
    };
    let decision = match inst {
        Some(inst) => decide(order, inst, quote, now_ms, &state, params),
        None => Decision::Reject(domain::RuleViolation::new(
            "unknown_symbol",
            format!("{} is not a known instrument", order.symbol),
        )),
    };
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
    let mut stored = order.pending();
    stored.created_at = now;
    stored.updated_at = now;
    let fill = match decision {
        Decision::Fill { qty, price, fee } => {
            let effect = position
                .apply(&accounting::Fill {
                    side: order.side,
                    qty,
                    price,
                    fee,
                })
                .map_err(|e| DependencyError {
                    dependency: "ledger",
                    detail: e.to_string(),
                })?;
            stored.status = OrderStatus::Filled;
            stored.filled_qty = qty;
            stored.filled_avg_price = Some(price);
            stored.filled_at = Some(now);
            // A notional order's quantity is known once it fills.
            stored.qty.get_or_insert(qty);
            Some((
                FillRecord {
                    id: Uuid::new_v4(),
                    order_id: order.id,
                    symbol: order.symbol.clone(),
                    side: order.side,
                    qty,
                    price,
                    fee,
                    realized_pnl: effect.realized_pnl,
                    cum_qty: qty,
                    leaves_qty: Decimal::ZERO,
                    transaction_time: now,
                },
                effect.cash_delta,
            ))
        }
        Decision::Rest { qty } => {
            stored.status = OrderStatus::New;
            stored.qty = Some(qty);
            None
        }
        Decision::Cancel { reason } => {
            stored.status = OrderStatus::Canceled;
            stored.canceled_at = Some(now);
            stored.reject_reason = Some(reason);
            None
        }
        Decision::Reject(v) => {
            stored.status = OrderStatus::Rejected;
            stored.failed_at = Some(now);
            stored.reject_reason = Some(v.to_string());
            None
        }
    };
    match &fill {
        None => insert_order(tx, &stored).await?,
        Some((f, cash_delta)) => {
            write_fill(tx, &stored, order.asset_id, f, *cash_delta, &position).await?
        }
    }
    Ok(ExecOutcome {
        order: Some(stored),
        fill: fill.map(|(f, _)| f),
        duplicate: false,
    })
}

async fn cancel_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    command_id: Uuid,
    account_id: Uuid,
    order_id: Uuid,
) -> Result<ExecOutcome, DependencyError> {
    if !record_command(tx, command_id, account_id, "cancel_order").await? {
        return Ok(ExecOutcome {
            order: order_in_tx(tx, account_id, order_id).await?,
            fill: None,
            duplicate: true,
        });
    }
    let sql = format!(
        "UPDATE orders SET status = 'canceled', canceled_at = now(), updated_at = now() \
         WHERE id = $1 AND account_id = $2 AND status IN {OPEN_STATUSES} RETURNING {ORDER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(order_id)
        .bind(account_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(pg)?;
    let order = row.as_ref().map(order_from_row).transpose().map_err(pg)?;
    Ok(ExecOutcome {
        order,
        fill: None,
        duplicate: false,
    })
}

/// Writes a filled order, its fill, the position and the account's cash in one statement.
async fn write_fill(
    tx: &mut Transaction<'_, Postgres>,
    o: &Order,
    asset_id: Uuid,
    f: &FillRecord,
    cash_delta: Decimal,
    position: &Position,
) -> Result<(), DependencyError> {
    sqlx::query(
        "WITH ord AS (
             INSERT INTO orders (id, client_order_id, account_id, created_at, updated_at, submitted_at, filled_at, canceled_at, failed_at,
               asset_id, symbol, notional, qty, filled_qty, filled_avg_price, order_type, side, time_in_force, limit_price, status, reject_reason)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21) RETURNING id),
         fill AS (
             INSERT INTO fills (id, account_id, order_id, symbol, side, qty, price, fee, realized_pnl, cum_qty, leaves_qty, transaction_time)
             SELECT $22, $3, ord.id, $11, $17, $23, $24, $25, $26, $27, $28, $4 FROM ord RETURNING id),
         pos AS (
             INSERT INTO positions (account_id, symbol, asset_id, qty, avg_entry_price, realized_pnl, updated_at)
             VALUES ($3, $11, $10, $29, $30, $31, $4)
             ON CONFLICT (account_id, symbol) DO UPDATE SET qty = $29, avg_entry_price = $30, realized_pnl = $31, updated_at = $4
             RETURNING 1)
         UPDATE accounts SET cash = cash + $32, realized_pnl = realized_pnl + $26, fees_paid = fees_paid + $25, updated_at = $4
         WHERE id = $3 AND EXISTS (SELECT 1 FROM fill) AND EXISTS (SELECT 1 FROM pos)",
    )
    .bind(o.id)
    .bind(&o.client_order_id)
    .bind(o.account_id)
    .bind(o.created_at)
    .bind(o.updated_at)
    .bind(o.submitted_at)
    .bind(o.filled_at)
    .bind(o.canceled_at)
    .bind(o.failed_at)
    .bind(asset_id)
    .bind(&o.symbol)
    .bind(o.notional)
    .bind(o.qty)
    .bind(o.filled_qty)
    .bind(o.filled_avg_price)
    .bind(o.order_type.as_str())
    .bind(o.side.as_str())
    .bind(o.time_in_force.as_str())
    .bind(o.limit_price)
    .bind(o.status.as_str())
    .bind(&o.reject_reason)
    .bind(f.id)
    .bind(f.qty)
    .bind(f.price)
    .bind(f.fee)
    .bind(f.realized_pnl)
    .bind(f.cum_qty)
    .bind(f.leaves_qty)
    .bind(position.qty)
    .bind(position.avg_entry_price)
    .bind(position.realized_pnl)
    .bind(cash_delta)
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}

fn position_from_row(r: &PgRow) -> Result<PositionRecord, sqlx::Error> {
    Ok(PositionRecord {
        symbol: r.try_get("symbol")?,
        asset_id: r.try_get("asset_id")?,
        position: Position {
            qty: r.try_get("qty")?,
            avg_entry_price: r.try_get("avg_entry_price")?,
            realized_pnl: r.try_get("realized_pnl")?,
        },
    })
}

/// Records a command id; false when it was recorded before (a redelivery).
async fn record_command(
    tx: &mut Transaction<'_, Postgres>,
    command_id: Uuid,
    account_id: Uuid,
    kind: &str,
) -> Result<bool, DependencyError> {
    let r = sqlx::query("INSERT INTO processed_commands (command_id, account_id, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(command_id)
        .bind(account_id)
        .bind(kind)
        .execute(&mut **tx)
        .await
        .map_err(pg)?;
    Ok(r.rows_affected() == 1)
}

async fn insert_order(
    tx: &mut Transaction<'_, Postgres>,
    o: &Order,
) -> Result<(), DependencyError> {
    sqlx::query(
        "INSERT INTO orders (id, client_order_id, account_id, created_at, updated_at, submitted_at, filled_at, canceled_at, failed_at, \
         asset_id, symbol, notional, qty, filled_qty, filled_avg_price, order_type, side, time_in_force, limit_price, status, reject_reason) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)",
    )
    .bind(o.id)
    .bind(&o.client_order_id)
    .bind(o.account_id)
    .bind(o.created_at)
    .bind(o.updated_at)
    .bind(o.submitted_at)
    .bind(o.filled_at)
    .bind(o.canceled_at)
    .bind(o.failed_at)
    .bind(o.asset_id)
    .bind(&o.symbol)
    .bind(o.notional)
    .bind(o.qty)
    .bind(o.filled_qty)
    .bind(o.filled_avg_price)
    .bind(o.order_type.as_str())
    .bind(o.side.as_str())
    .bind(o.time_in_force.as_str())
    .bind(o.limit_price)
    .bind(o.status.as_str())
    .bind(&o.reject_reason)
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}
