//! Orders: sides, types, time in force, statuses (Alpaca Trading API v2 enums).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// +1 for buys, -1 for sells: the sign a fill of this side gives to a position change.
    pub fn sign(self) -> rust_decimal::Decimal {
        match self {
            Side::Buy => rust_decimal::Decimal::ONE,
            Side::Sell => rust_decimal::Decimal::NEGATIVE_ONE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}
