//! Price bars: one-minute bars built from the trade stream, and their aggregation into the
//! longer timeframes of Alpaca's market-data API (`5Min`, `1Hour`, `1Day`, …).
//!
//! Every figure is exact: a bar keeps its notional (Σ price × quantity) beside its volume,
//! so the VWAP of an aggregate is the VWAP of its trades, not an average of averages. A
//! minute without trades has no bar: a gap in the feed stays a gap.

use rust_decimal::Decimal;

/// One minute, in ms.
pub const MINUTE_MS: i64 = 60_000;

/// One bar of a symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// The start of the bar's interval, ms since the epoch (a multiple of its timeframe).
    pub start_ms: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    /// Base-asset quantity traded.
    pub volume: Decimal,
    /// Number of trades.
    pub trades: u64,
    /// Σ price × quantity of its trades: the VWAP's numerator.
    pub notional: Decimal,
}

/// Why a trade could not be added to a bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// A non-positive price or quantity.
    NotPositive,
    /// The sums left `Decimal`'s range.
    Overflow,
    /// The trade belongs to a minute already closed (it came too late).
    Late,
}

impl Bar {
    /// The bar a first trade opens.
    pub fn opening(start_ms: i64, price: Decimal, qty: Decimal) -> Result<Bar, BarError> {
        if price <= Decimal::ZERO || qty <= Decimal::ZERO {
            return Err(BarError::NotPositive);
        }
        Ok(Bar {
            start_ms,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: qty,
            trades: 1,
            notional: price.checked_mul(qty).ok_or(BarError::Overflow)?,
        })
    }

    /// Adds a later trade of the same interval.
    pub fn add(&mut self, price: Decimal, qty: Decimal) -> Result<(), BarError> {
        let next = Bar::opening(self.start_ms, price, qty)?;
        self.merge(&next)
    }

    /// Merges `later`, a bar of the same interval or a later one within it (aggregation):
    /// its close becomes this bar's close.
    pub fn merge(&mut self, later: &Bar) -> Result<(), BarError> {
        let volume = self
            .volume
            .checked_add(later.volume)
            .ok_or(BarError::Overflow)?;
        let notional = self
            .notional
            .checked_add(later.notional)
            .ok_or(BarError::Overflow)?;
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.volume = volume;
        self.notional = notional;
        self.trades = self.trades.saturating_add(later.trades);
        Ok(())
    }

    /// Volume-weighted average price: notional over volume (`None` without volume).
    pub fn vwap(&self) -> Option<Decimal> {
        if self.volume.is_zero() {
            return None;
        }
        self.notional
            .checked_div(self.volume)
            .map(|v| v.round_dp(crate::decimal::MAX_SCALE).normalize())
    }
}

/// The forming one-minute bar of one symbol, closed when a trade of a later minute arrives
/// or when its minute has ended (see [`MinuteBars::close_ended`]).
#[derive(Debug, Clone, Default)]
pub struct MinuteBars {
    forming: Option<Bar>,
    /// The start of the last closed minute: a trade of it or before comes too late.
    closed_through: Option<i64>,
}

impl MinuteBars {
    /// The minute a trade at `trade_ms` belongs to.
    pub fn minute_of(trade_ms: i64) -> i64 {
        trade_ms.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS)
    }

    /// Adds a trade (its exchange time, price and quantity); returns the bar it closed, if it
    /// opened a new minute.
    pub fn trade(
        &mut self,
        trade_ms: i64,
        price: Decimal,
        qty: Decimal,
    ) -> Result<Option<Bar>, BarError> {
        let minute = Self::minute_of(trade_ms);
        if self.closed_through.is_some_and(|c| minute <= c) {
            return Err(BarError::Late);
        }
        match &mut self.forming {
            Some(bar) if bar.start_ms == minute => {
                bar.add(price, qty)?;
                Ok(None)
            }
            Some(bar) if minute < bar.start_ms => Err(BarError::Late),
            _ => {
                let opened = Bar::opening(minute, price, qty)?;
                let closed = self.forming.replace(opened);
                if let Some(c) = &closed {
                    self.closed_through = Some(c.start_ms);
                }
                Ok(closed)
            }
        }
    }

    /// Closes the forming bar if its minute ended at least `grace_ms` before `now_ms` (a
    /// quiet symbol's last bar is published without waiting for its next trade).
    pub fn close_ended(&mut self, now_ms: i64, grace_ms: i64) -> Option<Bar> {
        let ends = self.forming.as_ref()?.start_ms.saturating_add(MINUTE_MS);
        if now_ms < ends.saturating_add(grace_ms) {
            return None;
        }
        let closed = self.forming.take()?;
        self.closed_through = Some(closed.start_ms);
        Some(closed)
    }

    /// The bar of the minute still forming.
    pub fn forming(&self) -> Option<&Bar> {
        self.forming.as_ref()
    }
}

/// A bar timeframe of Alpaca's market-data API that we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeframe {
    /// `{1-59}Min`.
    Minutes(u8),
    /// `{1-23}Hour`.
    Hours(u8),
    /// `1Day`: the UTC day.
    Day,
}

impl Timeframe {
    pub const ONE_MINUTE: Timeframe = Timeframe::Minutes(1);

    /// Parses Alpaca's spelling (`1Min`, `15Min`, `1Hour`, `1Day`; also `1T`, `1H`, `1D`
    /// as alpaca-py's `TimeFrame` may send them).
    pub fn parse(text: &str) -> Option<Timeframe> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (n, unit) = text.split_at_checked(digits)?;
        let n: u8 = n.parse().ok()?;
        match unit {
            "Min" | "T" if (1..=59).contains(&n) => Some(Timeframe::Minutes(n)),
            "Hour" | "H" if (1..=23).contains(&n) => Some(Timeframe::Hours(n)),
            "Day" | "D" if n == 1 => Some(Timeframe::Day),
            _ => None,
        }
    }

    /// Its length in ms.
    pub fn millis(self) -> i64 {
        match self {
            Timeframe::Minutes(n) => i64::from(n) * MINUTE_MS,
            Timeframe::Hours(n) => i64::from(n) * 60 * MINUTE_MS,
            Timeframe::Day => 24 * 60 * MINUTE_MS,
        }
    }

    /// The start of the interval holding `ms`.
    pub fn bucket(self, ms: i64) -> i64 {
        let len = self.millis();
        ms.div_euclid(len).saturating_mul(len)
    }

    /// Alpaca's spelling.
    pub fn name(self) -> String {
        match self {
            Timeframe::Minutes(n) => format!("{n}Min"),
            Timeframe::Hours(n) => format!("{n}Hour"),
            Timeframe::Day => "1Day".into(),
        }
    }
}

/// Aggregates one-minute bars (in ascending time) into bars of `timeframe`; an interval
/// without any minute bar has no bar.
pub fn aggregate(minute_bars: &[Bar], timeframe: Timeframe) -> Result<Vec<Bar>, BarError> {
    let mut out: Vec<Bar> = Vec::new();
    for b in minute_bars {
        let start = timeframe.bucket(b.start_ms);
        match out.last_mut() {
            Some(last) if last.start_ms == start => last.merge(b)?,
            _ => out.push(Bar {
                start_ms: start,
                ..b.clone()
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_723_161_240_000; // 2024-08-08T23:54:00Z, a minute's start

    #[test]
    fn trades_of_a_minute_make_one_exact_bar() {
        let mut m = MinuteBars::default();
        assert_eq!(m.trade(T0 + 100, dec!(100.5), dec!(0.2)), Ok(None));
        assert_eq!(m.trade(T0 + 2_000, dec!(101), dec!(0.1)), Ok(None));
        assert_eq!(m.trade(T0 + 59_999, dec!(99.75), dec!(0.3)), Ok(None));
        let bar = m.forming().cloned().unwrap();
        assert_eq!(
            (bar.open, bar.high, bar.low, bar.close),
            (dec!(100.5), dec!(101), dec!(99.75), dec!(99.75))
        );
        assert_eq!((bar.volume, bar.trades), (dec!(0.6), 3));
        // 20.1 + 10.1 + 29.925 = 60.125; / 0.6
        assert_eq!(bar.notional, dec!(60.125));
        assert_eq!(bar.vwap(), Some(dec!(100.208333333333333333)));
        // The next minute's first trade closes it.
        let closed = m.trade(T0 + 60_000, dec!(99), dec!(1)).unwrap();
        assert_eq!(closed, Some(bar));
        assert_eq!(m.forming().map(|b| b.start_ms), Some(T0 + 60_000));
    }

    #[test]
    fn a_quiet_minute_closes_by_the_clock_and_a_gap_stays_a_gap() {
        let mut m = MinuteBars::default();
        m.trade(T0 + 5, dec!(10), dec!(1)).unwrap();
        assert_eq!(m.close_ended(T0 + 60_500, 1_000), None, "within the grace");
        let closed = m.close_ended(T0 + 61_000, 1_000).unwrap();
        assert_eq!(closed.start_ms, T0);
        assert!(m.forming().is_none());
        assert_eq!(m.close_ended(T0 + 999_000, 1_000), None, "nothing forming");
        // A late trade of the closed minute is refused, not folded into another.
        assert_eq!(m.trade(T0 + 59_000, dec!(11), dec!(1)), Err(BarError::Late));
        // Three minutes later: a bar of its own, none invented in between.
        assert_eq!(m.trade(T0 + 240_000, dec!(12), dec!(1)), Ok(None));
        assert_eq!(m.forming().map(|b| b.start_ms), Some(T0 + 240_000));
        // A trade older than the forming minute is late too.
        assert_eq!(
            m.trade(T0 + 180_000, dec!(12), dec!(1)),
            Err(BarError::Late)
        );
    }

    #[test]
    fn nonsense_and_overflow_are_refused_without_changing_the_bar() {
        let mut m = MinuteBars::default();
        m.trade(T0, dec!(10), dec!(1)).unwrap();
        assert_eq!(
            m.trade(T0 + 1, dec!(0), dec!(1)),
            Err(BarError::NotPositive)
        );
        assert_eq!(
            m.trade(T0 + 1, dec!(10), dec!(-1)),
            Err(BarError::NotPositive)
        );
        assert_eq!(
            m.trade(T0 + 1, Decimal::MAX, dec!(2)),
            Err(BarError::Overflow)
        );
        assert_eq!(
            m.forming().map(|b| (b.trades, b.volume)),
            Some((1, dec!(1)))
        );
    }

    #[test]
    fn timeframes_parse_as_alpaca_spells_them() {
        for (text, tf, ms) in [
            ("1Min", Timeframe::Minutes(1), 60_000),
            ("5Min", Timeframe::Minutes(5), 300_000),
            ("15Min", Timeframe::Minutes(15), 900_000),
            ("59Min", Timeframe::Minutes(59), 3_540_000),
            ("1Hour", Timeframe::Hours(1), 3_600_000),
            ("4H", Timeframe::Hours(4), 14_400_000),
            ("1Day", Timeframe::Day, 86_400_000),
            ("1D", Timeframe::Day, 86_400_000),
        ] {
            assert_eq!(Timeframe::parse(text), Some(tf), "{text}");
            assert_eq!(tf.millis(), ms);
        }
        for bad in [
            "", "Min", "0Min", "60Min", "24Hour", "2Day", "1Week", "1min", "１Min", "99999Min",
        ] {
            assert_eq!(Timeframe::parse(bad), None, "{bad}");
        }
        assert_eq!(Timeframe::Minutes(15).name(), "15Min");
    }

    #[test]
    fn aggregates_are_the_bars_of_their_trades() {
        // Trades at minutes 0, 1, 3 and 5 (of a 5-minute-aligned hour), none at 2 and 4.
        let trades = [
            (0, dec!(100), dec!(1)),
            (0, dec!(103), dec!(2)),
            (1, dec!(98), dec!(1)),
            (3, dec!(101), dec!(0.5)),
            (5, dec!(105), dec!(1)),
        ];
        let start = Timeframe::Hours(1).bucket(T0);
        let mut minutes = Vec::new();
        let mut m = MinuteBars::default();
        for (minute, p, q) in trades {
            if let Some(b) = m.trade(start + minute * MINUTE_MS, p, q).unwrap() {
                minutes.push(b);
            }
        }
        minutes.extend(m.close_ended(i64::MAX / 2, 0));
        assert_eq!(minutes.len(), 4, "no bar for the minutes without trades");

        let five = aggregate(&minutes, Timeframe::Minutes(5)).unwrap();
        assert_eq!(five.len(), 2);
        let first = &five[0];
        assert_eq!(first.start_ms, start);
        assert_eq!(
            (first.open, first.high, first.low, first.close),
            (dec!(100), dec!(103), dec!(98), dec!(101))
        );
        assert_eq!((first.volume, first.trades), (dec!(4.5), 4));
        // (100 + 206 + 98 + 50.5) / 4.5, from the trades themselves.
        assert_eq!(first.notional, dec!(454.5));
        assert_eq!(first.vwap(), Some(dec!(101)));
        assert_eq!(five[1].start_ms, start + 5 * MINUTE_MS);
        assert_eq!(five[1].open, dec!(105));

        let hour = aggregate(&minutes, Timeframe::Hours(1)).unwrap();
        assert_eq!(hour.len(), 1);
        assert_eq!(
            (hour[0].open, hour[0].close, hour[0].trades),
            (dec!(100), dec!(105), 5)
        );
        assert_eq!(aggregate(&[], Timeframe::Day).unwrap(), Vec::<Bar>::new());
    }
}
