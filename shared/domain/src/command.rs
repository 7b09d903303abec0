//! Commands sent through the SQS FIFO queue to the executor, the ledger's only writer.
//!
//! Every command has an id; the executor records it in the same transaction as its effects,
//! so a redelivered command changes nothing. The message group is the account id, so one
//! account's commands apply in order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::NewOrder;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    PlaceOrder {
        command_id: Uuid,
        order: NewOrder,
    },
    CancelOrder {
        command_id: Uuid,
        account_id: Uuid,
        order_id: Uuid,
    },
}

/// Namespace for the ids of cancel commands (UUID v5 of the order id).
const CANCEL_NAMESPACE: Uuid = Uuid::from_u128(0x3c0f_51d2_64aa_4b8e_9f10_7d2e_55c1_0a9b);

impl Command {
    pub fn place(order: NewOrder) -> Command {
        // The order id is unique per (account, client_order_id), so it serves as the command id.
        Command::PlaceOrder {
            command_id: order.id,
            order,
        }
    }

    pub fn cancel(account_id: Uuid, order_id: Uuid) -> Command {
        Command::CancelOrder {
            command_id: Uuid::new_v5(&CANCEL_NAMESPACE, order_id.as_bytes()),
            account_id,
            order_id,
        }
    }

    pub fn command_id(&self) -> Uuid {
        match self {
            Command::PlaceOrder { command_id, .. } | Command::CancelOrder { command_id, .. } => {
                *command_id
            }
        }
    }

    pub fn account_id(&self) -> Uuid {
        match self {
            Command::PlaceOrder { order, .. } => order.account_id,
            Command::CancelOrder { account_id, .. } => *account_id,
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
        }
    }
}
