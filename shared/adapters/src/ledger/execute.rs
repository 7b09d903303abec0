//! The executor's writes: a batch of commands applied in ONE transaction with a fixed number
//! of multi-row statements, whatever the batch size.
//!
//! 1. record every command id (`processed_commands`, one INSERT … ON CONFLICT DO NOTHING):
//!    ids already there are redeliveries and change nothing;
//! 2. lock the accounts concerned, in id order (so concurrent executors cannot deadlock);
//! 3. read, in a statement that starts after the locks are held, their positions and open
//!    orders (a statement's snapshot is fixed when it starts, so reads in the locking
//!    statement could miss what the transaction it waited for wrote);
//! 4. decide every command in order, in memory, with the domain rules: each sees the
//!    effects of the ones before it;
//! 5. write each table once: orders, fills, positions, account totals, canceled orders.
//!
//! The cost per batch is about ten round trips and ten statements, instead of several per
//! command: the database does row work, not statement work.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::accounting::{self, Position};
use domain::catalog::Instrument;
use domain::command::Command;
use domain::execution::{decide, AccountState, Decision, ExecutionParams};
use domain::order::{NewOrder, Order, OrderStatus, Side};
use domain::quote::Quote;
use rust_decimal::Decimal;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{order_from_row, pg, ExecOutcome, FillRecord, Ledger, OPEN_STATUSES, ORDER_COLUMNS};
use crate::error::DependencyError;

/// A command with what the executor looked up for it beforehand.
pub struct CommandInput<'a> {
    pub command: &'a Command,
    /// The order's instrument (place commands); `None` rejects the order as unknown.
    pub instrument: Option<&'a Instrument>,
    /// The latest cached quote of the order's symbol, if any.
    pub quote: Option<&'a Quote>,
}

/// An open order as far as reservations and cancels are concerned.
struct OpenOrder {
    id: Uuid,
    symbol: String,
    side: Side,
    remaining: Decimal,
    limit_price: Option<Decimal>,
    /// Index in `new_orders` when the order was placed in this batch.
    placed_here: Option<usize>,
}

/// What one account looks like while the batch is decided.
#[derive(Default)]
struct Book {
    cash: Decimal,
    cash_delta: Decimal,
    realized_delta: Decimal,
    fees_delta: Decimal,
    positions: HashMap<String, (Uuid, Position)>,
    touched: HashSet<String>,
    open: Vec<OpenOrder>,
}

impl Book {
    fn state(&self, symbol: &str, params: &ExecutionParams) -> AccountState {
        let buy_notional: Decimal = self
            .open
            .iter()
            .filter(|o| o.side == Side::Buy)
            .map(|o| o.remaining * o.limit_price.unwrap_or_default())
            .sum();
        let reserved_qty = self
            .open
            .iter()
            .filter(|o| o.side == Side::Sell && o.symbol == symbol)
            .map(|o| o.remaining)
            .sum();
        AccountState {
            cash: self.cash + self.cash_delta,
            reserved_cash: buy_notional + accounting::fee(buy_notional, params.fee_bps),
            position_qty: self
                .positions
                .get(symbol)
                .map(|(_, p)| p.qty)
                .unwrap_or_default(),
            reserved_qty,
        }
    }
}

impl Ledger {
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
            .apply_commands(&[input], crate::now_ms(), &ExecutionParams::default())
            .await?;
        Ok(out.remove(0))
    }

    /// Applies `commands` in order in one transaction: all take effect or none does. Each is
    /// idempotent on its command id. The outcomes are in the order of the commands.
    pub async fn apply_commands(
        &self,
        commands: &[CommandInput<'_>],
        now_ms: i64,
        params: &ExecutionParams,
    ) -> Result<Vec<ExecOutcome>, DependencyError> {
        let mut tx = self.pool().begin().await.map_err(pg)?;
        let outcomes = apply_in_tx(&mut tx, commands, now_ms, params).await?;
        tx.commit().await.map_err(pg)?;
        Ok(outcomes)
    }
}

async fn apply_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    commands: &[CommandInput<'_>],
    now_ms: i64,
    params: &ExecutionParams,
) -> Result<Vec<ExecOutcome>, DependencyError> {
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);

    // 1. Record the command ids; what was recorded before is a redelivery.
    let ids: Vec<Uuid> = commands.iter().map(|c| c.command.command_id()).collect();
    let accounts: Vec<Uuid> = commands.iter().map(|c| c.command.account_id()).collect();
    let kinds: Vec<&str> = commands
        .iter()
        .map(|c| match c.command {
            Command::PlaceOrder { .. } => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
        })
        .collect();
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
        .map(|(c, _)| c.command.account_id())
        .collect();
    live.sort();
    live.dedup();
    let mut books: HashMap<Uuid, Book> = HashMap::new();
    if !live.is_empty() {
        let rows =
            sqlx::query("SELECT id, cash FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&live)
                .fetch_all(&mut **tx)
                .await
                .map_err(pg)?;
        for r in rows {
            let id: Uuid = r.try_get("id").map_err(pg)?;
            books.insert(
                id,
                Book {
                    cash: r.try_get("cash").map_err(pg)?,
                    ..Book::default()
                },
            );
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
            let position = Position {
                qty: r.try_get("qty").map_err(pg)?,
                avg_entry_price: r.try_get("avg_entry_price").map_err(pg)?,
                realized_pnl: r.try_get("realized_pnl").map_err(pg)?,
            };
            if let Some(book) = books.get_mut(&account) {
                book.positions.insert(
                    r.try_get("symbol").map_err(pg)?,
                    (r.try_get("asset_id").map_err(pg)?, position),
                );
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT id, account_id, symbol, side, qty - filled_qty AS remaining, limit_price FROM orders
             WHERE account_id = ANY($1) AND status IN {OPEN_STATUSES} AND qty IS NOT NULL"
        ))
        .bind(&locked)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        for r in rows {
            let account: Uuid = r.try_get("account_id").map_err(pg)?;
            let side: String = r.try_get("side").map_err(pg)?;
            if let Some(book) = books.get_mut(&account) {
                book.open.push(OpenOrder {
                    id: r.try_get("id").map_err(pg)?,
                    symbol: r.try_get("symbol").map_err(pg)?,
                    side: if side == "sell" {
                        Side::Sell
                    } else {
                        Side::Buy
                    },
                    remaining: r.try_get("remaining").map_err(pg)?,
                    limit_price: r.try_get("limit_price").map_err(pg)?,
                    placed_here: None,
                });
            }
        }
    }

    // 4. Decide in order.
    let mut outcomes: Vec<ExecOutcome> = Vec::with_capacity(commands.len());
    let mut new_orders: Vec<Order> = Vec::new();
    let mut outcome_of_new: Vec<usize> = Vec::new();
    let mut fills: Vec<(Uuid, FillRecord)> = Vec::new();
    let mut canceled_in_db: Vec<(Uuid, Uuid, usize)> = Vec::new();
    let mut look_up: Vec<(usize, Uuid, Uuid)> = Vec::new();
    for (i, input) in commands.iter().enumerate() {
        let account = input.command.account_id();
        let Some(book) = books.get_mut(&account).filter(|_| fresh[i]) else {
            if !fresh[i] {
                // A redelivery: report the order as it stands.
                if let Some(order_id) = target_order(input.command) {
                    look_up.push((i, account, order_id));
                }
                outcomes.push(ExecOutcome {
                    order: None,
                    fill: None,
                    duplicate: true,
                });
            } else {
                // A command for an account that does not exist cannot apply; it stays recorded
                // so that a redelivery does not try again.
                tracing::error!(%account, command_id = %input.command.command_id(), "command for unknown account dropped");
                outcomes.push(ExecOutcome {
                    order: None,
                    fill: None,
                    duplicate: false,
                });
            }
            continue;
        };
        match input.command {
            Command::PlaceOrder { order, .. } => {
                let (stored, fill) = place(
                    book,
                    order,
                    input.instrument,
                    input.quote,
                    now,
                    now_ms,
                    params,
                )?;
                if stored.status == OrderStatus::New {
                    book.open.push(OpenOrder {
                        id: stored.id,
                        symbol: stored.symbol.clone(),
                        side: stored.side,
                        remaining: stored.qty.unwrap_or_default(),
                        limit_price: stored.limit_price,
                        placed_here: Some(new_orders.len()),
                    });
                }
                if let Some(f) = &fill {
                    fills.push((account, f.clone()));
                }
                outcome_of_new.push(outcomes.len());
                outcomes.push(ExecOutcome {
                    order: Some(stored.clone()),
                    fill,
                    duplicate: false,
                });
                new_orders.push(stored);
            }
            Command::CancelOrder { order_id, .. } => {
                match book.open.iter().position(|o| o.id == *order_id) {
                    Some(pos) => {
                        let open = book.open.remove(pos);
                        match open.placed_here {
                            Some(k) => {
                                let o = &mut new_orders[k];
                                o.status = OrderStatus::Canceled;
                                o.canceled_at = Some(now);
                                o.updated_at = now;
                                outcomes.push(ExecOutcome {
                                    order: Some(o.clone()),
                                    fill: None,
                                    duplicate: false,
                                });
                            }
                            None => {
                                canceled_in_db.push((account, *order_id, outcomes.len()));
                                outcomes.push(ExecOutcome {
                                    order: None,
                                    fill: None,
                                    duplicate: false,
                                });
                            }
                        }
                    }
                    None => {
                        // Not open (filled, canceled, or never placed): nothing to do.
                        look_up.push((i, account, *order_id));
                        outcomes.push(ExecOutcome {
                            order: None,
                            fill: None,
                            duplicate: false,
                        });
                    }
                }
            }
        }
    }
    // A cancel after a placement in the same batch changes the outcome of the placement too.
    for (k, &i) in outcome_of_new.iter().enumerate() {
        if let Some(o) = outcomes[i].order.as_mut() {
            *o = new_orders[k].clone();
        }
    }

    // 5. Write each table once.
    insert_orders(tx, &new_orders).await?;
    insert_fills(tx, &fills).await?;
    upsert_positions(tx, &books, now).await?;
    update_accounts(tx, &books, now).await?;
    if !canceled_in_db.is_empty() {
        let ids: Vec<Uuid> = canceled_in_db.iter().map(|(_, id, _)| *id).collect();
        let accts: Vec<Uuid> = canceled_in_db.iter().map(|(a, _, _)| *a).collect();
        let rows = sqlx::query(&format!(
            "UPDATE orders o SET status = 'canceled', canceled_at = $3, updated_at = $3
             FROM UNNEST($1::uuid[], $2::uuid[]) AS c(id, account_id)
             WHERE o.id = c.id AND o.account_id = c.account_id RETURNING {}",
            ORDER_COLUMNS
                .split(", ")
                .map(|c| format!("o.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(&ids)
        .bind(&accts)
        .bind(now)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        let by_id: HashMap<Uuid, Order> = rows
            .iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg)?
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        for (_, id, i) in canceled_in_db {
            outcomes[i].order = by_id.get(&id).cloned();
        }
    }
    if !look_up.is_empty() {
        let ids: Vec<Uuid> = look_up.iter().map(|(_, _, id)| *id).collect();
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(pg)?;
        let by_id: HashMap<Uuid, Order> = rows
            .iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg)?
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        for (i, account, id) in look_up {
            outcomes[i].order = by_id.get(&id).filter(|o| o.account_id == account).cloned();
        }
    }
    Ok(outcomes)
}

fn target_order(c: &Command) -> Option<Uuid> {
    match c {
        Command::PlaceOrder { order, .. } => Some(order.id),
        Command::CancelOrder { order_id, .. } => Some(*order_id),
    }
}

/// Decides a placement against the account's book and applies a fill to the book.
fn place(
    book: &mut Book,
    order: &NewOrder,
    inst: Option<&Instrument>,
    quote: Option<&Quote>,
    now: DateTime<Utc>,
    now_ms: i64,
    params: &ExecutionParams,
) -> Result<(Order, Option<FillRecord>), DependencyError> {
    let decision = match inst {
        Some(inst) => decide(
            order,
            inst,
            quote,
            now_ms,
            &book.state(&order.symbol, params),
            params,
        ),
        None => Decision::Reject(domain::RuleViolation::new(
            "unknown_symbol",
            format!("{} is not a known instrument", order.symbol),
        )),
    };
    let mut stored = order.pending();
    stored.created_at = now;
    stored.updated_at = now;
    let fill = match decision {
        Decision::Fill { qty, price, fee } => {
            let entry = book
                .positions
                .entry(order.symbol.clone())
                .or_insert((order.asset_id, Position::default()));
            let effect = entry
                .1
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
            book.touched.insert(order.symbol.clone());
            book.cash_delta += effect.cash_delta;
            book.realized_delta += effect.realized_pnl;
            book.fees_delta += fee;
            stored.status = OrderStatus::Filled;
            stored.filled_qty = qty;
            stored.filled_avg_price = Some(price);
            stored.filled_at = Some(now);
            // A notional order's quantity is known once it fills.
            stored.qty.get_or_insert(qty);
            Some(FillRecord {
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
            })
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
    Ok((stored, fill))
}

async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[Order],
) -> Result<(), DependencyError> {
    if orders.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Order) -> Option<Decimal>| orders.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&Order) -> Option<DateTime<Utc>>| orders.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO orders (id, client_order_id, account_id, created_at, updated_at, submitted_at, filled_at, canceled_at, failed_at,
           asset_id, symbol, notional, qty, filled_qty, filled_avg_price, order_type, side, time_in_force, limit_price, status, reject_reason)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[],
           $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::text[], $12::numeric[], $13::numeric[],
           $14::numeric[], $15::numeric[], $16::text[], $17::text[], $18::text[], $19::numeric[], $20::text[], $21::text[])",
    )
    .bind(orders.iter().map(|o| o.id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.client_order_id.clone()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.account_id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.created_at).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.updated_at).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.submitted_at).collect::<Vec<_>>())
    .bind(time(|o| o.filled_at))
    .bind(time(|o| o.canceled_at))
    .bind(time(|o| o.failed_at))
    .bind(orders.iter().map(|o| o.asset_id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.symbol.clone()).collect::<Vec<_>>())
    .bind(col(|o| o.notional))
    .bind(col(|o| o.qty))
    .bind(orders.iter().map(|o| o.filled_qty).collect::<Vec<_>>())
    .bind(col(|o| o.filled_avg_price))
    .bind(orders.iter().map(|o| o.order_type.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.side.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.time_in_force.as_str()).collect::<Vec<_>>())
    .bind(col(|o| o.limit_price))
    .bind(orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.reject_reason.clone()).collect::<Vec<_>>())
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
    let rows: Vec<(Uuid, &String, Uuid, &Position)> = books
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
        .filter(|(_, b)| !b.touched.is_empty())
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE accounts a SET cash = a.cash + v.cash, realized_pnl = a.realized_pnl + v.realized, fees_paid = a.fees_paid + v.fees,
           updated_at = $5
         FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[]) AS v(id, cash, realized, fees)
         WHERE a.id = v.id",
    )
    .bind(changed.iter().map(|(id, _)| **id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| b.cash_delta).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| b.realized_delta).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, b)| b.fees_delta).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(pg)?;
    Ok(())
}
