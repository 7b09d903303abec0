//! Orders: Alpaca Trading API v2 enums, the order request and its validation against the
//! catalog, and the order record as clients see it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::amount::{AmountError, Money, Price, Quantity};
use crate::catalog::{Catalog, Instrument};
use crate::decimal::{DecimalError, DecimalText};
use crate::error::RuleViolation;

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
    }
);

impl OrderStatus {
    /// Open orders can still fill or be canceled (Alpaca's `status=open` filter).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            OrderStatus::New
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

/// `POST /v2/orders` as the client sent it. Enumerations stay text so that each bad value
/// gets its own named error, and amounts stay text so they are parsed exactly.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OrderRequest {
    pub symbol: Option<String>,
    pub qty: Option<DecimalText>,
    pub notional: Option<DecimalText>,
    pub side: Option<String>,
    #[serde(rename = "type", alias = "order_type")]
    pub order_type: Option<String>,
    pub time_in_force: Option<String>,
    pub limit_price: Option<DecimalText>,
    pub stop_price: Option<DecimalText>,
    pub trail_price: Option<DecimalText>,
    pub trail_percent: Option<DecimalText>,
    pub extended_hours: Option<bool>,
    pub client_order_id: Option<String>,
    pub order_class: Option<String>,
    pub take_profit: Option<serde_json::Value>,
    pub stop_loss: Option<serde_json::Value>,
}

/// An order request that passed every rule that needs no price or account state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidOrder {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    #[serde(default)]
    pub qty: Option<Quantity>,
    #[serde(default)]
    pub notional: Option<Money>,
    #[serde(default)]
    pub limit_price: Option<Price>,
    pub client_order_id: Option<String>,
}

fn amount(
    field: &'static str,
    text: &Option<DecimalText>,
) -> Result<Option<Decimal>, RuleViolation> {
    match text {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|e| {
            let code = match e {
                DecimalError::NotANumber(_) => "invalid_number",
                DecimalError::TooPrecise(_) => "too_precise",
                DecimalError::OutOfRange(_) => "out_of_range",
            };
            RuleViolation::new(code, format!("{field}: {e}"))
        }),
    }
}

/// A parsed amount as a positive price/quantity or a positive notional, named by its field.
fn positive<T>(
    field: &'static str,
    v: Decimal,
    make: fn(Decimal) -> Result<T, AmountError>,
) -> Result<T, RuleViolation> {
    if v <= Decimal::ZERO {
        return Err(RuleViolation::new(
            format!("invalid_{field}"),
            format!("{field} must be greater than 0, got {v}"),
        ));
    }
    make(v).map_err(|e| RuleViolation::new(format!("invalid_{field}"), format!("{field}: {e}")))
}

impl OrderRequest {
    /// Checks everything that needs neither a price nor the account: field presence and
    /// formats, supported types, the instrument's status, tick size, lot step and — for
    /// limit orders — the notional at the limit price.
    pub fn validate(&self, catalog: &Catalog) -> Result<(ValidOrder, Instrument), RuleViolation> {
        let symbol = self
            .symbol
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| RuleViolation::new("missing_symbol", "symbol is required"))?;
        let inst = catalog.get(symbol).ok_or_else(|| {
            RuleViolation::new(
                "unknown_symbol",
                format!("symbol '{symbol}' is not a known instrument"),
            )
        })?;
        if !inst.is_tradable() {
            return Err(RuleViolation::new(
                "symbol_not_tradable",
                format!(
                    "{} is not tradable: accounts hold USDT and trade USDT-quoted instruments in status TRADING (quote {}, status {})",
                    inst.symbol, inst.quote_asset, inst.status
                ),
            ));
        }
        let side_text = self
            .side
            .as_deref()
            .ok_or_else(|| RuleViolation::new("missing_side", "side is required"))?;
        let side = Side::parse(side_text).ok_or_else(|| {
            RuleViolation::new(
                "invalid_side",
                format!("side '{side_text}' is not one of buy, sell"),
            )
        })?;
        let type_text = self
            .order_type
            .as_deref()
            .ok_or_else(|| RuleViolation::new("missing_type", "type is required"))?;
        let order_type = OrderType::parse(type_text).ok_or_else(|| {
            RuleViolation::new(
                "invalid_type",
                format!("type '{type_text}' is not one of market, limit, stop, stop_limit, trailing_stop"),
            )
        })?;
        if !matches!(order_type, OrderType::Market | OrderType::Limit) {
            return Err(RuleViolation::new(
                "unsupported_order_type",
                format!("type '{order_type}' is not supported yet; use market or limit"),
            ));
        }
        let tif_text = self.time_in_force.as_deref().ok_or_else(|| {
            RuleViolation::new("missing_time_in_force", "time_in_force is required")
        })?;
        let time_in_force = TimeInForce::parse(tif_text).ok_or_else(|| {
            RuleViolation::new(
                "invalid_time_in_force",
                format!("time_in_force '{tif_text}' is not one of day, gtc, opg, cls, ioc, fok"),
            )
        })?;
        if !matches!(time_in_force, TimeInForce::Gtc | TimeInForce::Ioc) {
            return Err(RuleViolation::new(
                "unsupported_time_in_force",
                format!("time_in_force '{time_in_force}' is not supported yet; use gtc or ioc"),
            ));
        }
        if let Some(class) = self.order_class.as_deref().filter(|c| !c.is_empty()) {
            match OrderClass::parse(class) {
                Some(OrderClass::Simple) => {}
                Some(other) => {
                    return Err(RuleViolation::new(
                        "unsupported_order_class",
                        format!("order_class '{other}' is not supported yet; use simple"),
                    ))
                }
                None => {
                    return Err(RuleViolation::new(
                        "invalid_order_class",
                        format!("order_class '{class}' is not one of simple, bracket, oco, oto"),
                    ))
                }
            }
        }
        if self.take_profit.is_some() || self.stop_loss.is_some() {
            return Err(RuleViolation::new(
                "unsupported_order_class",
                "take_profit and stop_loss need a bracket order, which is not supported yet",
            ));
        }
        for (field, v) in [
            ("stop_price", &self.stop_price),
            ("trail_price", &self.trail_price),
            ("trail_percent", &self.trail_percent),
        ] {
            if v.is_some() {
                return Err(RuleViolation::new(
                    "invalid_field",
                    format!("{field} is only valid for stop, stop_limit and trailing_stop orders"),
                ));
            }
        }

        let qty = amount("qty", &self.qty)?;
        let notional = amount("notional", &self.notional)?;
        let (qty, notional) = match (qty, notional) {
            (Some(_), Some(_)) => {
                return Err(RuleViolation::new(
                    "qty_and_notional",
                    "give either qty or notional, not both",
                ))
            }
            (None, None) => {
                return Err(RuleViolation::new(
                    "missing_qty",
                    "qty or notional is required",
                ))
            }
            (Some(q), None) => (Some(positive("qty", q, Quantity::new)?), None),
            (None, Some(n)) => {
                if order_type != OrderType::Market {
                    return Err(RuleViolation::new(
                        "notional_not_allowed",
                        "notional is only allowed for market orders",
                    ));
                }
                (None, Some(positive("notional", n, Money::new)?))
            }
        };
        let is_market = order_type == OrderType::Market;
        if let Some(q) = qty {
            inst.check_qty(q.get(), is_market)?;
        }

        let limit_price = amount("limit_price", &self.limit_price)?;
        let limit_price = match (order_type, limit_price) {
            (OrderType::Limit, None) => {
                return Err(RuleViolation::new(
                    "missing_limit_price",
                    "limit_price is required for limit orders",
                ))
            }
            (OrderType::Limit, Some(p)) => {
                let p = positive("limit_price", p, Price::new)?;
                inst.check_price(p.get())?;
                if let Some(q) = qty {
                    inst.check_notional(q.get(), p.get(), false)?;
                }
                Some(p)
            }
            (_, Some(_)) => {
                return Err(RuleViolation::new(
                    "invalid_field",
                    "limit_price is only valid for limit and stop_limit orders",
                ))
            }
            (_, None) => None,
        };

        let client_order_id = match self.client_order_id.as_deref() {
            None | Some("") => None,
            Some(id) => {
                if id.len() > MAX_CLIENT_ORDER_ID_LEN {
                    return Err(RuleViolation::new(
                        "invalid_client_order_id",
                        format!("client_order_id must be at most {MAX_CLIENT_ORDER_ID_LEN} characters, got {}", id.len()),
                    ));
                }
                if !id.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(RuleViolation::new(
                        "invalid_client_order_id",
                        "client_order_id may contain printable ASCII characters only",
                    ));
                }
                Some(id.to_string())
            }
        };

        Ok((
            ValidOrder {
                symbol: inst.symbol.clone(),
                side,
                order_type,
                time_in_force,
                qty,
                notional,
                limit_price,
                client_order_id,
            },
            inst.clone(),
        ))
    }
}

/// The id of the order an account names with `client_order_id`.
pub fn order_id_for(account_id: Uuid, client_order_id: &str) -> Uuid {
    Uuid::new_v5(
        &ORDER_ID_NAMESPACE,
        format!("{account_id}:{client_order_id}").as_bytes(),
    )
}

/// An order ready for the executor: validated, with its ids fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub id: Uuid,
    pub account_id: Uuid,
    pub client_order_id: String,
    pub symbol: String,
    pub asset_id: Uuid,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    #[serde(default)]
    pub qty: Option<Quantity>,
    #[serde(default)]
    pub notional: Option<Money>,
    #[serde(default)]
    pub limit_price: Option<Price>,
    pub submitted_at: DateTime<Utc>,
}

impl NewOrder {
    /// Builds the order for `account_id`; without a client order id, a fresh one is made up.
    pub fn new(
        account_id: Uuid,
        valid: ValidOrder,
        asset_id: Uuid,
        now: DateTime<Utc>,
    ) -> NewOrder {
        let client_order_id = valid
            .client_order_id
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        NewOrder {
            id: order_id_for(account_id, &client_order_id),
            account_id,
            client_order_id,
            symbol: valid.symbol,
            asset_id,
            side: valid.side,
            order_type: valid.order_type,
            time_in_force: valid.time_in_force,
            qty: valid.qty,
            notional: valid.notional,
            limit_price: valid.limit_price,
            submitted_at: now,
        }
    }

    /// True when `other` asks for the same trade (ids and times aside): a retry, not a conflict.
    pub fn same_parameters(&self, other: &NewOrder) -> bool {
        self.matches_stored(&other.pending())
    }

    /// True when `stored` is this order as the ledger or the cache holds it: the same trade,
    /// compared on what the client sent. A filled notional order has its computed quantity
    /// stored, which the client never sent.
    pub fn matches_stored(&self, stored: &Order) -> bool {
        let mine = self.pending();
        let qty_matches = mine.qty == stored.qty || (self.qty.is_none() && self.notional.is_some());
        mine.symbol == stored.symbol
            && mine.side == stored.side
            && mine.order_type == stored.order_type
            && mine.time_in_force == stored.time_in_force
            && mine.notional == stored.notional
            && mine.limit_price == stored.limit_price
            && qty_matches
    }

    /// The order as clients see it before the executor has taken it.
    pub fn pending(&self) -> Order {
        Order {
            id: self.id,
            client_order_id: self.client_order_id.clone(),
            account_id: self.account_id,
            created_at: self.submitted_at,
            updated_at: self.submitted_at,
            submitted_at: self.submitted_at,
            filled_at: None,
            canceled_at: None,
            failed_at: None,
            asset_id: self.asset_id,
            symbol: self.symbol.clone(),
            notional: self.notional.map(Money::get),
            qty: self.qty.map(Quantity::get),
            filled_qty: Decimal::ZERO,
            filled_avg_price: None,
            order_type: self.order_type,
            side: self.side,
            time_in_force: self.time_in_force,
            limit_price: self.limit_price.map(Price::get),
            status: OrderStatus::PendingNew,
            reject_reason: None,
        }
    }
}

/// An order as stored in the ledger and shown to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub client_order_id: String,
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: DateTime<Utc>,
    pub filled_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub asset_id: Uuid,
    pub symbol: String,
    pub notional: Option<Decimal>,
    pub qty: Option<Decimal>,
    pub filled_qty: Decimal,
    pub filled_avg_price: Option<Decimal>,
    pub order_type: OrderType,
    pub side: Side,
    pub time_in_force: TimeInForce,
    pub limit_price: Option<Decimal>,
    pub status: OrderStatus,
    /// Why the order was rejected (our addition to Alpaca's order object).
    pub reject_reason: Option<String>,
}

fn text(d: Option<Decimal>) -> serde_json::Value {
    d.map(|d| serde_json::Value::String(crate::decimal::to_text(&d)))
        .unwrap_or(serde_json::Value::Null)
}

impl Order {
    /// Alpaca's order object. Amounts are decimal strings.
    pub fn to_alpaca_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "submitted_at": self.submitted_at,
            "filled_at": self.filled_at,
            "expired_at": null,
            "expires_at": null,
            "canceled_at": self.canceled_at,
            "failed_at": self.failed_at,
            "replaced_at": null,
            "replaced_by": null,
            "replaces": null,
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "asset_class": "crypto",
            "notional": text(self.notional),
            "qty": text(self.qty),
            "filled_qty": crate::decimal::to_text(&self.filled_qty),
            "filled_avg_price": text(self.filled_avg_price),
            "order_class": "simple",
            "order_type": self.order_type,
            "type": self.order_type,
            "side": self.side,
            "position_intent": null,
            "time_in_force": self.time_in_force,
            "limit_price": text(self.limit_price),
            "stop_price": null,
            "status": self.status,
            "extended_hours": false,
            "legs": null,
            "trail_percent": null,
            "trail_price": null,
            "hwm": null,
            "reject_reason": self.reject_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn req(json: &str) -> OrderRequest {
        serde_json::from_str(json).unwrap()
    }

    fn code(json: &str) -> String {
        req(json).validate(Catalog::builtin()).unwrap_err().code
    }

    #[test]
    fn valid_market_and_limit_orders() {
        let (v, _) = req(r#"{"symbol":"BTC/USDT","qty":0.001,"side":"buy","type":"market","time_in_force":"gtc"}"#)
            .validate(Catalog::builtin())
            .unwrap();
        assert_eq!(v.symbol, "BTCUSDT");
        assert_eq!(v.qty.map(Quantity::get), Some(dec!(0.001)));
        let (v, _) = req(r#"{"symbol":"ETHUSDT","qty":"0.5","side":"sell","type":"limit","limit_price":"3000.01","time_in_force":"ioc","client_order_id":"abc"}"#)
            .validate(Catalog::builtin())
            .unwrap();
        assert_eq!(v.limit_price.map(Price::get), Some(dec!(3000.01)));
        assert_eq!(v.client_order_id.as_deref(), Some("abc"));
    }

    #[test]
    fn each_rule_has_its_code() {
        let base = |extra: &str| {
            format!(
                r#"{{"symbol":"BTCUSDT","side":"buy","type":"limit","time_in_force":"gtc",{extra}}}"#
            )
        };
        assert_eq!(
            code(&base(r#""qty":"0","limit_price":"60000""#)),
            "invalid_qty"
        );
        assert_eq!(
            code(&base(r#""qty":"-1","limit_price":"60000""#)),
            "invalid_qty"
        );
        assert_eq!(
            code(&base(r#""qty":"0.000015","limit_price":"60000""#)),
            "LOT_SIZE"
        );
        assert_eq!(
            code(&base(r#""qty":"0.001","limit_price":"60000.001""#)),
            "PRICE_FILTER"
        );
        assert_eq!(
            code(&base(r#""qty":"0.0001","limit_price":"60000""#)),
            "MIN_NOTIONAL"
        );
        assert_eq!(
            code(&base(r#""qty":"NaN","limit_price":"60000""#)),
            "invalid_number"
        );
        assert_eq!(
            code(&base(r#""qty":1e300,"limit_price":"60000""#)),
            "out_of_range"
        );
        assert_eq!(code(&base(r#""qty":"0.001""#)), "missing_limit_price");
        assert_eq!(
            code(
                r#"{"symbol":"NOPEUSDT","qty":"1","side":"buy","type":"market","time_in_force":"gtc"}"#
            ),
            "unknown_symbol"
        );
        assert_eq!(
            code(
                r#"{"symbol":"ETHBTC","qty":"1","side":"buy","type":"market","time_in_force":"gtc"}"#
            ),
            "symbol_not_tradable"
        );
        assert_eq!(
            code(
                r#"{"symbol":"BTCUSDT","qty":"1","side":"hold","type":"market","time_in_force":"gtc"}"#
            ),
            "invalid_side"
        );
        assert_eq!(
            code(
                r#"{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"stop","time_in_force":"gtc"}"#
            ),
            "unsupported_order_type"
        );
        assert_eq!(
            code(
                r#"{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"market","time_in_force":"day"}"#
            ),
            "unsupported_time_in_force"
        );
        let long_id = "x".repeat(49);
        assert_eq!(
            code(&format!(
                r#"{{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"{long_id}"}}"#
            )),
            "invalid_client_order_id"
        );
    }

    #[test]
    fn order_ids_follow_client_order_ids() {
        let a = Uuid::new_v4();
        assert_eq!(order_id_for(a, "x"), order_id_for(a, "x"));
        assert_ne!(order_id_for(a, "x"), order_id_for(a, "y"));
        assert_ne!(order_id_for(a, "x"), order_id_for(Uuid::new_v4(), "x"));
    }
}
