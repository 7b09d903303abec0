//! Exact decimal input: prices, quantities and money arrive as JSON strings or JSON numbers
//! and are parsed from their text, never through `f64`.
//!
//! Accepted: plain decimals (`"0.5"`, `0.5`, `"61837.64"`) and scientific notation as Python's
//! `json.dumps` writes small floats (`1e-05`). Rejected: NaN, infinities, empty or non-numeric
//! text, more than [`MAX_SCALE`] decimal places, magnitudes above [`MAX_ABS`].

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// At most this many digits after the decimal point (Binance uses 8; we leave room).
pub const MAX_SCALE: u32 = 18;
/// No price, quantity or amount may exceed 10^15 in absolute value.
pub const MAX_ABS: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 1e15
/// Longest decimal text we parse; anything longer is refused before parsing.
const MAX_TEXT_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("'{0}' is not a decimal number")]
    NotANumber(String),
    #[error("'{0}' has more than {MAX_SCALE} decimal places")]
    TooPrecise(String),
    #[error("'{0}' is beyond the supported range of ±10^15")]
    OutOfRange(String),
}

/// Parse decimal text exactly. See the module documentation for what is accepted.
pub fn parse_decimal(text: &str) -> Result<Decimal, DecimalError> {
    let t = text.trim();
    let shown = || truncate(t);
    if t.is_empty() || t.len() > MAX_TEXT_LEN {
        return Err(DecimalError::NotANumber(shown()));
    }
    let lower = t.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("inf") {
        return Err(DecimalError::NotANumber(shown()));
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return Err(DecimalError::NotANumber(shown()));
    }
    let value = if lower.contains('e') {
        let (mantissa, exp) = lower
            .split_once('e')
            .ok_or_else(|| DecimalError::NotANumber(shown()))?;
        let exp: i32 = exp.parse().map_err(|_| DecimalError::NotANumber(shown()))?;
        if exp.abs() > 40 {
            return Err(DecimalError::OutOfRange(shown()));
        }
        let m = Decimal::from_str_exact(mantissa).map_err(|_| DecimalError::NotANumber(shown()))?;
        scale_by_pow10(m, exp).ok_or_else(|| DecimalError::OutOfRange(shown()))?
    } else {
        Decimal::from_str_exact(t).map_err(|e| {
            if e.to_string().contains("precision") || e.to_string().contains("scale") {
                DecimalError::TooPrecise(shown())
            } else if e.to_string().contains("large") || e.to_string().contains("overflow") {
                DecimalError::OutOfRange(shown())
            } else {
                DecimalError::NotANumber(shown())
            }
        })?
    };
    let value = value.normalize();
    if value.abs() > MAX_ABS {
        return Err(DecimalError::OutOfRange(shown()));
    }
    if value.scale() > MAX_SCALE {
        return Err(DecimalError::TooPrecise(shown()));
    }
    Ok(value)
}

fn scale_by_pow10(m: Decimal, exp: i32) -> Option<Decimal> {
    let ten = Decimal::TEN;
    let mut v = m;
    if exp >= 0 {
        for _ in 0..exp {
            v = v.checked_mul(ten)?;
        }
    } else {
        // Division by ten is exact while the scale stays within rust_decimal's 28 digits.
        let new_scale = v.scale() + exp.unsigned_abs();
        if new_scale > 28 {
            return None;
        }
        v.set_scale(new_scale).ok()?;
    }
    Some(v)
}

/// The text as an error message shows it: at most 40 characters (never cut inside one).
fn truncate(t: &str) -> String {
    const SHOWN: usize = 40;
    if t.chars().nth(SHOWN).is_some() {
        format!("{}…", t.chars().take(SHOWN).collect::<String>())
    } else {
        t.to_string()
    }
}

/// The text of a decimal as the client sent it (a JSON string or a JSON number), not yet
/// validated. Validation happens in one place so each field gets a clear, named error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalText(pub String);

impl DecimalText {
    pub fn parse(&self) -> Result<Decimal, DecimalError> {
        parse_decimal(&self.0)
    }
}

impl Serialize for DecimalText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DecimalText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DecimalTextVisitor)
    }
}

struct DecimalTextVisitor;

/// serde_json's private key for numbers kept as text (feature `arbitrary_precision`).
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Visitor<'de> for DecimalTextVisitor {
    type Value = DecimalText;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal number as a JSON string or number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<DecimalText, E> {
        Ok(DecimalText(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<DecimalText, E> {
        Ok(DecimalText(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<DecimalText, E> {
        Ok(DecimalText(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<DecimalText, E> {
        Ok(DecimalText(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<DecimalText, E> {
        // Only reachable with a deserializer that has already lost the number's text.
        Err(E::custom("decimal numbers must be parsed from their text"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DecimalText, A::Error> {
        // serde_json with `arbitrary_precision` hands a number over as a one-entry map.
        match map.next_key::<String>()? {
            Some(k) if k == SERDE_JSON_NUMBER_TOKEN => Ok(DecimalText(map.next_value::<String>()?)),
            _ => Err(de::Error::custom(
                "expected a decimal number, found an object",
            )),
        }
    }
}

/// Serialize a Decimal as a JSON string (amounts we send are strings, as Alpaca's are).
pub fn to_text(d: &Decimal) -> String {
    d.normalize().to_string()
}

impl FromStr for DecimalText {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DecimalText(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_plain_and_scientific_text_exactly() {
        assert_eq!(parse_decimal("0.5").unwrap(), dec!(0.5));
        assert_eq!(parse_decimal("61837.64000000").unwrap(), dec!(61837.64));
        assert_eq!(parse_decimal("1e-05").unwrap(), dec!(0.00001));
        assert_eq!(parse_decimal("1.5E3").unwrap(), dec!(1500));
        assert_eq!(parse_decimal("-2").unwrap(), dec!(-2));
        assert_eq!(
            parse_decimal("0.1").unwrap() + parse_decimal("0.2").unwrap(),
            dec!(0.3)
        );
    }

    #[test]
    fn rejects_nan_infinity_garbage_range_and_scale() {
        for bad in [
            "NaN", "nan", "Infinity", "-inf", "", "abc", "1.2.3", "0x10", "1e", "--1",
        ] {
            assert!(
                matches!(parse_decimal(bad), Err(DecimalError::NotANumber(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_decimal("1e16"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_decimal("1000000000000001"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert!(parse_decimal("99999999999999999999999999999999").is_err());
        assert!(matches!(
            parse_decimal("0.0000000000000000001"),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(matches!(
            parse_decimal("1e-300"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert_eq!(parse_decimal("1000000000000000").unwrap(), MAX_ABS);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        // Found by fuzz_decimal_text_never_panics: 14 × U+200B (42 bytes, over the 40 shown)
        // was cut at byte 40, inside the 14th character.
        let zwsp = "\u{200b}".repeat(14);
        assert_eq!(
            parse_decimal(&zwsp),
            Err(DecimalError::NotANumber(zwsp.clone()))
        );
        let euros = "€".repeat(50);
        assert_eq!(
            parse_decimal(&euros),
            Err(DecimalError::NotANumber(format!("{}…", "€".repeat(40))))
        );
    }

    #[test]
    fn json_numbers_keep_their_text() {
        #[derive(Deserialize)]
        struct R {
            qty: DecimalText,
        }
        let r: R = serde_json::from_str(r#"{"qty": 0.1}"#).unwrap();
        assert_eq!(r.qty.parse().unwrap(), dec!(0.1));
        let r: R = serde_json::from_str(r#"{"qty": 1e-05}"#).unwrap();
        assert_eq!(r.qty.parse().unwrap(), dec!(0.00001));
        let r: R = serde_json::from_str(r#"{"qty": "0.30000000000000004"}"#).unwrap();
        assert_eq!(r.qty.parse().unwrap(), dec!(0.30000000000000004));
        let r: R = serde_json::from_str(r#"{"qty": 12345678901234567890123}"#).unwrap();
        assert!(r.qty.parse().is_err());
        assert!(serde_json::from_str::<R>(r#"{"qty": {"a":1}}"#).is_err());
        assert!(serde_json::from_str::<R>(r#"{"qty": NaN}"#).is_err());
    }
}

/// Serde for `Option<Decimal>` as a JSON string or null, parsed exactly.
pub mod opt_text {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&super::to_text(d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        match Option::<super::DecimalText>::deserialize(d)? {
            None => Ok(None),
            Some(t) => t.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for `Decimal` as a JSON string, parsed exactly.
pub mod text {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_text(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        super::DecimalText::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
