#!/usr/bin/env bash
# The test stack's private certificate authority and the certificates it signs, made with
# openssl: PostgreSQL (scripts/postgres.sh) and Kafka's SASL_SSL listener (scripts/kafka.sh)
# serve the server certificate, and clients trust ca.pem. Test-only keys: never use them for
# anything else.
#
# Usage: scripts/tls.sh {make|dir}
#
#   make   create what is missing (or expires within a week) in the TLS dir, print nothing
#   dir    print the TLS dir
#
# Files in the TLS dir:
#   ca.pem, ca.key           the stack's CA (clients: sslrootcert=, --kafka-ca-file)
#   server.pem, server.key   signed by it, for 127.0.0.1, ::1 and localhost
#   kafka.p12                server.key + server.pem (+ ca.pem) as a PKCS#12 keystore for
#                            Kafka, password in kafka.p12.password
#   other-ca.pem             a second CA that signed nothing the stack serves (tests of an
#                            untrusted certificate)
#
# Environment (all optional):
#   CORNERSHOP_DEPLOY_RUN   runtime state root   (default <repo>/.deploy-run)
#   CORNERSHOP_TLS_DIR      the TLS dir          (default $CORNERSHOP_DEPLOY_RUN/tls)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
TLS_DIR="${CORNERSHOP_TLS_DIR:-$DEPLOY_RUN/tls}"
DAYS=825

log() { echo "tls.sh: $*" >&2; }
die() { echo "tls.sh: ERROR: $*" >&2; exit 1; }

valid() { # file -> 0 if it is a certificate valid for at least a week more
    [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend 604800 >/dev/null 2>&1
}

new_ca() { # name subject
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$TLS_DIR/$1.key" -out "$TLS_DIR/$1.pem" -days "$DAYS" -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

cmd_make() {
    command -v openssl >/dev/null 2>&1 || die "openssl is missing (apt-get install openssl)"
    mkdir -p "$TLS_DIR"
    chmod 0755 "$TLS_DIR"
    local renewed=0
    if ! valid "$TLS_DIR/ca.pem" || [ ! -s "$TLS_DIR/ca.key" ]; then
        log "new private CA in $TLS_DIR"
        (umask 077 && new_ca ca "CornerShop test CA")
        renewed=1
    fi
    if [ "$renewed" = 1 ] || ! valid "$TLS_DIR/server.pem" || [ ! -s "$TLS_DIR/server.key" ] ||
        ! openssl verify -CAfile "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" >/dev/null 2>&1; then
        log "new server certificate for 127.0.0.1, ::1 and localhost"
        local ext="$TLS_DIR/server.ext"
        cat >"$ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
EOF
        (umask 077 && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" \
            -subj "/CN=localhost" 2>/dev/null)
        openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
            -CAcreateserial -days "$DAYS" -extfile "$ext" -out "$TLS_DIR/server.pem" 2>/dev/null
        rm -f "$TLS_DIR/server.csr" "$ext" "$TLS_DIR/kafka.p12"
    fi
    if [ ! -s "$TLS_DIR/kafka.p12" ] || [ ! -s "$TLS_DIR/kafka.p12.password" ]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$TLS_DIR/kafka.p12.password")
        (umask 077 && openssl pkcs12 -export -name kafka -in "$TLS_DIR/server.pem" \
            -inkey "$TLS_DIR/server.key" -certfile "$TLS_DIR/ca.pem" \
            -passout "file:$TLS_DIR/kafka.p12.password" -out "$TLS_DIR/kafka.p12")
    fi
    if ! valid "$TLS_DIR/other-ca.pem"; then
        (umask 077 && new_ca other-ca "Some other CA")
    fi
    # Public parts readable by everyone (the postgres OS user, clients); keys stay 0600.
    chmod 0644 "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/other-ca.pem"
    chmod 0600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key" "$TLS_DIR/other-ca.key" \
        "$TLS_DIR/kafka.p12" "$TLS_DIR/kafka.p12.password"
}

case "${1:-}" in
make) cmd_make ;;
dir) echo "$TLS_DIR" ;;
*)
    echo "usage: $0 {make|dir}" >&2
    exit 2
    ;;
esac
