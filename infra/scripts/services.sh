#!/usr/bin/env bash
# Hermetic local services: PostgreSQL, Redis and moto (SQS/DynamoDB emulation).
#
#   services.sh install            apt packages (postgresql, redis-server) if
#                                  missing; Python venv at .local/venv from
#                                  infra/scripts/requirements.txt
#   services.sh start  <dev|test|chaos>  start (or reuse) the services, create the role,
#                                  database and SQS queues
#   services.sh env    <dev|test|chaos>  print `export` lines for the environment
#                                  (use: eval "$(services.sh env test)")
#   services.sh stop   <dev|test|chaos>  stop all three (idempotent)
#   services.sh status <dev|test|chaos>
#   services.sh pg-stop|pg-start|redis-stop|redis-start|moto-pid chaos
#                                  one service of the chaos env (`make chaos` injects
#                                  faults with them); moto-pid prints moto's process id
#   services.sh clean              stop every env, delete .local (venv included)
#
# Ports (override with PG_PORT, REDIS_PORT, MOTO_PORT; without an override, a
# default port taken by another process, e.g. another clone's services, makes
# `start` use the next free one; `env` prints the ports actually in use):
#   dev : Postgres 55432, Redis 56379, moto 55000
#   test: Postgres 55433, Redis 56380, moto 55001
#   chaos: Postgres 55434, Redis 56381, moto 55002 (`make chaos` only: it stops and starts
#          these services on purpose, so it never touches the test env others' tests use)
#
# State lives under .local/<env>/{pg,redis,moto,run,log} (gitignored).
# PostgreSQL refuses to run as root, so when run as root it runs as the
# `postgres` user. If that user cannot reach the repo (e.g. the clone sits under
# /root, mode 700) or the socket path would be too long, the cluster lives in
# /tmp/trading-pg-<env>-<hash of repo path> instead and .local/<env>/pg is a
# symlink to it.
#
# Choices for the test env: the Postgres cluster and Redis are reused across
# runs (tests use unique ids, so leftovers don't matter, and re-initialising
# costs seconds); moto is always restarted by `start test`, so every test run
# sees fresh, empty queues (recreated here) and no in-flight messages from a
# previous run. Dev reuses everything that is already running.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$ROOT/infra/scripts"
LOCAL="$ROOT/.local"
VENV="$LOCAL/venv"
REQ="$SCRIPTS/requirements.txt"
AWS_ACCOUNT_QUEUE_PREFIX="123456789012"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
as_root() { if is_root; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- install ---

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install manually: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# PostgreSQL bin dir: Debian's /usr/lib/postgresql/<highest>/bin, else pg_config's.
pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    if command -v pg_config >/dev/null; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    fi
    return 1
}

pg_tools_ok() {
    local d
    d="$(pg_bindir)" || return 1
    for t in pg_ctl pg_isready psql; do [ -x "$d/$t" ] || return 1; done
}

system_python() {
    # Prefer Debian's python (what python3-venv fixes), else whatever is on PATH.
    if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; return 0; fi
    command -v python3 || return 1
}

cmd_install() {
    mkdir -p "$LOCAL"
    exec 9>"$LOCAL/.install.lock"
    flock 9

    local pkgs=()
    pg_tools_ok || pkgs+=(postgresql)
    { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || pkgs+=(redis-server)
    system_python >/dev/null || pkgs+=(python3 python3-venv)
    if [ "${#pkgs[@]}" -gt 0 ]; then apt_install "${pkgs[@]}"; fi
    pg_tools_ok || die "PostgreSQL server binaries not found after install"
    command -v redis-server >/dev/null || die "redis-server not found after install"
    if is_root && ! id postgres >/dev/null 2>&1; then
        log "creating system user postgres"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi

    local py
    py="$(system_python)" || die "python3 not found"
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            apt_install python3-venv
        fi
        rm -rf "$VENV"
        log "creating venv $VENV ($("$py" --version 2>&1))"
        "$py" -m venv "$VENV" >&2 || {
            rm -rf "$VENV"
            apt_install python3-venv
            "$py" -m venv "$VENV" >&2
        }
    fi

    local want have=""
    want="$(sha256sum "$REQ" | cut -d' ' -f1)"
    [ -f "$VENV/.requirements.sha256" ] && have="$(cat "$VENV/.requirements.sha256")"
    if [ "$want" != "$have" ]; then
        log "pip install -r infra/scripts/requirements.txt"
        "$VENV/bin/python" -m pip install -q -r "$REQ" >&2
        echo "$want" >"$VENV/.requirements.sha256"
    fi
    flock -u 9
}

# ------------------------------------------------------------------ paths ---

setup_env() {
    ENV_NAME="${1:-}"
    case "$ENV_NAME" in
        dev) def_pg=55432 def_redis=56379 def_moto=55000 ;;
        test) def_pg=55433 def_redis=56380 def_moto=55001 ;;
        chaos) def_pg=55434 def_redis=56381 def_moto=55002 ;;
        *) die "environment must be 'dev', 'test' or 'chaos' (got '${ENV_NAME}')" ;;
    esac
    EDIR="$LOCAL/$ENV_NAME"
    RUN="$EDIR/run"
    PORTS_FILE="$RUN/ports"
    # Port precedence: explicit env var > ports recorded by a running `start`
    # of this env > default. (`start` moves to a free port if the default is
    # taken by something else, e.g. the services of another clone.)
    EXPLICIT_PG="${PG_PORT:-}" EXPLICIT_REDIS="${REDIS_PORT:-}" EXPLICIT_MOTO="${MOTO_PORT:-}"
    local rec_pg="" rec_redis="" rec_moto="" k v
    if [ -f "$PORTS_FILE" ]; then
        while IFS='=' read -r k v; do
            case "$k" in pg) rec_pg="$v" ;; redis) rec_redis="$v" ;; moto) rec_moto="$v" ;; esac
        done <"$PORTS_FILE"
    fi
    PG_PORT="${PG_PORT:-${rec_pg:-$def_pg}}"
    REDIS_PORT="${REDIS_PORT:-${rec_redis:-$def_redis}}"
    MOTO_PORT="${MOTO_PORT:-${rec_moto:-$def_moto}}"
    LOGD="$EDIR/log"
    REDIS_DIR="$EDIR/redis"
    MOTO_DIR="$EDIR/moto"
    REDIS_PID="$RUN/redis.pid"
    MOTO_PID="$RUN/moto.pid"
    QUEUE_FILE="$RUN/queues"
    MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
    PG_ALT="/tmp/trading-pg-$ENV_NAME-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
}

# Run a command as the database OS user (postgres when we are root).
# Runs from / (the postgres user may not be able to see the cwd) and without
# our lock fds, so that daemons don't inherit and hold them.
as_pg() {
    if is_root; then
        (cd / && exec runuser -u postgres -- "$@" 8>&- 9>&-)
    else
        (cd / && exec "$@" 8>&- 9>&-)
    fi
}

# Decide where the cluster lives; sets PGDATA_DIR, PGSOCK_DIR, PGLOG_FILE.
pg_paths() {
    mkdir -p "$EDIR" "$RUN" "$LOGD"
    local in_repo=1
    if is_root && ! runuser -u postgres -- test -x "$EDIR" -a -x "$RUN" -a -x "$LOGD" 2>/dev/null; then
        in_repo=0
    fi
    # Unix socket paths are limited to ~107 bytes.
    [ "${#RUN}" -gt 80 ] && in_repo=0
    # A cluster that already lives in /tmp stays there.
    [ -L "$EDIR/pg" ] && in_repo=0
    if [ "$in_repo" -eq 1 ]; then
        PGDATA_DIR="$EDIR/pg"
        PGSOCK_DIR="$RUN/pg"
        PGLOG_FILE="$LOGD/postgres.log"
    else
        PGDATA_DIR="$PG_ALT/data"
        PGSOCK_DIR="$PG_ALT/sock"
        PGLOG_FILE="$PG_ALT/postgres.log"
    fi
}

pg_prepare_dirs() {
    if [ "$PGDATA_DIR" = "$PG_ALT/data" ]; then
        mkdir -p "$PG_ALT"
        chmod 700 "$PG_ALT"
        # Symlinks for discoverability (replace dangling ones, e.g. after /tmp was wiped).
        if [ -L "$EDIR/pg" ] || [ ! -e "$EDIR/pg" ]; then ln -sfn "$PGDATA_DIR" "$EDIR/pg"; fi
        if [ -L "$LOGD/postgres.log" ] || [ ! -e "$LOGD/postgres.log" ]; then ln -sfn "$PGLOG_FILE" "$LOGD/postgres.log"; fi
    fi
    mkdir -p "$PGDATA_DIR" "$PGSOCK_DIR"
    touch "$PGLOG_FILE"
    chmod 700 "$PGDATA_DIR"
    if is_root; then
        [ "$PGDATA_DIR" = "$PG_ALT/data" ] && chown postgres:postgres "$PG_ALT"
        chown -R postgres:postgres "$PGDATA_DIR" "$PGSOCK_DIR" "$PGLOG_FILE"
    fi
}

tail_log() { [ -f "$1" ] && { echo "---- last lines of $1 ----" >&2; tail -n 30 "$1" >&2; echo "----" >&2; }; return 0; }

# pid alive and its command line matches $2
pid_alive() {
    local pidfile="$1" pattern="$2" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VAR PORT EXPLICIT: PORT is taken by a foreign process. With an
# explicit override that is an error; otherwise print the next free port.
free_port() {
    local var="$1" p="$2" explicit="$3" q
    [ -z "$explicit" ] || die "port $p is in use by another process (choose another $var)"
    for q in $(seq $((p + 1)) $((p + 100))); do
        if ! port_open "$q"; then
            log "port $p is taken by another process; $ENV_NAME uses $q instead ($var)"
            echo "$q"
            return 0
        fi
    done
    die "no free port near $p for $var"
}

kill_pidfile() {
    local pidfile="$1" pattern="$2" name="$3" pid i
    if pid_alive "$pidfile" "$pattern"; then
        pid="$(cat "$pidfile")"
        log "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
    fi
    rm -f "$pidfile"
}

# --------------------------------------------------------------- postgres ---

pg_running() {
    local bin="$1"
    [ -f "$PGDATA_DIR/PG_VERSION" ] && as_pg "$bin/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1
}

start_pg() {
    local bin
    bin="$(pg_bindir)" || die "PostgreSQL not installed; run: $0 install"
    pg_paths
    pg_prepare_dirs
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
        log "initdb $PGDATA_DIR"
        # An aborted earlier initdb leaves a non-empty dir: start from scratch.
        find "$PGDATA_DIR" -mindepth 1 -delete
        as_pg "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --no-locale \
            >"$RUN/initdb.log" 2>&1 || { tail_log "$RUN/initdb.log"; die "initdb failed"; }
    fi

    if pg_running "$bin"; then
        local running_port
        running_port="$(sed -n 4p "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)"
        if [ -z "$EXPLICIT_PG" ] && [ -n "$running_port" ]; then PG_PORT="$running_port"; fi
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
            log "postgres already running on 127.0.0.1:$PG_PORT"
        else
            die "postgres cluster $PGDATA_DIR is running but not on port $PG_PORT (stop it: $0 stop $ENV_NAME)"
        fi
    else
        if port_open "$PG_PORT"; then PG_PORT="$(free_port PG_PORT "$PG_PORT" "$EXPLICIT_PG")"; fi
        local opts=(
            -c "port=$PG_PORT" -c "listen_addresses=127.0.0.1"
            -c "$(printf 'unix_socket_directories=%q' "$PGSOCK_DIR")"
            -c "max_connections=200"
            -c "shared_buffers=128MB" -c "log_min_messages=warning"
        )
        case "$ENV_NAME" in
            # Speed over durability: nothing here outlives a crash on purpose.
            test) opts+=(-c "synchronous_commit=off" -c "fsync=off" -c "full_page_writes=off") ;;
            dev) opts+=(-c "synchronous_commit=off") ;;
            # As durable as Aurora: `make chaos` stops PostgreSQL with `-m immediate` and checks
            # that no committed transaction is lost; with synchronous_commit=off the commits of
            # the last few hundred ms before the stop were (the suite's first finding).
            chaos) opts+=(-c "synchronous_commit=on" -c "fsync=on") ;;
        esac
        log "starting postgres on 127.0.0.1:$PG_PORT"
        as_pg "$bin/pg_ctl" start -D "$PGDATA_DIR" -l "$PGLOG_FILE" -s -w -t 60 -o "${opts[*]}" \
            || { tail_log "$PGLOG_FILE"; die "postgres failed to start"; }
    fi

    local i
    for i in $(seq 1 300); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.1
    done
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { tail_log "$PGLOG_FILE"; die "postgres not ready on port $PG_PORT"; }

    "$bin/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'trading') THEN
    CREATE ROLE trading LOGIN PASSWORD 'trading' CREATEDB;
  END IF;
END
$$;
-- Like Aurora's master user: the migrations create the function roles (trading_api, ...).
ALTER ROLE trading CREATEROLE;
SELECT 'CREATE DATABASE trading OWNER trading ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'trading')\gexec
SQL
    pg_tls "$bin"
}

# TLS as RDS Proxy has it (plain connections stay possible, as they are locally): a local CA
# signs a certificate for the name `localhost` only, so that the tests can tell
# sslmode=verify-full (checks the name) from verify-ca and require. The CA's certificate is
# $EDIR/postgres-ca.pem (`DATABASE_CA_FILE` in `env`).
pg_tls() {
    local bin="$1" dir="$PGDATA_DIR/tls" ca="$EDIR/postgres-ca.pem"
    if [ ! -f "$ca" ] || ! as_pg test -f "$dir/server.key"; then
        log "postgres TLS: a local CA and a certificate for localhost"
        local tmp
        tmp="$(mktemp -d)"
        (
            cd "$tmp"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
                -subj "/CN=trading local test CA" -keyout ca.key -out ca.pem \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/CN=localhost" -keyout server.key -out server.csr
            printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile ext.cnf -out server.crt
        ) >"$RUN/pg-tls.log" 2>&1 || { tail_log "$RUN/pg-tls.log"; rm -rf "$tmp"; die "generating the postgres certificate failed"; }
        mkdir -p "$dir"
        cp "$tmp/server.crt" "$tmp/server.key" "$dir/"
        chmod 600 "$dir/server.key"
        is_root && chown -R postgres: "$dir"
        cp "$tmp/ca.pem" "$ca"
        rm -rf "$tmp"
    fi
    "$bin/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
ALTER SYSTEM SET ssl_cert_file = '$dir/server.crt';
ALTER SYSTEM SET ssl_key_file = '$dir/server.key';
ALTER SYSTEM SET ssl = on;
SELECT pg_reload_conf();
SQL
}

stop_pg() {
    local bin
    bin="$(pg_bindir)" || return 0
    pg_paths
    if pg_running "$bin"; then
        log "stopping postgres ($PGDATA_DIR)"
        as_pg "$bin/pg_ctl" stop -D "$PGDATA_DIR" -m fast -s -w -t 60 || true
    fi
}

# ------------------------------------------------------------------ redis ---

start_redis() {
    mkdir -p "$REDIS_DIR" "$RUN" "$LOGD"
    if pid_alive "$REDIS_PID" redis-server; then
        if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
            log "redis already running on 127.0.0.1:$REDIS_PORT"
            return 0
        fi
        kill_pidfile "$REDIS_PID" redis-server redis
    fi
    rm -f "$REDIS_PID"
    if port_open "$REDIS_PORT"; then REDIS_PORT="$(free_port REDIS_PORT "$REDIS_PORT" "$EXPLICIT_REDIS")"; fi
    log "starting redis on 127.0.0.1:$REDIS_PORT"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$REDIS_PID" --logfile "$LOGD/redis.log" --dir "$REDIS_DIR" \
        </dev/null >/dev/null 8>&- 9>&- || { tail_log "$LOGD/redis.log"; die "redis failed to start"; }
    local i
    for i in $(seq 1 200); do
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    tail_log "$LOGD/redis.log"
    die "redis not ready on port $REDIS_PORT"
}

stop_redis() { kill_pidfile "$REDIS_PID" redis-server redis; }

# ------------------------------------------------------------------- moto ---

start_moto() {
    [ -x "$VENV/bin/moto_server" ] || die "moto not installed; run: $0 install"
    mkdir -p "$MOTO_DIR" "$RUN" "$LOGD"
    if pid_alive "$MOTO_PID" moto_server; then
        if [ "$ENV_NAME" = test ] || [ "$ENV_NAME" = chaos ]; then
            # Fresh SQS state for every test run (see header).
            kill_pidfile "$MOTO_PID" moto_server moto
        elif port_open "$MOTO_PORT"; then
            log "moto already running on 127.0.0.1:$MOTO_PORT"
            return 0
        else
            kill_pidfile "$MOTO_PID" moto_server moto
        fi
    fi
    rm -f "$MOTO_PID"
    if port_open "$MOTO_PORT"; then
        MOTO_PORT="$(free_port MOTO_PORT "$MOTO_PORT" "$EXPLICIT_MOTO")"
        MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
    fi
    log "starting moto on 127.0.0.1:$MOTO_PORT"
    (
        cd "$MOTO_DIR"
        # moto_server.py: moto with its SQS requests made cheap when the queue is deep (a
        # backlog otherwise slowed every request until the queue never drained).
        exec setsid "$VENV/bin/python" "$SCRIPTS/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" \
            </dev/null >>"$LOGD/moto.log" 2>&1 8>&- 9>&-
    ) &
    echo $! >"$MOTO_PID"
    "$VENV/bin/python" "$SCRIPTS/aws_setup.py" wait "$MOTO_ENDPOINT" 30 \
        || { tail_log "$LOGD/moto.log"; die "moto not ready on port $MOTO_PORT"; }
    pid_alive "$MOTO_PID" moto_server || { tail_log "$LOGD/moto.log"; die "moto exited"; }
}

stop_moto() { kill_pidfile "$MOTO_PID" moto_server moto; }

create_queues() {
    local out
    out="$("$VENV/bin/python" "$SCRIPTS/aws_setup.py" create "$MOTO_ENDPOINT")" \
        || { tail_log "$LOGD/moto.log"; die "creating the SQS queues and the connection table failed"; }
    printf '%s\n' "$out" >"$QUEUE_FILE"
    log "queues: $(echo "$out" | tr '\n' ' ')"
}

# --------------------------------------------------------------- commands ---

lock_env() {
    mkdir -p "$RUN"
    exec 8>"$RUN/.lock"
    flock 8
}

cmd_start() {
    setup_env "$@"
    lock_env
    start_pg
    start_redis
    start_moto
    create_queues
    printf 'pg=%s\nredis=%s\nmoto=%s\n' "$PG_PORT" "$REDIS_PORT" "$MOTO_PORT" >"$PORTS_FILE"
    log "$ENV_NAME services up (postgres :$PG_PORT, redis :$REDIS_PORT, moto :$MOTO_PORT)"
}

cmd_stop() {
    setup_env "$@"
    lock_env
    stop_moto
    stop_redis
    stop_pg
    rm -f "$QUEUE_FILE" "$PORTS_FILE"
}

queue_url() {
    # Recorded by `start` from GetQueueUrl; if missing, ask moto; else moto's format.
    local url=""
    [ -f "$QUEUE_FILE" ] && url="$(sed -n 1p "$QUEUE_FILE")"
    case "$url" in *":$MOTO_PORT/"*) ;; *) url="" ;; esac
    if [ -z "$url" ] && [ -x "$VENV/bin/python" ] && port_open "$MOTO_PORT"; then
        url="$(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$VENV/bin/python" -c '
import sys, boto3
print(boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1").get_queue_url(QueueName=sys.argv[2])["QueueUrl"])
' "$MOTO_ENDPOINT" commands.fifo 2>/dev/null || true)"
    fi
    [ -n "$url" ] || url="$MOTO_ENDPOINT/$AWS_ACCOUNT_QUEUE_PREFIX/commands.fifo"
    echo "$url"
}

cmd_env() {
    setup_env "$@"
    local q
    q="$(queue_url)"
    local -a vars=(
        "DATABASE_URL=postgres://trading:trading@127.0.0.1:$PG_PORT/trading"
        # Each function's own role (infra/migrations/0004_function_roles.sql); the migrate
        # step gives them these passwords, the devstack and ingest connect with them.
        "DATABASE_API_URL=postgres://trading_api:trading_api@127.0.0.1:$PG_PORT/trading"
        "DATABASE_EXECUTOR_URL=postgres://trading_executor:trading_executor@127.0.0.1:$PG_PORT/trading"
        "DATABASE_INGEST_URL=postgres://trading_ingest:trading_ingest@127.0.0.1:$PG_PORT/trading"
        # The CA of the server's TLS certificate (issued for `localhost`): see pg_tls.
        "DATABASE_CA_FILE=$EDIR/postgres-ca.pem"
        "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/"
        "AWS_ENDPOINT_URL=$MOTO_ENDPOINT"
        "AWS_REGION=us-east-1"
        "AWS_DEFAULT_REGION=us-east-1"
        "AWS_ACCESS_KEY_ID=test"
        "AWS_SECRET_ACCESS_KEY=test"
        "COMMANDS_QUEUE_URL=$q"
        "COMMANDS_DLQ_URL=${q%commands.fifo}commands-dlq.fifo"
        "CONNECTIONS_TABLE=connections"
        "PYTHON=$VENV/bin/python"
    )
    local v
    for v in "${vars[@]}"; do printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"; done
}

cmd_status() {
    setup_env "$@"
    local bin rc=0
    if bin="$(pg_bindir)"; then
        pg_paths
        if pg_running "$bin" && "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
            echo "postgres  up    127.0.0.1:$PG_PORT  data=$PGDATA_DIR"
        else echo "postgres  down  (port $PG_PORT)"; rc=1; fi
    else echo "postgres  not installed"; rc=1; fi
    if pid_alive "$REDIS_PID" redis-server && [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        echo "redis     up    127.0.0.1:$REDIS_PORT"
    else echo "redis     down  (port $REDIS_PORT)"; rc=1; fi
    if pid_alive "$MOTO_PID" moto_server && port_open "$MOTO_PORT"; then
        echo "moto      up    $MOTO_ENDPOINT  queue=$(queue_url)"
    else echo "moto      down  (port $MOTO_PORT)"; rc=1; fi
    return "$rc"
}

# Stop both environments and delete all local state (.local and any /tmp cluster).
cmd_clean() {
    local e
    for e in dev test chaos; do
        ( setup_env "$e"; [ -d "$LOCAL/$e" ] && cmd_stop "$e"; true )
        ( setup_env "$e"; rm -rf "$PG_ALT" )
    done
    rm -rf "$LOCAL"
    log "removed $LOCAL"
}

# One service of the chaos env, for fault injection (never the shared test env's).
chaos_only() {
    setup_env "$@"
    [ "$ENV_NAME" = chaos ] || die "$cmd is for the chaos env only (got '$ENV_NAME')"
    lock_env
}
cmd_pg_stop() {
    chaos_only "$@"
    local bin
    bin="$(pg_bindir)" || die "PostgreSQL not installed"
    pg_paths
    if pg_running "$bin"; then
        log "stopping postgres ($PGDATA_DIR, immediate)"
        as_pg "$bin/pg_ctl" stop -D "$PGDATA_DIR" -m immediate -s -w -t 60 || true
    fi
}
cmd_pg_start() { chaos_only "$@"; start_pg; }
cmd_redis_stop() { chaos_only "$@"; stop_redis; }
cmd_redis_start() { chaos_only "$@"; start_redis; }
cmd_moto_pid() {
    chaos_only "$@"
    pid_alive "$MOTO_PID" moto_server || die "moto is not running"
    cat "$MOTO_PID"
}

usage() { sed -n '2,18p' "$0" >&2; exit 2; }

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    install) cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    env) cmd_env "$@" ;;
    status) cmd_status "$@" ;;
    clean) cmd_clean ;;
    pg-stop) cmd_pg_stop "$@" ;;
    pg-start) cmd_pg_start "$@" ;;
    redis-stop) cmd_redis_stop "$@" ;;
    redis-start) cmd_redis_start "$@" ;;
    moto-pid) cmd_moto_pid "$@" ;;
    *) usage ;;
esac
