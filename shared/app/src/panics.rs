//! The backstop against a panic inside one request: the request is answered 500 (`internal`),
//! the event is logged (`metric = "panics_caught"`), and the process goes on serving the
//! next one. A panic is a bug to fix, not an answer; this keeps one bad input from turning
//! into a 502 and a cold start for every client of the instance. It works because the
//! release profile unwinds (`panic = "unwind"` in the workspace `Cargo.toml`).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::ApiError;

/// Runs one request's work; a panic in it becomes [`ApiError::internal`]. `function` names
/// the function in the log (never the raw path: paths can hold secrets).
pub async fn guarded<T>(
    function: &'static str,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    // Unwind safety: what a request shares with the next (pools, clients, the catalog) is
    // either immutable or made to survive a dropped future, as it must be for timeouts.
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            // The panic hook has printed the message and the location already.
            tracing::error!(
                metric = "panics_caught",
                function,
                "a request panicked; answered 500"
            );
            Err(ApiError::internal())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_an_internal_error_and_the_next_request_is_served() {
        let panicking = guarded("test", async {
            let text = "é";
            // A byte-index slice inside a multi-byte character: the classic crash.
            let cut = &text[..1];
            Ok::<_, ApiError>(cut.len())
        })
        .await;
        let e = panicking.expect_err("a panic is an error");
        assert_eq!((e.status, e.code), (500, domain::RejectCode::Internal));
        assert_eq!(guarded("test", async { Ok::<_, ApiError>(7) }).await, Ok(7));
    }
}
