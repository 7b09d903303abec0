#!/usr/bin/env bash
# `make dev`: the whole system on this machine, in the foreground.
#
# Installs what is missing, starts the dev services (Postgres, Redis, moto; see
# services.sh), migrates, builds every binary (debug), then runs
#   feed      Binance-protocol replay server   ws://127.0.0.1:$FEED_PORT (9100)
#   devstack  API Gateway REST http://127.0.0.1:$REST_PORT (3000) and WebSocket
#             ws://127.0.0.1:$WS_PORT (3001, with the @connections API), running
#             the api, executor and ws binaries under a Lambda Runtime API and
#             polling the SQS queue for the executor
#   ingest    feed -> Redis price cache, triggers, WebSocket fan-out
# with each line prefixed by the process name (also appended to
# .local/dev/log/<name>.log). Ctrl-C, or any of them exiting, stops all of them
# and the dev services.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVICES=(bash "$ROOT/infra/scripts/services.sh")
FEED_PORT="${FEED_PORT:-9100}"
REST_PORT="${REST_PORT:-3000}"
WS_PORT="${WS_PORT:-3001}"
LOGD="$ROOT/.local/dev/log"

if [ -t 2 ]; then
    say() { printf '\033[1m[dev]\033[0m %s\n' "$*" >&2; }
else
    say() { printf '[dev] %s\n' "$*" >&2; }
fi
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PIDS=()
NAMES=()
CLEANED=0
cleanup() {
    local rc=$?
    [ "$CLEANED" -eq 1 ] && return
    CLEANED=1
    trap '' INT TERM
    say "stopping…"
    local pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 1 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    "${SERVICES[@]}" stop dev || true
    say "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_proc NAME CMD...: run CMD in its own session (so that it and anything it
# spawns can be stopped as a group), output prefixed with NAME.
start_proc() {
    local name="$1"
    shift
    local tag
    tag="$(printf '%-8s|' "$name")"
    setsid "$@" </dev/null > >(
        trap '' INT TERM
        tee -a "$LOGD/$name.log" | sed -u "s/^/$tag /"
    ) 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

name_of() {
    local i
    for i in "${!PIDS[@]}"; do [ "${PIDS[$i]}" = "$1" ] && { echo "${NAMES[$i]}"; return; }; done
    echo "?"
}

"${SERVICES[@]}" install
"${SERVICES[@]}" start dev
eval "$("${SERVICES[@]}" env dev)"
export RUST_LOG="${RUST_LOG:-info}"
# A browser page served from loopback (any port: a terminal or a client under development)
# may call the REST API.
export CORS_ALLOWED_ORIGINS="${CORS_ALLOWED_ORIGINS:-http://127.0.0.1:*,http://localhost:*}"

say "migrating ${DATABASE_URL#*@}"
cargo run -q -p adapters --bin migrate
say "building (cargo build --bins)"
cargo build --bins

TARGET_DIR="${CARGO_TARGET_DIR:-}"
if [ -z "$TARGET_DIR" ]; then
    TARGET_DIR="$(cargo metadata --no-deps --format-version 1 2>/dev/null |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4 || true)"
fi
BIN="${TARGET_DIR:-$ROOT/target}/debug"
for b in feed ingest devstack api executor ws; do
    [ -x "$BIN/$b" ] || { say "missing binary $BIN/$b"; exit 1; }
done
for p in "$FEED_PORT" "$REST_PORT" "$WS_PORT"; do
    port_open "$p" && { say "port $p is already in use (another make dev?)"; exit 1; }
done
mkdir -p "$LOGD"

start_proc feed "$BIN/feed" --listen "127.0.0.1:$FEED_PORT" --speed 1
start_proc devstack "$BIN/devstack" --rest-listen "127.0.0.1:$REST_PORT" \
    --api-bin "$BIN/api" --webhook-bin "$BIN/webhook" --executor-bin "$BIN/executor" --queue-url "$COMMANDS_QUEUE_URL" \
    --ws-listen "127.0.0.1:$WS_PORT" --ws-bin "$BIN/ws" \
    --api-database-url "$DATABASE_API_URL" --executor-database-url "$DATABASE_EXECUTOR_URL"
# Ingest writes prices, sends triggers to the queue, and fans out to the devstack's
# @connections (connections from the moto table, kept fresh through Redis). Every function
# connects to PostgreSQL as its own role, as on AWS.
start_proc ingest env DATABASE_URL="$DATABASE_INGEST_URL" BINANCE_WS_URL="ws://127.0.0.1:$FEED_PORT" SYMBOLS=BTCUSDT,ETHUSDT \
    WS_MANAGEMENT_URL="http://127.0.0.1:$WS_PORT/local" "$BIN/ingest"

# Wait (bounded) until feed and REST answer, then say where everything is.
for i in $(seq 1 300); do
    port_open "$FEED_PORT" && port_open "$REST_PORT" && port_open "$WS_PORT" && break
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { say "$(name_of "$pid") exited during start-up"; exit 1; }
    done
    sleep 0.1
done
port_open "$REST_PORT" || say "warning: REST port $REST_PORT not answering yet"

cat >&2 <<EOF

================================================================================
 paper-trading backend running locally          (Ctrl-C stops everything)

 REST API (API Gateway)  http://127.0.0.1:$REST_PORT
   browsers may call it from $CORS_ALLOWED_ORIGINS (CORS_ALLOWED_ORIGINS)
 WebSocket API           ws://127.0.0.1:$WS_PORT/?token=<session token>   (or ?key_id=…&secret_key=…)
   then send {"action":"subscribe","symbols":["BTCUSDT"],"max_rate_ms":500}
 Binance replay feed     ws://127.0.0.1:$FEED_PORT/stream?streams=btcusdt@bookTicker
 PostgreSQL              postgres://127.0.0.1:${DATABASE_URL##*:}  (user trading)
 Redis                   $REDIS_URL
 moto (SQS, DynamoDB)    $AWS_ENDPOINT_URL   (connection table: $CONNECTIONS_TABLE)
 commands queue          $COMMANDS_QUEUE_URL
 logs                    $LOGD/

 Put a symbol under script control (exact prices through the real ingest path):
   curl -X POST 127.0.0.1:$FEED_PORT/quotes \\
     -d '{"symbol":"BTCUSDT","bid":"60000.00","ask":"60000.01","last":"60000.00"}'
 Hand it back to the replay:
   curl -X DELETE 127.0.0.1:$FEED_PORT/quotes/BTCUSDT
 Environment for other shells:
   eval "\$(infra/scripts/services.sh env dev)"
================================================================================

EOF

set +e
wait -n -p DONE_PID "${PIDS[@]}"
rc=$?
set -e
say "$(name_of "${DONE_PID:-}") exited (status $rc); shutting down"
exit "$rc"
