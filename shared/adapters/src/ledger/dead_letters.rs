//! Commands the executor gave up on (`dead_letters`, migration 0005). The executor records a
//! command on its last delivery before SQS moves it to the dead-letter queue; the api shows
//! a dead-lettered place command as a `suspended` order with the reason, until a redrive
//! applies it and the ledger's order takes its place (readers prefer the ledger).

use chrono::{DateTime, Utc};
use domain::command::Command;
use domain::order::{NewOrder, Order, OrderRef};
use sqlx::Row;
use uuid::Uuid;

use super::{pg, Ledger};
use crate::error::DependencyError;

/// One command given up on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub command: Command,
    /// What the account is told.
    pub reason: String,
    /// What the operator is told: the error as the executor saw it.
    pub detail: String,
    /// The delivery that was the last (SQS's `ApproximateReceiveCount`).
    pub receive_count: i32,
}

/// The dead-lettered place commands of `$1` whose order the ledger does not hold, newest
/// first; `$2` narrows to one order.
const DEAD_ORDERS: &str = "SELECT d.command::text AS command, d.reason, d.dead_at \
     FROM dead_letters d \
     WHERE d.account_id = $1 AND d.kind = 'place_order' AND ($2::uuid IS NULL OR d.order_id = $2) \
     AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = d.order_id) \
     ORDER BY d.dead_at DESC LIMIT 500";

impl Ledger {
    /// Records the commands given up on, in one statement. A command recorded before (it
    /// was redriven and died again) gets the new reason and count.
    pub async fn record_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), DependencyError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(letters.len());
        let mut accounts = Vec::with_capacity(letters.len());
        let mut orders = Vec::with_capacity(letters.len());
        let mut kinds = Vec::with_capacity(letters.len());
        let mut bodies = Vec::with_capacity(letters.len());
        let mut reasons = Vec::with_capacity(letters.len());
        let mut details = Vec::with_capacity(letters.len());
        let mut counts = Vec::with_capacity(letters.len());
        for l in letters {
            ids.push(l.command.command_id());
            accounts.push(l.command.account_id());
            orders.push(Some(l.command.order_id()).filter(|id| !id.is_nil()));
            kinds.push(l.command.kind().to_string());
            bodies.push(serde_json::to_string(&l.command).map_err(DependencyError::postgres)?);
            reasons.push(l.reason.clone());
            details.push(l.detail.clone());
            counts.push(l.receive_count);
        }
        sqlx::query(
            "INSERT INTO dead_letters \
               (command_id, account_id, order_id, kind, command, reason, detail, receive_count) \
             SELECT id, account, ord, kind, body::jsonb, reason, detail, n \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::int4[]) AS t(id, account, ord, kind, body, reason, detail, n) \
             ON CONFLICT (command_id) DO UPDATE SET reason = EXCLUDED.reason, \
               detail = EXCLUDED.detail, receive_count = EXCLUDED.receive_count, dead_at = now()",
        )
        .bind(&ids)
        .bind(&accounts)
        .bind(&orders)
        .bind(&kinds)
        .bind(&bodies)
        .bind(&reasons)
        .bind(&details)
        .bind(&counts)
        .execute(self.pool())
        .await
        .map_err(pg)?;
        Ok(())
    }

    /// The account's orders whose place command is in the dead-letter queue (and not
    /// applied since), as `suspended` orders.
    pub async fn dead_orders(&self, account_id: Uuid) -> Result<Vec<Order>, DependencyError> {
        self.dead_orders_matching(account_id, None).await
    }

    /// One order of the account whose place command is in the dead-letter queue.
    pub async fn dead_order(&self, order: OrderRef) -> Result<Option<Order>, DependencyError> {
        let mut found = self
            .dead_orders_matching(order.account_id, Some(order.order_id))
            .await?;
        Ok(found.pop())
    }

    async fn dead_orders_matching(
        &self,
        account_id: Uuid,
        order_id: Option<Uuid>,
    ) -> Result<Vec<Order>, DependencyError> {
        let rows = sqlx::query(DEAD_ORDERS)
            .bind(account_id)
            .bind(order_id)
            .fetch_all(self.pool())
            .await
            .map_err(pg)?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in rows {
            let body: String = r.try_get("command").map_err(pg)?;
            let reason: String = r.try_get("reason").map_err(pg)?;
            let dead_at: DateTime<Utc> = r.try_get("dead_at").map_err(pg)?;
            // Written by the executor from a command it had parsed: anything else is not ours
            // to show (and must not hide the rest).
            if let Ok(Command::PlaceOrder { order, .. }) = serde_json::from_str::<Command>(&body) {
                let order: NewOrder = order;
                if order.account_id == account_id {
                    orders.push(order.suspended(dead_at, &reason));
                }
            }
        }
        Ok(orders)
    }
}
