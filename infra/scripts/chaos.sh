#!/usr/bin/env bash
# `make chaos` / `make test`'s smoke run: the chaos suite (tests/chaos) on services of its
# own (the `chaos` env of services.sh: other ports and state than `test`), because it
# stops and starts PostgreSQL, Redis and moto on purpose.
#
#   chaos.sh [chaos args]       e.g. `chaos.sh --smoke`, `chaos.sh --seed 7 --report RELIABILITY.md`
#
# The smoke run (`--smoke`, in `make test`) uses the debug binaries `make test` built; the
# others build the stack with the `bench` profile (release, without LTO, 16 codegen units:
# minutes on 2 cores, as `make bench` does), since a debug stack on 2 cores cannot carry
# their load. CHAOS_PROFILE=debug|bench overrides; CHAOS_KEEP_SERVICES=1 leaves the chaos
# services running afterwards (to inspect a failed run: moto's state is at
# $AWS_ENDPOINT_URL/moto-api/data.json).
#
# Builds the binaries it runs (debug), starts the chaos services, runs the driver (which
# starts feed, ingest and the devstack with its functions, drives them while injecting
# faults, drains and audits), and stops the services whatever happens. The exit status is
# the driver's: 0 when the auditor found no violation.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVICES=(bash "$ROOT/infra/scripts/services.sh")
say() { printf '[chaos] %s\n' "$*" >&2; }

"${SERVICES[@]}" install
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
PROFILE="${CHAOS_PROFILE:-}"
if [ -z "$PROFILE" ]; then
    PROFILE=bench
    for a in "$@"; do [ "$a" = --smoke ] && PROFILE=debug; done
fi
PACKAGES=(-p chaos -p feed -p ingest -p devstack -p api -p executor -p ws -p webhook)
if [ "$PROFILE" = bench ]; then
    export CARGO_PROFILE_BENCH_LTO="${CARGO_PROFILE_BENCH_LTO:-false}"
    export CARGO_PROFILE_BENCH_CODEGEN_UNITS="${CARGO_PROFILE_BENCH_CODEGEN_UNITS:-16}"
    say "building the binaries (cargo build --profile bench, lto=$CARGO_PROFILE_BENCH_LTO)"
    cargo build -q --profile bench "${PACKAGES[@]}" --bins
    BIN_DIR="$TARGET_DIR/release"
else
    say "building the binaries (cargo build, debug)"
    cargo build -q "${PACKAGES[@]}" --bins
    BIN_DIR="$TARGET_DIR/debug"
fi

# One run at a time: two would stop each other's services.
mkdir -p "$ROOT/.local"
exec 9>"$ROOT/.local/chaos.lock"
flock -n 9 || { say "another chaos run holds $ROOT/.local/chaos.lock"; exit 2; }

# The driver runs in a session of its own; whatever is left in it at the end (the stack's
# processes, if the driver was killed before it could stop them) is killed with it.
CHAOS_PID=""
cleanup() {
    if [ -n "$CHAOS_PID" ]; then
        pkill -KILL -s "$CHAOS_PID" 2>/dev/null || true
    fi
    if [ "${CHAOS_KEEP_SERVICES:-0}" = 1 ]; then
        say "CHAOS_KEEP_SERVICES=1: the chaos services stay up (services.sh stop chaos)"
    else
        "${SERVICES[@]}" stop chaos || true
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
"${SERVICES[@]}" start chaos
eval "$("${SERVICES[@]}" env chaos)"
export TRADING_BIN_DIR="$BIN_DIR"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
say "chaos $*"
setsid "$BIN_DIR/chaos" "$@" 9>&- &
CHAOS_PID=$!
status=0
wait "$CHAOS_PID" || status=$?
exit "$status"
