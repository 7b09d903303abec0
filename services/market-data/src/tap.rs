//! The one way to follow the flushed quotes: a [`FlushTap`] is a flush hook that copies each
//! non-empty flush into a channel, and its [`QuoteFeed`] hands the batches over, everything
//! queued since the last look merged into one (so a slow consumer never lets batches pile
//! up for long). The trigger engine and the WebSocket fan-out each hold one feed.

use domain::quote::Quote;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::flush::FlushHook;

/// The flusher's end of a quote channel.
#[derive(Debug, Clone)]
pub struct FlushTap {
    tx: UnboundedSender<Vec<Quote>>,
}

impl FlushTap {
    /// Sends a copy of the quotes just flushed (nothing when the consumer is gone).
    pub fn on_flush(&mut self, quotes: &[Quote]) {
        if !quotes.is_empty() {
            let _ = self.tx.send(quotes.to_vec());
        }
    }
}

impl FlushHook for FlushTap {
    fn on_flush(&mut self, quotes: &[Quote]) {
        FlushTap::on_flush(self, quotes)
    }
}

/// The consumer's end of a quote channel.
#[derive(Debug)]
pub struct QuoteFeed {
    rx: UnboundedReceiver<Vec<Quote>>,
}

/// The quotes of one or more flushes, in flush order.
#[derive(Debug, Clone, PartialEq)]
pub struct Flushed {
    pub quotes: Vec<Quote>,
    /// How many flushes they came from.
    pub batches: u64,
}

impl QuoteFeed {
    /// The next flush's quotes; `None` once every tap is gone.
    pub async fn recv(&mut self) -> Option<Vec<Quote>> {
        self.rx.recv().await
    }

    /// A flush already queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Vec<Quote>, TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits for the next flush, then takes every flush queued behind it too.
    pub async fn next_merged(&mut self) -> Option<Flushed> {
        let mut quotes = self.rx.recv().await?;
        let mut batches = 1;
        while let Ok(more) = self.rx.try_recv() {
            quotes.extend(more);
            batches += 1;
        }
        Some(Flushed { quotes, batches })
    }
}

/// A new quote channel: the tap to give the flusher, the feed to consume.
pub fn quote_channel() -> (FlushTap, QuoteFeed) {
    let (tx, rx) = mpsc::unbounded_channel();
    (FlushTap { tx }, QuoteFeed { rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(ts: i64) -> Quote {
        Quote::new("BTCUSDT", "1".parse().unwrap(), "2".parse().unwrap(), ts)
    }

    #[tokio::test]
    async fn the_tap_hands_over_copies_of_non_empty_flushes() {
        let (mut tap, mut rx) = quote_channel();
        let q = quote(1);
        tap.on_flush(&[]);
        tap.on_flush(std::slice::from_ref(&q));
        assert_eq!(rx.recv().await, Some(vec![q]));
        drop(tap);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn the_feed_merges_what_queued_up() {
        let (mut tap, mut feed) = quote_channel();
        tap.on_flush(&[quote(1)]);
        tap.on_flush(&[quote(2), quote(3)]);
        let merged = feed.next_merged().await.unwrap();
        assert_eq!(merged.batches, 2);
        assert_eq!(
            merged.quotes.iter().map(|q| q.ts).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        drop(tap);
        assert_eq!(feed.next_merged().await, None);
    }
}
