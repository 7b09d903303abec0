//! The ledger (PostgreSQL / Aurora): users, accounts, API keys, orders, immutable fills,
//! positions and processed commands. The api reads it and writes only identities; the
//! executor is the only writer of orders, fills, positions and cash.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::accounting::Position;
use domain::engine::Book;
use domain::order::{
    LegRole, Order, OrderClass, OrderRef, OrderStatus, OrderType, Side, TimeInForce, Trail,
};
use rust_decimal::Decimal;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::DependencyError;

mod dead_letters;
mod execute;
mod retention;
mod risk;

pub use dead_letters::DeadLetter;
pub use execute::BatchResult;
pub use retention::Pruned;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../infra/migrations");

#[derive(Clone)]
pub struct Ledger {
    pool: PgPool,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserCredentials {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    /// Selected as `revoked_at IS NOT NULL AS revoked`.
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    /// Alpaca's `nested`: legs inside their parent instead of listed on their own.
    pub nested: bool,
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
    "('new','partially_filled','accepted','pending_new','pending_cancel','pending_replace','held')";
const ORDER_COLUMNS: &str = "id, client_order_id, account_id, created_at, updated_at, submitted_at, filled_at, \
     canceled_at, failed_at, asset_id, symbol, notional, qty, filled_qty, filled_avg_price, order_type, side, \
     time_in_force, limit_price, status, reject_reason, order_class, stop_price, trail_price, trail_percent, hwm, \
     parent_id, leg_role, triggered_at, expires_at, expired_at, replaced_at, replaced_by, replaces";

fn pg(e: sqlx::Error) -> DependencyError {
    DependencyError::postgres_statement(e)
}

fn orders_from_rows(rows: &[PgRow]) -> Result<Vec<Order>, DependencyError> {
    rows.iter()
        .map(order_from_row)
        .collect::<Result<_, _>>()
        .map_err(pg)
}

/// Nests in `order` its legs found among `candidates` (legs point at their parent).
fn nest_legs(order: &mut Order, candidates: &[Order]) {
    order.legs = candidates
        .iter()
        .filter(|l| l.parent_id == Some(order.id))
        .cloned()
        .collect();
}

/// An `orders` row as stored: enumerations as their text, the trail in two columns.
#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    client_order_id: String,
    account_id: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    submitted_at: DateTime<Utc>,
    filled_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    asset_id: Uuid,
    symbol: String,
    notional: Option<Decimal>,
    qty: Option<Decimal>,
    filled_qty: Decimal,
    filled_avg_price: Option<Decimal>,
    order_type: String,
    side: String,
    time_in_force: String,
    limit_price: Option<Decimal>,
    status: String,
    reject_reason: Option<String>,
    order_class: String,
    stop_price: Option<Decimal>,
    trail_price: Option<Decimal>,
    trail_percent: Option<Decimal>,
    hwm: Option<Decimal>,
    parent_id: Option<Uuid>,
    leg_role: Option<String>,
    triggered_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    expired_at: Option<DateTime<Utc>>,
    replaced_at: Option<DateTime<Utc>>,
    replaced_by: Option<Uuid>,
    replaces: Option<Uuid>,
}

fn order_from_row(r: &PgRow) -> Result<Order, sqlx::Error> {
    let row = OrderRow::from_row(r)?;
    let bad = |name: &str, v: &str| {
        sqlx::Error::Decode(format!("orders.{name}: unexpected value '{v}'").into())
    };
    Ok(Order {
        order_type: OrderType::parse(&row.order_type)
            .ok_or_else(|| bad("order_type", &row.order_type))?,
        side: Side::parse(&row.side).ok_or_else(|| bad("side", &row.side))?,
        time_in_force: TimeInForce::parse(&row.time_in_force)
            .ok_or_else(|| bad("time_in_force", &row.time_in_force))?,
        status: OrderStatus::parse(&row.status).ok_or_else(|| bad("status", &row.status))?,
        order_class: OrderClass::parse(&row.order_class)
            .ok_or_else(|| bad("order_class", &row.order_class))?,
        trail: match (row.trail_price, row.trail_percent) {
            (Some(p), _) => Some(Trail::Price(p)),
            (None, Some(p)) => Some(Trail::Percent(p)),
            _ => None,
        },
        leg_role: match row.leg_role.as_deref() {
            Some("take_profit") => Some(LegRole::TakeProfit),
            Some("stop_loss") => Some(LegRole::StopLoss),
            Some(other) => return Err(bad("leg_role", other)),
            None => None,
        },
        id: row.id,
        client_order_id: row.client_order_id,
        account_id: row.account_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        submitted_at: row.submitted_at,
        filled_at: row.filled_at,
        canceled_at: row.canceled_at,
        failed_at: row.failed_at,
        asset_id: row.asset_id,
        symbol: row.symbol,
        notional: row.notional,
        qty: row.qty,
        filled_qty: row.filled_qty,
        filled_avg_price: row.filled_avg_price,
        limit_price: row.limit_price,
        reject_reason: row.reject_reason,
        stop_price: row.stop_price,
        hwm: row.hwm,
        parent_id: row.parent_id,
        triggered_at: row.triggered_at,
        expires_at: row.expires_at,
        expired_at: row.expired_at,
        replaced_at: row.replaced_at,
        replaced_by: row.replaced_by,
        replaces: row.replaces,
        legs: Vec::new(),
    })
}

/// A `fills` row as stored: the side as its text.
#[derive(sqlx::FromRow)]
struct FillRow {
    id: Uuid,
    order_id: Uuid,
    symbol: String,
    side: String,
    qty: Decimal,
    price: Decimal,
    fee: Decimal,
    realized_pnl: Decimal,
    cum_qty: Decimal,
    leaves_qty: Decimal,
    transaction_time: DateTime<Utc>,
}

fn fill_from_row(r: &PgRow) -> Result<FillRecord, sqlx::Error> {
    let row = FillRow::from_row(r)?;
    Ok(FillRecord {
        side: Side::parse(&row.side)
            .ok_or_else(|| sqlx::Error::Decode(format!("fills.side '{}'", row.side).into()))?,
        id: row.id,
        order_id: row.order_id,
        symbol: row.symbol,
        qty: row.qty,
        price: row.price,
        fee: row.fee,
        realized_pnl: row.realized_pnl,
        cum_qty: row.cum_qty,
        leaves_qty: row.leaves_qty,
        transaction_time: row.transaction_time,
    })
}

impl Ledger {
    /// A pool that connects on first use (lean Lambda init) and fails fast when Postgres is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Ledger, DependencyError> {
        crate::tls::install_crypto_provider();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            // A failed query already tells a broken connection; a ping per checkout would
            // add a round trip to every request.
            .test_before_acquire(false)
            .connect_lazy(url)
            .map_err(pg)?;
        Ok(Ledger { pool })
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
            account_id
                .simple()
                .to_string()
                .chars()
                .take(10)
                .collect::<String>()
                .to_uppercase()
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
        row.as_ref()
            .map(UserCredentials::from_row)
            .transpose()
            .map_err(pg)
    }

    pub async fn credentials_by_user(
        &self,
        user_id: Uuid,
    ) -> Result<Option<UserCredentials>, DependencyError> {
        sqlx::query_as(
            "SELECT u.id AS user_id, a.id AS account_id, u.password_hash FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)
    }

    /// Replaces the user's password hash; false when there is no such user.
    pub async fn set_password_hash(
        &self,
        user_id: Uuid,
        password_hash: &str,
    ) -> Result<bool, DependencyError> {
        self.changed_one(
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(user_id)
                .bind(password_hash),
        )
        .await
    }

    /// Runs one statement; whether it changed exactly one row.
    pub(crate) async fn changed_one(
        &self,
        statement: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<bool, DependencyError> {
        let done = statement.execute(&self.pool).await.map_err(pg)?;
        Ok(done.rows_affected() == 1)
    }

    /// A transaction holding the advisory lock of `(scope, id)` until it ends: what runs in
    /// it runs one at a time per id (a count checked against a cap, then an insert).
    pub(crate) async fn serialized(
        &self,
        scope: &str,
        id: Uuid,
    ) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, DependencyError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2::text, 0))")
            .bind(scope)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        Ok(tx)
    }

    /// A new API key, unless the user has `max_live` live keys already (then `None`).
    /// Creations for one user are serialized by a transaction-scoped advisory lock, so
    /// concurrent ones cannot pass the cap together.
    pub async fn insert_api_key_capped(
        &self,
        key_id: &str,
        user_id: Uuid,
        account_id: Uuid,
        secret_hash: &str,
        max_live: i64,
    ) -> Result<Option<DateTime<Utc>>, DependencyError> {
        let mut tx = self.serialized("api_keys", user_id).await?;
        let created: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO api_keys (key_id, user_id, account_id, secret_hash)
             SELECT $1, $2, $3, $4
             WHERE (SELECT count(*) FROM api_keys WHERE user_id = $2 AND revoked_at IS NULL) < $5
             RETURNING created_at",
        )
        .bind(key_id)
        .bind(user_id)
        .bind(account_id)
        .bind(secret_hash)
        .bind(max_live)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
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

    /// Revokes every live key of the user; returns the ids revoked.
    pub async fn revoke_api_keys(&self, user_id: Uuid) -> Result<Vec<String>, DependencyError> {
        sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL RETURNING key_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)
    }

    fn api_key_from_row(r: &PgRow) -> Result<ApiKeyRecord, sqlx::Error> {
        ApiKeyRecord::from_row(r)
    }

    pub async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, DependencyError> {
        let row = sqlx::query("SELECT key_id, user_id, account_id, secret_hash, created_at, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE key_id = $1")
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
            "SELECT key_id, user_id, account_id, secret_hash, created_at, revoked_at IS NOT NULL AS revoked FROM api_keys \
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
        self.changed_one(
            sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND user_id = $2 AND revoked_at IS NULL")
                .bind(key_id)
                .bind(user_id),
        )
        .await
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
        row.as_ref()
            .map(AccountRecord::from_row)
            .transpose()
            .map_err(pg)
    }

    pub async fn order(&self, order: OrderRef) -> Result<Option<Order>, DependencyError> {
        let OrderRef {
            account_id,
            order_id,
        } = order;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account_id = $2");
        let row = sqlx::query(&sql)
            .bind(order_id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        self.one_with_legs(row).await
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
        self.one_with_legs(row).await
    }

    /// The order of `row`, if any, with its legs.
    async fn one_with_legs(&self, row: Option<PgRow>) -> Result<Option<Order>, DependencyError> {
        let orders = orders_from_rows(row.as_slice())?;
        Ok(self.with_legs(orders).await?.pop())
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
        // Nested: legs appear inside their parent only; flat: every order on its own.
        let nested_clause = if q.nested {
            "AND parent_id IS NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 {status_clause} \
             AND ($2::timestamptz IS NULL OR submitted_at > $2) AND ($3::timestamptz IS NULL OR submitted_at < $3) \
             AND ($4::text[] IS NULL OR symbol = ANY($4)) {nested_clause} \
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
        let orders = orders_from_rows(&rows)?;
        if q.nested {
            self.with_legs(orders).await
        } else {
            Ok(orders)
        }
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

    /// Open orders of an account (legs held for their parent included), flat.
    pub async fn open_orders(&self, account_id: Uuid) -> Result<Vec<Order>, DependencyError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 AND status IN {OPEN_STATUSES}"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        orders_from_rows(&rows)
    }

    /// Every live resting order of every account (what the trigger index is rebuilt from).
    pub async fn live_orders(&self) -> Result<Vec<Order>, DependencyError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status IN ('new', 'partially_filled') AND order_type <> 'market'"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        orders_from_rows(&rows)
    }

    /// The legs of the given parent orders, in leg order.
    pub async fn legs_of(&self, parents: &[Uuid]) -> Result<Vec<Order>, DependencyError> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE parent_id = ANY($1) ORDER BY parent_id, leg_role"
        ))
        .bind(parents)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        orders_from_rows(&rows)
    }

    /// Nests the legs of every parent among `orders` (as Alpaca shows them).
    pub async fn with_legs(&self, mut orders: Vec<Order>) -> Result<Vec<Order>, DependencyError> {
        let parents: Vec<Uuid> = orders
            .iter()
            .filter(|o| o.order_class != OrderClass::Simple && o.parent_id.is_none())
            .map(|o| o.id)
            .collect();
        let legs = self.legs_of(&parents).await?;
        for o in &mut orders {
            nest_legs(o, &legs);
        }
        Ok(orders)
    }

    /// The account as the order state machine sees it: cash, positions and open orders.
    /// Reservations (buying power, quantity available) come from the same rules the
    /// executor applies.
    pub async fn book(&self, account_id: Uuid) -> Result<Option<Book>, DependencyError> {
        // Independent reads, on as many pooled connections: one round trip's wait, not four.
        let (account, positions, open, risk) = tokio::try_join!(
            self.account(account_id),
            self.positions(account_id),
            self.open_orders(account_id),
            self.risk(account_id),
        )?;
        let Some(account) = account else {
            return Ok(None);
        };
        let mut book = assemble(account_id, account.cash, &positions, open);
        if let Some(risk) = risk {
            book.risk = risk;
        }
        Ok(Some(book))
    }

    /// [`Ledger::book`] from cash and positions the caller has already read: only the open
    /// orders are read here.
    pub async fn book_of(
        &self,
        account_id: Uuid,
        cash: Decimal,
        positions: &[PositionRecord],
    ) -> Result<Book, DependencyError> {
        let open = self.open_orders(account_id).await?;
        Ok(assemble(account_id, cash, positions, open))
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
}

/// A book from what was read: cash, positions and open orders.
fn assemble(
    account_id: Uuid,
    cash: Decimal,
    positions: &[PositionRecord],
    open: Vec<Order>,
) -> Book {
    let mut book = Book::new(account_id, cash);
    for p in positions {
        book.positions
            .insert(p.symbol.clone(), (p.asset_id, p.position.clone()));
    }
    for o in open {
        book.load(o);
    }
    book
}

/// A `positions` row.
#[derive(sqlx::FromRow)]
struct PositionRow {
    symbol: String,
    asset_id: Uuid,
    qty: Decimal,
    avg_entry_price: Decimal,
    realized_pnl: Decimal,
}

fn position_from_row(r: &PgRow) -> Result<PositionRecord, sqlx::Error> {
    let row = PositionRow::from_row(r)?;
    Ok(PositionRecord {
        symbol: row.symbol,
        asset_id: row.asset_id,
        position: Position {
            qty: row.qty,
            avg_entry_price: row.avg_entry_price,
            realized_pnl: row.realized_pnl,
        },
    })
}
