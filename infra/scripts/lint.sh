#!/usr/bin/env bash
# `make lint` (and the first step of `make test`): every linter, each run even when an
# earlier one failed, so that one run shows every problem.
#
#   template.yaml  cfn-lint (errors, warnings and informational findings all fail) and
#                  `sam validate --lint`, both from the project venv, both offline
#   Rust           cargo fmt --check, cargo clippy --workspace --all-targets -D warnings
#
# LINT_ONLY=template or LINT_ONLY=rust runs one half.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

say() { printf '[lint] %s\n' "$*" >&2; }
status=0
run() {
    say "$*"
    "$@" || { say "FAILED: $*"; status=1; }
}

only="${LINT_ONLY:-}"
if [ -z "$only" ] || [ "$only" = template ]; then
    bash infra/scripts/services.sh install
    VENV="$ROOT/.local/venv/bin"
    export SAM_CLI_TELEMETRY=0
    # cfn-lint's exit status is a bitmask of errors (2), warnings (4) and informational
    # findings (8): any of them fails the lint.
    run "$VENV/cfn-lint" template.yaml
    run "$VENV/sam" validate --lint --template-file template.yaml --region us-east-1
fi
if [ -z "$only" ] || [ "$only" = rust ]; then
    run cargo fmt --all -- --check
    run cargo clippy --workspace --all-targets -- -D warnings
fi

if [ "$status" -eq 0 ]; then say "clean"; else say "lint FAILED"; fi
exit "$status"
