#!/usr/bin/env bash
# Builds everything that gets deployed, per architecture, without Docker:
#
#   - the Lambda functions of template.yaml, with `sam build` (BuildMethod rust-cargolambda:
#     cargo-lambda cross-compiles with zig), into .aws-sam/build-<arch>/
#   - the ingest binary (the Fargate task), with cargo-lambda, staged with infra/Dockerfile
#     as a Docker build context in .aws-sam/ingest-<arch>/; the image trading-ingest:<arch>
#     is built only when a Docker engine answers, otherwise the command to run elsewhere
#     is printed
#   - a check that no binary needs a glibc newer than Amazon Linux 2023's (2.34), that every
#     function's bootstrap is a Lambda (it talks to the Lambda Runtime API: a wrong
#     BuildProperties.Binary builds some other binary of the workspace without complaint),
#     and a report (binary, arch, size, highest GLIBC_x.y) printed and written to
#     .aws-sam/package-report.md
#
# Usage: infra/scripts/package.sh            (ARCHS="arm64 x86_64" by default)
#        ARCHS=arm64 infra/scripts/package.sh
#
# Deploying a build: `sam deploy --template-file .aws-sam/build-<arch>/template.yaml
# --parameter-overrides Architecture=<arch> ...`: the built template still reads the
# architecture from the parameter, so deploy with the same value it was built for.
#
# The release profile of the workspace (LTO, one codegen unit) makes this slow on two
# cores: 15-25 minutes per architecture from cold, about 4 minutes when only the
# workspace's own crates changed (each binary is still linked with LTO).
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

ARCHS="${ARCHS:-arm64 x86_64}"
OUT="$ROOT/.aws-sam"
TEMPLATE="${TEMPLATE:-$ROOT/template.yaml}"
DOCKERFILE="$ROOT/infra/Dockerfile"
REPORT="$OUT/package-report.md"
# Amazon Linux 2023 (Lambda provided.al2023, and the ingest image's base) ships glibc 2.34.
MAX_GLIBC="2.34"

say() { printf '[package] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ tools ---

# The venv (SAM CLI, cargo-lambda, zig): services.sh re-installs it only when
# requirements.txt changed, so this is cheap when everything is in place.
say "checking tools (venv: .local/venv)"
bash "$ROOT/infra/scripts/services.sh" install
export PATH="$ROOT/.local/venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0
for tool in sam cargo-lambda cargo rustup readelf; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
# zig (the cross linker cargo-lambda uses) comes from the ziglang wheel in the venv.
python3 -c 'import ziglang' 2>/dev/null || die "ziglang is not installed in .local/venv"

rust_target() {
    case "$1" in
        arm64) echo aarch64-unknown-linux-gnu ;;
        x86_64) echo x86_64-unknown-linux-gnu ;;
        *) die "unknown architecture '$1' (expected arm64 or x86_64)" ;;
    esac
}
docker_platform() {
    case "$1" in
        arm64) echo linux/arm64 ;;
        x86_64) echo linux/amd64 ;;
    esac
}
cargo_lambda_flag() {
    case "$1" in
        arm64) echo --arm64 ;;
        x86_64) echo --x86-64 ;;
    esac
}

targets=()
for arch in $ARCHS; do targets+=("$(rust_target "$arch")"); done
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$installed"; then
        say "rustup target add $t"
        rustup target add "$t" >&2
    fi
done
[ -f "$DOCKERFILE" ] || die "$DOCKERFILE not found"

DOCKER_ENGINE=0
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then DOCKER_ENGINE=1; fi

# ------------------------------------------------------------------ build ---

mkdir -p "$OUT"
# "path|arch" of every binary to check and report.
binaries=()
timings=()
docker_todo=()

# Highest GLIBC_x.y symbol version an ELF binary requires (from its version-needs table;
# readelf reads any architecture's ELF, unlike a host-only objdump); "none" for a static one.
highest_glibc() {
    local info v
    info="$(readelf --version-info --wide "$1")" || die "readelf cannot read $1"
    v="$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$info" | sed 's/^GLIBC_//' | sort -uV | tail -n1 || true)"
    echo "${v:-none}"
}

for arch in $ARCHS; do
    start=$SECONDS
    build_dir="$OUT/build-$arch"
    say "== $arch: sam build -> ${build_dir#"$ROOT"/}"
    # SAM resolves `Architectures: [!Ref Architecture]` (Globals) from --parameter-overrides,
    # so the template is used as is. It passes --arm64 to cargo-lambda for arm64 and nothing
    # for x86_64, where cargo-lambda's default is x86_64-unknown-linux-gnu (with
    # -C target-cpu=haswell); both link with zig against an old glibc (checked below).
    sam build --beta-features \
        --template-file "$TEMPLATE" \
        --parameter-overrides "Architecture=$arch" \
        --build-dir "$build_dir" >&2 ||
        die "sam build failed for $arch (output above)"
    while IFS= read -r f; do
        binaries+=("$f|$arch")
    done < <(find "$build_dir" -mindepth 2 -maxdepth 2 -type f -name bootstrap | sort)

    say "== $arch: ingest (cargo lambda build --release --bin ingest $(cargo_lambda_flag "$arch"))"
    lambda_dir="$OUT/lambda-$arch"
    cargo lambda build --release --bin ingest "$(cargo_lambda_flag "$arch")" \
        --lambda-dir "$lambda_dir" >&2 ||
        die "building ingest failed for $arch"
    context="$OUT/ingest-$arch"
    rm -rf "$context"
    mkdir -p "$context"
    cp "$lambda_dir/ingest/bootstrap" "$context/ingest"
    cp "$DOCKERFILE" "$context/Dockerfile"
    binaries+=("$context/ingest|$arch")

    image="trading-ingest:$arch"
    build_cmd=(docker build --platform "$(docker_platform "$arch")" -t "$image" "${context#"$ROOT"/}")
    if [ "$DOCKER_ENGINE" -eq 1 ]; then
        say "== $arch: ${build_cmd[*]}"
        "${build_cmd[@]}" >&2 || die "docker build failed for $arch"
    else
        docker_todo+=("${build_cmd[*]}")
    fi
    timings+=("$arch|$((SECONDS - start))")
done

# ------------------------------------------------------------------ check ---

say "checking glibc requirements (max $MAX_GLIBC) and sizes"
too_new=()
not_lambda=()
{
    echo "| binary | arch | bytes | MiB | highest GLIBC |"
    echo "|---|---|---:|---:|---|"
    for entry in "${binaries[@]}"; do
        path="${entry%|*}"
        arch="${entry##*|}"
        case "$path" in
            */ingest-*/ingest) name=ingest ;;
            *)
                name="$(basename "$(dirname "$path")")"
                # lambda_runtime reads this variable; a binary without the string is no Lambda.
                grep -aq AWS_LAMBDA_RUNTIME_API "$path" || not_lambda+=("$name ($arch)")
                ;;
        esac
        bytes="$(stat -c %s "$path")"
        mib="$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
        glibc="$(highest_glibc "$path")"
        if [ "$glibc" != none ] &&
            [ "$(printf '%s\n%s\n' "$glibc" "$MAX_GLIBC" | sort -V | tail -n1)" != "$MAX_GLIBC" ]; then
            too_new+=("$name ($arch) needs GLIBC_$glibc")
        fi
        echo "| $name | $arch | $bytes | $mib | $glibc |"
    done
} >"$REPORT.tmp"
{
    echo "# Package report"
    echo
    dirty=""
    [ -z "$(git status --porcelain 2>/dev/null)" ] || dirty=" (with local changes)"
    echo "Built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$dirty."
    echo "Every binary must need at most GLIBC_$MAX_GLIBC (Amazon Linux 2023)."
    echo
    cat "$REPORT.tmp"
    echo
    for t in "${timings[@]}"; do echo "- $t" | sed 's/|/: /; s/$/ s/'; done
} >"$REPORT"
rm -f "$REPORT.tmp"
cat "$REPORT"

if [ "${#docker_todo[@]}" -gt 0 ]; then
    say "no Docker engine answers here: the ingest image was NOT built. On a machine with Docker, run:"
    for c in "${docker_todo[@]}"; do printf '    %s\n' "$c" >&2; done
fi
if [ "${#not_lambda[@]}" -gt 0 ]; then
    for m in "${not_lambda[@]}"; do say "not a Lambda binary (check its BuildProperties.Binary): $m"; done
    die "some function bootstraps are not Lambda binaries"
fi
if [ "${#too_new[@]}" -gt 0 ]; then
    for m in "${too_new[@]}"; do say "too new for Amazon Linux 2023: $m"; done
    die "some binaries need a glibc newer than $MAX_GLIBC"
fi
say "done; report in ${REPORT#"$ROOT"/}"
