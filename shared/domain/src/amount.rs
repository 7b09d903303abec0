//! Validated amounts: a [`Price`] and a [`Quantity`] are strictly positive, [`Money`] is any
//! USDT amount (cash, PnL and fees can be negative or zero). All are exact decimals within
//! the documented range (|x| ≤ 10^15) and scale (≤ 18 places) of [`crate::decimal`], travel
//! as JSON strings, and are read from JSON strings or numbers without passing through `f64`.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decimal::{to_text, DecimalError, DecimalText, MAX_ABS, MAX_SCALE};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error(transparent)]
    Invalid(#[from] DecimalError),
    #[error("{what} must be greater than 0, got {value}")]
    NotPositive { what: &'static str, value: Decimal },
}

fn in_bounds(d: Decimal) -> Result<Decimal, DecimalError> {
    let d = d.normalize();
    if d.abs() > MAX_ABS {
        return Err(DecimalError::OutOfRange(d.to_string()));
    }
    if d.scale() > MAX_SCALE {
        return Err(DecimalError::TooPrecise(d.to_string()));
    }
    Ok(d)
}

macro_rules! amount_type {
    ($(#[$m:meta])* $name:ident, $what:literal, positive = $positive:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Decimal);

        impl $name {
            pub fn new(value: Decimal) -> Result<$name, AmountError> {
                let value = in_bounds(value)?;
                if $positive && value <= Decimal::ZERO {
                    return Err(AmountError::NotPositive { what: $what, value });
                }
                Ok($name(value))
            }

            /// Parses decimal text exactly (see [`crate::decimal::parse_decimal`]).
            pub fn parse(text: &str) -> Result<$name, AmountError> {
                $name::new(crate::decimal::parse_decimal(text)?)
            }

            pub fn get(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&to_text(&self.0))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&to_text(&self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = DecimalText::deserialize(d)?;
                $name::parse(&text.0).map_err(serde::de::Error::custom)
            }
        }

        impl From<$name> for Decimal {
            fn from(v: $name) -> Decimal {
                v.0
            }
        }
    };
}

amount_type!(
    /// A price in USDT per unit of the base asset: strictly positive.
    Price, "price", positive = true
);
amount_type!(
    /// A quantity of the base asset: strictly positive.
    Quantity, "quantity", positive = true
);
amount_type!(
    /// An amount of USDT: cash, notional, PnL or fee; any sign.
    Money, "amount", positive = false
);

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn prices_and_quantities_are_positive_money_is_signed() {
        assert_eq!(
            Price::parse("61837.64000000").unwrap().get(),
            dec!(61837.64)
        );
        assert!(matches!(
            Price::parse("0"),
            Err(AmountError::NotPositive { .. })
        ));
        assert!(matches!(
            Quantity::parse("-0.1"),
            Err(AmountError::NotPositive { .. })
        ));
        assert_eq!(Money::parse("-12.5").unwrap().get(), dec!(-12.5));
        assert!(matches!(
            Quantity::parse("NaN"),
            Err(AmountError::Invalid(_))
        ));
        assert!(matches!(
            Money::new(dec!(1e16)),
            Err(AmountError::Invalid(DecimalError::OutOfRange(_)))
        ));
    }

    #[test]
    fn json_strings_and_numbers_read_exactly_and_write_as_strings() {
        let q: Quantity = serde_json::from_str("0.1").unwrap();
        assert_eq!(q.get(), dec!(0.1));
        let q: Quantity = serde_json::from_str("\"1e-05\"").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"0.00001\"");
        assert!(serde_json::from_str::<Price>("-1").is_err());
        assert!(serde_json::from_str::<Price>("\"abc\"").is_err());
    }
}
