#!/usr/bin/env bash
# API fuzzing: Schemathesis against a real embedded shop, with every check it has.
#
# 1. Installs Schemathesis (the exact versions of scripts/fuzz/requirements.txt) into a
#    virtualenv under the run dir ($CORNERSHOP_DEPLOY_RUN, default <repo>/.deploy-run),
#    unless it is there already; python3-venv comes from Debian when missing.
# 2. Builds the `cornershop` binary and starts `cornershop serve` on a fresh data dir and
#    a free port of 127.0.0.1 (the binary reports the port it was given).
# 3. Runs `schemathesis run <shop>/api/openapi.json --checks all` with a fixed seed and a
#    bounded number of examples per operation, settings from scripts/fuzz/schemathesis.toml
#    and hooks from scripts/fuzz/hooks.py; stops the shop.
# Exits non-zero on any finding (a failed check or an error of the run).
#
# Usage: scripts/fuzz.sh [more schemathesis run options, e.g. --include-path /api/carts]
#
#   FUZZ_SEED          the seed (default 1207); a different one explores other inputs
#   FUZZ_MAX_EXAMPLES  examples per operation and phase (default 100)
#   FUZZ_REPORT_DIR    where the JUnit report goes (default <run dir>/fuzz-report)
#   FUZZ_KEEP_DATA=1   keep the shop's data dir and log after a passing run too (a failing
#                      run always keeps them)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT="$(pwd)"

DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
VENV="$DEPLOY_RUN/schemathesis-venv"
REQUIREMENTS="$REPO_ROOT/scripts/fuzz/requirements.txt"
SCHEMATHESIS_VERSION="$(sed -n 's/^schemathesis==//p' "$REQUIREMENTS")"
SEED="${FUZZ_SEED:-1207}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
REPORT_DIR="${FUZZ_REPORT_DIR:-$DEPLOY_RUN/fuzz-report}"

log() { echo "fuzz.sh: $*" >&2; }
# shellcheck source=scripts/python-venv.sh
. "$REPO_ROOT/scripts/python-venv.sh"

install_schemathesis() {
    if "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
        return 0
    fi
    log "installing Schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python_venv "$VENV" --requirement "$REQUIREMENTS"
}

build_shop() {
    log "building the cornershop binary"
    # The executable's path as cargo reports it (whatever the target dir is).
    cargo build -p cornershop-server --bin cornershop --locked --message-format=json-render-diagnostics \
        | python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["name"] == "cornershop":
        print(message["executable"])
'
}

install_schemathesis
BINARY="$(build_shop)"
if [ ! -x "$BINARY" ]; then
    log "cargo did not report the cornershop executable"
    exit 1
fi

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cornershop-fuzz.XXXXXX")"
SHOP_LOG="$DATA_DIR/shop.log"
SHOP_PID=""
stop_shop() {
    if [ -n "$SHOP_PID" ] && kill -0 "$SHOP_PID" 2>/dev/null; then
        kill -TERM "$SHOP_PID" 2>/dev/null || true
        wait "$SHOP_PID" 2>/dev/null || true
    fi
}
cleanup() {
    local status=$?
    stop_shop
    if [ "$status" -eq 0 ] && [ "${FUZZ_KEEP_DATA:-0}" != 1 ]; then
        rm -rf "$DATA_DIR"
    else
        log "the shop's data and log are kept in $DATA_DIR"
    fi
}
trap cleanup EXIT

log "starting the shop on a fresh data dir ($DATA_DIR)"
# No limit on failed authentications: the fuzzer's auth checks send many bad tokens.
"$BINARY" serve --data-dir "$DATA_DIR" --listen 127.0.0.1:0 --auth-failure-limit 0 >"$SHOP_LOG" 2>&1 &
SHOP_PID=$!

# Wait for the address the shop reports ("cornershop is listening"), then for readiness.
BASE_URL="$(python3 - "$SHOP_LOG" "$SHOP_PID" <<'PY'
import json, os, sys, time, urllib.request

log_path, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
address = None
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the shop exited during start; see its log")
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "cornershop is listening":
                address = entry["address"]
    if address:
        try:
            with urllib.request.urlopen(f"http://{address}/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    print(f"http://{address}")
                    sys.exit(0)
        except OSError:
            pass
    time.sleep(0.2)
sys.exit("the shop did not become ready within 60 s")
PY
)" || { log "the shop did not start:"; tail -n 20 "$SHOP_LOG" >&2; exit 1; }
log "the shop answers at $BASE_URL"
# An admin's token from the shop's own issuer: every route is reachable, and the
# fuzzer's ignored_auth check sends requests without it and with a broken one.
TOKEN="$("$BINARY" token --role admin --sub fuzzer --ttl 2h --data-dir "$DATA_DIR")"

log "schemathesis $SCHEMATHESIS_VERSION: --checks all, seed $SEED, at most $MAX_EXAMPLES examples per operation"
started=$SECONDS
status=0
SCHEMATHESIS_HOOKS="$REPO_ROOT/scripts/fuzz/hooks.py" \
    "$VENV/bin/schemathesis" --config-file "$REPO_ROOT/scripts/fuzz/schemathesis.toml" \
    run "$BASE_URL/api/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $TOKEN" \
    --seed "$SEED" \
    --max-examples "$MAX_EXAMPLES" \
    --generation-database none \
    --report junit --report-dir "$REPORT_DIR" \
    --no-color \
    "$@" || status=$?
log "schemathesis took $((SECONDS - started)) s"

stop_shop
if grep -q '"level":"ERROR"' "$SHOP_LOG"; then
    log "errors the shop logged meanwhile (the first 20):"
    grep '"level":"ERROR"' "$SHOP_LOG" | head -n 20 >&2
fi
if [ "$status" -ne 0 ]; then
    log "schemathesis reported findings (exit status $status); JUnit report in $REPORT_DIR"
    exit "$status"
fi
log "no findings"
