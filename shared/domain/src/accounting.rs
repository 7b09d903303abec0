//! Average-cost position accounting for one account and symbol.
//!
//! A [`Position`] is a signed quantity (`+` long, `-` short), an average entry price and
//! the cumulative realized PnL. [`Position::apply`] books one [`Fill`] on it:
//!
//! * **Opening or adding** (flat, or a fill on the side of the position): the average
//!   entry price moves to `avg = (avg·|q| + px·fill_qty) / (|q| + fill_qty)`.
//! * **Reducing** (a fill against the position, up to its size): realizes
//!   `min(fill_qty, |q|) × (px − avg)` for a long or `× (avg − px)` for a short; the
//!   average is unchanged, and becomes 0 when the position reaches exactly zero.
//! * **Crossing zero**: the fill closes the whole old position (realizing as above) and
//!   opens the remainder on the other side at the fill price (`avg = px`).
//! * **Fees** are in quote currency (USDT). Every fill's fee, opening fills included, is
//!   subtracted from realized PnL and from cash; it is never folded into the average.
//!
//! This is the NautilusTrader model (`crates/model/src/position.rs`).
//!
//! # Ledger invariants
//!
//! Starting flat with cash `C0`, after any sequence of fills:
//!
//! * `qty == Σ sign·fill_qty` (exact);
//! * `cash == C0 + Σ cash_delta == C0 − Σ sign·fill_qty·px − Σ fee` (exact as long as the
//!   products fit in 28 significant digits, as they do for real quantities and prices);
//! * `realized_pnl + unrealized_pnl(mark) == cash + qty·mark − C0` for every mark, up to
//!   the rounding described below.
//!
//! # Precision
//!
//! Everything is `rust_decimal::Decimal` (96-bit mantissa, 28–29 significant digits,
//! at most 28 decimal places); there are no floats. Quantities, prices, notionals, fees
//! and cash are exact. The average entry price is kept at full `Decimal` precision and is
//! deliberately **not** rounded to a tick, but it is the result of a division, which
//! rounds in the 28th significant digit when the quotient does not terminate (e.g.
//! `302 / 3`). Products and sums that involve such an average may then round in their own
//! 28th significant digit too. Each such rounding has a relative error of about `1e-27`,
//! so the realized PnL of a round trip whose average did not divide exactly can differ
//! from `Σ sell notional − Σ buy notional − Σ fees` by roughly
//! `1e-27 × Σ_fills (|q| + fill_qty) × (px + avg)`: about `1e-18` USDT for a
//! 100-fill history of positions around 1 000 BTC at 100 000 USDT, far below the
//! 8-decimal USDT precision. When every average divides exactly, the round trip is exact.
//!
//! Overflow (values beyond ~7.9e28) is reported as [`AccountingError::Overflow`], never a
//! panic, and leaves the position unchanged.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::order::Side;

/// Decimal places of USDT amounts (fees, cash).
pub const USDT_DP: u32 = 8;

/// The fee on `notional` at `fee_bps` basis points: `notional × fee_bps / 10000`, rounded
/// to [`USDT_DP`] (8) decimal places, halves away from zero
/// ([`RoundingStrategy::MidpointAwayFromZero`]): `0.000000025` becomes `0.00000003`,
/// not the banker's `0.00000002`.
///
/// `notional` is the absolute value `fill_qty × price`; a negative notional or rate gives
/// a negative fee, which [`Position::apply`] rejects. The product is exact for realistic
/// inputs (up to 28 significant digits), so the result is correctly rounded. A fee beyond
/// `Decimal`'s range (~7.9e28, only possible with absurd inputs) saturates at
/// `Decimal::MAX`/`Decimal::MIN` instead of panicking.
///
/// ```
/// use domain::accounting::fee;
/// use rust_decimal::Decimal;
/// let notional: Decimal = "763.0764776".parse().unwrap(); // 0.01234 × 61837.64
/// assert_eq!(fee(notional, Decimal::TEN), "0.76307648".parse().unwrap());
/// ```
pub fn fee(notional: Decimal, fee_bps: Decimal) -> Decimal {
    let raw = match notional.checked_mul(fee_bps) {
        // Divide after multiplying: dividing by 10^4 only shifts the scale, so it is exact
        // unless the product already carries more than 24 decimal places.
        Some(product) => product
            .checked_div(Decimal::from(10_000))
            .unwrap_or(Decimal::ZERO),
        None => notional
            .saturating_mul(fee_bps)
            .checked_div(Decimal::from(10_000))
            .unwrap_or(Decimal::ZERO),
    };
    raw.round_dp_with_strategy(USDT_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// Why a fill could not be booked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountingError {
    #[error("fill quantity must be positive, got {0}")]
    NonPositiveQty(Decimal),
    #[error("fill price must be positive, got {0}")]
    NonPositivePrice(Decimal),
    #[error("fill fee must not be negative, got {0}")]
    NegativeFee(Decimal),
    /// A result exceeded `Decimal`'s range (~7.9e28); names the quantity being computed.
    #[error("decimal overflow computing {0}")]
    Overflow(&'static str),
}

/// One execution: `qty` (> 0) of the instrument bought or sold at `price` (> 0), paying
/// `fee` (>= 0, in USDT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub side: Side,
    #[serde(with = "rust_decimal::serde::str")]
    pub qty: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub fee: Decimal,
}

impl Fill {
    /// Checks `qty > 0`, `price > 0` and `fee >= 0`.
    pub fn validate(&self) -> Result<(), AccountingError> {
        if self.qty <= Decimal::ZERO {
            return Err(AccountingError::NonPositiveQty(self.qty));
        }
        if self.price <= Decimal::ZERO {
            return Err(AccountingError::NonPositivePrice(self.price));
        }
        if self.fee < Decimal::ZERO {
            return Err(AccountingError::NegativeFee(self.fee));
        }
        Ok(())
    }

    /// `qty × price`, unsigned.
    pub fn notional(&self) -> Result<Decimal, AccountingError> {
        self.qty
            .checked_mul(self.price)
            .ok_or(AccountingError::Overflow("fill notional"))
    }

    /// The fill's quantity with the side's sign: `+qty` for a buy, `−qty` for a sell.
    pub fn signed_qty(&self) -> Decimal {
        match self.side {
            Side::Buy => self.qty,
            Side::Sell => -self.qty,
        }
    }
}

/// What booking one fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillEffect {
    /// PnL realized by this fill, net of its fee (just `−fee` for an opening fill).
    #[serde(with = "rust_decimal::serde::str")]
    pub realized_pnl: Decimal,
    /// Change in cash: `−(sign × qty × price) − fee`.
    #[serde(with = "rust_decimal::serde::str")]
    pub cash_delta: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub qty_before: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub qty_after: Decimal,
}

/// Which way a position points (Alpaca's position `side`: `"long"` / `"short"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionSide {
    Long,
    Short,
    Flat,
}

impl PositionSide {
    pub fn as_str(self) -> &'static str {
        match self {
            PositionSide::Long => "long",
            PositionSide::Short => "short",
            PositionSide::Flat => "flat",
        }
    }
}

impl fmt::Display for PositionSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An average-cost position in one symbol. `Default` is flat with nothing realized.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// Signed quantity: positive long, negative short, zero flat.
    #[serde(with = "rust_decimal::serde::str")]
    pub qty: Decimal,
    /// Average entry price at full `Decimal` precision (not rounded); 0 when flat.
    #[serde(with = "rust_decimal::serde::str")]
    pub avg_entry_price: Decimal,
    /// Cumulative realized PnL in USDT, net of all fees paid.
    #[serde(with = "rust_decimal::serde::str")]
    pub realized_pnl: Decimal,
}

fn overflow(what: &'static str) -> AccountingError {
    AccountingError::Overflow(what)
}

impl Position {
    /// Long, short or flat, from the sign of `qty`.
    pub fn side(&self) -> PositionSide {
        if self.qty > Decimal::ZERO {
            PositionSide::Long
        } else if self.qty < Decimal::ZERO {
            PositionSide::Short
        } else {
            PositionSide::Flat
        }
    }

    pub fn is_flat(&self) -> bool {
        self.qty.is_zero()
    }

    /// `|qty| × avg_entry_price` (0 when flat).
    pub fn cost_basis(&self) -> Result<Decimal, AccountingError> {
        self.qty
            .abs()
            .checked_mul(self.avg_entry_price)
            .ok_or(overflow("cost basis"))
    }

    /// `qty × mark`: signed, negative for a short. Equity is `cash + Σ market_value`.
    pub fn market_value(&self, mark: Decimal) -> Result<Decimal, AccountingError> {
        self.qty.checked_mul(mark).ok_or(overflow("market value"))
    }

    /// `qty × (mark − avg_entry_price)`: what closing everything at `mark` would realize,
    /// before fees.
    pub fn unrealized_pnl(&self, mark: Decimal) -> Result<Decimal, AccountingError> {
        mark.checked_sub(self.avg_entry_price)
            .and_then(|diff| self.qty.checked_mul(diff))
            .ok_or(overflow("unrealized pnl"))
    }

    /// Books `fill` with average-cost accounting (see the module docs) and returns its
    /// effect. On error (an invalid fill or an overflow) the position is left unchanged.
    pub fn apply(&mut self, fill: &Fill) -> Result<FillEffect, AccountingError> {
        fill.validate()?;
        let q = self.qty;
        let abs_q = q.abs();
        let signed_qty = fill.signed_qty();
        let notional = fill.notional()?;
        let signed_notional = match fill.side {
            Side::Buy => notional,
            Side::Sell => -notional,
        };
        let cash_delta = (-signed_notional)
            .checked_sub(fill.fee)
            .ok_or(overflow("cash delta"))?;
        let mut qty_after = q.checked_add(signed_qty).ok_or(overflow("quantity"))?;
        if qty_after.is_zero() {
            qty_after = Decimal::ZERO; // no "-0" or "0.000" in the books
        }

        let adding = q.is_zero() || (q > Decimal::ZERO) == (signed_qty > Decimal::ZERO);
        let (gross_realized, avg_after) = if adding {
            let total_cost = self
                .avg_entry_price
                .checked_mul(abs_q)
                .and_then(|basis| basis.checked_add(notional))
                .ok_or(overflow("cost basis"))?;
            let total_qty = abs_q.checked_add(fill.qty).ok_or(overflow("quantity"))?;
            let avg = total_cost
                .checked_div(total_qty)
                .ok_or(overflow("average entry price"))?;
            (Decimal::ZERO, avg)
        } else {
            let closed = fill.qty.min(abs_q);
            let per_unit = if q > Decimal::ZERO {
                fill.price.checked_sub(self.avg_entry_price)
            } else {
                self.avg_entry_price.checked_sub(fill.price)
            };
            let gross = per_unit
                .and_then(|d| closed.checked_mul(d))
                .ok_or(overflow("realized pnl"))?;
            let avg = if qty_after.is_zero() {
                Decimal::ZERO
            } else if fill.qty > abs_q {
                fill.price // crossed zero: the remainder opens at the fill price
            } else {
                self.avg_entry_price
            };
            (gross, avg)
        };

        let realized = gross_realized
            .checked_sub(fill.fee)
            .ok_or(overflow("realized pnl"))?;
        let realized_total = self
            .realized_pnl
            .checked_add(realized)
            .ok_or(overflow("realized pnl"))?;

        self.qty = qty_after;
        self.avg_entry_price = avg_after;
        self.realized_pnl = realized_total;
        Ok(FillEffect {
            realized_pnl: realized,
            cash_delta,
            qty_before: q,
            qty_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn fill(side: Side, qty: Decimal, price: Decimal, fee: Decimal) -> Fill {
        Fill {
            side,
            qty,
            price,
            fee,
        }
    }

    fn buy(qty: Decimal, price: Decimal) -> Fill {
        fill(Side::Buy, qty, price, Decimal::ZERO)
    }

    fn sell(qty: Decimal, price: Decimal) -> Fill {
        fill(Side::Sell, qty, price, Decimal::ZERO)
    }

    #[test]
    fn worked_example_long_average_reduce_cross_and_cover() {
        let mut p = Position::default();
        assert_eq!(p.side(), PositionSide::Flat);

        let e = p.apply(&buy(dec!(1), dec!(100))).unwrap();
        assert_eq!(p.avg_entry_price, dec!(100));
        assert_eq!(e.cash_delta, dec!(-100));
        assert_eq!(e.realized_pnl, dec!(0));

        p.apply(&buy(dec!(1), dec!(110))).unwrap();
        assert_eq!(p.qty, dec!(2));
        assert_eq!(p.avg_entry_price, dec!(105));
        assert_eq!(p.realized_pnl, dec!(0));
        assert_eq!(p.side(), PositionSide::Long);
        assert_eq!(p.cost_basis().unwrap(), dec!(210));

        // Sell 0.5 @ 120 paying 10 bps: 0.5 × (120 − 105) = 7.5, minus fee 0.06.
        let f = fee(dec!(60), dec!(10));
        assert_eq!(f, dec!(0.06));
        let e = p.apply(&fill(Side::Sell, dec!(0.5), dec!(120), f)).unwrap();
        assert_eq!(
            e,
            FillEffect {
                realized_pnl: dec!(7.44),
                cash_delta: dec!(59.94),
                qty_before: dec!(2),
                qty_after: dec!(1.5),
            }
        );
        assert_eq!(
            p.avg_entry_price,
            dec!(105),
            "a reducing fill keeps the average"
        );
        assert_eq!(p.realized_pnl, dec!(7.44));

        // Sell 2 @ 90 crosses zero: close 1.5 realizing 1.5 × (90 − 105) = −22.5,
        // then open short 0.5 @ 90.
        let e = p.apply(&sell(dec!(2), dec!(90))).unwrap();
        assert_eq!(e.realized_pnl, dec!(-22.5));
        assert_eq!(e.cash_delta, dec!(180));
        assert_eq!((e.qty_before, e.qty_after), (dec!(1.5), dec!(-0.5)));
        assert_eq!(p.qty, dec!(-0.5));
        assert_eq!(p.avg_entry_price, dec!(90));
        assert_eq!(p.side(), PositionSide::Short);
        assert_eq!(p.realized_pnl, dec!(-15.06));
        assert_eq!(p.market_value(dec!(80)).unwrap(), dec!(-40));
        assert_eq!(p.unrealized_pnl(dec!(80)).unwrap(), dec!(5));

        // Cover the short at 80 for a profit of 0.5 × (90 − 80) = 5.
        let e = p.apply(&buy(dec!(0.5), dec!(80))).unwrap();
        assert_eq!(e.realized_pnl, dec!(5));
        assert_eq!(e.cash_delta, dec!(-40));
        assert_eq!(p.qty, dec!(0));
        assert_eq!(p.avg_entry_price, dec!(0));
        assert_eq!(p.side(), PositionSide::Flat);
        assert_eq!(p.realized_pnl, dec!(-10.06));
        // Round trip: sells 60 + 180 = 240, buys 100 + 110 + 40 = 250, fees 0.06.
        assert_eq!(p.realized_pnl, dec!(240) - dec!(250) - dec!(0.06));
    }

    #[test]
    fn short_positions_average_and_cover() {
        let mut p = Position::default();
        p.apply(&sell(dec!(1), dec!(50))).unwrap();
        p.apply(&sell(dec!(1), dec!(60))).unwrap();
        assert_eq!(p.qty, dec!(-2));
        assert_eq!(p.avg_entry_price, dec!(55));
        assert_eq!(p.cost_basis().unwrap(), dec!(110));
        assert_eq!(p.unrealized_pnl(dec!(45)).unwrap(), dec!(20));

        // Partial cover with profit keeps the average.
        let e = p.apply(&buy(dec!(1.5), dec!(40))).unwrap();
        assert_eq!(e.realized_pnl, dec!(22.5));
        assert_eq!(p.qty, dec!(-0.5));
        assert_eq!(p.avg_entry_price, dec!(55));

        // Cover at a loss and cross into a long at the fill price.
        let e = p.apply(&buy(dec!(2), dec!(70))).unwrap();
        assert_eq!(e.realized_pnl, dec!(-7.5));
        assert_eq!(p.qty, dec!(1.5));
        assert_eq!(p.avg_entry_price, dec!(70));
        assert_eq!(p.realized_pnl, dec!(15));
    }

    #[test]
    fn fees_reduce_realized_and_cash_on_every_fill_but_not_the_average() {
        let mut p = Position::default();
        let e = p
            .apply(&fill(Side::Buy, dec!(1), dec!(100), dec!(0.1)))
            .unwrap();
        assert_eq!(e.realized_pnl, dec!(-0.1));
        assert_eq!(e.cash_delta, dec!(-100.1));
        assert_eq!(p.avg_entry_price, dec!(100), "fee not folded into avg");
        assert_eq!(p.realized_pnl, dec!(-0.1));

        let e = p
            .apply(&fill(Side::Sell, dec!(1), dec!(101), dec!(0.101)))
            .unwrap();
        assert_eq!(e.realized_pnl, dec!(0.899));
        assert_eq!(e.cash_delta, dec!(100.899));
        assert_eq!(p.realized_pnl, dec!(0.799));
        assert!(p.is_flat());
    }

    /// `fill` charged the fee of `fee_bps` on its notional: that fill, the notional, the fee.
    fn charged(fill: Fill, fee_bps: Decimal) -> (Fill, Decimal, Decimal) {
        let notional = fill.notional().unwrap();
        let fee = fee(notional, fee_bps);
        (Fill { fee, ..fill }, notional, fee)
    }

    #[test]
    fn btc_like_round_trip_with_8_decimal_quantities() {
        let mut p = Position::default();
        let qty = dec!(0.01234);
        let (open, notional, open_fee) = charged(buy(qty, dec!(61837.64)), dec!(10));
        assert_eq!(notional, dec!(763.0764776));
        // 0.7630764776 rounds to 8 dp as 0.76307648.
        assert_eq!(open_fee, dec!(0.76307648));
        let e = p.apply(&open).unwrap();
        assert_eq!(e.cash_delta, dec!(-763.83955408));
        assert_eq!(e.realized_pnl, dec!(-0.76307648));
        assert_eq!(p.avg_entry_price, dec!(61837.64));
        assert_eq!(p.unrealized_pnl(dec!(61900.00)).unwrap(), dec!(0.7695224));

        let (close, close_notional, close_fee) = charged(sell(qty, dec!(61900.00)), dec!(10));
        assert_eq!(close_notional, dec!(763.846));
        assert_eq!(close_fee, dec!(0.76384600));
        let e = p.apply(&close).unwrap();
        // 0.01234 × (61900 − 61837.64) = 0.7695224, minus 0.763846.
        assert_eq!(e.realized_pnl, dec!(0.0056764));
        assert_eq!(e.cash_delta, dec!(763.082154));
        assert_eq!(p.realized_pnl, dec!(-0.75740008));
        assert_eq!(
            p.realized_pnl,
            close_notional - notional - open_fee - close_fee
        );
        assert!(p.is_flat());
        assert_eq!(p.avg_entry_price, dec!(0));
    }

    #[test]
    fn fee_rounds_to_8_dp_half_away_from_zero() {
        assert_eq!(fee(dec!(100), dec!(10)), dec!(0.1));
        assert_eq!(fee(dec!(0.000025), dec!(10)), dec!(0.00000003)); // banker's: ...02
        assert_eq!(fee(dec!(0.000005), dec!(10)), dec!(0.00000001)); // banker's: 0
        assert_eq!(fee(dec!(0.0000049), dec!(10)), dec!(0));
        assert_eq!(fee(dec!(1234.5678), dec!(7.5)), dec!(0.92592585));
        assert_eq!(fee(dec!(1000), dec!(0)), dec!(0));
        assert_eq!(fee(Decimal::MAX, dec!(20000)), Decimal::MAX / dec!(10000));
    }

    #[test]
    fn invalid_fills_are_rejected_and_leave_the_position_unchanged() {
        let mut p = Position::default();
        p.apply(&buy(dec!(1), dec!(100))).unwrap();
        let before = p.clone();
        let cases = [
            (
                buy(dec!(0), dec!(1)),
                AccountingError::NonPositiveQty(dec!(0)),
            ),
            (
                buy(dec!(-1), dec!(1)),
                AccountingError::NonPositiveQty(dec!(-1)),
            ),
            (
                buy(dec!(1), dec!(0)),
                AccountingError::NonPositivePrice(dec!(0)),
            ),
            (
                sell(dec!(1), dec!(-5)),
                AccountingError::NonPositivePrice(dec!(-5)),
            ),
            (
                fill(Side::Sell, dec!(1), dec!(5), dec!(-0.01)),
                AccountingError::NegativeFee(dec!(-0.01)),
            ),
        ];
        for (f, err) in cases {
            assert_eq!(p.apply(&f), Err(err));
            assert_eq!(p, before);
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut p = Position::default();
        let huge = buy(dec!(1000), Decimal::MAX / dec!(100));
        assert!(matches!(
            p.apply(&huge),
            Err(AccountingError::Overflow("fill notional"))
        ));
        assert_eq!(p, Position::default());

        p.apply(&buy(dec!(1), Decimal::MAX / dec!(2))).unwrap();
        let before = p.clone();
        assert!(matches!(
            p.apply(&buy(dec!(1), Decimal::MAX)),
            Err(AccountingError::Overflow(_))
        ));
        assert_eq!(p, before);
        assert!(p.unrealized_pnl(-Decimal::MAX).is_err());
        let big = Position {
            qty: Decimal::MAX / dec!(2),
            avg_entry_price: dec!(1),
            realized_pnl: dec!(0),
        };
        assert!(big.market_value(dec!(-3)).is_err());
        assert!(big.cost_basis().is_ok());
    }

    #[test]
    fn non_terminating_average_is_kept_at_full_precision() {
        let mut p = Position::default();
        p.apply(&buy(dec!(1), dec!(100))).unwrap();
        p.apply(&buy(dec!(2), dec!(101))).unwrap();
        // 302 / 3, rounded in the 28th significant digit, not to a tick.
        assert_eq!(p.avg_entry_price, dec!(100.66666666666666666666666667));
        p.apply(&sell(dec!(3), dec!(102))).unwrap();
        assert!(p.is_flat());
        assert_eq!(p.avg_entry_price, dec!(0));
        // Exactly 306 − 302 = 4 but for the average's rounding (documented bound).
        assert!((p.realized_pnl - dec!(4)).abs() <= dec!(0.000000000000000000000001));
    }

    #[test]
    fn serde_uses_decimal_strings() {
        let p = Position {
            qty: dec!(-0.5),
            avg_entry_price: dec!(90),
            realized_pnl: dec!(-15.06),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"qty":"-0.5","avg_entry_price":"90","realized_pnl":"-15.06"}"#
        );
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
        let f: Fill =
            serde_json::from_str(r#"{"side":"sell","qty":"2","price":"90","fee":"0"}"#).unwrap();
        assert_eq!(f, sell(dec!(2), dec!(90)));
        assert_eq!(
            serde_json::to_string(&PositionSide::Short).unwrap(),
            r#""short""#
        );
    }

    // ---- property tests: ledger invariants -------------------------------------------

    const INITIAL_CASH: Decimal = dec!(100000);
    const FEE_BPS: Decimal = dec!(10);

    /// Random fills: either side, 0.00001..=10 qty (5 dp), 0.01..=100000 price (2 dp),
    /// fee from [`fee`] at 10 bps.
    fn arb_fill() -> impl Strategy<Value = Fill> {
        (any::<bool>(), 1i64..=1_000_000, 1i64..=10_000_000).prop_map(|(is_buy, q, px)| {
            let side = if is_buy { Side::Buy } else { Side::Sell };
            let (qty, price) = (Decimal::new(q, 5), Decimal::new(px, 2));
            fill(side, qty, price, fee(qty * price, FEE_BPS))
        })
    }

    /// Unit of the rounding tolerance: a few roundings of ~5e-28 relative error each.
    const ULP: Decimal = dec!(0.00000000000000000000000001); // 1e-26

    /// A generous bound on the rounding error one fill can add to
    /// `realized − qty·avg − (cash − C0)`: each of the few operations touching the
    /// average rounds with relative error ≲ 1e-27 of values bounded by
    /// `(|q| + fill_qty) × (px + avg)` or by the realized total.
    fn fill_error_bound(before: &Position, f: &Fill, after: &Position) -> Decimal {
        ULP * ((before.qty.abs() + f.qty + Decimal::ONE)
            * (f.price + before.avg_entry_price + Decimal::ONE)
            + after.realized_pnl.abs()
            + Decimal::ONE)
    }

    /// Books `fills` from flat, checking the invariants after every fill; returns the
    /// position, the accumulated error bound and the independently computed cash.
    fn run_ledger(fills: &[Fill], marks: &[Decimal]) -> (Position, Decimal, Decimal) {
        let mut p = Position::default();
        let mut cash = INITIAL_CASH;
        let (mut sum_signed_qty, mut sum_signed_notional, mut sum_fees) =
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let mut bound = Decimal::ZERO;
        for f in fills {
            let before = p.clone();
            let e = p.apply(f).unwrap();
            cash += e.cash_delta;
            sum_signed_qty += f.signed_qty();
            sum_signed_notional += f.side.sign() * f.qty * f.price;
            sum_fees += f.fee;
            bound += fill_error_bound(&before, f, &p);

            assert_eq!(e.qty_before, before.qty);
            assert_eq!(e.qty_after, p.qty);
            assert_eq!(p.qty, sum_signed_qty, "qty == Σ signed fill qty");
            assert_eq!(
                cash,
                INITIAL_CASH - sum_signed_notional - sum_fees,
                "cash == C0 − Σ signed notional − Σ fees"
            );
            // The running total rounds in its 28th significant digit once it carries the
            // average's long fraction.
            assert!(
                (e.realized_pnl - (p.realized_pnl - before.realized_pnl)).abs()
                    <= ULP * (p.realized_pnl.abs() + Decimal::ONE)
            );
            if p.qty.is_zero() {
                assert_eq!(p.avg_entry_price, Decimal::ZERO, "flat ⇒ avg 0");
                assert_eq!(p.side(), PositionSide::Flat);
            } else {
                assert!(p.avg_entry_price > Decimal::ZERO, "open ⇒ avg > 0");
            }
            for &mark in marks {
                let booked = p.realized_pnl + p.unrealized_pnl(mark).unwrap();
                let ledger = cash + p.market_value(mark).unwrap() - INITIAL_CASH;
                let check_bound = bound
                    + ULP
                        * (p.realized_pnl.abs()
                            + cash.abs()
                            + p.qty.abs() * (mark + p.avg_entry_price + Decimal::ONE));
                assert!(
                    (booked - ledger).abs() <= check_bound,
                    "realized + unrealized {booked} vs cash + qty·mark − C0 {ledger} \
                     (bound {check_bound})"
                );
            }
        }
        (p, bound, cash)
    }

    fn marks() -> impl Strategy<Value = Vec<Decimal>> {
        prop::collection::vec((1i64..=20_000_000).prop_map(|m| Decimal::new(m, 2)), 1..4).prop_map(
            |mut v| {
                v.push(Decimal::ZERO);
                v
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn ledger_invariants_hold(
            fills in prop::collection::vec(arb_fill(), 1..60),
            marks in marks(),
        ) {
            let (_, bound, _) = run_ledger(&fills, &marks);
            // The documented bound is tiny at these magnitudes.
            prop_assert!(bound < dec!(0.000000000001), "bound {}", bound);
        }

        /// Any sequence closed out by a final fill that nets it to zero realizes
        /// Σ sell notional − Σ buy notional − Σ fees (to within the rounding bound).
        #[test]
        fn flat_round_trip_realizes_net_notional_minus_fees(
            mut fills in prop::collection::vec(arb_fill(), 1..40),
            close_px in 1i64..=10_000_000,
            marks in marks(),
        ) {
            let net: Decimal = fills.iter().map(Fill::signed_qty).sum();
            if !net.is_zero() {
                let side = if net > Decimal::ZERO { Side::Sell } else { Side::Buy };
                let price = Decimal::new(close_px, 2);
                let qty = net.abs();
                fills.push(fill(side, qty, price, fee(qty * price, FEE_BPS)));
            }
            let (p, bound, cash) = run_ledger(&fills, &marks);
            let expected: Decimal = fills
                .iter()
                .map(|f| -f.side.sign() * f.qty * f.price - f.fee)
                .sum();
            prop_assert!(p.is_flat());
            prop_assert_eq!(p.avg_entry_price, Decimal::ZERO);
            prop_assert_eq!(cash - INITIAL_CASH, expected);
            prop_assert!(
                (p.realized_pnl - expected).abs() <= bound,
                "realized {} expected {} bound {}", p.realized_pnl, expected, bound
            );
        }

        /// With one opening fill (so the average divides exactly), any sequence of
        /// reducing fills down to flat realizes Σ sell − Σ buy − fees exactly.
        #[test]
        fn flat_round_trip_is_exact_when_the_average_is_exact(
            open in arb_fill(),
            cuts in prop::collection::vec((1i64..=1_000_000, 1i64..=10_000_000), 0..10),
        ) {
            let mut p = Position::default();
            let mut expected = -open.side.sign() * open.qty * open.price - open.fee;
            p.apply(&open).unwrap();
            let close_side = if open.side == Side::Buy { Side::Sell } else { Side::Buy };
            let mut remaining = open.qty;
            let cut_count = cuts.len();
            for (i, (q, px)) in cuts.into_iter().enumerate() {
                let qty = if i + 1 == cut_count { remaining } else { Decimal::new(q, 5).min(remaining) };
                if qty.is_zero() {
                    continue;
                }
                let price = Decimal::new(px, 2);
                let f = fill(close_side, qty, price, fee(qty * price, FEE_BPS));
                p.apply(&f).unwrap();
                remaining -= qty;
                expected += -f.side.sign() * f.qty * f.price - f.fee;
            }
            if !remaining.is_zero() {
                let f = fill(close_side, remaining, open.price, Decimal::ZERO);
                p.apply(&f).unwrap();
                expected += -f.side.sign() * f.qty * f.price;
            }
            prop_assert!(p.is_flat());
            prop_assert_eq!(p.realized_pnl, expected);
        }
    }
}
