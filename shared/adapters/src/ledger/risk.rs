//! Risk limits and the kill switch in the ledger. The api writes the limits and trips or
//! resets the switch by hand; the executor reads them under the account lock and trips the
//! switch when the daily loss limit is reached, in the transaction of the fill that
//! reached it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::risk::{day_start, Kill, RiskLimits, RiskState};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use super::{pg, Ledger};
use crate::error::DependencyError;

/// The account columns and its limits (a LEFT JOIN of `risk_limits r`: no row means the
/// defaults).
pub(super) const RISK_COLUMNS: &str = "a.killed_at, a.kill_reason, r.account_id AS risk_account, \
    r.max_order_notional, r.max_position_notional, r.max_open_orders, r.max_gross_leverage, \
    r.daily_loss_limit, r.flatten_on_kill";

pub(super) fn limits_from_row(r: &PgRow) -> Result<RiskLimits, sqlx::Error> {
    let present: Option<Uuid> = r.try_get("risk_account")?;
    if present.is_none() {
        return Ok(RiskLimits::default());
    }
    let open: Option<i32> = r.try_get("max_open_orders")?;
    Ok(RiskLimits {
        max_order_notional: r.try_get("max_order_notional")?,
        max_position_notional: r.try_get("max_position_notional")?,
        max_open_orders: open.map(|n| u32::try_from(n).unwrap_or(0)),
        max_gross_leverage: r.try_get("max_gross_leverage")?,
        daily_loss_limit: r.try_get("daily_loss_limit")?,
        flatten_on_kill: r.try_get("flatten_on_kill")?,
    })
}

pub(super) fn kill_from_row(r: &PgRow) -> Result<Option<Kill>, sqlx::Error> {
    let at: Option<DateTime<Utc>> = r.try_get("killed_at")?;
    let reason: Option<String> = r.try_get("kill_reason")?;
    Ok(at.map(|at| Kill {
        at,
        reason: reason.unwrap_or_default(),
    }))
}

/// Realized PnL (fees included) since the start of `now`'s UTC day, per account.
pub(super) async fn realized_today<'e>(
    db: impl PgExecutor<'e>,
    accounts: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, Decimal>, DependencyError> {
    if accounts.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT account_id, sum(realized_pnl) AS realized FROM fills
         WHERE account_id = ANY($1) AND transaction_time >= $2 GROUP BY account_id",
    )
    .bind(accounts)
    .bind(day_start(now))
    .fetch_all(db)
    .await
    .map_err(pg)?;
    rows.iter()
        .map(|r| Ok((r.try_get("account_id")?, r.try_get("realized")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(pg)
}

impl Ledger {
    /// The account's limits, kill switch and realized PnL of the day; `None` for an
    /// unknown account.
    pub async fn risk(&self, account_id: Uuid) -> Result<Option<RiskState>, DependencyError> {
        let sql = format!(
            "SELECT {RISK_COLUMNS} FROM accounts a LEFT JOIN risk_limits r ON r.account_id = a.id WHERE a.id = $1"
        );
        let row = async {
            sqlx::query(&sql)
                .bind(account_id)
                .fetch_optional(self.pool())
                .await
                .map_err(pg)
        };
        let accounts = [account_id];
        let (row, realized) =
            tokio::try_join!(row, realized_today(self.pool(), &accounts, Utc::now()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(RiskState {
            limits: limits_from_row(&row).map_err(pg)?,
            kill: kill_from_row(&row).map_err(pg)?,
            realized_today: realized.get(&account_id).copied().unwrap_or_default(),
            tripped: false,
        }))
    }

    /// Replaces the account's limits.
    pub async fn set_risk_limits(
        &self,
        account_id: Uuid,
        limits: &RiskLimits,
    ) -> Result<(), DependencyError> {
        sqlx::query(
            "INSERT INTO risk_limits (account_id, max_order_notional, max_position_notional, max_open_orders,
               max_gross_leverage, daily_loss_limit, flatten_on_kill, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now())
             ON CONFLICT (account_id) DO UPDATE SET max_order_notional = EXCLUDED.max_order_notional,
               max_position_notional = EXCLUDED.max_position_notional, max_open_orders = EXCLUDED.max_open_orders,
               max_gross_leverage = EXCLUDED.max_gross_leverage, daily_loss_limit = EXCLUDED.daily_loss_limit,
               flatten_on_kill = EXCLUDED.flatten_on_kill, updated_at = now()",
        )
        .bind(account_id)
        .bind(limits.max_order_notional)
        .bind(limits.max_position_notional)
        .bind(limits.max_open_orders.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
        .bind(limits.max_gross_leverage)
        .bind(limits.daily_loss_limit)
        .bind(limits.flatten_on_kill)
        .execute(self.pool())
        .await
        .map_err(pg)?;
        Ok(())
    }

    /// Turns the kill switch on (a switch already on keeps its time and reason) and
    /// returns it. Every executor batch after this commit sees it.
    pub async fn kill(&self, account_id: Uuid, reason: &str) -> Result<Kill, DependencyError> {
        let row = sqlx::query(
            "UPDATE accounts SET killed_at = COALESCE(killed_at, now()), kill_reason = COALESCE(kill_reason, $2)
             WHERE id = $1 RETURNING killed_at, kill_reason",
        )
        .bind(account_id)
        .bind(reason)
        .fetch_one(self.pool())
        .await
        .map_err(pg)?;
        kill_from_row(&row)
            .map_err(pg)?
            .ok_or_else(|| DependencyError::postgres("kill switch not set"))
    }

    /// Turns the kill switch off.
    pub async fn reset_kill(&self, account_id: Uuid) -> Result<(), DependencyError> {
        sqlx::query("UPDATE accounts SET killed_at = NULL, kill_reason = NULL WHERE id = $1")
            .bind(account_id)
            .execute(self.pool())
            .await
            .map_err(pg)?;
        Ok(())
    }
}

impl Ledger {
    /// The symbols the accounts hold a position in: their quotes mark the positions for the
    /// gross leverage limit and price a flatten.
    pub async fn held_symbols(&self, accounts: &[Uuid]) -> Result<Vec<String>, DependencyError> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT DISTINCT symbol FROM positions WHERE account_id = ANY($1) AND qty <> 0",
        )
        .bind(accounts)
        .fetch_all(self.pool())
        .await
        .map_err(pg)
    }
}
