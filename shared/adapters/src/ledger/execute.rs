//! The executor's writes: a batch of commands applied in ONE transaction with a fixed number
//! of multi-row statements, whatever the batch size.
//!
//! 1. record every command id (`processed_commands`, one INSERT … ON CONFLICT DO NOTHING):
//!    ids already there are redeliveries and change nothing;
//! 2. lock the accounts concerned, in id order (so concurrent executors cannot deadlock);
//! 3. read, in statements that start after the locks are held, their positions and open
//!    orders (a statement's snapshot is fixed when it starts, so reads in the locking
//!    statement could miss what the transaction it waited for wrote);
//! 4. run every command in order through the account's order state machine
//!    ([`domain::engine::Book`]), in memory: each sees the effects of the ones before it;
//! 5. write each table once: new orders, changed orders, fills, positions, account totals.
//!
//! The cost per batch is about ten round trips and ten statements, instead of several per
//! command: the database does row work, not statement work.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::catalog::Catalog;
use domain::command::Command;
use domain::engine::ExecutionParams;
use domain::engine::{Book, Execution, Market};
use domain::order::{NewOrder, Order};
use domain::quote::Quote;
use domain::realtime::{PositionsSnapshot, SnapshotPosition};
use rust_decimal::Decimal;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::risk::{kill_from_row, limits_from_row, realized_today, RISK_COLUMNS};
use super::{
    nest_legs, orders_from_rows, pg, ExecOutcome, FillRecord, Ledger, OPEN_STATUSES, ORDER_COLUMNS,
};
use crate::error::DependencyError;

/// What a batch did: one outcome per command, and every order it created or changed (for
/// the trigger index and for order updates to clients).
#[derive(Debug, Default)]
pub struct BatchResult {
    pub outcomes: Vec<ExecOutcome>,
    pub changed: Vec<Order>,
    /// The ids in `changed` of orders this batch created.
    pub created: HashSet<Uuid>,
    /// Every fill of the batch with its account, in execution order.
    pub fills: Vec<(Uuid, FillRecord)>,
    /// Cash and open positions after the batch of every account that had a fill.
    pub snapshots: Vec<PositionsSnapshot>,
}

impl Ledger {
    /// Applies one place-order command in its own transaction, idempotent on `command_id`.
    pub async fn place_order(
        &self,
        command_id: Uuid,
        order: &NewOrder,
        quote: Option<&Quote>,
        now_ms: i64,
        params: &ExecutionParams,
    ) -> Result<ExecOutcome, DependencyError> {
        let cmd = Command::PlaceOrder {
            command_id,
            order: order.clone(),
        };
        let quotes: HashMap<String, Quote> = quote
            .map(|q| (order.spec.symbol.clone(), q.clone()))
            .into_iter()
            .collect();
        let mut out = self
            .apply_commands(&[cmd], &quotes, Catalog::builtin(), now_ms, params)
            .await?;
        Ok(out.outcomes.remove(0))
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
        let mut out = self
            .apply_commands(
                &[cmd],
                &HashMap::new(),
                Catalog::builtin(),
                crate::now_ms(),
                &ExecutionParams::default(),
            )
            .await?;
        Ok(out.outcomes.remove(0))
    }

    /// Applies `commands` in order in one transaction: all take effect or none does. Each is
    /// idempotent on its command id. `quotes` are the latest cached quotes of the symbols
    /// the commands concern. The outcomes are in the order of the commands.
    pub async fn apply_commands(
        &self,
        commands: &[Command],
        quotes: &HashMap<String, Quote>,
        catalog: &Catalog,
        now_ms: i64,
        params: &ExecutionParams,
    ) -> Result<BatchResult, DependencyError> {
        let mut tx = self.pool().begin().await.map_err(pg)?;
        let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
        let market = Market {
            catalog,
            quotes,
            now,
            now_ms,
            params,
        };
        let result = apply_in_tx(&mut tx, commands, &market).await?;
        tx.commit().await.map_err(pg)?;
        Ok(result)
    }
}

async fn apply_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    commands: &[Command],
    m: &Market<'_>,
) -> Result<BatchResult, DependencyError> {
    let now = m.now;

    // 1. Record the command ids; what was recorded before is a redelivery.
    let ids: Vec<Uuid> = commands.iter().map(Command::command_id).collect();
    let accounts: Vec<Uuid> = commands.iter().map(Command::account_id).collect();
    let kinds: Vec<&str> = commands.iter().map(Command::kind).collect();
    let recorded: HashSet<Uuid> = sqlx::query_scalar(
        "INSERT INTO processed_commands (command_id, account_id, kind)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) ON CONFLICT DO NOTHING RETURNING command_id",
    )
    .bind(&ids)
    .bind(&accounts)
    .bind(&kinds)
    .fetch_all(&mut **tx)
    .await
    .map_err(pg)?
    .into_iter()
    .collect();
    // The same id twice in one batch: the first occurrence is fresh, the rest are redeliveries.
    let mut seen = HashSet::new();
    let fresh: Vec<bool> = ids
        .iter()
        .map(|id| recorded.contains(id) && seen.insert(*id))
        .collect();

    // 2. Lock the accounts with fresh commands, in id order.
    let mut live: Vec<Uuid> = commands
        .iter()
        .zip(&fresh)
        .filter(|(_, f)| **f)
        .map(|(c, _)| c.account_id())
        .collect();
    live.sort();
    live.dedup();
    let mut books: HashMap<Uuid, Book> = HashMap::new();
    if !live.is_empty() {
        // The limits are read with the lock: the api writes them and the kill switch
        // directly, and an update waiting on this lock applies to the next batch.
        let rows = sqlx::query(&format!(
            "SELECT a.id, a.cash, {RISK_COLUMNS} FROM accounts a LEFT JOIN risk_limits r ON r.account_id = a.id
             WHERE a.id = ANY($1) ORDER BY a.id FOR UPDATE OF a"
        ))
        .bind(&live)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        for r in rows {
            let id: Uuid = r.try_get("id").map_err(pg)?;
            let mut book = Book::new(id, r.try_get("cash").map_err(pg)?);
            book.risk.limits = limits_from_row(&r).map_err(pg)?;
            book.risk.kill = kill_from_row(&r).map_err(pg)?;
            books.insert(id, book);
        }
    }

    // 3. Positions and open orders of the locked accounts, read under the locks.
    if !books.is_empty() {
        let locked: Vec<Uuid> = books.keys().copied().collect();
        let rows = sqlx::query(
            "SELECT account_id, symbol, asset_id, qty, avg_entry_price, realized_pnl FROM positions WHERE account_id = ANY($1)",
        )
        .bind(&locked)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        for r in rows {
            let account: Uuid = r.try_get("account_id").map_err(pg)?;
            let p = super::position_from_row(&r).map_err(pg)?;
            if let Some(book) = books.get_mut(&account) {
                book.positions.insert(p.symbol, (p.asset_id, p.position));
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = ANY($1) AND status IN {OPEN_STATUSES}"
        ))
        .bind(&locked)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        for order in orders_from_rows(&rows)? {
            if let Some(book) = books.get_mut(&order.account_id) {
                book.load(order);
            }
        }
        // The day's realized PnL, for the daily loss limit.
        let limited: Vec<Uuid> = books
            .values()
            .filter(|b| b.risk.limits.daily_loss_limit.is_some())
            .map(|b| b.account_id)
            .collect();
        for (account, realized) in realized_today(&mut **tx, &limited, now).await? {
            if let Some(book) = books.get_mut(&account) {
                book.risk.realized_today = realized;
            }
        }
    }

    // 4. Decide in order.
    let mut outcomes: Vec<ExecOutcome> = Vec::with_capacity(commands.len());
    // Commands whose order must be read back after the writes: (outcome index, account, order).
    let mut look_up: Vec<(usize, Uuid, Uuid)> = Vec::new();
    // Each outcome's order comes from its book once every command has run.
    let mut from_book: Vec<(usize, Uuid, Uuid)> = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        let account = command.account_id();
        let order_id = command.order_id();
        let Some(book) = books.get_mut(&account).filter(|_| fresh[i]) else {
            if fresh[i] {
                // A command for an account that does not exist cannot apply; it stays
                // recorded so that a redelivery does not try again.
                tracing::error!(%account, command_id = %command.command_id(), "command for unknown account dropped");
            } else {
                // A redelivery: report the order as it stands.
                look_up.push((i, account, order_id));
            }
            outcomes.push(ExecOutcome {
                order: None,
                fill: None,
                duplicate: !fresh[i],
            });
            continue;
        };
        let executions_before = book.executions.len();
        match command {
            Command::PlaceOrder { order, .. } => {
                book.place(order, m);
            }
            Command::CancelOrder { .. } => {
                book.cancel(order_id, m);
            }
            Command::TriggerOrder { hwm, .. } => {
                book.trigger(order_id, *hwm, m);
            }
            Command::ExpireOrder { .. } => {
                book.expire(order_id, m);
            }
            Command::Flatten { .. } => {
                book.flatten(m);
            }
        }
        let fill = book
            .executions
            .get(executions_before)
            .map(|e| fill_record(e, &book.orders));
        if book.orders.contains_key(&order_id) {
            from_book.push((i, account, order_id));
        } else {
            // Not open and not created here (filled, canceled, or never placed).
            look_up.push((i, account, order_id));
        }
        outcomes.push(ExecOutcome {
            order: None,
            fill,
            duplicate: false,
        });
    }
    for (i, account, id) in from_book {
        outcomes[i].order = books.get(&account).and_then(|b| b.with_legs(id));
    }

    // 5. Write each table once.
    let mut inserted: Vec<&Order> = Vec::new();
    let mut updated: Vec<&Order> = Vec::new();
    let mut fills: Vec<(Uuid, FillRecord)> = Vec::new();
    for (account, book) in &books {
        inserted.extend(book.inserted.iter().filter_map(|id| book.orders.get(id)));
        updated.extend(book.updated.iter().filter_map(|id| book.orders.get(id)));
        fills.extend(
            book.executions
                .iter()
                .map(|e| (*account, fill_record(e, &book.orders))),
        );
    }
    // Parents before legs (legs reference their parent).
    inserted.sort_by_key(|o| o.parent_id.is_some());
    insert_orders(tx, &inserted).await?;
    update_orders(tx, &updated).await?;
    insert_fills(tx, &fills).await?;
    upsert_positions(tx, &books, now).await?;
    update_accounts(tx, &books, now).await?;
    if !look_up.is_empty() {
        let ids: Vec<Uuid> = look_up.iter().map(|(_, _, id)| *id).collect();
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) OR parent_id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        let all = orders_from_rows(&rows)?;
        for (i, account, id) in look_up {
            outcomes[i].order = all
                .iter()
                .find(|o| o.id == id && o.account_id == account)
                .map(|o| {
                    let mut o = o.clone();
                    nest_legs(&mut o, &all);
                    o
                });
        }
    }
    let created = inserted.iter().map(|o| o.id).collect();
    let changed = inserted.into_iter().chain(updated).cloned().collect();
    let at = now.timestamp_millis();
    let snapshots = books
        .values()
        .filter(|b| !b.executions.is_empty())
        .map(|b| {
            let mut positions: Vec<SnapshotPosition> = b
                .positions
                .iter()
                .filter(|(_, (_, p))| !p.is_flat())
                .map(|(symbol, (_, p))| SnapshotPosition {
                    symbol: symbol.clone(),
                    position: p.clone(),
                })
                .collect();
            positions.sort_by(|a, b| a.symbol.cmp(&b.symbol));
            PositionsSnapshot {
                account_id: b.account_id,
                cash: b.cash + b.cash_delta,
                positions,
                at,
            }
        })
        .collect();
    Ok(BatchResult {
        outcomes,
        changed,
        created,
        fills,
        snapshots,
    })
}

fn fill_record(e: &Execution, orders: &HashMap<Uuid, Order>) -> FillRecord {
    let order = orders.get(&e.order_id);
    FillRecord {
        id: Uuid::new_v5(
            &e.order_id,
            format!("{}:{}", e.time.timestamp_micros(), e.qty).as_bytes(),
        ),
        order_id: e.order_id,
        symbol: e.symbol.clone(),
        side: e.side,
        qty: e.qty,
        price: e.price,
        fee: e.fee,
        realized_pnl: e.realized_pnl,
        cum_qty: order.map_or(e.qty, |o| o.filled_qty),
        leaves_qty: order.map_or(Decimal::ZERO, Order::remaining),
        transaction_time: e.time,
    }
}

/// Per-order column values, in the order of the `UNNEST` parameters below.
fn decimals(orders: &[&Order], f: fn(&Order) -> Option<Decimal>) -> Vec<Option<Decimal>> {
    orders.iter().map(|o| f(o)).collect()
}

fn times(orders: &[&Order], f: fn(&Order) -> Option<DateTime<Utc>>) -> Vec<Option<DateTime<Utc>>> {
    orders.iter().map(|o| f(o)).collect()
}

fn uuids(orders: &[&Order], f: fn(&Order) -> Option<Uuid>) -> Vec<Option<Uuid>> {
    orders.iter().map(|o| f(o)).collect()
}

async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[&Order],
) -> Result<(), DependencyError> {
    if orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO orders (id, client_order_id, account_id, created_at, updated_at, submitted_at, filled_at, canceled_at, failed_at,
           asset_id, symbol, notional, qty, filled_qty, filled_avg_price, order_type, side, time_in_force, limit_price, status, reject_reason,
           order_class, stop_price, trail_price, trail_percent, hwm, parent_id, leg_role, triggered_at, expires_at, expired_at,
           replaced_at, replaced_by, replaces)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[],
           $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::text[], $12::numeric[], $13::numeric[],
           $14::numeric[], $15::numeric[], $16::text[], $17::text[], $18::text[], $19::numeric[], $20::text[], $21::text[],
           $22::text[], $23::numeric[], $24::numeric[], $25::numeric[], $26::numeric[], $27::uuid[], $28::text[],
           $29::timestamptz[], $30::timestamptz[], $31::timestamptz[], $32::timestamptz[], $33::uuid[], $34::uuid[])",
    )
    .bind(orders.iter().map(|o| o.id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.client_order_id.clone()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.account_id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.created_at).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.updated_at).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.submitted_at).collect::<Vec<_>>())
    .bind(times(orders, |o| o.filled_at))
    .bind(times(orders, |o| o.canceled_at))
    .bind(times(orders, |o| o.failed_at))
    .bind(orders.iter().map(|o| o.asset_id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.symbol.clone()).collect::<Vec<_>>())
    .bind(decimals(orders, |o| o.notional))
    .bind(decimals(orders, |o| o.qty))
    .bind(orders.iter().map(|o| o.filled_qty).collect::<Vec<_>>())
    .bind(decimals(orders, |o| o.filled_avg_price))
    .bind(orders.iter().map(|o| o.order_type.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.side.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.time_in_force.as_str()).collect::<Vec<_>>())
    .bind(decimals(orders, |o| o.limit_price))
    .bind(orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.reject_reason.clone()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.order_class.as_str()).collect::<Vec<_>>())
    .bind(decimals(orders, |o| o.stop_price))
    .bind(decimals(orders, Order::trail_price))
    .bind(decimals(orders, Order::trail_percent))
    .bind(decimals(orders, |o| o.hwm))
    .bind(uuids(orders, |o| o.parent_id))
    .bind(orders.iter().map(|o| o.leg_role.map(|r| r.as_str())).collect::<Vec<_>>())
    .bind(times(orders, |o| o.triggered_at))
    .bind(times(orders, |o| o.expires_at))
    .bind(times(orders, |o| o.expired_at))
    .bind(times(orders, |o| o.replaced_at))
    .bind(uuids(orders, |o| o.replaced_by))
    .bind(uuids(orders, |o| o.replaces))
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}

/// Writes what the state machine may change on an existing order.
async fn update_orders(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[&Order],
) -> Result<(), DependencyError> {
    if orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE orders o SET status = v.status, qty = v.qty, filled_qty = v.filled_qty, filled_avg_price = v.filled_avg_price,
           filled_at = v.filled_at, canceled_at = v.canceled_at, failed_at = v.failed_at, expired_at = v.expired_at,
           replaced_at = v.replaced_at, replaced_by = v.replaced_by, hwm = v.hwm, triggered_at = v.triggered_at,
           parent_id = v.parent_id, reject_reason = v.reject_reason, updated_at = v.updated_at
         FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::timestamptz[], $7::timestamptz[],
           $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::uuid[], $12::numeric[], $13::timestamptz[],
           $14::uuid[], $15::text[], $16::timestamptz[])
           AS v(id, status, qty, filled_qty, filled_avg_price, filled_at, canceled_at, failed_at, expired_at, replaced_at,
                replaced_by, hwm, triggered_at, parent_id, reject_reason, updated_at)
         WHERE o.id = v.id",
    )
    .bind(orders.iter().map(|o| o.id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(decimals(orders, |o| o.qty))
    .bind(orders.iter().map(|o| o.filled_qty).collect::<Vec<_>>())
    .bind(decimals(orders, |o| o.filled_avg_price))
    .bind(times(orders, |o| o.filled_at))
    .bind(times(orders, |o| o.canceled_at))
    .bind(times(orders, |o| o.failed_at))
    .bind(times(orders, |o| o.expired_at))
    .bind(times(orders, |o| o.replaced_at))
    .bind(uuids(orders, |o| o.replaced_by))
    .bind(decimals(orders, |o| o.hwm))
    .bind(times(orders, |o| o.triggered_at))
    .bind(uuids(orders, |o| o.parent_id))
    .bind(orders.iter().map(|o| o.reject_reason.clone()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.updated_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}

async fn insert_fills(
    tx: &mut Transaction<'_, Postgres>,
    fills: &[(Uuid, FillRecord)],
) -> Result<(), DependencyError> {
    if fills.is_empty() {
        return Ok(());
    }
    let num = |f: fn(&FillRecord) -> Decimal| fills.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO fills (id, account_id, order_id, symbol, side, qty, price, fee, realized_pnl, cum_qty, leaves_qty, transaction_time)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::numeric[], $7::numeric[],
           $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[], $12::timestamptz[])",
    )
    .bind(fills.iter().map(|(_, f)| f.id).collect::<Vec<_>>())
    .bind(fills.iter().map(|(a, _)| *a).collect::<Vec<_>>())
    .bind(fills.iter().map(|(_, f)| f.order_id).collect::<Vec<_>>())
    .bind(fills.iter().map(|(_, f)| f.symbol.clone()).collect::<Vec<_>>())
    .bind(fills.iter().map(|(_, f)| f.side.as_str()).collect::<Vec<_>>())
    .bind(num(|f| f.qty))
    .bind(num(|f| f.price))
    .bind(num(|f| f.fee))
    .bind(num(|f| f.realized_pnl))
    .bind(num(|f| f.cum_qty))
    .bind(num(|f| f.leaves_qty))
    .bind(fills.iter().map(|(_, f)| f.transaction_time).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}

async fn upsert_positions(
    tx: &mut Transaction<'_, Postgres>,
    books: &HashMap<Uuid, Book>,
    now: DateTime<Utc>,
) -> Result<(), DependencyError> {
    let rows: Vec<(Uuid, &String, Uuid, &domain::accounting::Position)> = books
        .iter()
        .flat_map(|(account, b)| {
            b.touched.iter().filter_map(move |sym| {
                b.positions
                    .get(sym)
                    .map(|(asset, p)| (*account, sym, *asset, p))
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO positions (account_id, symbol, asset_id, qty, avg_entry_price, realized_pnl, updated_at)
         SELECT a, s, i, q, p, r, $7 FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::numeric[], $5::numeric[], $6::numeric[])
           AS v(a, s, i, q, p, r)
         ON CONFLICT (account_id, symbol) DO UPDATE
           SET qty = EXCLUDED.qty, avg_entry_price = EXCLUDED.avg_entry_price, realized_pnl = EXCLUDED.realized_pnl, updated_at = $7",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3.qty).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3.avg_entry_price).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3.realized_pnl).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}

async fn update_accounts(
    tx: &mut Transaction<'_, Postgres>,
    books: &HashMap<Uuid, Book>,
    now: DateTime<Utc>,
) -> Result<(), DependencyError> {
    let changed: Vec<(&Uuid, &Book)> = books
        .iter()
        .filter(|(_, b)| !b.touched.is_empty() || b.risk.tripped)
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    // A kill switch tripped in this batch is set; one already on (or reset meanwhile by
    // hand, which waits for this lock) is left as it is.
    fn tripped(b: &Book) -> Option<&domain::risk::Kill> {
        b.risk.kill.as_ref().filter(|_| b.risk.tripped)
    }
    sqlx::query(
        "UPDATE accounts a SET cash = a.cash + v.cash, realized_pnl = a.realized_pnl + v.realized, fees_paid = a.fees_paid + v.fees,
           killed_at = COALESCE(v.killed_at, a.killed_at), kill_reason = COALESCE(v.kill_reason, a.kill_reason),
           updated_at = $7
         FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::timestamptz[], $6::text[])
           AS v(id, cash, realized, fees, killed_at, kill_reason)
         WHERE a.id = v.id",
    )
    .bind(changed.iter().map(|(id, _)| **id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| b.cash_delta).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| b.realized_delta).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| b.fees_delta).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| tripped(b).map(|k| k.at)).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| tripped(b).map(|k| k.reason.clone())).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}
