//! Hostile input for the fuzz tests (feature `fuzz`): `proptest` strategies for text, numbers,
//! dates and JSON as an attacker would send them, shared by every crate's `fuzz_*` tests.
//!
//! - [`text`]: arbitrary UTF-8, with multi-byte characters (`é`, `€`, `𝄞`, combining marks)
//!   inserted at every position of interesting strings, controls and lone surrogate escapes.
//! - [`number_text`]: huge and tiny decimals (`1e400`, 40-digit fractions, `-0`, `NaN`,
//!   2^96 and beyond `rust_decimal`'s range), signs and exponents, with stray characters.
//! - [`date_text`]: dates and timestamps at the ends of the calendar (`0000-01-01`,
//!   `9999-12-31T23:59:59Z`, `+275760-09-13`, year 262143, negative years).
//! - [`json_text`]: JSON documents as text, so that numbers keep their spelling and objects
//!   can repeat keys: wrong types, `null`, arrays, objects, deep nesting (10,000 `[`).
//! - [`object_with`]: a JSON object whose keys are mostly a route's own field names, with
//!   hostile values and duplicate keys.
//!
//! The case count is proptest's: [`config`] is `ProptestConfig::default()` (256 cases, or
//! `PROPTEST_CASES`, which `make fuzz` raises), and [`config_divided`] a fraction of it for
//! tests that drive a whole handler against the real services.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Proptest's default configuration (its `PROPTEST_CASES` included), without writing
/// regression files into the source tree: every crash found is kept as a plain test.
pub fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

/// [`config`] with `1/divisor` of its cases (at least 8): for handler-level tests, which
/// cost a few round trips to the services per case. Scales with `PROPTEST_CASES` too.
pub fn config_divided(divisor: u32) -> Config {
    let base = config();
    Config {
        cases: (base.cases / divisor.max(1)).max(8),
        ..base
    }
}

/// Why a function's answer to hostile input is not what the API documents, if it is not
/// (see [`undocumented_answer`]).
pub fn undocumented_response(
    response: &lambda_http::Response<lambda_http::Body>,
) -> Option<String> {
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    undocumented_answer(response.status().as_u16(), &text)
}

/// Why an answer to hostile input is not what the API documents, if it is not: never a 5xx,
/// and every refusal exactly `{"code","message"}` with a code of [`domain::RejectCode`].
pub fn undocumented_answer(status: u16, body: &str) -> Option<String> {
    if status >= 500 {
        return Some(format!("a {status}: {body}"));
    }
    if status < 400 {
        return None;
    }
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return Some(format!("a {status} whose body is not JSON: {body}")),
    };
    let documented = v.as_object().is_some_and(|o| {
        o.len() == 2
            && o.get("message").is_some_and(serde_json::Value::is_string)
            && o.get("code")
                .and_then(serde_json::Value::as_str)
                .and_then(domain::RejectCode::parse)
                .is_some()
    });
    (!documented).then(|| format!("a {status} that is not {{code, message}}: {body}"))
}

/// Characters that break code indexing strings by bytes or assuming ASCII.
pub const TRICKY_CHARS: &[&str] = &[
    "é",
    "€",
    "𝄞",
    "e\u{301}",
    "\u{301}",
    "\u{200b}",
    "\u{feff}",
    "\u{202e}",
    "ß",
    "ﬀ",
    "İ",
    "日本",
    "🏳️‍🌈",
    "\u{0}",
    "\u{7f}",
    "\n",
    "\t",
    "\r",
    " ",
    "\u{a0}",
    "\u{2028}",
    "\"",
    "\\",
    "/",
    "%",
    "%2F",
    "::",
    ":",
    ",",
    "{{",
    "}}",
    "'",
    "?",
    "&",
    "=",
    "#",
];

/// Decimal texts at and past every limit of `rust_decimal` and of the domain's range.
pub const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "+0",
    "0.0",
    "-0.0",
    "00",
    "1",
    "-1",
    "+1",
    "0.1",
    "1.",
    ".1",
    ".",
    "-",
    "+",
    "1e400",
    "1e-400",
    "-1e400",
    "1E+308",
    "1e2147483648",
    "1e-2147483649",
    "1e99999999999999999999",
    "1.5e3",
    "1e",
    "e5",
    "1e+",
    "NaN",
    "nan",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "0.0000000000000000000000000000000000000001",
    "0.000000000000000001",
    "0.0000000000000000001",
    "0.00000001",
    "79228162514264337593543950335",
    "79228162514264337593543950336",
    "-79228162514264337593543950336",
    "7922816251426433759354395033.5",
    "792281625142643375935439503350000",
    "340282366920938463463374607431768211456",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "4294967295",
    "2147483648",
    "1000000000000000",
    "1000000000000000.000000000000000001",
    "999999999999999.999999999999999999",
    "1000000000000001",
    "0x10",
    "1_000",
    "1,5",
    "١٢٣",
    "１２３",
    "1.2.3",
    "--1",
    "1e-05",
    "100",
    "99.9999999999999999999999999999",
    "50",
    "0.001",
    "61837.64",
];

/// Dates and timestamps at and past the ends of every calendar the code meets (chrono's
/// ±262143 years, PostgreSQL's 4713 BC to 294276 AD, JavaScript's ±275760).
pub const DATES: &[&str] = &[
    "0000-01-01",
    "0001-01-01",
    "-0001-01-01",
    "-4713-11-24",
    "-4714-11-23",
    "9999-12-31",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:59:60Z",
    "+275760-09-13",
    "+275760-09-13T00:00:00Z",
    "-271821-04-20",
    "262143-12-31",
    "+262142-12-31",
    "+262142-12-31T23:59:59Z",
    "-262143-01-01",
    "+262143-12-31",
    "262144-01-01",
    "-262144-01-01",
    "-262145-01-01",
    "+294276-12-31",
    "294277-01-01",
    "1970-01-01",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "2024-02-29",
    "2023-02-29",
    "2024-13-01",
    "2024-00-10",
    "2024-01-32",
    "2024-1-1",
    "2024-01-01T25:00:00Z",
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00+23:59",
    "2024-01-01T00:00:00-23:59",
    "0000-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "2024-01-01T00:00:00",
    "2024-01-01 00:00:00Z",
    "2024-01-01t00:00:00z",
    "20240101",
    "99999-01-01",
    "1e10-01-01",
    "",
];

/// Interesting strings: ids, symbols, keywords and formats the routes look for.
const WORDS: &[&str] = &[
    "BTCUSDT",
    "btcusdt",
    "BTC/USDT",
    "BTC%2FUSDT",
    "BINANCE:BTCUSDT",
    "ETHUSDT",
    "ETHBTC",
    "USDT",
    "buy",
    "sell",
    "BUY",
    "market",
    "limit",
    "stop",
    "stop_limit",
    "trailing_stop",
    "gtc",
    "day",
    "ioc",
    "fok",
    "opg",
    "cls",
    "simple",
    "bracket",
    "oco",
    "oto",
    "open",
    "closed",
    "all",
    "asc",
    "desc",
    "true",
    "false",
    "True",
    "null",
    "FILL",
    "subscribe",
    "unsubscribe",
    "ping",
    "00000000-0000-0000-0000-000000000000",
    "6f7c3a40-0000-11ef-8000-0a1b2c3d4e5f",
    "6F7C3A40-0000-11EF-8000-0A1B2C3D4E5F",
    "{6f7c3a40-0000-11ef-8000-0a1b2c3d4e5f}",
    "urn:uuid:6f7c3a40-0000-11ef-8000-0a1b2c3d4e5f",
    "20240101000000000::6f7c3a40-0000-11ef-8000-0a1b2c3d4e5f",
    "PKTEST1234567890",
    "my-1",
    "passphrase",
    "{{strategy.order.action}}",
    "",
];

fn pick(list: &'static [&'static str]) -> BoxedStrategy<String> {
    proptest::sample::select(list)
        .prop_map(str::to_string)
        .boxed()
}

/// One of the tricky characters.
pub fn tricky_char() -> BoxedStrategy<String> {
    pick(TRICKY_CHARS).boxed()
}

/// `base` with a tricky character inserted at a char boundary chosen by `at` (so that every
/// position is tried over the cases), optionally several times.
fn with_insertions(base: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    (
        base,
        proptest::collection::vec((tricky_char(), any::<proptest::sample::Index>()), 1..4),
    )
        .prop_map(|(mut s, inserts)| {
            for (c, at) in inserts {
                let boundaries: Vec<usize> = s
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(s.len()))
                    .collect();
                let i = boundaries[at.index(boundaries.len())];
                s.insert_str(i, &c);
            }
            s
        })
        .boxed()
}

/// A long run of one piece: lengths around the limits code cuts text at (40, 48, 64, …).
fn repeated() -> BoxedStrategy<String> {
    (
        prop_oneof![tricky_char(), pick(&["a", "0", "9", "1", "."])],
        0usize..200,
        prop_oneof![Just(String::new()), tricky_char()],
    )
        .prop_map(|(piece, n, tail)| piece.repeat(n) + &tail)
        .boxed()
}

/// Arbitrary text as an attacker sends it.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => any::<String>(),
        2 => pick(WORDS),
        1 => pick(NUMBERS),
        1 => pick(DATES),
        3 => with_insertions(prop_oneof![pick(WORDS), pick(NUMBERS), pick(DATES)]),
        2 => repeated(),
        2 => proptest::collection::vec(
            prop_oneof![pick(WORDS), pick(NUMBERS), tricky_char()],
            0..8
        )
        .prop_map(|parts| parts.concat()),
    ]
    .boxed()
}

/// Decimal text: the limits of [`NUMBERS`], generated digit strings and stray characters.
pub fn number_text() -> BoxedStrategy<String> {
    let digits = "[0-9]{0,45}";
    prop_oneof![
        3 => pick(NUMBERS),
        2 => (
            pick(&["", "-", "+"]),
            digits,
            pick(&["", "."]),
            digits,
            pick(&["", "e", "E", "e-", "e+"]),
            "[0-9]{0,6}",
        )
            .prop_map(|(sign, int, dot, frac, e, exp)| {
                let exp = if e.is_empty() { String::new() } else { exp };
                format!("{sign}{int}{dot}{frac}{e}{exp}")
            }),
        1 => (0usize..60).prop_map(|zeros| format!("0.{}1", "0".repeat(zeros))),
        1 => (0usize..60).prop_map(|zeros| format!("1{}", "0".repeat(zeros))),
        2 => with_insertions(pick(NUMBERS)),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u128>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

/// Date and timestamp text: the ends of the calendar and generated years around them.
pub fn date_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(DATES),
        2 => (
            pick(&["", "+", "-"]),
            prop_oneof![0i64..10_000, 262_100i64..262_200, 275_000i64..300_000, any::<i64>().prop_map(i64::unsigned_abs).prop_map(|y| (y % 10_000_000) as i64)],
            0u32..14,
            0u32..33,
            pick(&["", "T00:00:00Z", "T23:59:59Z", "T23:59:59.999999999Z", "T00:00:00+23:59", "T23:59:59-23:59", "T24:00:00Z"]),
        )
            .prop_map(|(sign, year, month, day, time)| {
                format!("{sign}{year:04}-{month:02}-{day:02}{time}")
            }),
        1 => with_insertions(pick(DATES)),
    ]
    .boxed()
}

/// A JSON string literal of hostile text.
fn json_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => text().prop_map(|s| serde_json::Value::String(s).to_string()),
        1 => pick(&[r#""\ud800""#, r#""\udfff""#, r#""\u0000""#, r#""\ud834\udd1e""#, r#""\""#, r#""\x""#]),
    ]
    .boxed()
}

/// A JSON number literal as sent (kept as text by `arbitrary_precision`), or not quite one.
fn json_number() -> BoxedStrategy<String> {
    number_text().boxed()
}

/// A JSON scalar: `null`, booleans, numbers, strings (numbers as strings too).
fn json_scalar() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just("null".to_string()),
        1 => pick(&["true", "false"]),
        3 => json_number(),
        3 => json_string(),
        2 => number_text().prop_map(|n| serde_json::Value::String(n).to_string()),
        1 => date_text().prop_map(|d| serde_json::Value::String(d).to_string()),
    ]
    .boxed()
}

/// Arbitrary JSON (and almost-JSON) as text, nested a few levels, with duplicate keys.
pub fn json_text() -> BoxedStrategy<String> {
    let leaf = json_scalar();
    let nested = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            proptest::collection::vec(
                (
                    prop_oneof![
                        json_string(),
                        pick(WORDS).prop_map(|w| serde_json::Value::String(w).to_string())
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|entries| {
                let body: Vec<String> = entries
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    });
    prop_oneof![
        6 => nested,
        1 => deep_nesting(),
        1 => text(),
    ]
    .boxed()
}

/// Deeply nested JSON: thousands of `[` or `{"a":`, closed or not.
pub fn deep_nesting() -> BoxedStrategy<String> {
    (
        prop_oneof![Just(10_000usize), 100usize..20_000],
        pick(&["[", "{\"a\":", "[{\"symbol\":"]),
        any::<bool>(),
    )
        .prop_map(|(depth, open, closed)| {
            let mut s = open.repeat(depth);
            s.push('1');
            if closed {
                let close = if open.starts_with('[') && open.len() == 1 {
                    "]"
                } else if open.starts_with('[') {
                    "}]"
                } else {
                    "}"
                };
                s.push_str(&close.repeat(depth));
            }
            s
        })
        .boxed()
}

/// A JSON object (as text) whose keys are mostly `fields`, each with a value meant for some
/// field (numbers, dates, words) or of the wrong type; keys may repeat.
pub fn object_with(fields: &'static [&'static str]) -> BoxedStrategy<String> {
    let key = prop_oneof![
        8 => pick(fields),
        1 => with_insertions(pick(fields)),
        1 => text(),
    ]
    .prop_map(|k| serde_json::Value::String(k).to_string());
    let value = prop_oneof![
        3 => json_scalar(),
        2 => pick(WORDS).prop_map(|w| serde_json::Value::String(w).to_string()),
        1 => json_text(),
    ];
    prop_oneof![
        12 => proptest::collection::vec((key, value), 0..10).prop_map(|entries| {
            let body: Vec<String> = entries.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", body.join(","))
        }),
        1 => json_text(),
    ]
    .boxed()
}
