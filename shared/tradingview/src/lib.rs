//! TradingView alerts: the JSON an alert sends, and the order it becomes.
//!
//! An edge format crate: depends on `domain` only; no I/O. Used by `app` (alerts) and the
//! `api` (the templates shown with a new webhook).
//!
//! TradingView posts an alert's *message* as the request body, after replacing its
//! placeholders (`{{ticker}}`, `{{strategy.order.action}}`, …) with text. The body is sent as
//! `application/json` when the substituted message parses as JSON, else as `text/plain`; we
//! read the body as JSON whatever the content type says. Because substitution is textual, a
//! template written `"qty": {{strategy.order.contracts}}` arrives as a JSON number and
//! `"qty": "{{strategy.order.contracts}}"` as a JSON string: both are accepted and parsed
//! exactly from their text (as [`DecimalText`] does), never through `f64`.
//!
//! # The documented alert templates
//!
//! Paste one as the alert's *Message* and replace `PASSPHRASE` with the webhook's passphrase
//! (the REST API returns them filled in, see [`template_with_passphrase`]).
//!
//! **Strategy alert** ([`STRATEGY_TEMPLATE`]) — every order the strategy fills becomes the
//! same order here:
//!
//! ```json
//! {"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","action":"{{strategy.order.action}}","qty":"{{strategy.order.contracts}}","id":"{{strategy.order.id}}-{{timenow}}"}
//! ```
//!
//! **Indicator alert** ([`INDICATOR_TEMPLATE`]) — indicators have no `strategy.*`
//! placeholders, so the action and size are fixed: one alert per signal (this one buys
//! 100 USDT worth; use `"action":"sell"` and/or `"qty":"0.001"` for the others):
//!
//! ```json
//! {"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","action":"buy","notional":"100","id":"buy-{{ticker}}-{{interval}}-{{timenow}}"}
//! ```
//!
//! **Target position** ([`TARGET_POSITION_TEMPLATE`]) — the alert states the position the
//! strategy wants (`{{strategy.position_size}}`); the order is whatever gets the account
//! there, so a missed or repeated alert cannot leave the account out of step with the
//! strategy. Spot accounts cannot short: a negative target (a short strategy) is rejected.
//!
//! ```json
//! {"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","position_size":"{{strategy.position_size}}","id":"{{strategy.order.id}}-{{timenow}}"}
//! ```
//!
//! **Bracket** ([`BRACKET_TEMPLATE`]) — an entry whose exits (take-profit limit and stop-loss
//! stop) are placed here and go live when the entry fills. Fire it on the *entry* signal
//! only (the exits are ours): plot the levels as `plot_0` and `plot_1`, rounded to the tick
//! (`math.round_to_mintick`), or write the prices in. Give only one of `take_profit` /
//! `stop_loss` for a one-triggers-other (`oto`) order. Add `"type":"limit","price":"…"` for a
//! limit entry.
//!
//! ```json
//! {"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","action":"buy","qty":"0.001","take_profit":"{{plot_0}}","stop_loss":"{{plot_1}}","id":"bracket-{{ticker}}-{{timenow}}"}
//! ```
//!
//! # Fields
//!
//! | field (aliases) | meaning |
//! |---|---|
//! | `passphrase` | the webhook's passphrase; checked by the caller (see [`Alert::passphrase`], [`alert_passphrase`]) |
//! | `symbol` (`ticker`) | `BINANCE:BTCUSDT`, `BTCUSDT`, `btcusdt`, `BTC/USDT`, `BTC-USDT` → `BTCUSDT` (see [`map_symbol`]); anything else, e.g. a perpetual's `BTCUSDT.P`, is not guessed: order validation names it unknown |
//! | `action` (`side`) | `buy` or `sell`, any case; required unless `position_size` is given |
//! | `qty` (`contracts`) | base-asset quantity |
//! | `notional` | quote-currency (USDT) amount, market orders without exits only; exactly one of `qty` / `notional` |
//! | `position_size` | target-position mode: the position wanted after the alert (≥ 0); `action`, `qty` and `notional` then do not shape the order (but must be valid if given) |
//! | `type` (`order_type`) | `market` (default) or `limit` |
//! | `price` (`limit_price`) | the limit price of a `limit` order (e.g. `{{strategy.order.price}}`); ignored for `market` |
//! | `time_in_force` | `gtc` (default), `day`, `ioc`, `fok` |
//! | `take_profit` (`tp`) | take-profit limit price; a number, a string or Alpaca's `{"limit_price": …}` |
//! | `stop_loss` (`sl`) | stop-loss stop price; a number, a string or Alpaca's `{"stop_price": …}` |
//! | `id` (`alert_id`) | the alert's id, for deduplication (see [`client_order_id`]) |
//!
//! Other fields (`time`, `close`, `comment`, …) are ignored. `null` and empty strings count as
//! absent. When a field is given under two of its names, both must agree. A value still
//! holding a `{{…}}` placeholder (TradingView substitutes `strategy.*` only in strategy
//! alerts) is rejected as `unsubstituted_placeholder`.
//!
//! With `take_profit` and `stop_loss` the order is Alpaca's `bracket` class; with one of them
//! it is `oto`. In target-position mode exits are attached to buys only: a sell that reduces
//! the position is a plain exit, and exits of a sell would buy back.
//!
//! Errors are [`RuleViolation`]s: `not_json`, `missing_field`, `invalid_field`,
//! `unknown_action`, `qty_and_notional`, `short_not_supported`, `unsubstituted_placeholder`.
//! Everything that needs the catalog (unknown symbols, tick and lot sizes, leg prices) is
//! checked afterwards by [`OrderRequest::validate`], with its own codes.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

use domain::RejectCode;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use domain::decimal::{to_text, DecimalError, DecimalText};
use domain::error::RuleViolation;
use domain::order::{LegRequest, OrderClass, OrderRequest, OrderType, Side, TimeInForce};

/// The marker the templates hold where the webhook's passphrase goes.
pub const PASSPHRASE_MARKER: &str = "PASSPHRASE";

/// Strategy alert: each order the strategy fills, as the same order.
pub const STRATEGY_TEMPLATE: &str = r#"{"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","action":"{{strategy.order.action}}","qty":"{{strategy.order.contracts}}","id":"{{strategy.order.id}}-{{timenow}}"}"#;

/// Indicator alert: a fixed action and size per alert (here: buy 100 USDT worth).
pub const INDICATOR_TEMPLATE: &str = r#"{"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","action":"buy","notional":"100","id":"buy-{{ticker}}-{{interval}}-{{timenow}}"}"#;

/// Target position: the order is the difference between the strategy's position and ours.
pub const TARGET_POSITION_TEMPLATE: &str = r#"{"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","position_size":"{{strategy.position_size}}","id":"{{strategy.order.id}}-{{timenow}}"}"#;

/// Bracket: an entry with a take-profit and a stop-loss (plotted as `plot_0` and `plot_1`).
pub const BRACKET_TEMPLATE: &str = r#"{"passphrase":"PASSPHRASE","symbol":"{{exchange}}:{{ticker}}","action":"buy","qty":"0.001","take_profit":"{{plot_0}}","stop_loss":"{{plot_1}}","id":"bracket-{{ticker}}-{{timenow}}"}"#;

/// The templates by name, as the REST API lists them.
pub const TEMPLATES: [(&str, &str); 4] = [
    ("strategy", STRATEGY_TEMPLATE),
    ("indicator", INDICATOR_TEMPLATE),
    ("target_position", TARGET_POSITION_TEMPLATE),
    ("bracket", BRACKET_TEMPLATE),
];

/// What a redacted passphrase reads as.
pub const REDACTED: &str = "***";

/// Longest stored body (bytes) that [`redact_passphrase`] returns.
pub const MAX_STORED_BODY_BYTES: usize = 8 * 1024;

const CLIENT_ORDER_ID_PREFIX: &str = "tv-";
/// Hex digits of SHA-256 kept in a client order id (160 bits).
const CLIENT_ORDER_ID_HEX_DIGITS: usize = 40;

/// How big the order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSize {
    /// A base-asset quantity (`qty`, `contracts`).
    Qty(Decimal),
    /// A quote-currency amount (`notional`).
    Notional(Decimal),
    /// The position wanted after the alert (`position_size`), never negative.
    TargetPosition(Decimal),
}

/// A TradingView alert, parsed and checked as far as it can be without the catalog or the
/// account. Build it with [`parse_alert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The passphrase the alert carries (a JSON string, or a number's text); `None` when the
    /// body has none. The caller compares it with the webhook's.
    pub passphrase: Option<String>,
    /// Our symbol, mapped from TradingView's form (see [`map_symbol`]); not yet looked up.
    pub symbol: String,
    /// `None` only in target-position mode, where the side follows from the positions.
    pub action: Option<Side>,
    pub size: AlertSize,
    /// Market or limit.
    pub order_type: OrderType,
    /// Set exactly when `order_type` is limit.
    pub limit_price: Option<Decimal>,
    pub time_in_force: TimeInForce,
    /// Take-profit limit price.
    pub take_profit: Option<Decimal>,
    /// Stop-loss stop price.
    pub stop_loss: Option<Decimal>,
    /// The alert's own id (`id` / `alert_id`), if it has one.
    pub alert_id: Option<String>,
}

/// Parse an alert body. See the module documentation for the fields and the errors.
pub fn parse_alert(body: &str) -> Result<Alert, RuleViolation> {
    let object = json_object(body)?;
    let f = Fields(&object);

    let passphrase = passphrase_in(&object);
    let symbol = f.one(&["symbol", "ticker"], symbol_value)?.ok_or_else(|| {
        missing("symbol (or ticker) is required, e.g. \"{{exchange}}:{{ticker}}\"")
    })?;
    let action = f.one(&["action", "side"], action_value)?;

    let target = f.one(&["position_size"], decimal_value)?;
    let qty = f.one(&["qty", "contracts"], decimal_value)?;
    let notional = f.one(&["notional"], decimal_value)?;
    let size = match (target, qty, notional) {
        (Some(t), _, _) => {
            check_target(t)?;
            AlertSize::TargetPosition(t)
        }
        (None, Some(_), Some(_)) => {
            return Err(RuleViolation::new(
                RejectCode::QtyAndNotional,
                "give either qty (or contracts) or notional, not both",
            ))
        }
        (None, Some(q), None) => AlertSize::Qty(positive("qty", q)?),
        (None, None, Some(n)) => AlertSize::Notional(positive("notional", n)?),
        (None, None, None) => {
            return Err(missing(
                "qty (or contracts), notional or position_size is required",
            ))
        }
    };
    if action.is_none() && !matches!(size, AlertSize::TargetPosition(_)) {
        return Err(missing(
            "action is required (buy or sell), unless position_size is given",
        ));
    }

    let order_type = f
        .one(&["type", "order_type"], order_type_value)?
        .unwrap_or(OrderType::Market);
    let limit_price = match order_type {
        OrderType::Limit => Some(positive(
            "price",
            f.one(&["price", "limit_price"], decimal_value)?.ok_or_else(|| {
                missing("price (or limit_price) is required for limit orders, e.g. \"{{strategy.order.price}}\"")
            })?,
        )?),
        // A price sent along with a market order (a template's "{{close}}") is not used.
        _ => None,
    };
    let time_in_force = f
        .one(&["time_in_force"], time_in_force_value)?
        .unwrap_or(TimeInForce::Gtc);
    let take_profit = f
        .one(&["take_profit", "tp"], |n, v| {
            leg_price(n, v, "limit_price")
        })?
        .map(|p| positive("take_profit", p))
        .transpose()?;
    let stop_loss = f
        .one(&["stop_loss", "sl"], |n, v| leg_price(n, v, "stop_price"))?
        .map(|p| positive("stop_loss", p))
        .transpose()?;
    let alert_id = f.one(&["id", "alert_id"], text_value)?;

    Ok(Alert {
        passphrase,
        symbol,
        action,
        size,
        order_type,
        limit_price,
        time_in_force,
        take_profit,
        stop_loss,
        alert_id,
    })
}

impl Alert {
    /// Alpaca's order request for this alert, for an account holding `current_position_qty`
    /// of the symbol. `Ok(None)` in target-position mode when the account is already at the
    /// target. Amounts are the normalized decimals' text; the request still has to pass
    /// [`OrderRequest::validate`].
    pub fn to_order_request(
        &self,
        current_position_qty: Decimal,
        client_order_id: String,
    ) -> Result<Option<OrderRequest>, RuleViolation> {
        let action = || {
            self.action.ok_or_else(|| {
                missing("action is required (buy or sell), unless position_size is given")
            })
        };
        let (side, qty, notional, with_exits) = match self.size {
            AlertSize::TargetPosition(target) => {
                check_target(target)?;
                let diff = target.checked_sub(current_position_qty).ok_or_else(|| {
                    RuleViolation::new(
                        RejectCode::InvalidField,
                        format!("position_size {target} minus the current position {current_position_qty} is out of range"),
                    )
                })?;
                if diff.is_zero() {
                    return Ok(None);
                }
                let side = if diff > Decimal::ZERO {
                    Side::Buy
                } else {
                    Side::Sell
                };
                // Exits of a sell would buy back: a sell towards the target is a plain exit.
                (side, Some(diff.abs()), None, side == Side::Buy)
            }
            AlertSize::Qty(q) => (action()?, Some(q), None, true),
            AlertSize::Notional(n) => (action()?, None, Some(n), true),
        };
        let limit_price =
            match self.order_type {
                OrderType::Limit => Some(self.limit_price.ok_or_else(|| {
                    missing("price (or limit_price) is required for limit orders")
                })?),
                _ => None,
            };
        let (take_profit, stop_loss) = if with_exits {
            (self.take_profit, self.stop_loss)
        } else {
            (None, None)
        };
        let order_class = match (take_profit, stop_loss) {
            (Some(_), Some(_)) => Some(OrderClass::Bracket),
            (Some(_), None) | (None, Some(_)) => Some(OrderClass::Oto),
            (None, None) => None,
        };
        Ok(Some(OrderRequest {
            symbol: Some(self.symbol.clone()),
            qty: qty.map(decimal_text),
            notional: notional.map(decimal_text),
            side: Some(side.as_str().to_string()),
            order_type: Some(self.order_type.as_str().to_string()),
            time_in_force: Some(self.time_in_force.as_str().to_string()),
            limit_price: limit_price.map(decimal_text),
            client_order_id: Some(client_order_id),
            order_class: order_class.map(|c| c.as_str().to_string()),
            take_profit: take_profit.map(|p| LegRequest {
                limit_price: Some(decimal_text(p)),
                ..LegRequest::default()
            }),
            stop_loss: stop_loss.map(|p| LegRequest {
                stop_price: Some(decimal_text(p)),
                ..LegRequest::default()
            }),
            ..OrderRequest::default()
        }))
    }
}

/// The `client_order_id` of the order an alert places: `"tv-"` and the first 40 hex digits
/// of SHA-256 of `webhook_id + "\n" + alert_id`, or of `webhook_id + "\n" + raw_body` when
/// the alert has no id (43 characters, within Alpaca's 48).
///
/// The id is derived, never random, so that an alert delivered twice — the same `id`, or a
/// byte-identical body — names the same order, and the ledger's unique client order id turns
/// the second delivery into the first order instead of a second one. An alert id should
/// therefore change with each genuine alert (the templates add `{{timenow}}`), while a body
/// without an id dedups on its exact bytes. Different webhooks never share ids.
pub fn client_order_id(webhook_id: &str, alert: &Alert, raw_body: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(webhook_id.as_bytes());
    hash.update(b"\n");
    match &alert.alert_id {
        Some(id) => hash.update(id.as_bytes()),
        None => hash.update(raw_body.as_bytes()),
    }
    let digest = hash.finalize();
    let mut id = String::with_capacity(CLIENT_ORDER_ID_PREFIX.len() + CLIENT_ORDER_ID_HEX_DIGITS);
    id.push_str(CLIENT_ORDER_ID_PREFIX);
    for byte in digest.iter().take(CLIENT_ORDER_ID_HEX_DIGITS / 2) {
        id.push(hex_digit(byte >> 4));
        id.push(hex_digit(byte & 0x0f));
    }
    id
}

/// The body with every `passphrase` value replaced by `"***"`, for storing what was
/// received, cut to at most [`MAX_STORED_BODY_BYTES`] on a character boundary.
///
/// A JSON body is parsed and re-serialized with the passphrase (any `passphrase` key, any
/// case, at any depth) redacted; a JSON body without one is kept byte for byte. Any other
/// body is kept as text, except that a `"passphrase": …` pair in it (a template whose
/// placeholders broke the JSON) still has its value masked.
pub fn redact_passphrase(body: &str) -> String {
    let redacted = match serde_json::from_str::<Value>(strip_bom(body)) {
        Ok(mut value) => {
            if redact_value(&mut value) {
                value.to_string()
            } else {
                body.to_string()
            }
        }
        Err(_) => redact_text(body),
    };
    cut(redacted, MAX_STORED_BODY_BYTES)
}

/// The passphrase of a body, without checking anything else: lets the caller answer
/// "unauthorized" before reporting any other problem of the body.
pub fn alert_passphrase(body: &str) -> Option<String> {
    match serde_json::from_str::<Value>(strip_bom(body)) {
        Ok(Value::Object(object)) => passphrase_in(&object),
        _ => None,
    }
}

/// A template with its `PASSPHRASE` marker replaced by `passphrase` as a JSON string.
pub fn template_with_passphrase(template: &str, passphrase: &str) -> String {
    let quoted = Value::String(passphrase.to_string()).to_string();
    template.replace(&format!("\"{PASSPHRASE_MARKER}\""), &quoted)
}

/// Our symbol for a TradingView symbol: any `EXCHANGE:` prefix dropped, `/`, `-`, `_` and
/// spaces removed, upper case. `BINANCE:BTCUSDT`, `btcusdt`, `BTC/USDT`, `BTC-USDT` →
/// `BTCUSDT`. Nothing else is guessed: `BTCUSDT.P` stays `BTCUSDT.P`.
pub fn map_symbol(text: &str) -> String {
    let t = text.trim();
    let t = t.rsplit_once(':').map_or(t, |(_, s)| s);
    t.chars()
        .filter(|c| !matches!(c, '/' | '-' | '_') && !c.is_whitespace())
        .collect::<String>()
        .to_uppercase()
}

// ---------------------------------------------------------------------------------------

fn missing(message: &str) -> RuleViolation {
    RuleViolation::new(RejectCode::MissingField, message)
}

fn invalid(message: impl Into<String>) -> RuleViolation {
    RuleViolation::new(RejectCode::InvalidField, message)
}

fn strip_bom(body: &str) -> &str {
    body.strip_prefix('\u{feff}').unwrap_or(body)
}

fn not_json(why: &str, body: &str) -> RuleViolation {
    let placeholder = if body.contains("{{") {
        " A {{…}} placeholder was left unsubstituted or unquoted: quote placeholders (\"qty\":\"{{strategy.order.contracts}}\"), and use strategy.* placeholders in strategy alerts only."
    } else {
        ""
    };
    RuleViolation::new(
        RejectCode::NotJson,
        format!(
            "the alert body {why}.{placeholder} Set the alert's Message to the JSON template, e.g. {STRATEGY_TEMPLATE}"
        ),
    )
}

fn json_object(body: &str) -> Result<Map<String, Value>, RuleViolation> {
    let text = strip_bom(body);
    if text.trim().is_empty() {
        return Err(not_json("is empty", body));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(not_json("is JSON but not an object", body)),
        Err(_) => Err(not_json("is not JSON", body)),
    }
}

fn passphrase_in(object: &Map<String, Value>) -> Option<String> {
    match object.get("passphrase")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The fields of an alert body, read by name and aliases.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The value under `names` (a field and its aliases), converted; `None` when none is
    /// present. Aliases that are both present must convert to the same value.
    fn one<T: PartialEq>(
        &self,
        names: &[&'static str],
        convert: impl Fn(&'static str, &Value) -> Result<T, RuleViolation>,
    ) -> Result<Option<T>, RuleViolation> {
        let mut found: Option<(&'static str, T)> = None;
        for &name in names {
            let Some(value) = self.0.get(name).filter(|v| is_present(v)) else {
                continue;
            };
            let converted = convert(name, value)?;
            match &found {
                None => found = Some((name, converted)),
                Some((first, earlier)) => {
                    if *earlier != converted {
                        return Err(invalid(format!(
                            "{first} and {name} name the same field and must agree"
                        )));
                    }
                }
            }
        }
        Ok(found.map(|(_, v)| v))
    }
}

/// `null` and empty (or blank) strings count as absent.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_placeholder(name: &str, text: &str) -> Result<(), RuleViolation> {
    if text.contains("{{") {
        return Err(RuleViolation::new(
            RejectCode::UnsubstitutedPlaceholder,
            format!(
                "{name} is '{}': TradingView left the placeholder unsubstituted (strategy.* placeholders work in strategy alerts only; indicator alerts need fixed values)",
                shorten(text)
            ),
        ));
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.len() <= MAX {
        return text.to_string();
    }
    format!("{}…", cut(text.to_string(), MAX))
}

/// A string field (a number's text is accepted too, e.g. an unquoted numeric id).
fn text_value(name: &'static str, value: &Value) -> Result<String, RuleViolation> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(invalid(format!(
                "{name} must be a string, got {}",
                kind(other)
            )))
        }
    };
    check_placeholder(name, &text)?;
    Ok(text)
}

fn symbol_value(name: &'static str, value: &Value) -> Result<String, RuleViolation> {
    let text = text_value(name, value)?;
    let symbol = map_symbol(&text);
    if symbol.is_empty() {
        return Err(invalid(format!(
            "{name} '{}' names no symbol",
            shorten(&text)
        )));
    }
    Ok(symbol)
}

fn action_value(name: &'static str, value: &Value) -> Result<Side, RuleViolation> {
    let text = text_value(name, value)?;
    Side::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        RuleViolation::new(
            RejectCode::UnknownAction,
            format!("{name} '{}' is not one of buy, sell", shorten(&text)),
        )
    })
}

fn order_type_value(name: &'static str, value: &Value) -> Result<OrderType, RuleViolation> {
    let text = text_value(name, value)?;
    match text.to_ascii_lowercase().as_str() {
        "market" => Ok(OrderType::Market),
        "limit" => Ok(OrderType::Limit),
        _ => Err(invalid(format!(
            "{name} '{}' is not one of market, limit",
            shorten(&text)
        ))),
    }
}

fn time_in_force_value(name: &'static str, value: &Value) -> Result<TimeInForce, RuleViolation> {
    let text = text_value(name, value)?;
    TimeInForce::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        invalid(format!(
            "{name} '{}' is not one of gtc, day, ioc, fok",
            shorten(&text)
        ))
    })
}

/// A decimal sent as a JSON string or number, parsed exactly from its text.
fn decimal_value(name: &'static str, value: &Value) -> Result<Decimal, RuleViolation> {
    let text = match value {
        // With `arbitrary_precision`, a number keeps the text it was sent as.
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => {
            return Err(invalid(format!(
                "{name} must be a decimal number (a JSON string or number), got {}",
                kind(other)
            )))
        }
    };
    check_placeholder(name, &text)?;
    DecimalText(text).parse().map_err(|e| {
        let why = match e {
            DecimalError::NotANumber(_) => "is not a decimal number",
            DecimalError::TooPrecise(_) => "has too many decimal places",
            DecimalError::OutOfRange(_) => "is out of range",
        };
        invalid(format!("{name} {why}: {e}"))
    })
}

/// A take-profit or stop-loss price: a decimal, or Alpaca's leg object holding `key`.
fn leg_price(
    name: &'static str,
    value: &Value,
    key: &'static str,
) -> Result<Decimal, RuleViolation> {
    match value {
        Value::Object(leg) => match leg.get(key).filter(|v| is_present(v)) {
            Some(v) => decimal_value(name, v),
            None => Err(missing(&format!("{name}.{key} is required"))),
        },
        _ => decimal_value(name, value),
    }
}

fn positive(name: &str, v: Decimal) -> Result<Decimal, RuleViolation> {
    if v <= Decimal::ZERO {
        return Err(invalid(format!("{name} must be greater than 0, got {v}")));
    }
    Ok(v)
}

fn check_target(target: Decimal) -> Result<(), RuleViolation> {
    if target < Decimal::ZERO {
        return Err(RuleViolation::new(
            RejectCode::ShortNotSupported,
            format!("position_size {target} is a short position: spot accounts cannot short; use a long-only strategy (a target of 0 closes the position)"),
        ));
    }
    Ok(())
}

fn decimal_text(d: Decimal) -> DecimalText {
    DecimalText(to_text(&d))
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// Redacts every `passphrase` key (any case) at any depth; true when one was found.
fn redact_value(value: &mut Value) -> bool {
    match value {
        Value::Object(object) => {
            let mut found = false;
            for (key, v) in object.iter_mut() {
                if key.eq_ignore_ascii_case("passphrase") {
                    *v = Value::String(REDACTED.to_string());
                    found = true;
                } else {
                    found |= redact_value(v);
                }
            }
            found
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, v| redact_value(v) | found),
        _ => false,
    }
}

/// Masks the value of each `"passphrase": …` pair of a text that is not valid JSON.
fn redact_text(body: &str) -> String {
    const KEY: &str = "\"passphrase\"";
    let bytes = body.as_bytes();
    // ASCII lower-casing keeps every byte offset.
    let lower = body.to_ascii_lowercase();
    let skip_space = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(body.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower.get(search..).and_then(|rest| rest.find(KEY)) {
        let key_end = search + found + KEY.len();
        search = key_end;
        let colon = skip_space(key_end);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let start = skip_space(colon + 1);
        let (start, end) = if bytes.get(start) == Some(&b'"') {
            let mut j = start + 1;
            while j < bytes.len() {
                match bytes[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            (start + 1, j.min(bytes.len()))
        } else {
            let mut j = start;
            while j < bytes.len() && !matches!(bytes[j], b',' | b'}' | b'\n' | b'\r') {
                j += 1;
            }
            (start, j)
        };
        // Every offset here sits next to an ASCII byte or at the end: a char boundary.
        if let (Some(kept), true) = (body.get(copied..start), end >= start) {
            out.push_str(kept);
            out.push_str(REDACTED);
            copied = end;
            search = end;
        }
    }
    out.push_str(body.get(copied..).unwrap_or_default());
    out
}

/// `s` cut to at most `max` bytes, on a char boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::catalog::Catalog;
    use domain::order::{LegRole, ValidOrder};
    use rust_decimal_macros::dec;

    const COID: &str = "tv-test";

    fn alert(body: &str) -> Alert {
        parse_alert(body).unwrap()
    }

    fn err(body: &str) -> RuleViolation {
        parse_alert(body).unwrap_err()
    }

    fn request(body: &str, position: Decimal) -> Option<OrderRequest> {
        alert(body)
            .to_order_request(position, COID.to_string())
            .unwrap()
    }

    fn valid(req: &OrderRequest) -> ValidOrder {
        req.validate(Catalog::builtin()).unwrap().0
    }

    fn text(d: &Option<DecimalText>) -> Option<&str> {
        d.as_ref().map(|t| t.0.as_str())
    }

    /// A template as TradingView sends it: placeholders replaced by their text.
    fn substitute(template: &str, values: &[(&str, &str)]) -> String {
        let mut body = template_with_passphrase(template, "p");
        for (placeholder, value) in values {
            body = body.replace(placeholder, value);
        }
        body
    }

    const TV: [(&str, &str); 12] = [
        ("{{exchange}}", "BINANCE"),
        ("{{ticker}}", "BTCUSDT"),
        ("{{interval}}", "15"),
        ("{{timenow}}", "2026-11-21T10:00:00Z"),
        ("{{close}}", "61837.64"),
        ("{{strategy.order.action}}", "buy"),
        ("{{strategy.order.contracts}}", "0.015"),
        ("{{strategy.order.price}}", "61837.64"),
        ("{{strategy.order.id}}", "Long"),
        ("{{strategy.position_size}}", "0.015"),
        ("{{plot_0}}", "64000.5"),
        ("{{plot_1}}", "60000"),
    ];

    #[test]
    fn strategy_buy_becomes_a_valid_market_order() {
        let body = r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"buy","qty":0.015,"id":"Long-2026-11-21T10:00:00Z"}"#;
        let a = alert(body);
        assert_eq!(a.passphrase.as_deref(), Some("p"));
        assert_eq!(a.symbol, "BTCUSDT");
        assert_eq!(a.action, Some(Side::Buy));
        assert_eq!(a.size, AlertSize::Qty(dec!(0.015)));
        assert_eq!(a.order_type, OrderType::Market);
        assert_eq!(a.time_in_force, TimeInForce::Gtc);
        assert_eq!(a.alert_id.as_deref(), Some("Long-2026-11-21T10:00:00Z"));
        let coid = client_order_id("wh1", &a, body);
        let req = a.to_order_request(dec!(0), coid.clone()).unwrap().unwrap();
        assert_eq!(req.symbol.as_deref(), Some("BTCUSDT"));
        assert_eq!(req.side.as_deref(), Some("buy"));
        assert_eq!(req.order_type.as_deref(), Some("market"));
        assert_eq!(req.time_in_force.as_deref(), Some("gtc"));
        assert_eq!(text(&req.qty), Some("0.015"));
        assert!(req.notional.is_none() && req.limit_price.is_none());
        assert!(req.order_class.is_none() && req.take_profit.is_none() && req.stop_loss.is_none());
        let v = valid(&req);
        assert_eq!(v.spec.side, Side::Buy);
        assert_eq!(v.spec.order_type, OrderType::Market);
        assert_eq!(v.spec.qty.map(|q| q.get()), Some(dec!(0.015)));
        assert_eq!(v.spec.order_class, OrderClass::Simple);
        assert_eq!(v.client_order_id, Some(coid));
    }

    #[test]
    fn sell_in_any_case_and_extra_fields_are_ignored() {
        let body = r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"SELL","contracts":"0.5","time":"2026-11-21T09:45:00Z","close":61837.64,"comment":"Exit long","strategy":{"market_position":"flat"}}"#;
        let req = request(body, dec!(0)).unwrap();
        assert_eq!(req.side.as_deref(), Some("sell"));
        assert_eq!(text(&req.qty), Some("0.5"));
        assert_eq!(valid(&req).spec.side, Side::Sell);
        assert_eq!(
            alert(r#"{"symbol":"BTCUSDT","side":"Buy","qty":1}"#).action,
            Some(Side::Buy)
        );
    }

    #[test]
    fn notional_orders() {
        let body = r#"{"passphrase":"p","symbol":"BTCUSDT","action":"buy","notional":"25.50"}"#;
        let a = alert(body);
        assert_eq!(a.size, AlertSize::Notional(dec!(25.5)));
        let req = a.to_order_request(dec!(0), COID.into()).unwrap().unwrap();
        assert_eq!(text(&req.notional), Some("25.5"));
        assert!(req.qty.is_none());
        assert_eq!(valid(&req).spec.notional.map(|n| n.get()), Some(dec!(25.5)));
        // Alpaca allows notional for simple market orders only; validation says so.
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","notional":100,"type":"limit","price":"60000"}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(
            req.validate(Catalog::builtin()).unwrap_err().code,
            "notional_not_allowed"
        );
    }

    #[test]
    fn limit_orders_take_their_price() {
        let body = r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"buy","qty":"0.015","type":"limit","price":61837.64,"id":"Long-1"}"#;
        let req = request(body, dec!(0)).unwrap();
        assert_eq!(req.order_type.as_deref(), Some("limit"));
        assert_eq!(text(&req.limit_price), Some("61837.64"));
        let v = valid(&req);
        assert_eq!(v.spec.limit_price.map(|p| p.get()), Some(dec!(61837.64)));
        // Aliases, upper case, time in force.
        let req = request(
            r#"{"symbol":"ETHUSDT","action":"sell","qty":"0.5","order_type":"LIMIT","limit_price":"3000.01","time_in_force":"IOC"}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(req.time_in_force.as_deref(), Some("ioc"));
        assert_eq!(valid(&req).spec.time_in_force, TimeInForce::Ioc);
        // A price sent with a market order is not used.
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.001","price":"{{close}} is ignored"}"#,
            dec!(0),
        )
        .unwrap();
        assert!(req.limit_price.is_none());
        valid(&req);
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.001","type":"limit"}"#);
        assert_eq!(e.code, "missing_field");
        assert!(e.message.contains("price"), "{e}");
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.001","type":"stop"}"#);
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.contains("type 'stop'"), "{e}");
        let e =
            err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.001","time_in_force":"forever"}"#);
        assert_eq!(e.code, "invalid_field");
        let e =
            err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.001","type":"limit","price":"-1"}"#);
        assert_eq!(e.code, "invalid_field");
        // Prices off the tick are the catalog's business.
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.001","type":"limit","price":"61837.645"}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(
            req.validate(Catalog::builtin()).unwrap_err().code,
            "PRICE_FILTER"
        );
    }

    #[test]
    fn take_profit_and_stop_loss_make_a_bracket() {
        let body = r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"buy","qty":"0.015","take_profit":64000.5,"stop_loss":"60000","id":"Long-1"}"#;
        let req = request(body, dec!(0)).unwrap();
        assert_eq!(req.order_class.as_deref(), Some("bracket"));
        let tp = req.take_profit.as_ref().unwrap();
        let sl = req.stop_loss.as_ref().unwrap();
        assert_eq!(text(&tp.limit_price), Some("64000.5"));
        assert!(tp.stop_price.is_none());
        assert_eq!(text(&sl.stop_price), Some("60000"));
        assert!(sl.limit_price.is_none());
        let v = valid(&req);
        assert_eq!(v.spec.order_class, OrderClass::Bracket);
        assert_eq!(v.spec.legs.len(), 2);
        assert_eq!(v.spec.legs[0].role, LegRole::TakeProfit);
        assert_eq!(v.spec.legs[0].order_type, OrderType::Limit);
        assert_eq!(v.spec.legs[1].role, LegRole::StopLoss);
        assert_eq!(v.spec.legs[1].order_type, OrderType::Stop);
        // A limit entry between the exits; Alpaca-shaped legs and the tp/sl aliases.
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.015","type":"limit","price":"62000","take_profit":{"limit_price":"64000"},"sl":{"stop_price":60000}}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(valid(&req).spec.legs.len(), 2);
        // Exits on the wrong side of the entry are refused by validation.
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.015","take_profit":"60000","stop_loss":"64000"}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(
            req.validate(Catalog::builtin()).unwrap_err().code,
            "invalid_leg_prices"
        );
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.015","take_profit":"0"}"#);
        assert_eq!(e.code, "invalid_field");
        let e = err(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.015","stop_loss":{"limit_price":"1"}}"#,
        );
        assert_eq!(e.code, "missing_field");
        assert!(e.message.contains("stop_loss.stop_price"), "{e}");
    }

    #[test]
    fn one_exit_makes_an_oto() {
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.015","stop_loss":"60000"}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(req.order_class.as_deref(), Some("oto"));
        assert!(req.take_profit.is_none());
        let v = valid(&req);
        assert_eq!(v.spec.order_class, OrderClass::Oto);
        assert_eq!(v.spec.legs.len(), 1);
        assert_eq!(v.spec.legs[0].role, LegRole::StopLoss);
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.015","take_profit":"64000","stop_loss":""}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(req.order_class.as_deref(), Some("oto"));
        let v = valid(&req);
        assert_eq!(v.spec.legs.len(), 1);
        assert_eq!(v.spec.legs[0].role, LegRole::TakeProfit);
    }

    #[test]
    fn target_position_orders_the_difference() {
        let body = r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"buy","qty":"0.01","position_size":"0.03","id":"Long-1"}"#;
        let a = alert(body);
        assert_eq!(a.size, AlertSize::TargetPosition(dec!(0.03)));
        // Up: buy the difference (not the alert's qty).
        let req = a
            .to_order_request(dec!(0.01), COID.into())
            .unwrap()
            .unwrap();
        assert_eq!(req.side.as_deref(), Some("buy"));
        assert_eq!(text(&req.qty), Some("0.02"));
        assert!(req.notional.is_none());
        valid(&req);
        // Down: sell the difference.
        let req = a
            .to_order_request(dec!(0.05), COID.into())
            .unwrap()
            .unwrap();
        assert_eq!(req.side.as_deref(), Some("sell"));
        assert_eq!(text(&req.qty), Some("0.02"));
        valid(&req);
        // At the target: nothing to do.
        assert!(a
            .to_order_request(dec!(0.030), COID.into())
            .unwrap()
            .is_none());
        // Flat: close what is held; no action needed.
        let req = request(r#"{"symbol":"BTCUSDT","position_size":0}"#, dec!(0.015)).unwrap();
        assert_eq!(req.side.as_deref(), Some("sell"));
        assert_eq!(text(&req.qty), Some("0.015"));
        valid(&req);
        assert!(request(r#"{"symbol":"BTCUSDT","position_size":"0"}"#, dec!(0)).is_none());
        // Short targets cannot be held on a spot account.
        let e = err(r#"{"symbol":"BTCUSDT","action":"sell","position_size":"-0.015"}"#);
        assert_eq!(e.code, "short_not_supported");
        assert!(e.message.contains("-0.015"), "{e}");
        // Exits go with buys only: a sell towards the target is a plain exit.
        let a = alert(
            r#"{"symbol":"BTCUSDT","position_size":"0.02","take_profit":"64000","stop_loss":"60000"}"#,
        );
        let up = a.to_order_request(dec!(0), COID.into()).unwrap().unwrap();
        assert_eq!(up.order_class.as_deref(), Some("bracket"));
        assert_eq!(valid(&up).spec.legs.len(), 2);
        let down = a
            .to_order_request(dec!(0.03), COID.into())
            .unwrap()
            .unwrap();
        assert_eq!(down.side.as_deref(), Some("sell"));
        assert!(
            down.order_class.is_none() && down.take_profit.is_none() && down.stop_loss.is_none()
        );
        valid(&down);
    }

    #[test]
    fn symbols_map_from_tradingview_forms() {
        for (given, ours) in [
            ("BINANCE:BTCUSDT", "BTCUSDT"),
            ("BTCUSDT", "BTCUSDT"),
            ("btcusdt", "BTCUSDT"),
            ("BTC/USDT", "BTCUSDT"),
            ("BTC-USDT", "BTCUSDT"),
            ("binance:eth/usdt", "ETHUSDT"),
            (" BINANCE:BTCUSDT ", "BTCUSDT"),
            ("BINANCE:BTCUSDT.P", "BTCUSDT.P"),
        ] {
            assert_eq!(map_symbol(given), ours, "{given}");
            let body = format!(r#"{{"symbol":"{given}","action":"buy","qty":"0.001"}}"#);
            assert_eq!(alert(&body).symbol, ours, "{given}");
        }
        let a = alert(r#"{"ticker":"ETHUSDT","action":"buy","qty":"0.01"}"#);
        assert_eq!(a.symbol, "ETHUSDT");
        let a =
            alert(r#"{"symbol":"BINANCE:BTCUSDT","ticker":"BTCUSDT","action":"buy","qty":"0.01"}"#);
        assert_eq!(a.symbol, "BTCUSDT");
        let e = err(r#"{"symbol":"BTCUSDT","ticker":"ETHUSDT","action":"buy","qty":"0.01"}"#);
        assert_eq!(e.code, "invalid_field");
        // A perpetual is not guessed: validation names it unknown.
        let req = request(
            r#"{"symbol":"BINANCE:BTCUSDT.P","action":"buy","qty":"0.001"}"#,
            dec!(0),
        )
        .unwrap();
        let e = req.validate(Catalog::builtin()).unwrap_err();
        assert_eq!(e.code, "unknown_symbol");
        assert!(e.message.contains("BTCUSDT.P"), "{e}");
        let e = err(r#"{"symbol":"BINANCE:","action":"buy","qty":"0.001"}"#);
        assert_eq!(e.code, "invalid_field");
        let e = err(r#"{"symbol":{"ticker":"BTCUSDT"},"action":"buy","qty":"0.001"}"#);
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.contains("symbol must be a string"), "{e}");
    }

    #[test]
    fn strings_and_numbers_are_exact() {
        let qty = |q: &str| match alert(&format!(
            r#"{{"symbol":"BTCUSDT","action":"buy","qty":{q}}}"#
        ))
        .size
        {
            AlertSize::Qty(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(qty(r#""0.1""#), dec!(0.1));
        assert_eq!(qty("0.1"), dec!(0.1));
        assert_eq!(qty("1e-1"), dec!(0.1));
        assert_eq!(qty("1E-2"), dec!(0.01));
        assert_eq!(qty(r#""1e-05""#), dec!(0.00001));
        assert_eq!(qty("0.30000000000000004"), dec!(0.30000000000000004));
        assert_eq!(qty(r#"" 0.015 ""#), dec!(0.015));
        assert_eq!(qty("2"), dec!(2));
        // Text in requests is the normalized decimal.
        let req = request(
            r#"{"symbol":"BTCUSDT","action":"buy","qty":1.50000,"type":"limit","price":"61837.6400"}"#,
            dec!(0),
        )
        .unwrap();
        assert_eq!(text(&req.qty), Some("1.5"));
        assert_eq!(text(&req.limit_price), Some("61837.64"));
        let req = request(r#"{"symbol":"BTCUSDT","action":"buy","qty":1e-3}"#, dec!(0)).unwrap();
        assert_eq!(text(&req.qty), Some("0.001"));
        valid(&req);
        for bad in [
            r#""abc""#,
            r#""NaN""#,
            "true",
            "[1]",
            r#"{"a":1}"#,
            "1e300",
            r#""0.0000000000000000001""#,
        ] {
            let e = err(&format!(
                r#"{{"symbol":"BTCUSDT","action":"buy","qty":{bad}}}"#
            ));
            assert_eq!(e.code, "invalid_field", "{bad}: {e}");
            assert!(e.message.starts_with("qty"), "{bad}: {e}");
        }
        for bad in ["0", "-0.1", r#""-0""#] {
            let e = err(&format!(
                r#"{{"symbol":"BTCUSDT","action":"buy","qty":{bad}}}"#
            ));
            assert_eq!(e.code, "invalid_field", "{bad}");
            assert!(e.message.contains("greater than 0"), "{e}");
        }
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"0.1","contracts":"0.2"}"#);
        assert_eq!(e.code, "invalid_field");
        assert_eq!(qty(r#""0.1","contracts":0.10"#), dec!(0.1));
    }

    #[test]
    fn missing_and_invalid_fields_are_named() {
        let e = err(r#"{"passphrase":"p","action":"buy","qty":"1"}"#);
        assert_eq!(e.code, "missing_field");
        assert!(e.message.contains("symbol"), "{e}");
        let e = err(r#"{"passphrase":"p","symbol":"BTCUSDT","qty":"1"}"#);
        assert_eq!(e.code, "missing_field");
        assert!(e.message.contains("action"), "{e}");
        let e = err(r#"{"passphrase":"p","symbol":"BTCUSDT","action":"buy"}"#);
        assert_eq!(e.code, "missing_field");
        assert!(e.message.contains("qty"), "{e}");
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":null,"notional":""}"#);
        assert_eq!(e.code, "missing_field");
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"1","notional":"100"}"#);
        assert_eq!(e.code, "qty_and_notional");
        let e = err(r#"{"symbol":"BTCUSDT","action":"hold","qty":"1"}"#);
        assert_eq!(e.code, "unknown_action");
        assert!(e.message.contains("'hold'"), "{e}");
        let e = err(r#"{"symbol":"BTCUSDT","action":"long","position_size":"1"}"#);
        assert_eq!(e.code, "unknown_action");
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"1","id":["x"]}"#);
        assert_eq!(e.code, "invalid_field");
        // An indicator alert holding a strategy placeholder that was not substituted.
        let e = err(r#"{"symbol":"BTCUSDT","action":"{{strategy.order.action}}","qty":"1"}"#);
        assert_eq!(e.code, "unsubstituted_placeholder");
        assert!(e.message.contains("{{strategy.order.action}}"), "{e}");
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":"{{strategy.order.contracts}}"}"#);
        assert_eq!(e.code, "unsubstituted_placeholder");
        // A missing passphrase is the caller's call, not a parse error.
        let a = alert(r#"{"symbol":"BTCUSDT","action":"buy","qty":"1"}"#);
        assert_eq!(a.passphrase, None);
        assert_eq!(
            alert(r#"{"passphrase":123456,"symbol":"BTCUSDT","action":"buy","qty":"1"}"#)
                .passphrase
                .as_deref(),
            Some("123456")
        );
        assert_eq!(
            alert_passphrase(r#"{"passphrase":"s3cret","qty":"x"}"#).as_deref(),
            Some("s3cret")
        );
        assert_eq!(alert_passphrase("buy BTCUSDT"), None);
        assert_eq!(alert_passphrase(r#"{"passphrase":{"a":1}}"#), None);
    }

    #[test]
    fn bodies_that_are_not_json_get_a_hint() {
        for body in [
            "BTCUSDT Crossing 61837.64",
            "",
            "   ",
            r#"["buy"]"#,
            r#""buy""#,
            r#"{"passphrase":"p","symbol":"BTCUSDT""#,
        ] {
            let e = err(body);
            assert_eq!(e.code, "not_json", "{body}");
            assert!(e.message.contains("Message"), "{e}");
            assert!(e.message.contains(STRATEGY_TEMPLATE), "{e}");
        }
        // An unquoted placeholder that TradingView did not substitute breaks the JSON.
        let e = err(r#"{"symbol":"BTCUSDT","action":"buy","qty":{{strategy.order.contracts}}}"#);
        assert_eq!(e.code, "not_json");
        assert!(e.message.contains("unsubstituted"), "{e}");
        // A byte-order mark is tolerated.
        alert("\u{feff}{\"symbol\":\"BTCUSDT\",\"action\":\"buy\",\"qty\":\"1\"}");
    }

    #[test]
    fn client_order_ids_are_stable_short_and_distinct() {
        let body = r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"buy","qty":0.015,"id":"Long-2026-11-21T10:00:00Z"}"#;
        let a = alert(body);
        let id = client_order_id("wh1", &a, body);
        assert!(id.starts_with("tv-"), "{id}");
        assert_eq!(id.len(), 43);
        assert!(id.len() <= domain::order::MAX_CLIENT_ORDER_ID_LEN);
        assert!(id[3..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(id, client_order_id("wh1", &alert(body), body));
        // The same id with a different body (a re-send with another "time") is the same order.
        let resent = body.replace("0.015", "\"0.015\"");
        assert_eq!(id, client_order_id("wh1", &alert(&resent), &resent));
        // Another id, another webhook: another order.
        let other = body.replace("10:00:00Z", "10:15:00Z");
        assert_ne!(id, client_order_id("wh1", &alert(&other), &other));
        assert_ne!(id, client_order_id("wh2", &a, body));
        // Documented formula.
        let digest = Sha256::digest(b"wh1\nLong-2026-11-21T10:00:00Z");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id, format!("tv-{}", &hex[..40]));
        // Without an id, the exact body decides.
        let plain = r#"{"passphrase":"p","symbol":"BTCUSDT","action":"buy","qty":"0.015"}"#;
        let p = alert(plain);
        let id = client_order_id("wh1", &p, plain);
        assert_eq!(id, client_order_id("wh1", &alert(plain), plain));
        let spaced = plain.replace(',', ", ");
        assert_ne!(id, client_order_id("wh1", &alert(&spaced), &spaced));
        // Accepted by validation.
        let req = p.to_order_request(dec!(0), id.clone()).unwrap().unwrap();
        assert_eq!(valid(&req).client_order_id, Some(id));
    }

    #[test]
    fn passphrases_are_redacted() {
        let body =
            r#"{"passphrase":"s3cret","symbol":"BINANCE:BTCUSDT","action":"buy","qty":0.015}"#;
        let r = redact_passphrase(body);
        assert!(!r.contains("s3cret"), "{r}");
        let v: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["passphrase"], "***");
        assert_eq!(v["symbol"], "BINANCE:BTCUSDT");
        assert_eq!(v["qty"].to_string(), "0.015", "numbers keep their text");
        // Nested or differently cased keys too.
        let r =
            redact_passphrase(r#"{"meta":{"Passphrase":"s3cret"},"list":[{"passphrase":1234}]}"#);
        assert!(!r.contains("s3cret") && !r.contains("1234"), "{r}");
        // No passphrase: the body as received.
        let plain = r#"{"symbol": "BTCUSDT",  "action":"buy"}"#;
        assert_eq!(redact_passphrase(plain), plain);
        // Not JSON: unchanged, but a passphrase pair is still masked.
        assert_eq!(
            redact_passphrase("BTCUSDT Crossing 61837.64"),
            "BTCUSDT Crossing 61837.64"
        );
        let broken = r#"{"passphrase" : "s3\"cr,et", "qty": {{strategy.order.contracts}}}"#;
        assert_eq!(
            redact_passphrase(broken),
            r#"{"passphrase" : "***", "qty": {{strategy.order.contracts}}}"#
        );
        let unquoted = r#"{"passphrase":12345,"qty":{{x}}}"#;
        assert_eq!(
            redact_passphrase(unquoted),
            r#"{"passphrase":***,"qty":{{x}}}"#
        );
        let unterminated = r#"{"passphrase":"s3cret"#;
        assert_eq!(redact_passphrase(unterminated), r#"{"passphrase":"***"#);
        // Bounded, cut on a char boundary.
        let long = "é".repeat(MAX_STORED_BODY_BYTES);
        let r = redact_passphrase(&long);
        assert!(r.len() <= MAX_STORED_BODY_BYTES && r.len() >= MAX_STORED_BODY_BYTES - 1);
        assert!(r.chars().all(|c| c == 'é'));
        let long_json = format!(
            r#"{{"passphrase":"s3cret","comment":"{}"}}"#,
            "x".repeat(10_000)
        );
        let r = redact_passphrase(&long_json);
        assert!(r.len() <= MAX_STORED_BODY_BYTES && !r.contains("s3cret"));
    }

    #[test]
    fn documented_templates_work_as_tradingview_fills_them() {
        for (name, template) in TEMPLATES {
            assert!(template.contains("\"PASSPHRASE\""), "{name}");
            assert!(template.contains("{{"), "{name}");
            // Unsubstituted templates are JSON already (placeholders are quoted).
            assert!(serde_json::from_str::<Value>(template).is_ok(), "{name}");
            assert!(STRATEGY_TEMPLATE.len() < 300);
        }
        let filled = |t: &str| substitute(t, &TV);

        let body = filled(STRATEGY_TEMPLATE);
        assert_eq!(
            body,
            r#"{"passphrase":"p","symbol":"BINANCE:BTCUSDT","action":"buy","qty":"0.015","id":"Long-2026-11-21T10:00:00Z"}"#
        );
        let a = alert(&body);
        assert_eq!(a.passphrase.as_deref(), Some("p"));
        let req = a
            .to_order_request(dec!(0), client_order_id("wh", &a, &body))
            .unwrap()
            .unwrap();
        assert_eq!(valid(&req).spec.qty.map(|q| q.get()), Some(dec!(0.015)));

        let body = filled(INDICATOR_TEMPLATE);
        let req = request(&body, dec!(0)).unwrap();
        assert_eq!(valid(&req).spec.notional.map(|n| n.get()), Some(dec!(100)));
        assert_eq!(
            alert(&body).alert_id.as_deref(),
            Some("buy-BTCUSDT-15-2026-11-21T10:00:00Z")
        );

        let body = filled(TARGET_POSITION_TEMPLATE);
        let req = request(&body, dec!(0.005)).unwrap();
        assert_eq!(req.side.as_deref(), Some("buy"));
        assert_eq!(text(&req.qty), Some("0.01"));
        valid(&req);
        assert!(request(&body, dec!(0.015)).is_none());
        let short = substitute(
            TARGET_POSITION_TEMPLATE,
            &[("{{strategy.position_size}}", "-0.015")],
        );
        let short = substitute(&short, &TV);
        assert_eq!(err(&short).code, "short_not_supported");

        let body = filled(BRACKET_TEMPLATE);
        let req = request(&body, dec!(0)).unwrap();
        assert_eq!(req.order_class.as_deref(), Some("bracket"));
        assert_eq!(valid(&req).spec.legs.len(), 2);

        // The strategy template for a sell fill.
        let sell = substitute(STRATEGY_TEMPLATE, &[("{{strategy.order.action}}", "sell")]);
        let req = request(&substitute(&sell, &TV), dec!(0.015)).unwrap();
        assert_eq!(valid(&req).spec.side, Side::Sell);
    }

    #[test]
    fn passphrases_fill_templates_as_json_strings() {
        let t = template_with_passphrase(STRATEGY_TEMPLATE, r#"a"b\c"#);
        assert!(!t.contains(PASSPHRASE_MARKER));
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["passphrase"], r#"a"b\c"#);
        assert_eq!(v["symbol"], "{{exchange}}:{{ticker}}");
    }
}
