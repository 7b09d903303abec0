//! The one error every adapter returns: a dependency (Postgres, Redis, SQS, DynamoDB) failed
//! or timed out. What clients see of it (a 503 with `Retry-After`) is `app::ApiError`'s job.

/// A dependency (Postgres, Redis, SQS) failed or timed out.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} is unavailable: {detail}")]
pub struct DependencyError {
    pub dependency: &'static str,
    pub detail: String,
    /// The dependency answered and refused this work (a constraint, a value out of range, a
    /// statement it cannot run): the same work fails the same way however often it is
    /// retried, so the executor isolates it instead of waiting for the dependency.
    pub refused: bool,
}

impl DependencyError {
    pub fn postgres(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "postgres",
            detail: e.to_string(),
            refused: false,
        }
    }

    /// A failed statement, [`refused`](Self::refused) when PostgreSQL (or the decoding of
    /// what it sent) rejected the work itself rather than being out of reach.
    pub fn postgres_statement(e: sqlx::Error) -> Self {
        let refused = refused_by_postgres(&e);
        DependencyError {
            refused,
            ..DependencyError::postgres(e)
        }
    }
    pub fn redis(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "redis",
            detail: e.to_string(),
            refused: false,
        }
    }
    pub fn queue(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "queue",
            detail: e.to_string(),
            refused: false,
        }
    }
    pub fn dynamodb(e: impl std::fmt::Display) -> Self {
        DependencyError {
            dependency: "dynamodb",
            detail: e.to_string(),
            refused: false,
        }
    }
}

/// Whether PostgreSQL refused the work itself. SQLSTATE classes that mean the server is out
/// of reach or busy (08 connection, 40 transaction rollback such as a serialization failure,
/// 53 insufficient resources, 57 operator intervention such as a shutdown or a statement
/// timeout, 58 system error) and every transport error are not refusals: retried later, the
/// same work can succeed. Everything else the server answered (22 data exception, 23
/// integrity constraint, 42 a statement it cannot run, P0 a raised exception, XX internal)
/// and values that do not decode are.
fn refused_by_postgres(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let class: String = db.code().unwrap_or_default().chars().take(2).collect();
            !matches!(class.as_str(), "" | "08" | "40" | "53" | "57" | "58")
        }
        sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_outages_and_decoding_failures_refusals() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!DependencyError::postgres_statement(io).refused);
        assert!(!DependencyError::postgres_statement(sqlx::Error::PoolTimedOut).refused);
        assert!(DependencyError::postgres_statement(sqlx::Error::RowNotFound).refused);
        assert!(!DependencyError::redis("connection refused").refused);
    }
}
