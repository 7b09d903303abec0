//! Loads recorded Binance combined-stream data.
//!
//! Each file `<symbol>_<anything>.gz` holds lines `<receive_ts_ns> <combined-stream JSON>`.
//! Lines whose JSON is not a combined-stream message (e.g. REST depth snapshots) are skipped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::extract::ws::Utf8Bytes;
use flate2::read::MultiGzDecoder;
use serde::Deserialize;

/// One recorded message, ready to send as is.
#[derive(Debug, Clone)]
pub struct Event {
    /// Receive time in nanoseconds (only differences matter: they pace the replay).
    pub ts_ns: u64,
    /// Lowercase stream name, e.g. `btcusdt@bookticker`.
    pub stream: String,
    /// The combined-stream JSON exactly as recorded.
    pub text: Utf8Bytes,
}

/// All recorded events of one symbol, in file order.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Upper-case symbol, e.g. `BTCUSDT`.
    pub symbol: String,
    pub files: Vec<PathBuf>,
    pub events: Vec<Event>,
    /// Lines that were not combined-stream messages.
    pub skipped: usize,
}

/// Finds the recordings in `dir`, grouped by symbol (file name up to the first `_`, or `.`).
/// `only`, when not empty, restricts to those symbols (case-insensitive).
/// Returns `(symbol_upper, files)` sorted by symbol.
pub fn discover(dir: &Path, only: &[String]) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
    let wanted: Vec<String> = only
        .iter()
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut found: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading data dir {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".gz") {
            continue;
        }
        let symbol = name
            .split(['_', '.'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if symbol.is_empty() || (!wanted.is_empty() && !wanted.contains(&symbol)) {
            continue;
        }
        found.entry(symbol).or_default().push(path);
    }
    for w in &wanted {
        if !found.contains_key(w) {
            tracing::warn!(symbol = %w, dir = %dir.display(), "no recording for requested symbol");
        }
    }
    let mut out: Vec<(String, Vec<PathBuf>)> = found.into_iter().collect();
    for (_, files) in &mut out {
        files.sort();
    }
    Ok(out)
}

/// Reads and decodes the files of one symbol (blocking: call from `spawn_blocking`).
pub fn load(symbol: &str, files: &[PathBuf]) -> anyhow::Result<Recording> {
    let mut events = Vec::new();
    let mut skipped = 0usize;
    for path in files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader = BufReader::new(MultiGzDecoder::new(file));
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            match parse_line(&line) {
                Some(ev) => events.push(ev),
                None => skipped += 1,
            }
        }
    }
    Ok(Recording {
        symbol: symbol.to_string(),
        files: files.to_vec(),
        events,
        skipped,
    })
}

#[derive(Deserialize)]
struct Head {
    stream: Option<String>,
}

/// Parses `<ts_ns> <json>`; `None` for anything that is not a combined-stream message.
pub fn parse_line(line: &str) -> Option<Event> {
    let (ts, json) = line.split_once(' ')?;
    let ts_ns: u64 = ts.trim().parse().ok()?;
    let json = json.trim();
    const PREFIX: &str = "{\"stream\":\"";
    let stream = if let Some(rest) = json.strip_prefix(PREFIX) {
        // Fast path: Binance always puts `stream` first, and stream names never need escaping.
        let end = rest.find('"')?;
        rest[..end].to_ascii_lowercase()
    } else {
        serde_json::from_str::<Head>(json)
            .ok()?
            .stream?
            .to_ascii_lowercase()
    };
    if stream.is_empty() {
        return None;
    }
    Some(Event {
        ts_ns,
        stream,
        text: Utf8Bytes::from(json.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stream_lines_and_skips_snapshots() {
        let ev = parse_line(r#"1723161254087891268 {"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}"#).unwrap();
        assert_eq!(ev.ts_ns, 1_723_161_254_087_891_268);
        assert_eq!(ev.stream, "btcusdt@bookticker");
        assert!(ev.text.as_str().starts_with("{\"stream\""));
        assert!(
            parse_line(r#"1723161254206652067 {"lastUpdateId":5,"bids":[],"asks":[]}"#).is_none()
        );
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn loads_the_shipped_recordings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let found = discover(&dir, &["btcusdt".into()]).unwrap();
        assert_eq!(found.len(), 1);
        let rec = load(&found[0].0, &found[0].1).unwrap();
        assert_eq!(rec.symbol, "BTCUSDT");
        assert!(rec.events.len() > 10_000);
        assert!(rec.events.iter().any(|e| e.stream == "btcusdt@bookticker"));
        assert!(rec.events.iter().any(|e| e.stream == "btcusdt@trade"));
        assert!(rec.events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }
}
