#!/usr/bin/env bash
# FerretDB 1.24 (Apache-2.0) for local development and tests: MongoDB's wire protocol over
# a SQLite back end, so the MongoDB event store's tests run without MongoDB itself (no
# registry here ships it). No Docker: it is built once from the Go module proxy and runs as
# a plain process on 127.0.0.1, without authentication or TLS.
#
# Usage: scripts/ferretdb.sh {install|start|stop|restart|status|reset|logs|env}
#
#   install   build the ferretdb binary into $FERRETDB_RUN_DIR/bin (skipped when there):
#             `go mod download` of github.com/FerretDB/FerretDB@$FERRETDB_VERSION, its
#             source copied out of the module cache and made writable, the version written
#             into build/version/version.txt (the module zip lacks it, and the binary
#             panics without it), then `go build ./cmd/ferretdb`
#   start     install if needed, start it in the background (--handler=sqlite, its SQLite
#             files in $FERRETDB_RUN_DIR/data) and wait until the port answers
#   stop      SIGTERM, wait up to $FERRETDB_STOP_TIMEOUT s, then SIGKILL (data is kept)
#   restart   stop + start
#   status    say whether it runs; exit 0 if it does, 3 if not
#   reset     stop and delete its data (every database); the binary is kept
#   logs      print the tail of its log
#   env       print CORNERSHOP_TEST_MONGODB_URL=mongodb://127.0.0.1:$FERRETDB_PORT/
#
# Environment (all optional):
#   CORNERSHOP_DEPLOY_RUN   runtime state root             (default <repo>/.deploy-run)
#   FERRETDB_RUN_DIR        this server's state             (default $CORNERSHOP_DEPLOY_RUN/ferretdb)
#   FERRETDB_PORT           listen port on 127.0.0.1        (default 27117)
#   FERRETDB_DEBUG_PORT     its metrics/debug HTTP port     (default 27118; 8088 is its own default)
#   FERRETDB_VERSION        the module version to build     (default v1.24.2)
#   FERRETDB_START_TIMEOUT  seconds to wait for readiness   (default 30)
#   FERRETDB_STOP_TIMEOUT   seconds before SIGKILL on stop  (default 15)
#   GO                      the go command                  (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
RUN_DIR="${FERRETDB_RUN_DIR:-$DEPLOY_RUN/ferretdb}"
FERRETDB_PORT="${FERRETDB_PORT:-27117}"
FERRETDB_DEBUG_PORT="${FERRETDB_DEBUG_PORT:-27118}"
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
FERRETDB_START_TIMEOUT="${FERRETDB_START_TIMEOUT:-30}"
FERRETDB_STOP_TIMEOUT="${FERRETDB_STOP_TIMEOUT:-15}"
MODULE=github.com/FerretDB/FerretDB

BIN="$RUN_DIR/bin/ferretdb"
BIN_STAMP="$RUN_DIR/bin/.version"
SRC="$RUN_DIR/src"
DATA="$RUN_DIR/data"
PIDFILE="$RUN_DIR/ferretdb.pid"
LOGFILE="$RUN_DIR/ferretdb.log"

log() { echo "ferretdb.sh: $*" >&2; }
die() { echo "ferretdb.sh: ERROR: $*" >&2; exit 1; }

url() { echo "mongodb://127.0.0.1:$FERRETDB_PORT/"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

go_cmd() {
    if [ -n "${GO:-}" ]; then
        echo "$GO"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [ -x /usr/local/go/bin/go ]; then
        echo /usr/local/go/bin/go
    else
        die "no go command (set GO, or install Go 1.21 or newer)"
    fi
}

# pid of our server, or empty. Guards against stale pid files and pid reuse by checking
# that the process really is our binary.
server_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 0
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BIN "; then
        echo "$pid"
    fi
}

wait_gone() { # pid timeout -> 0 once the process is gone
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------- commands

cmd_install() {
    if [ -x "$BIN" ] && [ "$(cat "$BIN_STAMP" 2>/dev/null)" = "$FERRETDB_VERSION" ]; then
        log "FerretDB $FERRETDB_VERSION already built ($BIN)"
        return 0
    fi
    local go modcache dir start=$SECONDS
    go="$(go_cmd)"
    log "downloading $MODULE@$FERRETDB_VERSION from the Go module proxy"
    # Outside any module: a plain download into the module cache, which prints its
    # directory there.
    dir="$(cd / && GOFLAGS=-mod=mod "$go" mod download -json "$MODULE@$FERRETDB_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [ -n "$dir" ] && [ -d "$dir" ] || die "go mod download did not give the module's directory"
    log "building from a writable copy of $dir"
    rm -rf "$SRC"
    mkdir -p "$(dirname "$SRC")"
    cp -R "$dir" "$SRC"
    chmod -R u+w "$SRC"
    mkdir -p "$SRC/build/version"
    echo "$FERRETDB_VERSION" >"$SRC/build/version/version.txt"
    mkdir -p "$RUN_DIR/bin"
    (cd "$SRC" && "$go" build -o "$BIN.tmp" ./cmd/ferretdb) || die "go build failed"
    mv -f "$BIN.tmp" "$BIN"
    echo "$FERRETDB_VERSION" >"$BIN_STAMP"
    rm -rf "$SRC"
    log "built $BIN in $((SECONDS - start)) s"
}

cmd_start() {
    cmd_install
    local pid
    pid="$(server_pid)"
    if [ -n "$pid" ]; then
        if ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--listen-addr=127.0.0.1:$FERRETDB_PORT"; then
            die "FerretDB (pid $pid) runs on another port, not $FERRETDB_PORT: stop it first, or use its port"
        fi
        log "already running (pid $pid) on 127.0.0.1:$FERRETDB_PORT"
        return 0
    fi
    rm -f "$PIDFILE"
    if port_open "$FERRETDB_PORT"; then
        die "port 127.0.0.1:$FERRETDB_PORT is in use by another process: $(ss -ltnpH "sport = :$FERRETDB_PORT" 2>/dev/null | head -1)"
    fi
    mkdir -p "$DATA"
    [ -f "$LOGFILE" ] && mv -f "$LOGFILE" "$LOGFILE.prev"
    log "starting FerretDB $FERRETDB_VERSION on 127.0.0.1:$FERRETDB_PORT (data $DATA)"
    # Its own session (setsid), so that it outlives this script and a Ctrl-C of its caller.
    setsid "$BIN" --handler=sqlite --sqlite-url="file:$DATA/" \
        --listen-addr="127.0.0.1:$FERRETDB_PORT" --telemetry=disable \
        --debug-addr="127.0.0.1:$FERRETDB_DEBUG_PORT" --state-dir="$RUN_DIR" --log-level=WARN \
        </dev/null >"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + FERRETDB_START_TIMEOUT))
    until port_open "$FERRETDB_PORT"; do
        if [ -z "$(server_pid)" ]; then
            log "FerretDB exited; last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            rm -f "$PIDFILE"
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "127.0.0.1:$FERRETDB_PORT does not answer after ${FERRETDB_START_TIMEOUT} s; last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log "ready: $(url)"
}

cmd_stop() {
    local pid
    pid="$(server_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    log "stopping (pid $pid, SIGTERM, up to ${FERRETDB_STOP_TIMEOUT} s)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$FERRETDB_STOP_TIMEOUT"; then
        log "still running after ${FERRETDB_STOP_TIMEOUT} s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$PIDFILE"
    log "stopped"
}

cmd_status() {
    local pid
    pid="$(server_pid)"
    if [ -n "$pid" ]; then
        if port_open "$FERRETDB_PORT"; then
            echo "ferretdb: running (pid $pid) on 127.0.0.1:$FERRETDB_PORT (data $DATA) $(url)"
        else
            echo "ferretdb: process running (pid $pid) but 127.0.0.1:$FERRETDB_PORT does not answer"
        fi
        return 0
    fi
    if port_open "$FERRETDB_PORT"; then
        echo "ferretdb: not running from $RUN_DIR, but something else listens on 127.0.0.1:$FERRETDB_PORT"
    else
        echo "ferretdb: not running"
    fi
    return 3
}

cmd_reset() {
    cmd_stop
    log "deleting $DATA"
    rm -rf "$DATA"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_stop && cmd_start ;;
status) cmd_status ;;
reset) cmd_reset ;;
logs) tail -n "${2:-100}" "$LOGFILE" ;;
env) echo "CORNERSHOP_TEST_MONGODB_URL=$(url)" ;;
*)
    echo "usage: $0 {install|start|stop|restart|status|reset|logs|env}" >&2
    exit 2
    ;;
esac
