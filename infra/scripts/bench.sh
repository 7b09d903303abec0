#!/usr/bin/env bash
# `make bench`: measure, and write the figures into BENCHMARKS.md.
#
#   1. starts the hermetic test services if any is down (services.sh) and loads their env;
#   2. migrates the test database;
#   3. runs the executor bench (functions/executor/benches/fills.rs), the api bench
#      (functions/api/benches/handler.rs) and the ingest bench (functions/ingest/benches/
#      ingest.rs: parse + coalesce, end to end over loopback WebSocket, tick -> Redis
#      latency): loopback only, each bounded (BENCH_SECS per cell);
#   4. the WebSocket figures: messages per connection per minute on the recorded data
#      (functions/ingest/examples/fanout_counts.rs, deterministic), and price -> client
#      latency plus ingest memory at 100, 1,000 and 5,000 connections through the devstack
#      (tests/benches/ws_fanout.rs, binaries built with the bench profile, ~25 min);
#   5. builds the release binaries (workspace release profile) and records their sizes;
#   6. rewrites the generated part of BENCHMARKS.md, between the markers
#      <!-- bench:begin --> and <!-- bench:end -->; everything outside them (the
#      hand-written analysis) is kept as it is. A part not run this time (BENCH_ONLY,
#      BENCH_SKIP_SIZES) keeps its previous generated section.
#
# Environment:
#   BENCH_SECS=5            seconds per timed cell
#   BENCH_CONCURRENCY=1,4,16  batches in flight (simulated executor instances)
#   BENCH_SKIP_SIZES=1      skip the release build and the binary sizes (keeps the old ones)
#   BENCH_ONLY=ingest       run only these parts, comma separated, of executor, api, ingest,
#                           triggers, fanout, websocket, sizes (default: all); the others keep
#                           their previous sections
#   BENCH_WS_CONNECTIONS=100,1000,5000  BENCH_WS_SECS=20  the WebSocket latency bench
#   BENCH_E2E_MESSAGES=1000000  messages per burst in the ingest end-to-end bench
#   BENCH_NO_SERVICES=1     use DATABASE_URL / REDIS_URL / AWS_ENDPOINT_URL as exported,
#                           start nothing
#   CARGO_PROFILE_BENCH_LTO, CARGO_PROFILE_BENCH_CODEGEN_UNITS: the benches are built with
#       the `bench` profile (= release) but, unless overridden, without LTO and with 16
#       codegen units, so that they build in minutes on 2 cores. The code under test is
#       I/O-bound; BENCHMARKS.md says which settings were used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVICES="infra/scripts/services.sh"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$ROOT/BENCHMARKS.md"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log() { printf '[bench] %s\n' "$*" >&2; }

export CARGO_PROFILE_BENCH_LTO="${CARGO_PROFILE_BENCH_LTO:-false}"
export CARGO_PROFILE_BENCH_CODEGEN_UNITS="${CARGO_PROFILE_BENCH_CODEGEN_UNITS:-16}"
export BENCH_SECS="${BENCH_SECS:-5}"
export BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-1,4,16}"
BENCH_ONLY="${BENCH_ONLY:-}"
# want PART: whether this run includes PART (executor, api, ingest, sizes).
want() { [ -z "$BENCH_ONLY" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }
# The generated sections in the order they are written: part, then what its heading starts with.
SECTIONS=(
    executor 'Executor:' api 'api:' webhook 'webhook:' ingest 'Ingest:' triggers 'Trigger evaluation'
    fanout 'Fan-out' websocket 'WebSocket price' sizes 'Release binary sizes'
)
# keep_section PART: PART's previous generated text, from its heading up to (not including)
# the heading of a later section or the end marker.
keep_section() {
    [ -f "$OUT" ] || return 0
    local start="" later="" i
    for ((i = 0; i < ${#SECTIONS[@]}; i += 2)); do
        if [ -n "$start" ]; then
            later="${later:+$later|}${SECTIONS[i + 1]}"
        elif [ "${SECTIONS[i]}" = "$1" ]; then
            start="^#### ${SECTIONS[i + 1]}"
        fi
    done
    local end="^#### ${later:+($later)}"
    awk -v start="$start" -v end="$end" '
        !p && $0 ~ start { p = 1 }
        p && (/^<!-- bench:end -->/ || ($0 ~ end && $0 !~ start)) { exit }
        # Blank lines only between kept lines, never trailing (the caller adds its own).
        p && $0 == "" { blanks++; next }
        p { for (; blanks > 0; blanks--) print ""; print }
    ' "$OUT"
}
# The benches' own logs would only cost time: handlers log through tracing, no subscriber here.
unset RUST_LOG

# ---- services -------------------------------------------------------------------------
if [ -z "${BENCH_NO_SERVICES:-}" ]; then
    bash "$SERVICES" install
    # `start test` restarts moto (fresh queues for tests): only start when something is down,
    # so a bench never pulls moto from under a test run that is using it.
    # (`status` exits non-zero when something is down: read its output, not its status.)
    status="$(bash "$SERVICES" status test 2>/dev/null || true)"
    if grep -qw down <<<"$status"; then
        bash "$SERVICES" start test
    fi
    eval "$(bash "$SERVICES" env test)"
fi
: "${REDIS_URL:?REDIS_URL is not set}"
if want executor || want api; then
    : "${DATABASE_URL:?DATABASE_URL is not set}"
    log "migrating ${DATABASE_URL#*@}"
    cargo run -q -p adapters --bin migrate
fi

# ---- benches --------------------------------------------------------------------------
benches=()
want executor && benches+=("executor fills")
want api && benches+=("api handler")
want webhook && benches+=("webhook webhook")
want ingest && benches+=("ingest ingest")
want triggers && benches+=("domain trigger_index")
# Each bench is built on its own, exactly as it is run below: built together, Cargo unifies
# the features of their dependencies differently and the runs would rebuild (inside their
# timeouts).
for bench in "${benches[@]}"; do
    read -r package target <<<"$bench"
    log "building the $package bench (bench profile, lto=$CARGO_PROFILE_BENCH_LTO, codegen-units=$CARGO_PROFILE_BENCH_CODEGEN_UNITS)"
    cargo bench --no-run -q -p "$package" --bench "$target"
done

# run_or_keep PART MESSAGE SECONDS COMMAND...: with PART wanted, logs MESSAGE and runs COMMAND
# (its report to $WORK/PART.md) within SECONDS; otherwise keeps PART's previous section.
run_or_keep() {
    local part="$1" message="$2" limit="$3"
    shift 3
    if want "$part"; then
        log "$message"
        BENCH_REPORT="$WORK/$part.md" timeout "$limit" "$@"
    else
        keep_section "$part" >"$WORK/$part.md"
    fi
}
run_or_keep executor "executor bench (about $(( BENCH_SECS * 8 + 20 )) s)" 600 \
    cargo bench -q -p executor --bench fills
run_or_keep api "api bench (about $(( BENCH_SECS * 5 + 10 )) s)" 300 cargo bench -q -p api --bench handler
if want webhook; then
    log "webhook bench (about $(( BENCH_SECS * 5 + 10 )) s)"
    {
        echo "#### webhook: \`webhook::handle\` called directly, one TradingView alert at a time"
        echo
        echo "Alerts are API Gateway REST events for \`/v2/hooks/tradingview/{webhook_id}\` parsed by \`lambda_http\` (outside the timed region), from TradingView's address, to a webhook made through the ledger; the queue is a loopback SQS stub. Latencies in µs."
        echo
    } >"$WORK/webhook.md"
    BENCH_REPORT="$WORK/webhook-table.md" timeout 300 cargo bench -q -p webhook --bench webhook
    cat "$WORK/webhook-table.md" >>"$WORK/webhook.md"
else
    keep_section webhook >"$WORK/webhook.md"
fi
run_or_keep ingest "ingest bench (about $(( BENCH_SECS * 7 + 15 )) s)" 300 cargo bench -q -p ingest --bench ingest
run_or_keep triggers "trigger index bench (about 60 s)" 300 cargo bench -q -p domain --bench trigger_index
run_or_keep fanout "fan-out message counts on the recorded data (about 10 s)" 300 \
    cargo run -q --release -p ingest --example fanout_counts
if want websocket; then
    log "WebSocket bench: building the binaries (bench profile)"
    cargo build -q --profile bench --bins -p feed -p ingest -p devstack -p api -p executor -p ws
    cargo bench --no-run -q -p e2e --bench ws_fanout
    log "WebSocket bench: price -> client latency at ${BENCH_WS_CONNECTIONS:-100,1000,5000} connections (about 10 min)"
    {
        echo "#### WebSocket price → client latency (devstack)"
        echo
        echo "\`tests/benches/ws_fanout.rs\`, binaries built with the bench profile: the real feed, ingest (following 500 symbols), devstack (API Gateway WebSocket + \`@connections\`), \`ws\` function (4 instances) and moto's DynamoDB, all on this machine, with the client in one more process. Each connection subscribes to 10 of the 500 symbols at \`max_rate_ms\` 100 (every flush). Latency is from the driver's \`POST /quotes\` to the feed until the client has the frame: feed, ingest parse, the 100 ms flush, the fan-out, PostToConnection over HTTP, the devstack and the WebSocket. Connections accumulate (100, then 900 more, then 4,000 more). Ingest RSS is read from /proc at the end of each step."
        echo
        echo "One symbol's price changes every 10 ms (100 changes/s, each symbol every 5 s: \`make bench\` defaults):"
        echo
    } >"$WORK/websocket.md"
    E2E_BIN_DIR="$TARGET_DIR/release" BENCH_REPORT="$WORK/websocket-table.md" timeout 2400 \
        cargo bench -q -p e2e --bench ws_fanout
    cat "$WORK/websocket-table.md" >>"$WORK/websocket.md"
    log "WebSocket bench: 5,000 connections at 25 changes/s (about 12 min)"
    E2E_BIN_DIR="$TARGET_DIR/release" BENCH_REPORT="$WORK/websocket-table.md" \
        BENCH_WS_CONNECTIONS=5000 BENCH_WS_CHANGE_EVERY_MS=40 timeout 2400 \
        cargo bench -q -p e2e --bench ws_fanout
    {
        echo
        echo "5,000 connections with one change every 40 ms (25 changes/s, each symbol every 20 s; \`BENCH_WS_CONNECTIONS=5000 BENCH_WS_CHANGE_EVERY_MS=40\`), which asks for ~2,900 messages/s:"
        echo
        cat "$WORK/websocket-table.md"
    } >>"$WORK/websocket.md"
else
    keep_section websocket >"$WORK/websocket.md"
fi

# ---- binary sizes ---------------------------------------------------------------------
sizes="$WORK/sizes.md"
if [ -z "${BENCH_SKIP_SIZES:-}" ] && want sizes; then
    log "release build of api, executor, ws, ingest, devstack, feed (workspace release profile: LTO, 1 codegen unit; slow)"
    # The bench overrides above are for the `bench` profile only; `--release` uses [profile.release].
    cargo build --release -p api -p webhook -p executor -p ws -p ingest -p devstack -p feed
    {
        echo "#### Release binary sizes"
        echo
        echo "\`cargo build --release -p api -p webhook -p executor -p ws -p ingest -p devstack -p feed\` with the workspace release profile (lto = true, codegen-units = 1, panic = unwind, strip = true), $(rustc -vV | sed -n 's/^host: //p'). Lambdas are deployed as these binaries (\`bootstrap\`), zipped."
        echo
        echo "| binary | role | bytes | MiB | zipped (gzip -6) MiB |"
        echo "|---|---|---:|---:|---:|"
        for b in api webhook executor ws ingest devstack feed; do
            f="$TARGET_DIR/release/$b"
            case "$b" in
                api | webhook | executor | ws) role="Lambda" ;;
                ingest) role="Fargate task" ;;
                *) role="local only (information)" ;;
            esac
            if [ -f "$f" ]; then
                bytes=$(stat -c %s "$f")
                zipped=$(gzip -6 -c "$f" | wc -c)
                printf '| `%s` | %s | %s | %.2f | %.2f |\n' "$b" "$role" "$bytes" "$(echo "$bytes / 1048576" | bc -l)" "$(echo "$zipped / 1048576" | bc -l)"
            else
                printf '| `%s` | %s | (not built) | | |\n' "$b" "$role"
            fi
        done
        echo
    } >"$sizes"
else
    # Keep the previous sizes section.
    keep_section sizes >"$sizes"
    if [ -s "$sizes" ]; then echo >>"$sizes"; fi
fi

# ---- machine --------------------------------------------------------------------------
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem_gib=$(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
pg_info=$(psql "${DATABASE_URL:-}" -Atc "SELECT split_part(version(), ' on ', 1) || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', shared_buffers=' || current_setting('shared_buffers')" 2>/dev/null || echo "unknown")
redis_info=$(redis-cli -u "$REDIS_URL" INFO server 2>/dev/null | sed -n 's/^redis_version:/Redis /p' | tr -d '\r' || true)

gen="$WORK/generated.md"
{
    echo "<!-- bench:begin -->"
    echo "<!-- Generated by infra/scripts/bench.sh (make bench); edits between these markers are overwritten. -->"
    echo
    echo "## Figures"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo '?')\`$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- Machine: $(nproc) CPUs ($cpu_model), ${mem_gib} GiB RAM, $(uname -sr); shared with other work, so figures vary by a few per cent between runs"
    echo "- Services (loopback, hermetic test env): $pg_info; ${redis_info:-Redis ?}"
    echo "- Toolchain: $(rustc --version)"
    echo "- Command: \`make bench\` = \`infra/scripts/bench.sh\`, with BENCH_SECS=$BENCH_SECS BENCH_CONCURRENCY=$BENCH_CONCURRENCY; benches built by \`cargo bench\` with CARGO_PROFILE_BENCH_LTO=$CARGO_PROFILE_BENCH_LTO CARGO_PROFILE_BENCH_CODEGEN_UNITS=$CARGO_PROFILE_BENCH_CODEGEN_UNITS (the release profile otherwise: opt-level 3, panic = unwind)"
    if [ -n "$BENCH_ONLY" ]; then
        echo "- This run: BENCH_ONLY=$BENCH_ONLY; the other sections are kept from an earlier run (the date and commit above are this run's)"
    fi
    echo
    cat "$WORK/executor.md"
    echo
    cat "$WORK/api.md"
    echo
    cat "$WORK/webhook.md"
    echo
    cat "$WORK/ingest.md"
    echo
    cat "$WORK/triggers.md"
    echo
    cat "$WORK/fanout.md"
    echo
    cat "$WORK/websocket.md"
    echo
    [ -s "$sizes" ] && cat "$sizes"
    echo "<!-- bench:end -->"
} >"$gen"

if [ -f "$OUT" ] && grep -q '^<!-- bench:begin -->' "$OUT" && grep -q '^<!-- bench:end -->' "$OUT"; then
    awk -v gen="$gen" '
        /^<!-- bench:begin -->/ { while ((getline line < gen) > 0) print line; skip = 1; next }
        /^<!-- bench:end -->/ { skip = 0; next }
        !skip { print }
    ' "$OUT" >"$WORK/new.md"
    cp "$WORK/new.md" "$OUT"
else
    [ -f "$OUT" ] && cp "$OUT" "$OUT.bak" && log "BENCHMARKS.md had no markers: kept the old file as BENCHMARKS.md.bak"
    {
        echo "# Benchmarks"
        echo
        echo "Produced by \`make bench\` (infra/scripts/bench.sh). The section between the markers is"
        echo "generated; the analysis after it is written by hand and kept across runs."
        echo
        cat "$gen"
        echo
        echo "## Analysis"
        echo
        echo "(hand-written; kept across runs)"
    } >"$OUT"
fi
log "wrote $OUT"
