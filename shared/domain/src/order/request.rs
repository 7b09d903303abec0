//! `POST /v2/orders` as the client sent it, and its validation against the catalog: every
//! rule that needs no price or account state.

use crate::RejectCode;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::*;
use crate::amount::{AmountError, Money, Price, Quantity};
use crate::catalog::{Catalog, Instrument};
use crate::decimal::{DecimalError, DecimalText};
use crate::error::RuleViolation;

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
                spec: OrderSpec {
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
                },
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
