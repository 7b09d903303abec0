//! Why a request is refused: a [`RejectCode`] that clients can act on, and the
//! [`RuleViolation`] that pairs it with an explanation.

use crate::catalog::FilterViolation;

macro_rules! reject_codes {
    ($($(#[$m:meta])* $variant:ident = $text:literal,)+) => {
        /// Every code a request can be refused with, serialized as the snake_case (or, for
        /// Binance's filters, upper-case) name clients see in `{"code", "message"}`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum RejectCode {
            $($(#[$m])* #[serde(rename = $text)] $variant,)+
        }

        impl RejectCode {
            pub const ALL: &'static [RejectCode] = &[$(RejectCode::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(RejectCode::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<RejectCode> {
                match text { $($text => Some(RejectCode::$variant),)+ _ => None }
            }
        }
    };
}

reject_codes! {
    // ---- requests as a whole ------------------------------------------------------------
    /// The body is not the JSON the route takes.
    MalformedJson = "malformed_json",
    MalformedRequest = "malformed_request",
    PayloadTooLarge = "payload_too_large",
    Unauthorized = "unauthorized",
    Forbidden = "forbidden",
    /// The route needs a login session; an API key (which trades) is not enough.
    SessionRequired = "session_required",
    /// The current password given to change it is wrong.
    WrongPassword = "wrong_password",
    NotFound = "not_found",
    RateLimited = "rate_limited",
    TooManyLoginAttempts = "too_many_login_attempts",
    ServiceUnavailable = "service_unavailable",
    Internal = "internal",
    InvalidParameter = "invalid_parameter",
    MissingParameter = "missing_parameter",
    // ---- amounts as text ----------------------------------------------------------------
    InvalidNumber = "invalid_number",
    TooPrecise = "too_precise",
    OutOfRange = "out_of_range",
    // ---- orders -------------------------------------------------------------------------
    MissingSymbol = "missing_symbol",
    UnknownSymbol = "unknown_symbol",
    SymbolNotTradable = "symbol_not_tradable",
    MissingSide = "missing_side",
    InvalidSide = "invalid_side",
    MissingType = "missing_type",
    InvalidType = "invalid_type",
    MissingTimeInForce = "missing_time_in_force",
    InvalidTimeInForce = "invalid_time_in_force",
    UnsupportedTimeInForce = "unsupported_time_in_force",
    InvalidOrderClass = "invalid_order_class",
    MissingQty = "missing_qty",
    InvalidQty = "invalid_qty",
    QtyAndNotional = "qty_and_notional",
    NotionalNotAllowed = "notional_not_allowed",
    InvalidNotional = "invalid_notional",
    MissingLimitPrice = "missing_limit_price",
    InvalidLimitPrice = "invalid_limit_price",
    MissingStopPrice = "missing_stop_price",
    InvalidStopPrice = "invalid_stop_price",
    MissingTrail = "missing_trail",
    InvalidTrailPrice = "invalid_trail_price",
    InvalidTrailPercent = "invalid_trail_percent",
    TrailPriceAndPercent = "trail_price_and_percent",
    InvalidField = "invalid_field",
    MissingBracketLegs = "missing_bracket_legs",
    MissingTakeProfitLimitPrice = "missing_take_profit_limit_price",
    MissingStopLossStopPrice = "missing_stop_loss_stop_price",
    InvalidLegPrices = "invalid_leg_prices",
    InvalidClientOrderId = "invalid_client_order_id",
    ClientOrderIdConflict = "client_order_id_conflict",
    OrderNotOpen = "order_not_open",
    OrderNotCancelable = "order_not_cancelable",
    OrderNotReplaceable = "order_not_replaceable",
    InvalidPercentage = "invalid_percentage",
    QtyAndPercentage = "qty_and_percentage",
    // ---- Binance's instrument filters ---------------------------------------------------
    PriceFilter = "PRICE_FILTER",
    LotSize = "LOT_SIZE",
    MarketLotSize = "MARKET_LOT_SIZE",
    MinNotional = "MIN_NOTIONAL",
    // ---- execution ----------------------------------------------------------------------
    NoPrice = "no_price",
    StalePrice = "stale_price",
    InsufficientBuyingPower = "insufficient_buying_power",
    InsufficientQty = "insufficient_qty",
    FillOutOfRange = "fill_out_of_range",
    // ---- risk ---------------------------------------------------------------------------
    KillSwitch = "kill_switch",
    MaxOrderNotional = "max_order_notional",
    MaxPositionNotional = "max_position_notional",
    MaxOpenOrders = "max_open_orders",
    MaxGrossLeverage = "max_gross_leverage",
    DailyLossLimit = "daily_loss_limit",
    InvalidRiskLimit = "invalid_risk_limit",
    InvalidReason = "invalid_reason",
    // ---- identities ---------------------------------------------------------------------
    InvalidEmail = "invalid_email",
    InvalidPassword = "invalid_password",
    EmailTaken = "email_taken",
    // ---- webhooks and TradingView alerts ------------------------------------------------
    InvalidName = "invalid_name",
    InvalidAllowedIps = "invalid_allowed_ips",
    MaxWebhooks = "max_webhooks",
    MaxApiKeys = "max_api_keys",
    AlertTooLarge = "alert_too_large",
    NotJson = "not_json",
    MissingField = "missing_field",
    UnknownAction = "unknown_action",
    ShortNotSupported = "short_not_supported",
    UnsubstitutedPlaceholder = "unsubstituted_placeholder",
    UnsupportedOrderType = "unsupported_order_type",
    // ---- the WebSocket protocol ---------------------------------------------------------
    MalformedMessage = "malformed_message",
    MessageTooLarge = "message_too_large",
    InvalidRate = "invalid_rate",
    TooManySymbols = "too_many_symbols",
    TooManyConnections = "too_many_connections",
    ConnectionUnknown = "connection_unknown",
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Codes compare with their text, so tests and logs can name them as clients see them.
impl PartialEq<str> for RejectCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RejectCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<RejectCode> for &str {
    fn eq(&self, other: &RejectCode) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<RejectCode> for String {
    fn eq(&self, other: &RejectCode) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<String> for RejectCode {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// A request rejected by a rule: `code` names the rule (e.g. `LOT_SIZE`, `invalid_qty`,
/// `insufficient_buying_power`), `message` explains it with the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RuleViolation {
    pub code: RejectCode,
    pub message: String,
}

impl RuleViolation {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        RuleViolation {
            code,
            message: message.into(),
        }
    }
}

impl From<FilterViolation> for RuleViolation {
    fn from(v: FilterViolation) -> Self {
        RuleViolation {
            code: v.filter,
            message: v.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_text_and_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for code in RejectCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<RejectCode>(&json).unwrap(), *code);
            assert_eq!(RejectCode::parse(code.as_str()), Some(*code));
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
        assert_eq!(
            RejectCode::InsufficientBuyingPower,
            "insufficient_buying_power"
        );
        assert_eq!(RejectCode::LotSize.to_string(), "LOT_SIZE");
    }
}
