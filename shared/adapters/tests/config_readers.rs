//! Every environment variable is parsed in exactly one place: the production sources
//! (`shared/`, `functions/`, `services/`, their `src/` only) are scanned for the ways a
//! variable is read (`var("…")` / `parsed("…")` in `adapters::config`, `std::env::var`,
//! clap's `env = "…"`), and a name read at two sites, or a raw `std::env` read outside
//! `adapters::config`, fails the test with both places.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The one module that reads the environment directly.
const READER: &str = "shared/adapters/src/config.rs";
/// The dev-only test kit reads the services' addresses `make test` exports: configuration
/// of a test, not of a deployed process.
const DEV_ONLY: &str = "shared/testkit/";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "tests" | "benches" | "examples") {
                rust_sources(&path, out);
            }
        } else if name.ends_with(".rs") && path.components().any(|c| c.as_os_str() == "src") {
            out.push(path);
        }
    }
}

/// The quoted upper-case name right after `prefix` on `line`, for each occurrence.
fn names_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let end = rest.find('"').unwrap_or(0);
        let name = &rest[..end];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            names.push(name);
        }
    }
    names
}

struct Scan {
    /// Variable name → the places reading it.
    readers: BTreeMap<String, Vec<String>>,
    /// Direct `std::env` reads outside the reader module.
    raw: Vec<String>,
}

fn scan() -> Scan {
    let root = workspace();
    let mut files = Vec::new();
    for top in ["shared", "functions", "services"] {
        rust_sources(&root.join(top), &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} sources under {root:?}",
        files.len()
    );
    let mut scan = Scan {
        readers: BTreeMap::new(),
        raw: Vec::new(),
    };
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let at = format!("{relative}:{}", n + 1);
            let mut names = names_after(code, "env = \"");
            names.extend(names_after(code, "env::var(\""));
            names.extend(names_after(code, "env::var_os(\""));
            if relative == READER {
                names.extend(names_after(code, " var(\""));
                names.extend(names_after(code, "(var(\""));
                names.extend(names_after(code, "parsed(\""));
            } else if (code.contains("env::var(") || code.contains("env::var_os("))
                && !relative.starts_with(DEV_ONLY)
            {
                scan.raw.push(format!("{at}: {}", line.trim()));
            }
            for name in names {
                scan.readers
                    .entry(name.to_string())
                    .or_default()
                    .push(at.clone());
            }
        }
    }
    scan
}

#[test]
fn every_variable_is_parsed_in_exactly_one_place() {
    let scan = scan();
    // The scan must see the variables that used to be read twice, and the ingest's own.
    for name in [
        "DATABASE_URL",
        "DATABASE_SECRET_ARN",
        "REDIS_URL",
        "KEY_PREFIX",
        "COMMANDS_QUEUE_URL",
        "COMMAND_MAX_RECEIVES",
        "RETENTION_DAYS",
        "MAX_PRICE_AGE_MS",
        "CONNECTIONS_TABLE",
        "WS_MANAGEMENT_URL",
        "LOG_FORMAT",
        "SYMBOLS",
        "STATS_INTERVAL_SECS",
        "TRIGGER_COOLDOWN_MS",
        "FANOUT_CONCURRENCY",
    ] {
        assert!(
            scan.readers.contains_key(name),
            "{name} is read nowhere the scan looks"
        );
    }
    let twice: Vec<String> = scan
        .readers
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(name, places)| format!("{name}: {}", places.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "read in more than one place:\n{}",
        twice.join("\n")
    );
    assert!(
        scan.raw.is_empty(),
        "read from std::env outside {READER}:\n{}",
        scan.raw.join("\n")
    );
}

#[test]
fn the_scan_finds_a_second_reader() {
    let line = r#"    #[arg(long, env = "REDIS_URL", default_value = "x")] let y = std::env::var("KEY_PREFIX");"#;
    assert_eq!(names_after(line, "env = \""), ["REDIS_URL"]);
    assert_eq!(names_after(line, "env::var(\""), ["KEY_PREFIX"]);
    assert!(names_after("var(\"lower\")", "var(\"").is_empty());
}
