//! Orders: Alpaca Trading API v2 enums and the types every stage shares (here), the order
//! request and its validation against the catalog ([`request`]), the validated order and
//! the order ready for the executor ([`new`]), and the order record as clients see it
//! ([`record`]).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::amount::Price;

/// Longest `client_order_id` Alpaca accepts.
pub const MAX_CLIENT_ORDER_ID_LEN: usize = 48;

/// Namespace of order ids: an order's id is the UUID v5 of `<account_id>:<client_order_id>`,
/// so the same client order id always names the same order, before and after it is stored.
const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7b1e_4a52_9c3d_4f0e_8a61_2d5c_9e83_b4f7);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// +1 for buys, -1 for sells: the sign a fill of this side gives to a position change.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Alpaca order types.
    OrderType { Market = "market", Limit = "limit", Stop = "stop", StopLimit = "stop_limit", TrailingStop = "trailing_stop" }
);
string_enum!(
    /// Alpaca time in force values.
    TimeInForce { Day = "day", Gtc = "gtc", Opg = "opg", Cls = "cls", Ioc = "ioc", Fok = "fok" }
);
string_enum!(
    /// Alpaca order classes.
    OrderClass { Simple = "simple", Bracket = "bracket", Oco = "oco", Oto = "oto" }
);
string_enum!(
    /// Alpaca order statuses.
    OrderStatus {
        New = "new",
        PartiallyFilled = "partially_filled",
        Filled = "filled",
        DoneForDay = "done_for_day",
        Canceled = "canceled",
        Expired = "expired",
        Replaced = "replaced",
        PendingCancel = "pending_cancel",
        PendingReplace = "pending_replace",
        Accepted = "accepted",
        PendingNew = "pending_new",
        AcceptedForBidding = "accepted_for_bidding",
        Stopped = "stopped",
        Rejected = "rejected",
        Suspended = "suspended",
        Calculated = "calculated",
        Held = "held",
    }
);

impl OrderStatus {
    /// Open orders can still fill or be canceled (Alpaca's `status=open` filter). `held`
    /// legs of a bracket or OTO order are open: they wait for their parent to fill.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            OrderStatus::Held
                | OrderStatus::New
                | OrderStatus::PartiallyFilled
                | OrderStatus::Accepted
                | OrderStatus::PendingNew
                | OrderStatus::PendingCancel
                | OrderStatus::PendingReplace
                | OrderStatus::AcceptedForBidding
                | OrderStatus::Calculated
        )
    }
}

/// How far a trailing stop trails its high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trail {
    /// A fixed distance in quote currency.
    Price(#[serde(with = "crate::decimal::text")] Decimal),
    /// A percentage of the high-water mark, 0 < p < 100.
    Percent(#[serde(with = "crate::decimal::text")] Decimal),
}

/// The price conditions of one order: what makes it fill and at what price at worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Prices {
    #[serde(default)]
    pub limit_price: Option<Price>,
    #[serde(default)]
    pub stop_price: Option<Price>,
    #[serde(default)]
    pub trail: Option<Trail>,
}

/// A leg of a bracket, OCO or OTO order: its type follows from its prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub role: LegRole,
    pub order_type: OrderType,
    pub prices: Prices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegRole {
    TakeProfit,
    StopLoss,
}

impl LegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::TakeProfit => "take_profit",
            LegRole::StopLoss => "stop_loss",
        }
    }
}

/// The id of the order an account names with `client_order_id`.
pub fn order_id_for(account_id: Uuid, client_order_id: &str) -> Uuid {
    Uuid::new_v5(
        &ORDER_ID_NAMESPACE,
        format!("{account_id}:{client_order_id}").as_bytes(),
    )
}

/// The id of a leg: fixed by its parent, so a retried parent never makes new legs.
pub fn leg_id(parent: Uuid, role: LegRole) -> Uuid {
    Uuid::new_v5(&parent, role.as_str().as_bytes())
}

/// When a `day` order expires: the next UTC midnight (crypto trades around the clock). On
/// the calendar's last day (a submission time read from a command body) there is no next
/// midnight: the order expires at once.
pub fn day_expiry(submitted: DateTime<Utc>) -> DateTime<Utc> {
    submitted
        .date_naive()
        .checked_add_days(chrono::Days::new(1))
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(submitted)
}

/// One order of one account: the pair every lookup and cancel takes, with named fields so
/// that the two ids cannot be swapped by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderRef {
    pub account_id: Uuid,
    pub order_id: Uuid,
}

mod new;
mod record;
mod request;

pub use new::{NewOrder, OrderSpec, ValidOrder};
pub use record::Order;
pub use request::{check_type_prices, LegRequest, OrderRequest};

#[cfg(test)]
mod tests;
