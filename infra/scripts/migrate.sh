#!/usr/bin/env bash
# Apply the database migrations (embedded in the `migrate` binary of the
# adapters crate) to one environment.
#
#   migrate.sh dev|test   start the local services of that env if needed, then
#                         migrate its database
#   migrate.sh none       migrate whatever DATABASE_URL points at, starting
#                         nothing; this is the AWS path:
#                           DATABASE_URL=postgres://user:pass@aurora-host:5432/trading \
#                             make migrate ENV=none
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
env_name="${1:-dev}"
case "$env_name" in
    none)
        [ -n "${DATABASE_URL:-}" ] || { echo "[migrate] ENV=none needs DATABASE_URL" >&2; exit 1; }
        ;;
    dev | test)
        bash infra/scripts/services.sh install
        bash infra/scripts/services.sh start "$env_name"
        eval "$(bash infra/scripts/services.sh env "$env_name")"
        ;;
    *) echo "[migrate] usage: $0 dev|test|none" >&2; exit 2 ;;
esac
echo "[migrate] applying migrations to ${DATABASE_URL#*@}" >&2
exec cargo run -q -p adapters --bin migrate
