//! Helpers shared by the devstack's integration tests.

use std::time::Duration;

use devstack::FunctionHandle;
use testkit::wait::poll;

/// Waits until `n` instances of the function poll for work (they start in the background).
pub async fn wait_idle(f: Option<&FunctionHandle>, n: usize) {
    let f = f.expect("function configured");
    poll(
        Duration::from_secs(20),
        Duration::from_millis(20),
        async || {
            if f.idle_instances() >= n {
                Ok(())
            } else {
                Err(format!("{} instances never became ready", f.name()))
            }
        },
    )
    .await
}
