#!/usr/bin/env bash
# The local test stack: a single-node Kafka broker (scripts/kafka.sh) and a private
# PostgreSQL cluster (scripts/postgres.sh), plus Debian's kcat, python3-aiosmtpd,
# prometheus (with promtool) and prometheus-postgres-exporter for tests.
#
# Usage: scripts/stack.sh {start|stop|status|env}
#
#   start    install what is missing (one apt-get update at most), start both services,
#            then print the environment the tests read, one KEY=value per line on stdout
#            (progress goes to stderr), e.g.
#                set -a; eval "$(scripts/stack.sh start)"; set +a
#   stop     stop both services (data is kept)
#   status   show both; exit 0 only if both run
#   env      print the environment lines only
#
# Ports and run dirs follow the variables of kafka.sh and postgres.sh (KAFKA_PORT,
# KAFKA_CONTROLLER_PORT, PGPORT, CORNERSHOP_DEPLOY_RUN, ...).
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_PORT="${KAFKA_PORT:-9092}"

log() { echo "stack.sh: $*" >&2; }

print_env() {
    echo "CORNERSHOP_TEST_DATABASE_URL=$("$SCRIPTS/postgres.sh" url)"
    echo "CORNERSHOP_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
}

# Everything the stack needs from Debian, in one apt-get update + install.
install_debian_packages() {
    local missing=()
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    # The notification tests' SMTP server (tests/support/smtp_sink.py).
    dpkg -s python3-aiosmtpd >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
    # The notification tests' private CA and certificates (TLS to the providers).
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # The observability tests (crates/server/tests/observability.rs): promtool and a real
    # Prometheus, and PostgreSQL's exporter for the Infrastructure dashboard.
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v prometheus-postgres-exporter >/dev/null 2>&1 || missing+=(prometheus-postgres-exporter)
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

case "${1:-}" in
start)
    install_debian_packages
    "$SCRIPTS/kafka.sh" install
    "$SCRIPTS/postgres.sh" start
    "$SCRIPTS/kafka.sh" start
    log "stack is up"
    print_env
    ;;
stop)
    rc=0
    "$SCRIPTS/kafka.sh" stop || rc=1
    "$SCRIPTS/postgres.sh" stop || rc=1
    exit "$rc"
    ;;
status)
    rc=0
    "$SCRIPTS/kafka.sh" status || rc=3
    "$SCRIPTS/postgres.sh" status || rc=3
    exit "$rc"
    ;;
env)
    print_env
    ;;
*)
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
    ;;
esac
