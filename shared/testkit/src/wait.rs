//! Waiting for a condition in a test: poll it until it holds, within a bound, and fail with
//! what was last seen.

use std::time::Duration;

/// Calls `probe` every `every` until it answers `Ok`, and returns that value; once `within`
/// has passed, panics with the last `Err` (what the probe saw, said as the test wants it).
pub async fn poll<T>(
    within: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(tokio::time::Instant::now() < deadline, "{last}"),
        }
        tokio::time::sleep(every).await;
    }
}
