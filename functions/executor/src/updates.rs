//! After a commit, what clients see live: each account's new cash and positions go to Redis
//! (the fan-out values them on every price), and each order's `trade_updates` events go to
//! every WebSocket connection of its account.
//!
//! Both are best effort: the ledger has committed, and a client that misses an event reads
//! the order over REST. A failure is logged, never retried into the SQS batch (which would
//! re-run a committed batch only to be dropped as duplicates).

use std::collections::HashMap;

use adapters::ledger::BatchResult;
use adapters::push::{PushError, Pusher};
use alpaca::{trade_updates, FillEvent};
use domain::order::Side;
use domain::realtime::{order_message, ConnectionChange};
use futures_util::future::join_all;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::Deps;

/// The `order` messages of a batch, per account, in the order they happened.
pub fn order_messages(
    result: &BatchResult,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(Uuid, String)> {
    // The position after each fill, walking back from the position after the batch.
    let mut position: HashMap<(Uuid, &str), Decimal> = HashMap::new();
    for s in &result.snapshots {
        for p in &s.positions {
            position.insert((s.account_id, p.symbol.as_str()), p.position.qty);
        }
    }
    let mut fills: HashMap<Uuid, Vec<FillEvent>> = HashMap::new();
    for (account, f) in result.fills.iter().rev() {
        let after = position
            .entry((*account, f.symbol.as_str()))
            .or_insert(Decimal::ZERO);
        let position_qty = *after;
        let signed = match f.side {
            Side::Buy => f.qty,
            Side::Sell => -f.qty,
        };
        *after -= signed;
        fills.entry(f.order_id).or_default().push(FillEvent {
            qty: f.qty,
            price: f.price,
            time: f.transaction_time,
            position_qty,
            leaves_qty: f.leaves_qty,
        });
    }
    let ts = now.timestamp_millis();
    let mut out = Vec::new();
    for order in &result.changed {
        let mut of_order = fills.remove(&order.id).unwrap_or_default();
        of_order.reverse();
        for event in trade_updates(order, result.created.contains(&order.id), &of_order, now) {
            out.push((order.account_id, order_message(ts, &event)));
        }
    }
    out
}

/// Stores the snapshots and pushes the order events.
pub async fn publish(deps: &Deps, result: &BatchResult) {
    if let Err(e) = deps.cache.put_snapshots(&result.snapshots).await {
        tracing::warn!(error = %e, "could not store positions snapshots; live PnL lags until the next fill");
    }
    let Some(pusher) = deps.pusher.as_ref() else {
        return;
    };
    let messages = order_messages(result, chrono::Utc::now());
    let mut by_account: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (account, m) in messages {
        by_account.entry(account).or_default().push(m);
    }
    join_all(
        by_account
            .iter()
            .map(|(account, msgs)| push_account(deps, pusher, *account, msgs)),
    )
    .await;
}

async fn push_account(deps: &Deps, pusher: &Pusher, account: Uuid, messages: &[String]) {
    let connections = match deps
        .connections
        .by_account(account, adapters::now_ms())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, %account, "could not read the account's connections; order updates not pushed");
            return;
        }
    };
    join_all(connections.iter().map(|c| async move {
        // One connection's events go in order; connections go in parallel.
        for m in messages {
            match pusher.post(&c.connection_id, m.as_bytes()).await {
                Ok(()) => {}
                Err(PushError::Gone) => {
                    forget(deps, &c.connection_id).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, connection = %c.connection_id, "order update not delivered");
                    return;
                }
            }
        }
    }))
    .await;
}

/// A gone connection: delete its item and tell the fan-out.
async fn forget(deps: &Deps, connection_id: &str) {
    if let Err(e) = deps.connections.delete(connection_id).await {
        tracing::warn!(error = %e, "could not delete a gone connection");
        return;
    }
    let change = ConnectionChange::Delete {
        connection_id: connection_id.to_string(),
    };
    if let Err(e) = deps.cache.publish_connection_change(&change).await {
        tracing::warn!(error = %e, "could not announce a gone connection");
    }
}
