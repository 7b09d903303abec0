//! Orders: Alpaca Trading API v2 enums, the order request and its validation against the
//! catalog, and the order record as clients see it.

use crate::RejectCode;
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
    pub take_profit: Option<LegRequest>,
    pub stop_loss: Option<LegRequest>,
}

/// `take_profit` / `stop_loss` of a bracket, OCO or OTO request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegRequest {
    pub limit_price: Option<DecimalText>,
    pub stop_price: Option<DecimalText>,
    pub trail_price: Option<DecimalText>,
    pub trail_percent: Option<DecimalText>,
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
    #[serde(default)]
    pub stop_price: Option<Price>,
    #[serde(default)]
    pub trail: Option<Trail>,
    #[serde(default = "simple")]
    pub order_class: OrderClass,
    #[serde(default)]
    pub legs: Vec<Leg>,
    pub client_order_id: Option<String>,
}

fn simple() -> OrderClass {
    OrderClass::Simple
}

fn amount(
    field: &'static str,
    text: &Option<DecimalText>,
) -> Result<Option<Decimal>, RuleViolation> {
    match text {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|e| {
            let code = match e {
                DecimalError::NotANumber(_) => RejectCode::InvalidNumber,
                DecimalError::TooPrecise(_) => RejectCode::TooPrecise,
                DecimalError::OutOfRange(_) => RejectCode::OutOfRange,
            };
            RuleViolation::new(code, format!("{field}: {e}"))
        }),
    }
}

/// The code of an amount field that is not a positive amount: `invalid_<field>`, named by
/// the field's last part (`stop_loss.stop_price` → `invalid_stop_price`).
fn invalid_amount_code(field: &str) -> RejectCode {
    match field.rsplit('.').next().unwrap_or(field) {
        "qty" => RejectCode::InvalidQty,
        "notional" => RejectCode::InvalidNotional,
        "limit_price" => RejectCode::InvalidLimitPrice,
        "stop_price" => RejectCode::InvalidStopPrice,
        "trail_price" => RejectCode::InvalidTrailPrice,
        _ => RejectCode::InvalidField,
    }
}

/// A parsed amount as a positive price/quantity or a positive notional, named by its field.
fn positive<T>(
    field: &str,
    v: Decimal,
    make: fn(Decimal) -> Result<T, AmountError>,
) -> Result<T, RuleViolation> {
    let code = invalid_amount_code(field);
    if v <= Decimal::ZERO {
        return Err(RuleViolation::new(
            code,
            format!("{field} must be greater than 0, got {v}"),
        ));
    }
    make(v).map_err(|e| RuleViolation::new(code, format!("{field}: {e}")))
}

fn price_field(
    field: &'static str,
    text: &Option<DecimalText>,
    inst: &Instrument,
) -> Result<Option<Price>, RuleViolation> {
    match amount(field, text)? {
        None => Ok(None),
        Some(v) => {
            let p = positive(field, v, Price::new)?;
            inst.check_price(p.get())
                .map_err(|v| RuleViolation::new(v.filter, format!("{field}: {}", v.message)))?;
            Ok(Some(p))
        }
    }
}

fn trail_field(
    price: &Option<DecimalText>,
    percent: &Option<DecimalText>,
    names: (&'static str, &'static str),
) -> Result<Option<Trail>, RuleViolation> {
    let price = amount(names.0, price)?;
    let percent = amount(names.1, percent)?;
    match (price, percent) {
        (Some(_), Some(_)) => Err(RuleViolation::new(
            RejectCode::TrailPriceAndPercent,
            format!("give either {} or {}, not both", names.0, names.1),
        )),
        (Some(p), None) => Ok(Some(Trail::Price(positive(names.0, p, Price::new)?.get()))),
        (None, Some(p)) => {
            if p <= Decimal::ZERO || p >= Decimal::ONE_HUNDRED {
                return Err(RuleViolation::new(
                    RejectCode::InvalidTrailPercent,
                    format!("{} must be between 0 and 100 (exclusive), got {p}", names.1),
                ));
            }
            Ok(Some(Trail::Percent(p)))
        }
        (None, None) => Ok(None),
    }
}

fn invalid_field(message: impl Into<String>) -> RuleViolation {
    RuleViolation::new(RejectCode::InvalidField, message)
}

impl OrderRequest {
    /// Checks everything that needs neither a price nor the account: field presence and
    /// formats, the type's prices, the class's legs, the instrument's status, tick size,
    /// lot step and — at the order's own prices — the notional.
    pub fn validate(&self, catalog: &Catalog) -> Result<(ValidOrder, Instrument), RuleViolation> {
        let symbol = self
            .symbol
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| RuleViolation::new(RejectCode::MissingSymbol, "symbol is required"))?;
        let inst = catalog.get(symbol).ok_or_else(|| {
            RuleViolation::new(
                RejectCode::UnknownSymbol,
                format!("symbol '{symbol}' is not a known instrument"),
            )
        })?;
        if !inst.is_tradable() {
            return Err(RuleViolation::new(
                RejectCode::SymbolNotTradable,
                format!(
                    "{} is not tradable: accounts hold USDT and trade USDT-quoted instruments in status TRADING (quote {}, status {})",
                    inst.symbol, inst.quote_asset, inst.status
                ),
            ));
        }
        let side_text = self
            .side
            .as_deref()
            .ok_or_else(|| RuleViolation::new(RejectCode::MissingSide, "side is required"))?;
        let side = Side::parse(side_text).ok_or_else(|| {
            RuleViolation::new(
                RejectCode::InvalidSide,
                format!("side '{side_text}' is not one of buy, sell"),
            )
        })?;
        let type_text = self
            .order_type
            .as_deref()
            .ok_or_else(|| RuleViolation::new(RejectCode::MissingType, "type is required"))?;
        let order_type = OrderType::parse(type_text).ok_or_else(|| {
            RuleViolation::new(
                RejectCode::InvalidType,
                format!("type '{type_text}' is not one of market, limit, stop, stop_limit, trailing_stop"),
            )
        })?;
        let tif_text = self.time_in_force.as_deref().ok_or_else(|| {
            RuleViolation::new(RejectCode::MissingTimeInForce, "time_in_force is required")
        })?;
        let time_in_force = TimeInForce::parse(tif_text).ok_or_else(|| {
            RuleViolation::new(
                RejectCode::InvalidTimeInForce,
                format!("time_in_force '{tif_text}' is not one of day, gtc, opg, cls, ioc, fok"),
            )
        })?;
        if matches!(time_in_force, TimeInForce::Opg | TimeInForce::Cls) {
            return Err(RuleViolation::new(
                RejectCode::UnsupportedTimeInForce,
                format!("time_in_force '{time_in_force}' needs an opening or closing auction, which crypto markets do not have; use day, gtc, ioc or fok"),
            ));
        }
        let order_class = match self.order_class.as_deref().filter(|c| !c.is_empty()) {
            None => OrderClass::Simple,
            Some(class) => OrderClass::parse(class).ok_or_else(|| {
                RuleViolation::new(
                    RejectCode::InvalidOrderClass,
                    format!("order_class '{class}' is not one of simple, bracket, oco, oto"),
                )
            })?,
        };

        let qty = amount("qty", &self.qty)?;
        let notional = amount("notional", &self.notional)?;
        let (qty, notional) = match (qty, notional) {
            (Some(_), Some(_)) => {
                return Err(RuleViolation::new(
                    RejectCode::QtyAndNotional,
                    "give either qty or notional, not both",
                ))
            }
            (None, None) => {
                return Err(RuleViolation::new(
                    RejectCode::MissingQty,
                    "qty or notional is required",
                ))
            }
            (Some(q), None) => (Some(positive("qty", q, Quantity::new)?), None),
            (None, Some(n)) => {
                if order_type != OrderType::Market || order_class != OrderClass::Simple {
                    return Err(RuleViolation::new(
                        RejectCode::NotionalNotAllowed,
                        "notional is only allowed for simple market orders",
                    ));
                }
                (None, Some(positive("notional", n, Money::new)?))
            }
        };
        if let Some(q) = qty {
            inst.check_qty(q.get(), order_type == OrderType::Market)?;
        }

        let limit_price = price_field("limit_price", &self.limit_price, inst)?;
        let stop_price = price_field("stop_price", &self.stop_price, inst)?;
        let trail = trail_field(
            &self.trail_price,
            &self.trail_percent,
            ("trail_price", "trail_percent"),
        )?;
        if order_class == OrderClass::Oco && order_type != OrderType::Limit {
            return Err(RuleViolation::new(
                RejectCode::InvalidType,
                "an oco order is of type limit: it is the take-profit half of the pair",
            ));
        }
        // OCO: the order itself is the take-profit limit; its limit may come from either place.
        let limit_price = match (order_class, limit_price) {
            (OrderClass::Oco, None) => self
                .take_profit
                .as_ref()
                .map(|tp| price_field("take_profit.limit_price", &tp.limit_price, inst))
                .transpose()?
                .flatten(),
            (_, p) => p,
        };
        check_type_prices(order_type, limit_price, stop_price, trail)?;
        if let (Some(q), Some(p)) = (qty, limit_price.or(stop_price)) {
            inst.check_notional(q.get(), p.get(), false)?;
        }

        let legs = legs(self, order_class, order_type, side, limit_price, inst)?;
        if !legs.is_empty() {
            if qty.is_none() {
                return Err(RuleViolation::new(
                    RejectCode::MissingQty,
                    format!("{order_class} orders need qty"),
                ));
            }
            if !matches!(time_in_force, TimeInForce::Gtc | TimeInForce::Day) {
                return Err(RuleViolation::new(
                    RejectCode::InvalidTimeInForce,
                    format!("{order_class} orders must be day or gtc, not {time_in_force}"),
                ));
            }
        }

        let client_order_id = match self.client_order_id.as_deref() {
            None | Some("") => None,
            Some(id) => {
                if id.len() > MAX_CLIENT_ORDER_ID_LEN {
                    return Err(RuleViolation::new(
                        RejectCode::InvalidClientOrderId,
                        format!("client_order_id must be at most {MAX_CLIENT_ORDER_ID_LEN} characters, got {}", id.len()),
                    ));
                }
                if !id.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(RuleViolation::new(
                        RejectCode::InvalidClientOrderId,
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
                stop_price,
                trail,
                order_class,
                legs,
                client_order_id,
            },
            inst.clone(),
        ))
    }
}

/// Each type has exactly the prices it needs: limit → limit_price, stop → stop_price,
/// stop_limit → both, trailing_stop → one of trail_price / trail_percent, market → none.
pub fn check_type_prices(
    order_type: OrderType,
    limit: Option<Price>,
    stop: Option<Price>,
    trail: Option<Trail>,
) -> Result<(), RuleViolation> {
    let needs = |present: bool, wanted: bool, field: &str, code: RejectCode| match (present, wanted)
    {
        (false, true) => Err(RuleViolation::new(
            code,
            format!("{field} is required for {order_type} orders"),
        )),
        (true, false) => Err(invalid_field(format!(
            "{field} is not valid for {order_type} orders"
        ))),
        _ => Ok(()),
    };
    let (l, s, t) = match order_type {
        OrderType::Market => (false, false, false),
        OrderType::Limit => (true, false, false),
        OrderType::Stop => (false, true, false),
        OrderType::StopLimit => (true, true, false),
        OrderType::TrailingStop => (false, false, true),
    };
    needs(
        limit.is_some(),
        l,
        "limit_price",
        RejectCode::MissingLimitPrice,
    )?;
    needs(
        stop.is_some(),
        s,
        "stop_price",
        RejectCode::MissingStopPrice,
    )?;
    needs(
        trail.is_some(),
        t,
        "trail_price or trail_percent",
        RejectCode::MissingTrail,
    )?;
    Ok(())
}

/// The legs a class asks for, checked against each other and the parent.
fn legs(
    req: &OrderRequest,
    class: OrderClass,
    order_type: OrderType,
    side: Side,
    limit_price: Option<Price>,
    inst: &Instrument,
) -> Result<Vec<Leg>, RuleViolation> {
    let take_profit = req
        .take_profit
        .as_ref()
        .map(|tp| -> Result<Prices, RuleViolation> {
            if tp.stop_price.is_some() || tp.trail_price.is_some() || tp.trail_percent.is_some() {
                return Err(invalid_field("take_profit takes limit_price only"));
            }
            Ok(Prices {
                limit_price: Some(
                    price_field("take_profit.limit_price", &tp.limit_price, inst)?.ok_or_else(
                        || {
                            RuleViolation::new(
                                RejectCode::MissingTakeProfitLimitPrice,
                                "take_profit.limit_price is required",
                            )
                        },
                    )?,
                ),
                ..Prices::default()
            })
        })
        .transpose()?;
    let stop_loss = req
        .stop_loss
        .as_ref()
        .map(|sl| -> Result<Prices, RuleViolation> {
            let prices = Prices {
                limit_price: price_field("stop_loss.limit_price", &sl.limit_price, inst)?,
                stop_price: price_field("stop_loss.stop_price", &sl.stop_price, inst)?,
                trail: trail_field(
                    &sl.trail_price,
                    &sl.trail_percent,
                    ("stop_loss.trail_price", "stop_loss.trail_percent"),
                )?,
            };
            match (prices.stop_price, prices.trail) {
                (None, None) => Err(RuleViolation::new(
                    RejectCode::MissingStopLossStopPrice,
                    "stop_loss needs stop_price (or, for a trailing stop loss, trail_price or trail_percent)",
                )),
                (Some(_), Some(_)) => Err(invalid_field(
                    "stop_loss takes stop_price or a trail, not both",
                )),
                (None, Some(_)) if prices.limit_price.is_some() => Err(invalid_field(
                    "a trailing stop_loss takes no limit_price",
                )),
                _ => Ok(prices),
            }
        })
        .transpose()?;

    let leg = |role, prices: Prices| Leg {
        role,
        order_type: match (prices.limit_price, prices.stop_price, prices.trail) {
            (_, _, Some(_)) => OrderType::TrailingStop,
            (Some(_), Some(_), _) => OrderType::StopLimit,
            (None, Some(_), _) => OrderType::Stop,
            _ => OrderType::Limit,
        },
        prices,
    };
    // The exit side: legs close what the parent opens (bracket, OTO); in an OCO both
    // orders are exits of the same side.
    let exit = if class == OrderClass::Oco {
        side
    } else {
        side.opposite()
    };
    let legs = match class {
        OrderClass::Simple => {
            if take_profit.is_some() || stop_loss.is_some() {
                return Err(invalid_field(
                    "take_profit and stop_loss need order_class bracket, oco or oto",
                ));
            }
            return Ok(Vec::new());
        }
        OrderClass::Bracket => {
            let (Some(tp), Some(sl)) = (take_profit, stop_loss) else {
                return Err(RuleViolation::new(
                    RejectCode::MissingBracketLegs,
                    "a bracket order needs both take_profit and stop_loss",
                ));
            };
            if !matches!(order_type, OrderType::Market | OrderType::Limit) {
                return Err(RuleViolation::new(
                    RejectCode::InvalidType,
                    "the entry of a bracket order must be market or limit",
                ));
            }
            vec![leg(LegRole::TakeProfit, tp), leg(LegRole::StopLoss, sl)]
        }
        OrderClass::Oco => {
            let Some(sl) = stop_loss else {
                return Err(RuleViolation::new(
                    RejectCode::MissingBracketLegs,
                    "an oco order needs stop_loss (and its own limit_price or take_profit.limit_price)",
                ));
            };
            vec![leg(LegRole::StopLoss, sl)]
        }
        OrderClass::Oto => match (take_profit, stop_loss) {
            (Some(tp), None) => vec![leg(LegRole::TakeProfit, tp)],
            (None, Some(sl)) => vec![leg(LegRole::StopLoss, sl)],
            _ => {
                return Err(RuleViolation::new(
                    RejectCode::MissingBracketLegs,
                    "an oto order needs exactly one of take_profit and stop_loss",
                ))
            }
        },
    };
    // A take-profit must be on the profitable side of the stop-loss and of the entry.
    let tp = match class {
        OrderClass::Oco => limit_price,
        _ => legs
            .iter()
            .find(|l| l.role == LegRole::TakeProfit)
            .and_then(|l| l.prices.limit_price),
    };
    let sl = legs
        .iter()
        .find(|l| l.role == LegRole::StopLoss)
        .and_then(|l| l.prices.stop_price);
    let entry = if class == OrderClass::Oco {
        None
    } else {
        limit_price
    };
    // For an exit that sells, profit is above: tp > entry > sl; for an exit that buys, below.
    let above = |a: Option<Price>, b: Option<Price>| match (a, b) {
        (Some(a), Some(b)) => match exit {
            Side::Sell => a.get() > b.get(),
            Side::Buy => a.get() < b.get(),
        },
        _ => true,
    };
    if !above(tp, sl) || !above(tp, entry) || !above(entry, sl) {
        return Err(RuleViolation::new(
            RejectCode::InvalidLegPrices,
            format!(
                "for legs that {} the take-profit limit must be {} the entry and the stop-loss stop",
                exit.as_str(),
                if exit == Side::Sell { "above" } else { "below" }
            ),
        ));
    }
    if let Some(sl) = legs.iter().find(|l| l.role == LegRole::StopLoss) {
        if let (Some(stop), Some(limit)) = (sl.prices.stop_price, sl.prices.limit_price) {
            let ok = match exit {
                Side::Sell => limit.get() <= stop.get(),
                Side::Buy => limit.get() >= stop.get(),
            };
            if !ok {
                return Err(RuleViolation::new(
                    RejectCode::InvalidLegPrices,
                    "the stop-loss limit must be at or beyond its stop (below for sells, above for buys)",
                ));
            }
        }
    }
    Ok(legs)
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

/// When a `day` order expires: the next UTC midnight (crypto trades around the clock).
pub fn day_expiry(submitted: DateTime<Utc>) -> DateTime<Utc> {
    let next = submitted.date_naive() + chrono::Days::new(1);
    next.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(submitted)
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
    #[serde(default)]
    pub stop_price: Option<Price>,
    #[serde(default)]
    pub trail: Option<Trail>,
    #[serde(default = "simple")]
    pub order_class: OrderClass,
    #[serde(default)]
    pub legs: Vec<Leg>,
    /// The order this one replaces (`PATCH /v2/orders/{id}`).
    #[serde(default)]
    pub replaces: Option<Uuid>,
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
            stop_price: valid.stop_price,
            trail: valid.trail,
            order_class: valid.order_class,
            legs: valid.legs,
            replaces: None,
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
        let legs_match = mine.legs.len() == stored.legs.len()
            && mine.legs.iter().all(|a| {
                stored.legs.iter().any(|b| {
                    a.leg_role == b.leg_role
                        && a.order_type == b.order_type
                        && a.limit_price == b.limit_price
                        && a.stop_price == b.stop_price
                        && a.trail == b.trail
                })
            });
        mine.symbol == stored.symbol
            && mine.side == stored.side
            && mine.order_type == stored.order_type
            && mine.time_in_force == stored.time_in_force
            && mine.notional == stored.notional
            && mine.limit_price == stored.limit_price
            && mine.stop_price == stored.stop_price
            && mine.trail == stored.trail
            && mine.order_class == stored.order_class
            && (stored.legs.is_empty() || legs_match)
            && qty_matches
    }

    /// The order as clients see it before the executor has taken it, legs included.
    pub fn pending(&self) -> Order {
        let expires_at =
            (self.time_in_force == TimeInForce::Day).then(|| day_expiry(self.submitted_at));
        let parent = Order {
            id: self.id,
            client_order_id: self.client_order_id.clone(),
            account_id: self.account_id,
            created_at: self.submitted_at,
            updated_at: self.submitted_at,
            submitted_at: self.submitted_at,
            filled_at: None,
            canceled_at: None,
            failed_at: None,
            expired_at: None,
            expires_at,
            replaced_at: None,
            replaced_by: None,
            replaces: self.replaces,
            asset_id: self.asset_id,
            symbol: self.symbol.clone(),
            notional: self.notional.map(Money::get),
            qty: self.qty.map(Quantity::get),
            filled_qty: Decimal::ZERO,
            filled_avg_price: None,
            order_type: self.order_type,
            order_class: self.order_class,
            side: self.side,
            time_in_force: self.time_in_force,
            limit_price: self.limit_price.map(Price::get),
            stop_price: self.stop_price.map(Price::get),
            trail: self.trail,
            hwm: None,
            parent_id: None,
            leg_role: None,
            triggered_at: None,
            status: OrderStatus::PendingNew,
            reject_reason: None,
            legs: Vec::new(),
        };
        let legs = self
            .legs
            .iter()
            .map(|leg| {
                let id = leg_id(self.id, leg.role);
                Order {
                    id,
                    client_order_id: id.to_string(),
                    parent_id: Some(self.id),
                    leg_role: Some(leg.role),
                    side: if self.order_class == OrderClass::Oco {
                        self.side
                    } else {
                        self.side.opposite()
                    },
                    order_type: leg.order_type,
                    limit_price: leg.prices.limit_price.map(Price::get),
                    stop_price: leg.prices.stop_price.map(Price::get),
                    trail: leg.prices.trail,
                    // Legs wait for their parent (bracket, OTO); an OCO pair is live at once.
                    status: if self.order_class == OrderClass::Oco {
                        OrderStatus::PendingNew
                    } else {
                        OrderStatus::Held
                    },
                    replaces: None,
                    ..parent.clone()
                }
            })
            .collect();
        Order { legs, ..parent }
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
    pub expired_at: Option<DateTime<Utc>>,
    /// When a `day` order expires (the next UTC midnight after submission).
    pub expires_at: Option<DateTime<Utc>>,
    pub replaced_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<Uuid>,
    pub replaces: Option<Uuid>,
    pub asset_id: Uuid,
    pub symbol: String,
    pub notional: Option<Decimal>,
    pub qty: Option<Decimal>,
    pub filled_qty: Decimal,
    pub filled_avg_price: Option<Decimal>,
    pub order_type: OrderType,
    pub order_class: OrderClass,
    pub side: Side,
    pub time_in_force: TimeInForce,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub trail: Option<Trail>,
    /// High-water mark of a trailing stop: the best price since it went live (highest bid
    /// for a sell, lowest ask for a buy).
    pub hwm: Option<Decimal>,
    /// The parent of a leg (bracket, OCO, OTO).
    pub parent_id: Option<Uuid>,
    pub leg_role: Option<LegRole>,
    /// When a stop or stop-limit order's stop was reached (a triggered stop-limit rests as a
    /// limit order).
    pub triggered_at: Option<DateTime<Utc>>,
    pub status: OrderStatus,
    /// Why the order was rejected (our addition to Alpaca's order object).
    pub reject_reason: Option<String>,
    /// The legs of a parent order, as Alpaca nests them (empty for legs and simple orders).
    pub legs: Vec<Order>,
}

impl Order {
    pub fn trail_price(&self) -> Option<Decimal> {
        match self.trail {
            Some(Trail::Price(p)) => Some(p),
            _ => None,
        }
    }

    pub fn trail_percent(&self) -> Option<Decimal> {
        match self.trail {
            Some(Trail::Percent(p)) => Some(p),
            _ => None,
        }
    }

    /// Quantity still to fill.
    pub fn remaining(&self) -> Decimal {
        (self.qty.unwrap_or_default() - self.filled_qty).max(Decimal::ZERO)
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
        req(json)
            .validate(Catalog::builtin())
            .unwrap_err()
            .code
            .to_string()
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
        let typed = |t: &str, extra: &str| {
            code(&format!(
                r#"{{"symbol":"BTCUSDT","qty":"0.01","side":"sell","type":"{t}","time_in_force":"gtc"{extra}}}"#
            ))
        };
        assert_eq!(typed("stop", ""), "missing_stop_price");
        assert_eq!(
            typed("stop_limit", r#","stop_price":"50000""#),
            "missing_limit_price"
        );
        assert_eq!(typed("trailing_stop", ""), "missing_trail");
        assert_eq!(
            typed("trailing_stop", r#","trail_price":"5","trail_percent":"1""#),
            "trail_price_and_percent"
        );
        assert_eq!(
            typed("trailing_stop", r#","trail_percent":"100""#),
            "invalid_trail_percent"
        );
        assert_eq!(typed("market", r#","stop_price":"50000""#), "invalid_field");
        assert_eq!(
            typed("stop", r#","stop_price":"50000.001""#),
            "PRICE_FILTER"
        );
        assert_eq!(
            typed("limit", r#","limit_price":"50000","order_class":"bracket""#),
            "missing_bracket_legs"
        );
        // A sell bracket's exits buy back: take-profit below the entry, stop above.
        assert_eq!(
            typed(
                "limit",
                r#","limit_price":"50000","order_class":"bracket","take_profit":{"limit_price":"51000"},"stop_loss":{"stop_price":"52000"}"#
            ),
            "invalid_leg_prices"
        );
        assert_eq!(
            typed(
                "market",
                r#","order_class":"oco","take_profit":{"limit_price":"51000"},"stop_loss":{"stop_price":"49000"}"#
            ),
            "invalid_type"
        );
        assert_eq!(
            typed(
                "limit",
                r#","limit_price":"50000","order_class":"oto","take_profit":{"limit_price":"49000"},"stop_loss":{"stop_price":"52000"}"#
            ),
            "missing_bracket_legs"
        );
        assert_eq!(
            typed(
                "limit",
                r#","limit_price":"50000","take_profit":{"limit_price":"49000"}"#
            ),
            "invalid_field"
        );
        assert_eq!(
            code(
                r#"{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"market","time_in_force":"opg"}"#
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
    fn classes_build_their_legs() {
        let (v, _) = req(r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc","order_class":"bracket","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000","limit_price":"48900"}}"#)
            .validate(Catalog::builtin())
            .unwrap();
        assert_eq!(v.legs.len(), 2);
        assert_eq!(v.legs[0].order_type, OrderType::Limit);
        assert_eq!(v.legs[1].order_type, OrderType::StopLimit);
        let (v, _) = req(r#"{"symbol":"BTCUSDT","qty":"0.01","side":"sell","type":"limit","time_in_force":"gtc","order_class":"oco","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000"}}"#)
            .validate(Catalog::builtin())
            .unwrap();
        assert_eq!(
            v.limit_price.map(Price::get),
            Some(dec!(52000)),
            "the OCO's own limit"
        );
        assert_eq!(v.legs[0].order_type, OrderType::Stop);
        let o = NewOrder::new(Uuid::new_v4(), v, Uuid::nil(), Utc::now()).pending();
        assert_eq!(o.legs.len(), 1);
        assert_eq!(o.legs[0].side, Side::Sell);
        assert_eq!(o.legs[0].parent_id, Some(o.id));
    }

    #[test]
    fn day_orders_expire_at_the_next_utc_midnight() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T23:59:59.999Z")
            .unwrap()
            .to_utc();
        assert_eq!(day_expiry(t).to_rfc3339(), "2026-11-22T00:00:00+00:00");
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(day_expiry(t).to_rfc3339(), "2026-11-23T00:00:00+00:00");
    }

    #[test]
    fn order_ids_follow_client_order_ids() {
        let a = Uuid::new_v4();
        assert_eq!(order_id_for(a, "x"), order_id_for(a, "x"));
        assert_ne!(order_id_for(a, "x"), order_id_for(a, "y"));
        assert_ne!(order_id_for(a, "x"), order_id_for(Uuid::new_v4(), "x"));
    }
}
