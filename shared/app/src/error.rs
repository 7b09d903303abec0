//! Errors as clients see them: JSON `{"code","message"}` with the right status. A broken
//! rule is a 4xx naming the rule; a dependency outage is a 503 with `Retry-After`. Every
//! edge (REST, webhook, WebSocket) answers an `ApiError` through [`ApiError::body`] and its
//! `status` and `retry_after`, so the mapping lives here once.

use adapters::DependencyError;
use domain::{RejectCode, RuleViolation};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: RejectCode,
    pub message: String,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, code: RejectCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, RejectCode::MalformedRequest, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, RejectCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, RejectCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, RejectCode::NotFound, message)
    }
    pub fn conflict(code: RejectCode, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            RejectCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        )
    }
    pub fn rule(v: RuleViolation) -> Self {
        Self::new(422, v.code, v.message)
    }
    /// 429 with `Retry-After`.
    pub fn rate_limited(
        code: RejectCode,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        ApiError {
            status: 429,
            code,
            message: message.into(),
            retry_after: Some(u32::try_from(retry_after_secs).unwrap_or(u32::MAX)),
        }
    }
    /// 500: a bug of ours (a caught panic), never a rule the client broke.
    pub fn internal() -> Self {
        Self::new(
            500,
            RejectCode::Internal,
            "internal error: the request was not completed; it has been logged",
        )
    }
    pub fn unavailable(dependency: &str) -> Self {
        ApiError {
            status: 503,
            code: RejectCode::ServiceUnavailable,
            message: format!("{dependency} is unavailable; retry shortly"),
            retry_after: Some(RETRY_AFTER_SECS),
        }
    }

    /// The JSON object every edge sends: `{"code","message"}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code, "message": self.message })
    }

    pub fn body(&self) -> String {
        self.json().to_string()
    }
}

impl From<RuleViolation> for ApiError {
    fn from(v: RuleViolation) -> Self {
        ApiError::rule(v)
    }
}

impl From<DependencyError> for ApiError {
    fn from(e: DependencyError) -> Self {
        // The detail goes to the log, never to the client.
        tracing::warn!(dependency = e.dependency, detail = %e.detail, "dependency error");
        ApiError::unavailable(e.dependency)
    }
}
