//! Replays one symbol's recording in a loop, paced by the recorded receive timestamps.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::control::Control;
use crate::hub::Hub;
use crate::recording::Recording;

/// Replays `rec` forever at `speed` (0 = as fast as possible). Skips (and waits out) the
/// periods in which the symbol is under script control.
pub async fn run(rec: Arc<Recording>, speed: f64, hub: Arc<Hub>, control: Arc<Control>) {
    if rec.events.is_empty() {
        tracing::warn!(symbol = %rec.symbol, "recording has no events; nothing to replay");
        return;
    }
    let mut generation = control.subscribe();
    let mut passes: u64 = 0;
    loop {
        // (wall-clock start, recorded ts at start): restarted each pass and after control.
        let mut clock: Option<(Instant, u64)> = None;
        for (i, ev) in rec.events.iter().enumerate() {
            if speed > 0.0 {
                let (start, t0) = *clock.get_or_insert((Instant::now(), ev.ts_ns));
                let offset_ns = ev.ts_ns.saturating_sub(t0) as f64 / speed;
                // `as u64` saturates for huge values; offsets are at most hours.
                let target = start + Duration::from_nanos(offset_ns as u64);
                if target > Instant::now() {
                    tokio::time::sleep_until(target).await;
                }
            } else if i % 256 == 0 {
                if hub.client_count() == 0 {
                    // Nobody listens: do not burn a core replaying into the void.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            loop {
                generation.borrow_and_update();
                if control.publish_recorded(&rec.symbol, &ev.stream, &ev.text, &hub) {
                    break;
                }
                // Under script control: wait until something changes, then re-check.
                if generation.changed().await.is_err() {
                    return;
                }
                clock = Some((Instant::now(), ev.ts_ns));
            }
        }
        passes += 1;
        tracing::debug!(symbol = %rec.symbol, passes, "recording replayed; looping");
    }
}
