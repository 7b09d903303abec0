#!/usr/bin/env bash
# `make test`: the linters (`make lint`: template.yaml and Rust), hermetic test
# services (own ports, see services.sh), migrations,
# the Rust suite (cargo-nextest, else cargo test; with nextest, the doctests after it
# with `cargo test --doc`, which nextest does not run), then the Python suite in
# tests/python (if it has test files) with the venv's python; pytest collecting no
# tests there (exit status 5) fails the run; then the chaos suite's smoke run
# (infra/scripts/chaos.sh --smoke, on the chaos env's services). The test services are
# stopped at the end whatever happens; the exit status is the tests'.
#
# Exported to the tests: everything `services.sh env test` prints
# (DATABASE_URL, REDIS_URL, AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, COMMANDS_QUEUE_URL, COMMANDS_DLQ_URL, PYTHON) and
# TRADING_BIN_DIR, the directory of the debug binaries (feed, ingest, devstack,
# api, executor) built here.
#
# Knobs: NO_NEXTEST=1 forces `cargo test`; NEXTEST_PROFILE picks a nextest
# profile (default: `ci` when CI=true and .config/nextest.toml defines it).
#
# `test.sh fuzz` (`make fuzz`): the same services and build, then only the fuzz tests
# (every test whose name contains `fuzz`) with PROPTEST_CASES (default 20000) cases
# each instead of proptest's 256; no lint, no Python suite.
set -euo pipefail
MODE="${1:-all}"
case "$MODE" in all | fuzz) ;; *) echo "usage: test.sh [fuzz]" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVICES=(bash "$ROOT/infra/scripts/services.sh")

say() { printf '[test] %s\n' "$*" >&2; }

"${SERVICES[@]}" install

# A lint failure fails the run, but the tests still run, so one run shows everything.
lint_status=0
if [ "$MODE" = all ]; then
    bash "$ROOT/infra/scripts/lint.sh" || lint_status=$?
fi

trap '"${SERVICES[@]}" stop test || true' EXIT
"${SERVICES[@]}" start test
eval "$("${SERVICES[@]}" env test)"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

TARGET_DIR="${CARGO_TARGET_DIR:-}"
if [ -z "$TARGET_DIR" ]; then
    TARGET_DIR="$(cargo metadata --no-deps --format-version 1 2>/dev/null |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4 || true)"
fi
export TRADING_BIN_DIR="${TARGET_DIR:-$ROOT/target}/debug"

say "migrating ${DATABASE_URL#*@}"
cargo run -q -p adapters --bin migrate

say "building (cargo build --workspace --bins --tests)"
cargo build --workspace --bins --tests

use_nextest=0
if [ "${NO_NEXTEST:-0}" != 1 ]; then
    if cargo nextest --version >/dev/null 2>&1; then
        use_nextest=1
    else
        say "cargo-nextest missing: cargo install --locked cargo-nextest"
        if cargo install --locked cargo-nextest; then
            use_nextest=1
        else
            say "could not install cargo-nextest; falling back to cargo test"
        fi
    fi
fi

status=0
if [ "$MODE" = fuzz ]; then
    export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
    if [ "$use_nextest" -eq 1 ]; then
        say "PROPTEST_CASES=$PROPTEST_CASES cargo nextest run --workspace -E 'test(/fuzz/)'"
        cargo nextest run --workspace --no-fail-fast -E 'test(/fuzz/)' || status=$?
    else
        say "PROPTEST_CASES=$PROPTEST_CASES cargo test --workspace fuzz"
        cargo test --workspace --no-fail-fast fuzz || status=$?
    fi
    if [ "$status" -eq 0 ]; then say "fuzz tests passed"; else say "fuzz tests FAILED (status $status)"; fi
    exit "$status"
fi
if [ "$use_nextest" -eq 1 ]; then
    profile=()
    if [ -n "${NEXTEST_PROFILE:-}" ]; then
        profile=(--profile "$NEXTEST_PROFILE")
    elif [ "${CI:-}" = true ] && grep -qs '^\[profile\.ci\]' .config/nextest.toml; then
        profile=(--profile ci)
    fi
    say "cargo nextest run --workspace --no-fail-fast ${profile[*]}"
    cargo nextest run --workspace --no-fail-fast "${profile[@]}" || status=$?
else
    say "cargo test --workspace --no-fail-fast"
    cargo test --workspace --no-fail-fast || status=$?
fi
# nextest does not run doctests; `cargo test` above did already.
if [ "$use_nextest" -eq 1 ]; then
    say "cargo test --workspace --doc"
    doc_status=0
    cargo test --workspace --no-fail-fast --doc || doc_status=$?
    [ "$doc_status" -ne 0 ] && [ "$status" -eq 0 ] && status=$doc_status
fi

if [ -d tests/python ] && find tests/python \( -name 'test_*.py' -o -name '*_test.py' \) -print -quit | grep -q .; then
    say "python -m pytest tests/python"
    py_status=0
    "$PYTHON" -m pytest tests/python || py_status=$?
    # 5 = no tests collected: the files are there, so something (a conftest, a marker, a
    # collection error) hid every test. A failure like any other.
    if [ "$py_status" -eq 5 ]; then say "pytest collected no tests in tests/python"; fi
    [ "$py_status" -ne 0 ] && [ "$status" -eq 0 ] && status=$py_status
fi

# The chaos suite's smoke run (a few thousand commands under every fault, then the
# auditor), on services of its own: it stops and starts them on purpose.
say "chaos smoke (infra/scripts/chaos.sh --smoke)"
chaos_status=0
bash "$ROOT/infra/scripts/chaos.sh" --smoke --report "$ROOT/.local/chaos-smoke.md" || chaos_status=$?
[ "$chaos_status" -ne 0 ] && [ "$status" -eq 0 ] && status=$chaos_status

if [ "$lint_status" -ne 0 ]; then
    say "lint FAILED (see the [lint] lines above)"
    [ "$status" -eq 0 ] && status=$lint_status
fi
if [ "$status" -eq 0 ]; then say "all tests passed"; else say "tests FAILED (status $status)"; fi
exit "$status"
