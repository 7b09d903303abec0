//! A broken business rule, named so that clients can act on it.

use crate::catalog::FilterViolation;

/// A request rejected by a rule: `code` names the rule (e.g. `LOT_SIZE`, `invalid_qty`,
/// `insufficient_buying_power`), `message` explains it with the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RuleViolation {
    pub code: String,
    pub message: String,
}

impl RuleViolation {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        RuleViolation {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<FilterViolation> for RuleViolation {
    fn from(v: FilterViolation) -> Self {
        RuleViolation {
            code: v.filter.to_string(),
            message: v.to_string(),
        }
    }
}
