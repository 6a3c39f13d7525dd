#!/usr/bin/env bash
# A private PostgreSQL cluster for local development and tests, kept apart from any
# system cluster: its own data dir, 127.0.0.1 only, port $PGPORT (default 5433), unix
# socket inside the run dir. Root cannot run the server, so the cluster belongs to the
# `postgres` OS user (created by Debian's postgresql package).
#
# Usage: scripts/postgres.sh {install|start|stop|restart|status|reset|url|psql [ARGS...]}
#
#   install   apt-get install postgresql if initdb/pg_ctl are missing
#   start     initdb on first use, start the server, wait for pg_isready, and make sure
#             role `cornershop` (password `cornershop`, LOGIN CREATEDB) and database
#             `cornershop` (owned by it) exist
#   stop      fast shutdown (clients disconnected, data flushed)
#   status    exit 0 if the server answers, 3 if not
#   reset     stop and delete the cluster
#   url       print postgres://cornershop:cornershop@127.0.0.1:$PGPORT/cornershop, with
#             ?sslmode=verify-full&sslrootcert=<the stack's CA> when TLS is on
#   psql      run psql on that URL
#
# TLS (on unless PG_TLS=0): the server serves the certificate of scripts/tls.sh (signed by
# the stack's private CA), and TCP connections must use TLS (pg_hba.conf: hostssl lines
# with scram-sha-256; hostnossl rejected). The socket inside the run dir stays trusted.
#
# Environment (all optional):
#   CORNERSHOP_DEPLOY_RUN   runtime state root               (default <repo>/.deploy-run)
#   PG_RUN_DIR              this cluster's state             (default $CORNERSHOP_DEPLOY_RUN/postgres)
#   PGPORT                  TCP port on 127.0.0.1            (default 5433)
#   PG_START_TIMEOUT        seconds to wait for readiness    (default 60)
#   PG_TLS                  1: TLS only on TCP; 0: plain TCP  (default 1)
#   CORNERSHOP_TLS_DIR      the CA and certificates          (default: scripts/tls.sh dir)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
PGPORT="${PGPORT:-5433}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_OS_USER=postgres
DB_USER=cornershop
DB_PASSWORD=cornershop
DB_NAME=cornershop
PG_TLS="${PG_TLS:-1}"
TLS_DIR="$("$REPO_ROOT/scripts/tls.sh" dir)"

log() { echo "postgres.sh: $*" >&2; }
die() { echo "postgres.sh: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- locations

# The postgres OS user must be able to reach the run dir, and a unix socket path must stay
# under ~107 bytes. When <repo>/.deploy-run fails either test (a checkout below a private
# home, a very long path) and PG_RUN_DIR is not set, fall back to a fixed per-checkout
# directory under /var/tmp, so that every subcommand finds the same cluster again.
fallback_dir() {
    echo "/var/tmp/cornershop-postgres-$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"
}

pg_user_can_reach() { # dir -> 0 if the postgres user can traverse all of its parents
    local d=$1
    while [ ! -e "$d" ]; do d="$(dirname "$d")"; done
    runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null
}

choose_run_dir() {
    if [ -n "${PG_RUN_DIR:-}" ]; then
        echo "$PG_RUN_DIR"
        return
    fi
    local primary="$DEPLOY_RUN/postgres" fb
    fb="$(fallback_dir)"
    if [ -f "$primary/data/PG_VERSION" ]; then
        echo "$primary"
    elif [ -f "$fb/data/PG_VERSION" ]; then
        echo "$fb"
    elif ! id "$PG_OS_USER" >/dev/null 2>&1; then
        echo "$primary" # not installed yet: decided again once it is
    elif pg_user_can_reach "$primary" && [ ${#primary} -le 80 ]; then
        echo "$primary"
    else
        echo "$fb"
    fi
}

set_paths() {
    RUN_DIR="$(choose_run_dir)"
    DATA="$RUN_DIR/data"
    SOCKDIR="$RUN_DIR/socket"
    LOGFILE="$RUN_DIR/postgres.log"
}

# Newest installed major version that has initdb and pg_ctl.
find_bindir() {
    local d
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

as_pg() { (cd / && runuser -u "$PG_OS_USER" -- "$@"); }

url() {
    if [ "$PG_TLS" = 1 ]; then
        echo "postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PGPORT/$DB_NAME?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.pem"
    else
        echo "postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PGPORT/$DB_NAME"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- commands

cmd_install() {
    local bindir
    if bindir="$(find_bindir)" && id "$PG_OS_USER" >/dev/null 2>&1; then
        log "PostgreSQL already installed ($bindir)"
        return 0
    fi
    log "installing PostgreSQL: apt-get update && apt-get install -y postgresql"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bindir="$(find_bindir)" || die "postgresql installed, but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
    id "$PG_OS_USER" >/dev/null 2>&1 || die "postgresql installed, but there is no '$PG_OS_USER' OS user"
    log "installed ($bindir)"
}

server_running() { # 0 if pg_ctl sees a running postmaster for our data dir
    [ -f "$DATA/PG_VERSION" ] || return 1
    as_pg "$BINDIR/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

write_config() {
    as_pg tee "$DATA/cornershop.conf" >/dev/null <<EOF
# Generated by scripts/postgres.sh on every start: edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$SOCKDIR'
max_connections = 200
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = -1
EOF
    if [ "$PG_TLS" = 1 ]; then
        "$REPO_ROOT/scripts/tls.sh" make
        # The server reads its key only when the postgres OS user owns it with mode 0600.
        as_pg sh -c 'umask 077 && cat >"$1"' sh "$DATA/server.key" <"$TLS_DIR/server.key"
        as_pg sh -c 'cat >"$1"' sh "$DATA/server.crt" <"$TLS_DIR/server.pem"
        as_pg tee -a "$DATA/cornershop.conf" >/dev/null <<EOF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
EOF
        as_pg tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# Generated by scripts/postgres.sh on every start (PG_TLS=1): TCP only over TLS.
local     all all                 trust
hostssl   all all 127.0.0.1/32    scram-sha-256
hostssl   all all ::1/128         scram-sha-256
hostnossl all all all             reject
EOF
    else
        echo "ssl = off" | as_pg tee -a "$DATA/cornershop.conf" >/dev/null
        as_pg tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# Generated by scripts/postgres.sh on every start (PG_TLS=0): plain TCP.
local     all all                 trust
host      all all 127.0.0.1/32    scram-sha-256
host      all all ::1/128         scram-sha-256
EOF
    fi
    if ! grep -q "^include_if_exists = 'cornershop.conf'" "$DATA/postgresql.conf"; then
        echo "include_if_exists = 'cornershop.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
    fi
}

init_cluster() {
    [ -f "$DATA/PG_VERSION" ] && return 0
    log "initdb: new cluster in $DATA (owner: OS user $PG_OS_USER)"
    mkdir -p "$RUN_DIR"
    chown "$PG_OS_USER:" "$RUN_DIR"
    chmod 0700 "$RUN_DIR"
    pg_user_can_reach "$RUN_DIR" ||
        die "the '$PG_OS_USER' OS user cannot reach $RUN_DIR (a parent directory is not traversable); set PG_RUN_DIR to a directory it can reach"
    as_pg rm -rf "$DATA.tmp"
    # Local (socket) connections are trusted: only the postgres OS user can reach the
    # socket dir. TCP connections need a password.
    as_pg "$BINDIR/initdb" -D "$DATA.tmp" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$RUN_DIR.initdb.log" 2>&1 || {
        cat "$RUN_DIR.initdb.log" >&2
        die "initdb failed"
    }
    rm -f "$RUN_DIR.initdb.log"
    as_pg mv "$DATA.tmp" "$DATA"
}

ensure_role_and_db() {
    as_pg "$BINDIR/psql" -X -q -h "$SOCKDIR" -p "$PGPORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 >/dev/null <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  ELSE
    ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
EOF
}

cmd_start() {
    cmd_install
    BINDIR="$(find_bindir)"
    set_paths
    if server_running; then
        local running_port
        running_port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
        if [ -n "$running_port" ] && [ "$running_port" != "$PGPORT" ]; then
            die "the cluster in $DATA already runs on port $running_port, not $PGPORT: stop it first, or use PGPORT=$running_port"
        fi
        log "already running on port $PGPORT (data $DATA)"
    else
        if port_open "$PGPORT"; then
            die "port 127.0.0.1:$PGPORT is in use by another process: $(ss -ltnpH "sport = :$PGPORT" 2>/dev/null | head -1)"
        fi
        init_cluster
        as_pg mkdir -p "$SOCKDIR"
        write_config
        [ -f "$LOGFILE" ] && as_pg mv -f "$LOGFILE" "$LOGFILE.prev"
        log "starting PostgreSQL $(basename "$(dirname "$BINDIR")") on 127.0.0.1:$PGPORT (data $DATA)"
        # pg_ctl daemonizes the postmaster in its own session (it outlives this script).
        if ! as_pg "$BINDIR/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t "$PG_START_TIMEOUT" >/dev/null; then
            log "pg_ctl start failed; last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            exit 1
        fi
    fi
    local deadline=$((SECONDS + PG_START_TIMEOUT))
    until "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "pg_isready does not answer on 127.0.0.1:$PGPORT after ${PG_START_TIMEOUT} s; last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            exit 1
        fi
        sleep 0.3
    done
    ensure_role_and_db
    log "ready: $(url)"
}

cmd_stop() {
    if ! BINDIR="$(find_bindir)"; then
        log "PostgreSQL is not installed: nothing to stop"
        return 0
    fi
    set_paths
    if ! server_running; then
        log "not running"
        return 0
    fi
    log "stopping (fast shutdown)"
    as_pg "$BINDIR/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null || {
        log "fast shutdown did not finish in 60 s: immediate shutdown"
        as_pg "$BINDIR/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >/dev/null
    }
    log "stopped"
}

cmd_status() {
    if ! BINDIR="$(find_bindir)"; then
        echo "postgres: not installed"
        return 3
    fi
    set_paths
    if server_running && "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; then
        echo "postgres: running on 127.0.0.1:$PGPORT (data $DATA) $(url)"
        return 0
    fi
    if server_running; then
        echo "postgres: postmaster running (data $DATA) but 127.0.0.1:$PGPORT does not answer"
        return 3
    fi
    echo "postgres: not running (data $DATA)"
    return 3
}

cmd_reset() {
    cmd_stop
    set_paths
    log "deleting cluster $RUN_DIR"
    rm -rf "$RUN_DIR"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_stop && cmd_start ;;
status) cmd_status ;;
reset) cmd_reset ;;
url) url ;;
psql) shift; exec psql "$(url)" "$@" ;;
*)
    echo "usage: $0 {install|start|stop|restart|status|reset|url|psql [ARGS...]}" >&2
    exit 2
    ;;
esac
