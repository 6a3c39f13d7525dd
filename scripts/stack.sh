#!/usr/bin/env bash
# The local test stack: a single-node Kafka broker (scripts/kafka.sh), a private
# PostgreSQL cluster (scripts/postgres.sh) and an OpenID Connect provider, Keycloak in dev
# mode with the test realm deploy/keycloak/cornershop-realm.json (scripts/keycloak.sh),
# FerretDB 1.24 (MongoDB's wire protocol over SQLite, built once from the Go module proxy:
# scripts/ferretdb.sh) for the MongoDB event store, plus Debian's kcat, python3-aiosmtpd, prometheus (with promtool),
# prometheus-postgres-exporter, curl, jq, chromium and chromium-driver for tests, and
# axe-core from npm.
#
# Usage: scripts/stack.sh {install|start|stop|status|env}
#
#   install  the Debian packages the tests need and the FerretDB binary; start does it too
#   start    install what is missing (one apt-get update at most), start the four
#            services, then print the environment the tests read, one KEY=value per line
#            on stdout (progress goes to stderr), e.g.
#                set -a; eval "$(scripts/stack.sh start)"; set +a
#   stop     stop the four services (data is kept)
#   status   show all four; exit 0 only if all run
#   env      print the environment lines only:
#              CORNERSHOP_TEST_DATABASE_URL        postgres://... (postgres.sh url: over TLS,
#                                                  ?sslmode=verify-full&sslrootcert=<CA>)
#              CORNERSHOP_TEST_KAFKA_BROKERS       127.0.0.1:$KAFKA_SASL_SSL_PORT (kafka.sh env)
#              CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL  sasl_ssl
#              CORNERSHOP_TEST_KAFKA_SASL_MECHANISM     SCRAM-SHA-512
#              CORNERSHOP_TEST_KAFKA_SASL_USERNAME      cornershop
#              CORNERSHOP_TEST_KAFKA_SASL_PASSWORD      its random test-only password
#              CORNERSHOP_TEST_KAFKA_CA_FILE            the stack's CA (scripts/tls.sh)
#              CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS  127.0.0.1:$KAFKA_PORT, for the tests'
#                                                  kcat only (Debian's is too old for SCRAM
#                                                  on Kafka 4)
#              CORNERSHOP_TEST_TLS_DIR             the CA, the server certificate and key,
#                                                  and other-ca.pem (a CA that signed nothing)
#              CORNERSHOP_TEST_OIDC_ISSUER         http://127.0.0.1:$KEYCLOAK_PORT/realms/cornershop
#              CORNERSHOP_TEST_OIDC_CLIENT_ID      cornershop-tests (password grant)
#              CORNERSHOP_TEST_OIDC_CLIENT_SECRET  its test-only secret
#              CORNERSHOP_TEST_OIDC_ADMIN_URL      http://127.0.0.1:$KEYCLOAK_PORT (admin REST
#                                                  API; admin/admin in the master realm)
#              CORNERSHOP_TEST_CHROMIUM, CORNERSHOP_TEST_CHROMEDRIVER  Debian's headless
#                                                  browser and its driver (the console tests)
#              CORNERSHOP_TEST_AXE                 axe-core's axe.min.js (from npm)
#              CORNERSHOP_TEST_MONGODB_URL         mongodb://127.0.0.1:$FERRETDB_PORT/ (ferretdb.sh
#                                                  env; no authentication, no TLS)
#            The realm's users and their passwords: see scripts/keycloak.sh.
#
# Ports and run dirs follow the variables of kafka.sh, postgres.sh and keycloak.sh
# and ferretdb.sh (KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_SASL_SSL_PORT, PGPORT,
# KEYCLOAK_PORT, FERRETDB_PORT, CORNERSHOP_DEPLOY_RUN, ...). PG_TLS=0 and KAFKA_TLS=0 start them without TLS (and the
# printed environment says so).
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_PORT="${KAFKA_PORT:-9092}"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$(dirname "$SCRIPTS")/.deploy-run}"
# The console's accessibility check (crates/server/tests/console.rs): axe-core from npm.
AXE_VERSION=4.10.3
AXE_FILE="$DEPLOY_RUN/axe-core-$AXE_VERSION/axe.min.js"

log() { echo "stack.sh: $*" >&2; }

print_env() {
    # Quoted: the URL's & would end the line for eval or a shell's `.`.
    echo "CORNERSHOP_TEST_DATABASE_URL='$("$SCRIPTS/postgres.sh" url)'"
    "$SCRIPTS/kafka.sh" env
    echo "CORNERSHOP_TEST_TLS_DIR=$("$SCRIPTS/tls.sh" dir)"
    "$SCRIPTS/keycloak.sh" env
    echo "CORNERSHOP_TEST_CHROMIUM=$(command -v chromium || echo /usr/bin/chromium)"
    echo "CORNERSHOP_TEST_CHROMEDRIVER=$(command -v chromedriver || echo /usr/bin/chromedriver)"
    echo "CORNERSHOP_TEST_AXE=$AXE_FILE"
    "$SCRIPTS/ferretdb.sh" env
}

# axe-core's one script, from the npm registry's tarball of the pinned version.
install_axe() {
    [ -s "$AXE_FILE" ] && return 0
    local dir tarball
    dir="$(dirname "$AXE_FILE")"
    mkdir -p "$dir"
    tarball="$dir/axe-core.tgz"
    log "downloading axe-core $AXE_VERSION from the npm registry"
    curl -fsSL --retry 3 -o "$tarball" "https://registry.npmjs.org/axe-core/-/axe-core-$AXE_VERSION.tgz"
    tar -xzf "$tarball" -C "$dir" --strip-components=1 package/axe.min.js
    rm -f "$tarball"
    [ -s "$AXE_FILE" ] || { log "axe-core's axe.min.js is missing from its tarball"; exit 1; }
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
    # Keycloak: its distribution is a zip; curl for its readiness probe and admin REST API,
    # jq for scripts/keycloak.sh's token and rotate-key.
    command -v unzip >/dev/null 2>&1 || missing+=(unzip)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    # The console's browser tests: headless Chromium driven through chromedriver.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
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
install)
    install_debian_packages
    install_axe
    "$SCRIPTS/ferretdb.sh" install
    ;;
start)
    install_debian_packages
    install_axe
    "$SCRIPTS/kafka.sh" install
    "$SCRIPTS/keycloak.sh" install
    "$SCRIPTS/ferretdb.sh" install
    "$SCRIPTS/tls.sh" make
    # Keycloak takes longest (15-25 s, a minute or more on first use): launch it first,
    # start the others meanwhile, then wait for it.
    "$SCRIPTS/keycloak.sh" launch
    "$SCRIPTS/postgres.sh" start
    "$SCRIPTS/kafka.sh" start
    "$SCRIPTS/ferretdb.sh" start
    "$SCRIPTS/keycloak.sh" start
    log "stack is up"
    print_env
    ;;
stop)
    rc=0
    "$SCRIPTS/keycloak.sh" stop || rc=1
    "$SCRIPTS/ferretdb.sh" stop || rc=1
    "$SCRIPTS/kafka.sh" stop || rc=1
    "$SCRIPTS/postgres.sh" stop || rc=1
    exit "$rc"
    ;;
status)
    rc=0
    "$SCRIPTS/kafka.sh" status || rc=3
    "$SCRIPTS/postgres.sh" status || rc=3
    "$SCRIPTS/keycloak.sh" status || rc=3
    "$SCRIPTS/ferretdb.sh" status || rc=3
    exit "$rc"
    ;;
env)
    print_env
    ;;
*)
    echo "usage: $0 {install|start|stop|status|env}" >&2
    exit 2
    ;;
esac
