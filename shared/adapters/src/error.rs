//! The one error every adapter returns: a dependency (Postgres, Redis, SQS, DynamoDB) failed
//! or timed out. What clients see of it (a 503 with `Retry-After`) is `app::ApiError`'s job.

/// A dependency (Postgres, Redis, SQS) failed or timed out.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} is unavailable: {detail}")]
pub struct DependencyError {
    pub dependency: &'static str,
    pub detail: String,
}

impl DependencyError {
    pub fn postgres(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "postgres",
            detail: e.to_string(),
        }
    }
    pub fn redis(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "redis",
            detail: e.to_string(),
        }
    }
    pub fn queue(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "queue",
            detail: e.to_string(),
        }
    }
    pub fn dynamodb(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "dynamodb",
            detail: e.to_string(),
        }
    }
}
