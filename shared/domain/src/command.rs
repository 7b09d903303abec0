//! Commands sent through the SQS FIFO queue to the executor, the ledger's only writer.
//!
//! Every command has an id; the executor records it in the same transaction as its effects,
//! so a redelivered command changes nothing. The message group is the account id, so one
//! account's commands apply in order.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::{NewOrder, OrderRef};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A new order, or with `order.replaces` the replacement of an open one.
    PlaceOrder { command_id: Uuid, order: NewOrder },
    CancelOrder {
        command_id: Uuid,
        account_id: Uuid,
        order_id: Uuid,
    },
    /// The ingest task saw the price meet a resting order's condition; the executor checks
    /// again on the current price before it fills.
    TriggerOrder {
        command_id: Uuid,
        account_id: Uuid,
        order_id: Uuid,
        symbol: String,
        /// The high-water mark the ingest task tracked (trailing stops).
        #[serde(default, with = "crate::decimal::opt_text")]
        hwm: Option<Decimal>,
    },
    /// A `day` order reached its expiry time.
    ExpireOrder {
        command_id: Uuid,
        account_id: Uuid,
        order_id: Uuid,
    },
    /// The kill switch's flatten, asked for by hand: cancel every open order of the
    /// account and sell every position at market.
    Flatten { command_id: Uuid, account_id: Uuid },
}

/// Namespaces for derived command ids (UUID v5 of the order id).
const CANCEL_NAMESPACE: Uuid = Uuid::from_u128(0x3c0f_51d2_64aa_4b8e_9f10_7d2e_55c1_0a9b);
const EXPIRE_NAMESPACE: Uuid = Uuid::from_u128(0x9a41_0c6e_2b7d_4f35_8e02_c4d1_6a7b_3f58);

impl Command {
    pub fn place(order: NewOrder) -> Command {
        // The order id is unique per (account, client_order_id), so it serves as the command id.
        Command::PlaceOrder {
            command_id: order.id,
            order,
        }
    }

    pub fn cancel(order: OrderRef) -> Command {
        Command::CancelOrder {
            command_id: Uuid::new_v5(&CANCEL_NAMESPACE, order.order_id.as_bytes()),
            account_id: order.account_id,
            order_id: order.order_id,
        }
    }

    /// A trigger gets a fresh id each time: a trigger that found its condition unmet on
    /// the current price must be able to come again; one for an order that is no longer
    /// open changes nothing.
    pub fn trigger(
        account_id: Uuid,
        order_id: Uuid,
        symbol: &str,
        hwm: Option<Decimal>,
    ) -> Command {
        Command::TriggerOrder {
            command_id: Uuid::new_v4(),
            account_id,
            order_id,
            symbol: symbol.to_string(),
            hwm,
        }
    }

    pub fn expire(account_id: Uuid, order_id: Uuid) -> Command {
        Command::ExpireOrder {
            command_id: Uuid::new_v5(&EXPIRE_NAMESPACE, order_id.as_bytes()),
            account_id,
            order_id,
        }
    }

    /// A flatten gets a fresh id: each request to flatten is one more.
    pub fn flatten(account_id: Uuid) -> Command {
        Command::Flatten {
            command_id: Uuid::new_v4(),
            account_id,
        }
    }

    pub fn command_id(&self) -> Uuid {
        match self {
            Command::PlaceOrder { command_id, .. }
            | Command::CancelOrder { command_id, .. }
            | Command::TriggerOrder { command_id, .. }
            | Command::ExpireOrder { command_id, .. }
            | Command::Flatten { command_id, .. } => *command_id,
        }
    }

    pub fn account_id(&self) -> Uuid {
        match self {
            Command::PlaceOrder { order, .. } => order.account_id,
            Command::CancelOrder { account_id, .. }
            | Command::TriggerOrder { account_id, .. }
            | Command::ExpireOrder { account_id, .. }
            | Command::Flatten { account_id, .. } => *account_id,
        }
    }

    /// The order the command is about (nil for a flatten, which is about the account).
    pub fn order_id(&self) -> Uuid {
        match self {
            Command::PlaceOrder { order, .. } => order.id,
            Command::CancelOrder { order_id, .. }
            | Command::TriggerOrder { order_id, .. }
            | Command::ExpireOrder { order_id, .. } => *order_id,
            Command::Flatten { .. } => Uuid::nil(),
        }
    }

    /// Short name, as recorded in `processed_commands.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::PlaceOrder { .. } => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::TriggerOrder { .. } => "trigger_order",
            Command::ExpireOrder { .. } => "expire_order",
            Command::Flatten { .. } => "flatten",
        }
    }

    /// The SQS FIFO message group: one per account, so an account's commands stay in order.
    pub fn message_group_id(&self) -> String {
        self.account_id().to_string()
    }

    /// The SQS FIFO deduplication id: derived from the account and the client order id (via
    /// the order id), so a retried POST within SQS's 5-minute window is dropped by SQS, and
    /// after it by the executor's processed-command record.
    pub fn deduplication_id(&self) -> String {
        match self {
            Command::PlaceOrder { order, .. } => format!("place-{}", order.id),
            Command::CancelOrder { command_id, .. } => format!("cancel-{command_id}"),
            Command::TriggerOrder { command_id, .. } => format!("trigger-{command_id}"),
            Command::ExpireOrder { command_id, .. } => format!("expire-{command_id}"),
            Command::Flatten { command_id, .. } => format!("flatten-{command_id}"),
        }
    }
}
