//! Risk limits and the kill switch: the rules every new order and fill is checked against.
//!
//! The executor applies them on the ledger (authoritative); the api and the webhook run the
//! same functions on cached data as cheap pre-checks, so both agree on what is refused.
//!
//! Limits are inclusive maxima: an order whose notional equals `max_order_notional` passes,
//! one a cent over is refused. Every refusal names the rule and the numbers.
//!
//! - `max_order_notional`: qty × the order's price (its limit, its stop, or the touch for
//!   market and trailing orders), or the notional of a notional order;
//! - `max_position_notional` (buys): the symbol's position after the order, at the order's
//!   price;
//! - `max_open_orders`: open orders besides legs waiting for their parent; a new order is
//!   refused when the account already has that many, and never past
//!   [`MAX_OPEN_ORDERS_CEILING`] whatever the setting;
//! - `max_gross_leverage` (buys): (gross exposure + the order's notional) / equity;
//! - `daily_loss_limit`: when the realized PnL of the UTC day (fees included) falls to
//!   minus the limit, the kill switch trips; it re-arms when the day's loss comes back
//!   under the limit, so a reset by hand is not undone by the next fill of the same loss.
//!
//! While the kill switch is on, the account places no new order (replacements included)
//! and no buy fills; resting sells (stop losses, take profits) still protect positions.

use crate::RejectCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::order::Side;
use crate::RuleViolation;

/// An account's limits; `None` switches a limit off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskLimits {
    #[serde(with = "crate::decimal::opt_text")]
    pub max_order_notional: Option<Decimal>,
    #[serde(with = "crate::decimal::opt_text")]
    pub max_position_notional: Option<Decimal>,
    pub max_open_orders: Option<u32>,
    #[serde(with = "crate::decimal::opt_text")]
    pub max_gross_leverage: Option<Decimal>,
    #[serde(with = "crate::decimal::opt_text")]
    pub daily_loss_limit: Option<Decimal>,
    /// When the kill switch trips: cancel every open order and sell every position.
    pub flatten_on_kill: bool,
}

impl Default for RiskLimits {
    /// Sane for the default 100,000 USDT paper account: one order at most the whole
    /// account, a position at most 2.5 times it, 200 open orders, no borrowing, and a
    /// day's realized loss of 10 % stops trading.
    fn default() -> RiskLimits {
        RiskLimits {
            max_order_notional: Some(Decimal::from(100_000)),
            max_position_notional: Some(Decimal::from(250_000)),
            max_open_orders: Some(200),
            max_gross_leverage: Some(Decimal::ONE),
            daily_loss_limit: Some(Decimal::from(10_000)),
            flatten_on_kill: false,
        }
    }
}

impl RiskLimits {
    /// Every limit off (pure engine tests and benchmarks).
    pub fn none() -> RiskLimits {
        RiskLimits {
            max_order_notional: None,
            max_position_notional: None,
            max_open_orders: None,
            max_gross_leverage: None,
            daily_loss_limit: None,
            flatten_on_kill: false,
        }
    }

    /// The limits that `next` loosens against these: raised, or switched off where they
    /// were on (and `flatten_on_kill` turned off). Loosening needs a login session, so a
    /// leaked API key cannot lift the limits that bound what it can do.
    pub fn loosened_by(&self, next: &RiskLimits) -> Vec<&'static str> {
        fn looser<T: PartialOrd>(now: Option<T>, next: Option<T>) -> bool {
            match (now, next) {
                (Some(_), None) => true,
                (Some(a), Some(b)) => b > a,
                (None, _) => false,
            }
        }
        let mut fields = Vec::new();
        let decimals = [
            (
                "max_order_notional",
                self.max_order_notional,
                next.max_order_notional,
            ),
            (
                "max_position_notional",
                self.max_position_notional,
                next.max_position_notional,
            ),
            (
                "max_gross_leverage",
                self.max_gross_leverage,
                next.max_gross_leverage,
            ),
            (
                "daily_loss_limit",
                self.daily_loss_limit,
                next.daily_loss_limit,
            ),
        ];
        for (field, now, then) in decimals {
            if looser(now, then) {
                fields.push(field);
            }
        }
        if looser(self.max_open_orders, next.max_open_orders) {
            fields.push("max_open_orders");
        }
        if self.flatten_on_kill && !next.flatten_on_kill {
            fields.push("flatten_on_kill");
        }
        fields
    }
}

/// The kill switch, when on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// An account's risk state while a batch is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskState {
    pub limits: RiskLimits,
    pub kill: Option<Kill>,
    /// Realized PnL (fees included) of the current UTC day.
    pub realized_today: Decimal,
    /// The kill switch tripped during the batch (to be written).
    pub tripped: bool,
}

impl Default for RiskState {
    fn default() -> RiskState {
        RiskState {
            limits: RiskLimits::none(),
            kill: None,
            realized_today: Decimal::ZERO,
            tripped: false,
        }
    }
}

/// The account as a new order would change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderExposure {
    pub side: Side,
    pub symbol: String,
    /// The order's notional at its price.
    pub notional: Decimal,
    /// The symbol's position notional after the order, at the order's price (buys).
    pub position_after: Decimal,
    /// Open orders other than this one (legs waiting for a parent not counted).
    pub open_orders: usize,
    /// Σ |qty| × mark over the positions, before the order.
    pub gross: Decimal,
    /// Cash + Σ qty × mark.
    pub equity: Decimal,
    /// A replacement takes an open order's place: the count of open orders is unchanged.
    pub replaces: bool,
}

fn money(d: Decimal) -> Decimal {
    d.round_dp(8).normalize()
}

/// The kill switch refuses the order while it is on.
pub fn check_kill(kill: Option<&Kill>) -> Result<(), RuleViolation> {
    match kill {
        Some(k) => Err(RuleViolation::new(
            RejectCode::KillSwitch,
            format!(
                "the account's kill switch is on since {} ({}); no new orders until it is reset with DELETE /v2/account/kill",
                k.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                k.reason
            ),
        )),
        None => Ok(()),
    }
}

/// Checks a new order against the limits (the kill switch first).
/// Open orders an account may hold whatever its `max_open_orders` (off, or set higher):
/// every open order costs the trigger index and each executor batch of the account. The
/// executor checks it under the account's lock, so concurrent submissions cannot pass it
/// together.
pub const MAX_OPEN_ORDERS_CEILING: u32 = 1000;

pub fn check_order(state: &RiskState, x: &OrderExposure) -> Result<(), RuleViolation> {
    check_kill(state.kill.as_ref())?;
    let l = &state.limits;
    if let Some(max) = l.max_order_notional {
        if x.notional > max {
            return Err(RuleViolation::new(
                RejectCode::MaxOrderNotional,
                format!(
                    "the order's notional {} USDT exceeds the account's max_order_notional of {} USDT",
                    money(x.notional),
                    money(max)
                ),
            ));
        }
    }
    // The account's limit, under the server's ceiling that no setting lifts.
    let (max, whose) = match l.max_open_orders {
        Some(max) if max <= MAX_OPEN_ORDERS_CEILING => (max, "its max_open_orders"),
        _ => (MAX_OPEN_ORDERS_CEILING, "the server's ceiling"),
    };
    if !x.replaces && x.open_orders >= max as usize {
        return Err(RuleViolation::new(
            RejectCode::MaxOpenOrders,
            format!(
                "the account has {} open orders, the most {whose} of {max} allows",
                x.open_orders
            ),
        ));
    }
    if x.side == Side::Sell {
        // Selling reduces a spot position: never refused by exposure limits.
        return Ok(());
    }
    if let Some(max) = l.max_position_notional {
        if x.position_after > max {
            return Err(RuleViolation::new(
                RejectCode::MaxPositionNotional,
                format!(
                    "the {} position would be {} USDT after this order, over the account's max_position_notional of {} USDT",
                    x.symbol,
                    money(x.position_after),
                    money(max)
                ),
            ));
        }
    }
    if let Some(max) = l.max_gross_leverage {
        let gross_after = x.gross + x.notional;
        if x.equity <= Decimal::ZERO || gross_after > max * x.equity {
            let leverage = if x.equity > Decimal::ZERO {
                (gross_after / x.equity).round_dp(4).normalize().to_string()
            } else {
                "unbounded".to_string()
            };
            return Err(RuleViolation::new(
                RejectCode::MaxGrossLeverage,
                format!(
                    "gross exposure would be {} USDT on equity of {} USDT: leverage {leverage}, over the account's max_gross_leverage of {}",
                    money(gross_after),
                    money(x.equity),
                    max.normalize()
                ),
            ));
        }
    }
    Ok(())
}

/// Adds a fill's realized PnL to the day's; returns the reason when the daily loss limit
/// trips the kill switch (the day's loss reaching the limit, from under it).
pub fn record_realized(state: &mut RiskState, realized: Decimal) -> Option<String> {
    let before = state.realized_today;
    state.realized_today += realized;
    let limit = state.limits.daily_loss_limit?;
    let reached = |r: Decimal| -r >= limit;
    if state.kill.is_none() && reached(state.realized_today) && !reached(before) {
        Some(format!(
            "daily_loss_limit: the day's realized PnL reached {} USDT, the limit is a loss of {} USDT",
            money(state.realized_today),
            money(limit)
        ))
    } else {
        None
    }
}

/// The start of the UTC day of `now`: the daily loss limit counts fills from here.
pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// A partial update of the limits (`PATCH /v2/account/risk`): an absent field keeps its
/// value, `null` switches the limit off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskPatch {
    #[serde(default, deserialize_with = "patch_field")]
    pub max_order_notional: Option<Option<crate::decimal::DecimalText>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub max_position_notional: Option<Option<crate::decimal::DecimalText>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub max_open_orders: Option<Option<crate::decimal::DecimalText>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub max_gross_leverage: Option<Option<crate::decimal::DecimalText>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub daily_loss_limit: Option<Option<crate::decimal::DecimalText>>,
    #[serde(default)]
    pub flatten_on_kill: Option<bool>,
}

/// Present-but-null becomes `Some(None)`; absent stays `None` (serde's default).
fn patch_field<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn positive(field: &str, t: &crate::decimal::DecimalText) -> Result<Decimal, RuleViolation> {
    match t.parse() {
        Ok(d) if d > Decimal::ZERO => Ok(d.normalize()),
        _ => Err(RuleViolation::new(
            RejectCode::InvalidRiskLimit,
            format!(
                "{field} must be a positive decimal or null (off); got '{}'",
                t.0
            ),
        )),
    }
}

impl RiskPatch {
    /// The limits after this patch, or the rule a value breaks.
    pub fn apply(&self, current: &RiskLimits) -> Result<RiskLimits, RuleViolation> {
        let mut next = current.clone();
        let dec = |field: &str,
                   v: &Option<Option<crate::decimal::DecimalText>>,
                   cur: Option<Decimal>|
         -> Result<Option<Decimal>, RuleViolation> {
            match v {
                None => Ok(cur),
                Some(None) => Ok(None),
                Some(Some(t)) => positive(field, t).map(Some),
            }
        };
        next.max_order_notional = dec(
            "max_order_notional",
            &self.max_order_notional,
            current.max_order_notional,
        )?;
        next.max_position_notional = dec(
            "max_position_notional",
            &self.max_position_notional,
            current.max_position_notional,
        )?;
        next.max_gross_leverage = dec(
            "max_gross_leverage",
            &self.max_gross_leverage,
            current.max_gross_leverage,
        )?;
        next.daily_loss_limit = dec(
            "daily_loss_limit",
            &self.daily_loss_limit,
            current.daily_loss_limit,
        )?;
        next.max_open_orders = match &self.max_open_orders {
            None => current.max_open_orders,
            Some(None) => None,
            Some(Some(t)) => match t.parse() {
                Ok(d) if d.fract().is_zero() && d >= Decimal::ZERO => Some(
                    u32::try_from(d.mantissa() / 10i128.pow(d.scale())).map_err(|_| {
                        RuleViolation::new(
                            RejectCode::InvalidRiskLimit,
                            format!("max_open_orders is too large: '{}'", t.0),
                        )
                    })?,
                ),
                _ => {
                    return Err(RuleViolation::new(
                        RejectCode::InvalidRiskLimit,
                        format!(
                            "max_open_orders must be a whole number ≥ 0 or null (off); got '{}'",
                            t.0
                        ),
                    ))
                }
            },
        };
        if let Some(f) = self.flatten_on_kill {
            next.flatten_on_kill = f;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn buy(notional: Decimal) -> OrderExposure {
        OrderExposure {
            side: Side::Buy,
            symbol: "BTCUSDT".into(),
            notional,
            position_after: notional,
            open_orders: 0,
            gross: Decimal::ZERO,
            equity: dec!(100000),
            replaces: false,
        }
    }

    fn state(limits: RiskLimits) -> RiskState {
        RiskState {
            limits,
            ..RiskState::default()
        }
    }

    fn code(r: Result<(), RuleViolation>) -> String {
        r.err().map(|v| v.code.to_string()).unwrap_or_default()
    }

    #[test]
    fn order_notional_is_refused_just_over_its_limit() {
        let s = state(RiskLimits {
            max_order_notional: Some(dec!(1000)),
            ..RiskLimits::none()
        });
        assert!(check_order(&s, &buy(dec!(1000))).is_ok());
        let v = check_order(&s, &buy(dec!(1000.01))).unwrap_err();
        assert_eq!(v.code, "max_order_notional");
        assert!(v.message.contains("1000.01") && v.message.contains("1000 USDT"));
        // Sells too: a fat-finger sell is as harmful.
        let sell = OrderExposure {
            side: Side::Sell,
            ..buy(dec!(1000.01))
        };
        assert_eq!(code(check_order(&s, &sell)), "max_order_notional");
    }

    #[test]
    fn position_notional_limits_buys_only() {
        let s = state(RiskLimits {
            max_position_notional: Some(dec!(5000)),
            ..RiskLimits::none()
        });
        let mut x = buy(dec!(100));
        x.position_after = dec!(5000);
        assert!(check_order(&s, &x).is_ok());
        x.position_after = dec!(5000.00000001);
        assert_eq!(code(check_order(&s, &x)), "max_position_notional");
        x.side = Side::Sell;
        assert!(check_order(&s, &x).is_ok());
    }

    #[test]
    fn open_orders_count_up_to_the_limit() {
        let s = state(RiskLimits {
            max_open_orders: Some(3),
            ..RiskLimits::none()
        });
        let mut x = buy(dec!(1));
        x.open_orders = 2;
        assert!(check_order(&s, &x).is_ok());
        x.open_orders = 3;
        assert_eq!(code(check_order(&s, &x)), "max_open_orders");
        x.replaces = true;
        assert!(check_order(&s, &x).is_ok());
    }

    #[test]
    fn gross_leverage_is_exposure_over_equity() {
        let s = state(RiskLimits {
            max_gross_leverage: Some(dec!(0.5)),
            ..RiskLimits::none()
        });
        let mut x = buy(dec!(20000));
        x.gross = dec!(30000);
        x.equity = dec!(100000);
        assert!(check_order(&s, &x).is_ok()); // 50,000 / 100,000 = 0.5
        x.notional = dec!(20000.01);
        let v = check_order(&s, &x).unwrap_err();
        assert_eq!(v.code, "max_gross_leverage");
        assert!(v.message.contains("0.5"), "{}", v.message);
        x.equity = Decimal::ZERO;
        assert_eq!(code(check_order(&s, &x)), "max_gross_leverage");
    }

    #[test]
    fn the_kill_switch_refuses_everything() {
        let mut s = state(RiskLimits::none());
        s.kill = Some(Kill {
            at: Utc::now(),
            reason: "by hand".into(),
        });
        let mut x = buy(dec!(1));
        assert_eq!(code(check_order(&s, &x)), "kill_switch");
        x.side = Side::Sell;
        assert_eq!(code(check_order(&s, &x)), "kill_switch");
    }

    #[test]
    fn the_daily_loss_limit_trips_when_reached_and_re_arms() {
        let mut s = state(RiskLimits {
            daily_loss_limit: Some(dec!(100)),
            ..RiskLimits::none()
        });
        assert!(record_realized(&mut s, dec!(-99.99)).is_none());
        let reason = record_realized(&mut s, dec!(-0.01)).expect("trips at exactly -100");
        assert!(reason.starts_with("daily_loss_limit"));
        // Reset by hand: a further loss does not trip again while under the limit...
        assert!(record_realized(&mut s, dec!(-5)).is_none());
        // ...until the day comes back above it and falls again.
        assert!(record_realized(&mut s, dec!(10)).is_none());
        assert!(record_realized(&mut s, dec!(-6)).is_some());
        // Off: never trips.
        let mut off = state(RiskLimits::none());
        assert!(record_realized(&mut off, dec!(-1000000)).is_none());
    }

    #[test]
    fn patches_keep_absent_fields_and_null_switches_off() {
        let cur = RiskLimits::default();
        let p: RiskPatch = serde_json::from_str(
            r#"{"max_order_notional": "2500.5", "daily_loss_limit": null, "max_open_orders": 7, "flatten_on_kill": true}"#,
        )
        .unwrap();
        let next = p.apply(&cur).unwrap();
        assert_eq!(next.max_order_notional, Some(dec!(2500.5)));
        assert_eq!(next.daily_loss_limit, None);
        assert_eq!(next.max_open_orders, Some(7));
        assert!(next.flatten_on_kill);
        assert_eq!(next.max_position_notional, cur.max_position_notional);
        for bad in [
            r#"{"max_order_notional": "-1"}"#,
            r#"{"max_order_notional": "0"}"#,
            r#"{"max_open_orders": 1.5}"#,
            r#"{"max_gross_leverage": "abc"}"#,
        ] {
            let p: RiskPatch = serde_json::from_str(bad).unwrap();
            assert_eq!(
                p.apply(&cur).unwrap_err().code,
                "invalid_risk_limit",
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<RiskPatch>(r#"{"max_leverage": 2}"#).is_err());
    }

    #[test]
    fn day_start_is_utc_midnight() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T13:45:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(day_start(t).to_rfc3339(), "2026-11-21T00:00:00+00:00");
    }

    #[test]
    fn loosening_is_raising_or_switching_off() {
        let now = RiskLimits {
            flatten_on_kill: true,
            ..RiskLimits::default()
        };
        assert!(now.loosened_by(&now).is_empty());
        let tighter = RiskLimits {
            max_order_notional: Some(dec!(50)),
            max_open_orders: Some(1),
            ..now.clone()
        };
        assert!(now.loosened_by(&tighter).is_empty());
        // Switching a limit on where it was off tightens it.
        assert!(RiskLimits {
            flatten_on_kill: true,
            ..RiskLimits::none()
        }
        .loosened_by(&now)
        .is_empty());
        let looser = RiskLimits {
            max_order_notional: Some(dec!(100000.01)),
            max_position_notional: None,
            max_open_orders: Some(201),
            daily_loss_limit: None,
            flatten_on_kill: false,
            ..now.clone()
        };
        assert_eq!(
            now.loosened_by(&looser),
            [
                "max_order_notional",
                "max_position_notional",
                "daily_loss_limit",
                "max_open_orders",
                "flatten_on_kill"
            ]
        );
    }
}
