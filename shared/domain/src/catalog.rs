//! The instrument catalog, from a real Binance `exchangeInfo` snapshot
//! (`data/exchange_info_20211012.json`, MIT, from bmoscon/cryptofeed; license beside it).
//!
//! Each instrument carries Binance's filters: PRICE_FILTER (tick size, min/max price),
//! LOT_SIZE (step, min/max quantity), MARKET_LOT_SIZE and MIN_NOTIONAL / NOTIONAL. An order
//! that breaks one is rejected with the filter's name. Accounts hold USDT, so only
//! USDT-quoted instruments in status TRADING are tradable.

use crate::RejectCode;
use std::collections::HashMap;
use std::sync::OnceLock;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::decimal::parse_decimal;

/// The currency every account holds.
pub const ACCOUNT_CURRENCY: &str = "USDT";

static SNAPSHOT: &str = include_str!("../data/exchange_info_20211012.json");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    pub status: String,
    pub price: PriceFilter,
    pub lot: LotFilter,
    /// MARKET_LOT_SIZE, applied to market orders besides LOT_SIZE (zeros disable a bound).
    pub market_lot: Option<LotFilter>,
    pub notional: NotionalFilter,
    /// A stable id for the asset (UUID v5 of the symbol), as Alpaca gives every asset one.
    pub asset_id: uuid::Uuid,
}

/// PRICE_FILTER; a zero disables the bound it stands for, as on Binance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceFilter {
    pub min_price: Decimal,
    pub max_price: Decimal,
    pub tick_size: Decimal,
}

/// LOT_SIZE (or MARKET_LOT_SIZE); a zero disables the bound it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LotFilter {
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub step_size: Decimal,
}

/// MIN_NOTIONAL (or NOTIONAL): price × quantity must reach `min_notional`, and stay within
/// `max_notional` when that is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotionalFilter {
    pub min_notional: Decimal,
    pub max_notional: Decimal,
    pub apply_to_market: bool,
}

/// A broken filter: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{filter}: {message}")]
pub struct FilterViolation {
    /// Binance's filter name: PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL.
    pub filter: RejectCode,
    pub message: String,
}

impl Instrument {
    pub fn is_tradable(&self) -> bool {
        self.quote_asset == ACCOUNT_CURRENCY && self.status == "TRADING"
    }

    pub fn check_price(&self, price: Decimal) -> Result<(), FilterViolation> {
        let f = &self.price;
        let bounds = Bounds {
            min: (f.min_price, "minimum price"),
            max: (f.max_price, "maximum price"),
            step: (f.tick_size, "tick size"),
        };
        bounds.check(RejectCode::PriceFilter, "price", price)
    }

    pub fn check_qty(&self, qty: Decimal, is_market: bool) -> Result<(), FilterViolation> {
        check_lot(RejectCode::LotSize, &self.lot, qty)?;
        if is_market {
            if let Some(m) = &self.market_lot {
                check_lot(RejectCode::MarketLotSize, m, qty)?;
            }
        }
        Ok(())
    }

    /// Checks price × qty against MIN_NOTIONAL / NOTIONAL. For market orders `price` is the
    /// reference price the order is expected to fill near; the filter is skipped there when
    /// Binance says it does not apply to market orders.
    pub fn check_notional(
        &self,
        qty: Decimal,
        price: Decimal,
        is_market: bool,
    ) -> Result<(), FilterViolation> {
        let f = &self.notional;
        if is_market && !f.apply_to_market {
            return Ok(());
        }
        let notional = qty * price;
        if !f.min_notional.is_zero() && notional < f.min_notional {
            return Err(FilterViolation {
                filter: RejectCode::MinNotional,
                message: format!(
                    "notional {} (qty {qty} × price {price}) is below the minimum notional {} {ACCOUNT_CURRENCY}",
                    notional.normalize(),
                    f.min_notional.normalize()
                ),
            });
        }
        if !f.max_notional.is_zero() && notional > f.max_notional {
            return Err(FilterViolation {
                filter: RejectCode::MinNotional,
                message: format!(
                    "notional {} is above the maximum notional {} {ACCOUNT_CURRENCY}",
                    notional.normalize(),
                    f.max_notional.normalize()
                ),
            });
        }
        Ok(())
    }

    /// Rounds `qty` down to the lot step (used to size notional orders).
    pub fn floor_to_step(&self, qty: Decimal) -> Decimal {
        let step = self.lot.step_size;
        if step.is_zero() {
            return qty;
        }
        ((qty - self.lot.min_qty) / step).floor() * step + self.lot.min_qty
    }
}

fn check_lot(name: RejectCode, f: &LotFilter, qty: Decimal) -> Result<(), FilterViolation> {
    let bounds = Bounds {
        min: (f.min_qty, "minimum quantity"),
        max: (f.max_qty, "maximum quantity"),
        step: (f.step_size, "lot step"),
    };
    bounds.check(name, "qty", qty)
}

/// The three rules Binance's price and lot filters share: a minimum, a maximum and a step
/// counted from the minimum, each with the name the message gives it; a zero turns its rule
/// off.
struct Bounds {
    min: (Decimal, &'static str),
    max: (Decimal, &'static str),
    step: (Decimal, &'static str),
}

impl Bounds {
    fn check(&self, filter: RejectCode, what: &str, value: Decimal) -> Result<(), FilterViolation> {
        let ((min, min_name), (max, max_name), (step, step_name)) = (self.min, self.max, self.step);
        let broken = if !min.is_zero() && value < min {
            Some(format!("is below the {min_name} {}", min.normalize()))
        } else if !max.is_zero() && value > max {
            Some(format!("is above the {max_name} {}", max.normalize()))
        } else if !step.is_zero()
            && value.checked_sub(min).and_then(|d| d.checked_rem(step)) != Some(Decimal::ZERO)
        {
            Some(format!(
                "is not a multiple of the {step_name} {}",
                step.normalize()
            ))
        } else {
            None
        };
        match broken {
            Some(rule) => Err(FilterViolation {
                filter,
                message: format!("{what} {value} {rule}"),
            }),
            None => Ok(()),
        }
    }
}

/// All instruments of the snapshot, by symbol.
#[derive(Debug)]
pub struct Catalog {
    by_symbol: HashMap<String, Instrument>,
}

impl Catalog {
    /// The catalog built into the binary, parsed once on first use.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            // The snapshot is compiled in and covered by tests, so parsing it cannot fail at run time.
            #[allow(clippy::expect_used)]
            Catalog::from_exchange_info(SNAPSHOT).expect("built-in exchangeInfo snapshot parses")
        })
    }

    pub fn from_exchange_info(json: &str) -> Result<Catalog, String> {
        let info: RawExchangeInfo = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut by_symbol = HashMap::with_capacity(info.symbols.len());
        for s in info.symbols {
            let inst = s.into_instrument()?;
            by_symbol.insert(inst.symbol.clone(), inst);
        }
        Ok(Catalog { by_symbol })
    }

    /// Looks a symbol up, case-insensitively, accepting Alpaca's `BTC/USDT` form too.
    pub fn get(&self, symbol: &str) -> Option<&Instrument> {
        let key: String = symbol
            .chars()
            .filter(|c| *c != '/')
            .collect::<String>()
            .to_ascii_uppercase();
        self.by_symbol.get(&key)
    }

    /// Tradable instruments, sorted by symbol.
    pub fn tradable(&self) -> Vec<&Instrument> {
        let mut v: Vec<_> = self
            .by_symbol
            .values()
            .filter(|i| i.is_tradable())
            .collect();
        v.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        v
    }

    /// Every instrument of the snapshot, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &Instrument> {
        self.by_symbol.values()
    }

    pub fn len(&self) -> usize {
        self.by_symbol.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty()
    }
}

#[derive(Deserialize)]
struct RawExchangeInfo {
    symbols: Vec<RawSymbol>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSymbol {
    symbol: String,
    status: String,
    base_asset: String,
    quote_asset: String,
    filters: Vec<serde_json::Value>,
}

impl RawSymbol {
    fn into_instrument(self) -> Result<Instrument, String> {
        let mut price = PriceFilter::default();
        let mut lot = LotFilter::default();
        let mut market_lot = None;
        let mut notional = NotionalFilter::default();
        for f in &self.filters {
            let field = |name: &str| -> Result<Decimal, String> {
                match f.get(name).and_then(|v| v.as_str()) {
                    Some(t) => {
                        parse_decimal(t).map_err(|e| format!("{}: {name}: {e}", self.symbol))
                    }
                    None => Ok(Decimal::ZERO),
                }
            };
            match f.get("filterType").and_then(|v| v.as_str()) {
                Some("PRICE_FILTER") => {
                    price = PriceFilter {
                        min_price: field("minPrice")?,
                        max_price: field("maxPrice")?,
                        tick_size: field("tickSize")?,
                    }
                }
                Some("LOT_SIZE") => {
                    lot = LotFilter {
                        min_qty: field("minQty")?,
                        max_qty: field("maxQty")?,
                        step_size: field("stepSize")?,
                    }
                }
                Some("MARKET_LOT_SIZE") => {
                    market_lot = Some(LotFilter {
                        min_qty: field("minQty")?,
                        max_qty: field("maxQty")?,
                        step_size: field("stepSize")?,
                    })
                }
                Some("MIN_NOTIONAL") | Some("NOTIONAL") => {
                    notional = NotionalFilter {
                        min_notional: field("minNotional")?,
                        max_notional: field("maxNotional")?,
                        apply_to_market: f
                            .get("applyToMarket")
                            .or_else(|| f.get("applyMinToMarket"))
                            .and_then(|v| v.as_bool())
                            .unwrap_or(true),
                    }
                }
                _ => {}
            }
        }
        let asset_id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("binance:{}", self.symbol).as_bytes(),
        );
        Ok(Instrument {
            symbol: self.symbol,
            base_asset: self.base_asset,
            quote_asset: self.quote_asset,
            status: self.status,
            price,
            lot,
            market_lot,
            notional,
            asset_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn snapshot_loads_with_btcusdt_filters() {
        let c = Catalog::builtin();
        assert_eq!(c.len(), 1695);
        let btc = c.get("btcusdt").unwrap();
        assert!(btc.is_tradable());
        assert_eq!(btc.price.tick_size, dec!(0.01));
        assert_eq!(btc.lot.step_size, dec!(0.00001));
        assert_eq!(btc.notional.min_notional, dec!(10));
        assert_eq!(c.get("BTC/USDT").unwrap().symbol, "BTCUSDT");
        // Quoted in BTC: listed, not tradable by USDT accounts.
        assert!(!c.get("ETHBTC").unwrap().is_tradable());
        assert!(c
            .tradable()
            .iter()
            .all(|i| i.quote_asset == "USDT" && i.status == "TRADING"));
        assert!(c.get("NOPE").is_none());
    }

    #[test]
    fn filters_name_themselves() {
        let btc = Catalog::builtin().get("BTCUSDT").unwrap();
        assert!(btc.check_price(dec!(61837.64)).is_ok());
        assert_eq!(
            btc.check_price(dec!(61837.645)).unwrap_err().filter,
            "PRICE_FILTER"
        );
        assert!(btc.check_qty(dec!(0.00123), false).is_ok());
        assert_eq!(
            btc.check_qty(dec!(0.000015), false).unwrap_err().filter,
            "LOT_SIZE"
        );
        assert_eq!(
            btc.check_qty(dec!(0.000001), false).unwrap_err().filter,
            "LOT_SIZE"
        );
        assert_eq!(
            btc.check_notional(dec!(0.0001), dec!(60000), true)
                .unwrap_err()
                .filter,
            "MIN_NOTIONAL"
        );
        assert!(btc.check_notional(dec!(0.001), dec!(60000), true).is_ok());
        assert_eq!(btc.floor_to_step(dec!(0.0123456)), dec!(0.01234));
    }
}
