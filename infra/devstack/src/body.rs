//! Reading a request body with a size limit, as API Gateway does: a body over the limit is
//! told apart from a broken client stream, because they get different answers.

use axum::body::{Body, Bytes};

pub enum BodyError {
    /// More than the limit.
    TooLong,
    /// The client's stream broke before the end.
    Broken,
}

pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if over_limit {
            BodyError::TooLong
        } else {
            BodyError::Broken
        }
    })
}
