#!/usr/bin/env bash
# A real OpenID Connect provider for local development and tests: Keycloak (Quarkus
# distribution) in development mode, 127.0.0.1 only, with the test realm
# deploy/keycloak/cornershop-realm.json imported on first start. No Docker: the
# distribution zip comes from Maven Central (org.keycloak:keycloak-quarkus-dist) and runs
# on the installed JDK 17 as a plain java process. Its H2 database (dev-file) lives in the
# install dir and is kept across restarts; it is recreated (realm imported afresh) when the
# realm file changes, and by `reset`.
#
# Usage: scripts/keycloak.sh {install|start|launch|stop|kill|restart|status|reset|logs [N]|url|env|
#                             token USER [PASSWORD]|rotate-key [keep|passive|delete]}
#
#   install     download and unpack Keycloak into $KEYCLOAK_RUN_DIR (skipped when there)
#   start       install if needed, start Keycloak in the background and wait until the
#               realm's discovery document answers (idempotent: a running one is reused,
#               one still starting is waited for)
#   launch      the same without waiting (a later `start` waits): lets scripts/stack.sh
#               start PostgreSQL and Kafka meanwhile
#   stop        graceful stop: SIGTERM, wait up to $KEYCLOAK_STOP_TIMEOUT s, then SIGKILL
#   kill        SIGKILL at once
#   restart     stop + start (data is kept)
#   status      say whether it runs; exit 0 if the realm answers, 3 if not
#   reset       stop and delete the database (realm re-imported, new keys, at next start)
#   logs        print the tail of the server log
#   url         print the realm's issuer, http://127.0.0.1:$KEYCLOAK_PORT/realms/cornershop
#   env         print the CORNERSHOP_TEST_OIDC_* lines that scripts/stack.sh prints
#   token       print an access token of USER (password grant, client cornershop-tests);
#               the password defaults to the realm file's USER-password
#   rotate-key  add a new RS256 key provider with a higher priority than every existing
#               one (tokens issued from then on carry its kid), and print the new kid on
#               stdout; the previous RSA signing keys are kept as they are (keep, default),
#               made passive (passive: still in the JWKS, no longer used to sign) or
#               deleted (delete: gone from the JWKS, tokens they signed no longer verify)
#
# The test realm (test-only credentials, never use them anywhere else):
#   realm `cornershop`; realm roles customer, staff, admin; access tokens live 3600 s
#   client `cornershop-tests`, confidential, secret `cornershop-tests-secret`, password
#     grant (direct access grants) only; its access tokens carry aud "cornershop" and the
#     user's realm roles both in realm_access.roles and in a top-level array `roles`
#   users (password = <name>-password, email <name>@cornershop.test, verified, names
#     set, no required actions): alice, bob (customer), sam (staff), ada (admin);
#     passwords hashed with pbkdf2-sha256 x1000 (not argon2): password grants stay cheap
#   the issuer is pinned (--hostname) to http://127.0.0.1:$KEYCLOAK_PORT whatever the
#     address a request used; the JWKS also lists an RSA-OAEP key with "use":"enc":
#     pick verification keys by kid (and use "sig")
#   admin REST API: http://127.0.0.1:$KEYCLOAK_PORT/admin/realms/..., user admin/admin
#     in the master realm (client admin-cli; master's access tokens live only 60 s)
#
# Key rotation through the admin REST API (what `rotate-key` does; B=http://127.0.0.1:8180):
#   1. admin token:
#        curl -s -d grant_type=password -d client_id=admin-cli -d username=admin \
#             -d password=admin $B/realms/master/protocol/openid-connect/token  -> .access_token
#   2. current keys (kid, providerId, providerPriority, status of each):
#        curl -s -H "Authorization: Bearer $T" $B/admin/realms/cornershop/keys
#   3. new RSA signing key with a priority above every existing one (the realm's id is
#      "cornershop"; its generated key has priority 100; the highest active RS256 key signs);
#      answers 201, Location: .../components/<id>
#        curl -s -X POST -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \
#             $B/admin/realms/cornershop/components -d '{"name":"rsa-rotated-1",
#             "providerId":"rsa-generated","providerType":"org.keycloak.keys.KeyProvider",
#             "parentId":"cornershop","config":{"priority":["200"],"enabled":["true"],
#             "active":["true"],"algorithm":["RS256"],"keySize":["2048"]}}'
#      Tokens fetched afterwards carry the new kid; $B/realms/cornershop/protocol/openid-connect/certs
#      lists it (next to the old one).
#   4. optionally retire the old key (its component id is the providerId of step 2):
#        passive (still in the JWKS, no longer signs): GET .../components/<old id>, set
#          .config.active = ["false"], PUT it back to .../components/<old id>  (204)
#        gone (out of the JWKS): curl -X DELETE -H "Authorization: Bearer $T" \
#             $B/admin/realms/cornershop/components/<old id>  (204)
#
# Environment (all optional):
#   CORNERSHOP_DEPLOY_RUN    runtime state root              (default <repo>/.deploy-run)
#   KEYCLOAK_RUN_DIR         this server's state              (default $CORNERSHOP_DEPLOY_RUN/keycloak)
#   KEYCLOAK_VERSION         version from Maven Central       (default 26.5.6)
#   KEYCLOAK_PORT            HTTP port on 127.0.0.1           (default 8180)
#   KEYCLOAK_HEAP            JVM maximum heap (-Xmx)          (default 512m)
#   KEYCLOAK_JAVA_OPTS       more JVM options (kc.sh's JAVA_OPTS_APPEND)
#   KEYCLOAK_START_TIMEOUT   seconds to wait for readiness    (default 120; doubled for
#                            the first start, which re-augments the build for dev mode,
#                            and for a new database: schema, master realm, realm import)
#   KEYCLOAK_STOP_TIMEOUT    seconds before SIGKILL on stop   (default 30)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
KEYCLOAK_RUN_DIR="${KEYCLOAK_RUN_DIR:-$DEPLOY_RUN/keycloak}"
KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.5.6}"
KEYCLOAK_PORT="${KEYCLOAK_PORT:-8180}"
KEYCLOAK_HEAP="${KEYCLOAK_HEAP:-512m}"
KEYCLOAK_JAVA_OPTS="${KEYCLOAK_JAVA_OPTS:-}"
KEYCLOAK_START_TIMEOUT="${KEYCLOAK_START_TIMEOUT:-120}"
KEYCLOAK_STOP_TIMEOUT="${KEYCLOAK_STOP_TIMEOUT:-30}"

REALM=cornershop
REALM_FILE="$REPO_ROOT/deploy/keycloak/cornershop-realm.json"
CLIENT_ID=cornershop-tests
CLIENT_SECRET=cornershop-tests-secret
ADMIN_USER=admin
ADMIN_PASSWORD=admin

ARTIFACT="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip"
DIST="$KEYCLOAK_RUN_DIR/keycloak-$KEYCLOAK_VERSION"
DIST_STAMP="$DIST/.complete"
H2="$DIST/data/h2"
IMPORT_DIR="$DIST/data/import"
REALM_STAMP="$KEYCLOAK_RUN_DIR/realm.sha256" # realm file the database was imported from
STARTING="$KEYCLOAK_RUN_DIR/starting"         # a start under way: realm hash, deadline, t0
PIDFILE="$KEYCLOAK_RUN_DIR/keycloak.pid"
PORTFILE="$KEYCLOAK_RUN_DIR/keycloak.port"
LOGFILE="$KEYCLOAK_RUN_DIR/keycloak.log"

BASE="http://127.0.0.1:$KEYCLOAK_PORT"
ISSUER="$BASE/realms/$REALM"
DISCOVERY="$ISSUER/.well-known/openid-configuration"

log() { echo "keycloak.sh: $*" >&2; }
die() { echo "keycloak.sh: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_tools() { # the commands that install and start need
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    command -v unzip >/dev/null 2>&1 || missing+=(unzip)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

ensure_jq() {
    command -v curl >/dev/null 2>&1 || apt_install curl
    command -v jq >/dev/null 2>&1 || apt_install jq
}

dist_ready() { [ -f "$DIST_STAMP" ] && [ -x "$DIST/bin/kc.sh" ]; }

built_for_dev() { # 0 if the distribution was already augmented for start-dev
    local props
    props="$(unzip -p "$DIST/lib/quarkus/generated-bytecode.jar" META-INF/keycloak-persisted.properties 2>/dev/null)" &&
        grep -q '^kc.profile=dev' <<<"$props"
}

realm_hash() { sha256sum "$REALM_FILE" | cut -d' ' -f1; }

elapsed() { # EPOCHREALTIME value -> seconds since then, one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

port_open() { # port -> 0 if something accepts connections on 127.0.0.1:port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid of our Keycloak's JVM (or of kc.sh for the instant before it forks the JVM), or
# empty. Guards against stale pid files and pid reuse by checking that the process really
# runs the distribution in $DIST: kc.sh runs the JVM as its child (and, when it first had
# to re-augment the build, execs a second JVM in its own place).
server_pid() {
    local pid cmd child
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        case "$cmd" in
        *"-Dkc.home.dir=$DIST/bin/.. "*)
            echo "$pid"
            return 0
            ;;
        *"$DIST/bin/kc.sh start-dev "*)
            child="$(pgrep -n -P "$pid" java || true)"
            echo "${child:-$pid}"
            return 0
            ;;
        esac
    fi
    find_pid # no (valid) pid file, but our JVM runs (kc.sh was killed, say)
}

find_pid() { # the JVM of $DIST, if any
    local pid
    for pid in $(pgrep -f -- "-Dkc.home.dir=$DIST/bin/\.\. " || true); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-Dkc.home.dir=$DIST/bin/.. "; then
            echo "$pid"
            return 0
        fi
    done
}

realm_answers() { # 0 if the discovery document answers with our issuer
    local doc
    doc="$(curl -fsS --max-time 5 "$DISCOVERY" 2>/dev/null)" && grep -qF "\"issuer\":\"$ISSUER\"" <<<"$doc"
}

check_port() { # die if the running server listens on another port than $KEYCLOAK_PORT
    local pid=$1 running
    running="$(cat "$PORTFILE" 2>/dev/null || true)"
    if [ -n "$running" ] && [ "$running" != "$KEYCLOAK_PORT" ]; then
        die "Keycloak (pid $pid) runs on port $running, not $KEYCLOAK_PORT: stop it first, or use KEYCLOAK_PORT=$running"
    fi
}

# ---------------------------------------------------------------- commands

cmd_install() {
    if dist_ready; then
        log "Keycloak $KEYCLOAK_VERSION already in $DIST"
        return 0
    fi
    ensure_tools
    local t0="$EPOCHREALTIME" tmp="$KEYCLOAK_RUN_DIR/download.tmp"
    rm -rf "$tmp" "$DIST.tmp"
    mkdir -p "$tmp"
    log "downloading $ARTIFACT from Maven Central (about 165 MB)"
    # (Debian's Maven prints stray ANSI resets even with -B: strip them.)
    mvn -q -B -Dstyle.color=never org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
        -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp" -Dmdep.overWriteReleases=true 2>&1 |
        sed 's/\x1b\[[0-9;]*m//g' >&2 ||
        die "mvn dependency:copy of $ARTIFACT failed (is Maven Central reachable?)"
    local zip="$tmp/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
    [ -s "$zip" ] || die "Maven produced no $zip"
    log "unpacking into $DIST"
    mkdir -p "$DIST.tmp"
    unzip -q "$zip" -d "$DIST.tmp" || die "unzip $zip failed"
    [ -x "$DIST.tmp/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" ] ||
        die "the zip holds no keycloak-$KEYCLOAK_VERSION/bin/kc.sh"
    rm -rf "$DIST"
    mv "$DIST.tmp/keycloak-$KEYCLOAK_VERSION" "$DIST"
    rm -rf "$DIST.tmp" "$tmp" "$REALM_STAMP"
    echo "$ARTIFACT" >"$DIST_STAMP"
    log "installed Keycloak $KEYCLOAK_VERSION in $(elapsed "$t0") s ($DIST)"
}

# Once the realm answers it is in the database: remember from which realm file.
promote_realm_stamp() {
    if [ -f "$STARTING" ]; then
        cut -d' ' -f1 "$STARTING" >"$REALM_STAMP"
        rm -f "$STARTING"
    fi
}

# start [wait]: wait=0 launches the server and returns at once (a later `start` waits).
cmd_start() {
    local wait="${1:-1}" pid t0="$EPOCHREALTIME" timeout="$KEYCLOAK_START_TIMEOUT"
    pid="$(server_pid)"
    if [ -n "$pid" ]; then
        check_port "$pid"
        if realm_answers; then
            promote_realm_stamp
            log "already running (pid $pid) on $BASE"
            return 0
        fi
        [ "$wait" -eq 1 ] || { log "already starting (pid $pid)"; return 0; }
        log "process $pid exists but the realm does not answer yet; waiting for it"
    else
        cmd_install
        command -v curl >/dev/null 2>&1 || ensure_tools
        [ -f "$REALM_FILE" ] || die "missing $REALM_FILE"
        if port_open "$KEYCLOAK_PORT"; then
            die "port 127.0.0.1:$KEYCLOAK_PORT is in use by another process (not our Keycloak): $(ss -ltnpH "sport = :$KEYCLOAK_PORT" 2>/dev/null | head -1)"
        fi
        # The realm is imported only into a database that lacks it: a changed realm file
        # (or an import that never finished) needs a fresh database.
        if [ -d "$H2" ] && [ "$(cat "$REALM_STAMP" 2>/dev/null)" != "$(realm_hash)" ]; then
            log "the realm file changed since the database was made (or its import did not finish): new database"
            rm -rf "$H2"
        fi
        # The first start-dev re-augments the distribution for dev mode (about 20 s) and
        # a new database needs its schema and the realm import (30 to 80 s on 2 busy
        # cores): allow those another $KEYCLOAK_START_TIMEOUT s.
        if [ ! -d "$H2" ] || ! built_for_dev; then
            timeout=$((2 * KEYCLOAK_START_TIMEOUT))
        fi
        [ -d "$H2" ] || rm -f "$REALM_STAMP" # a new database: known good once imported
        mkdir -p "$IMPORT_DIR"
        rm -f "$IMPORT_DIR"/*.json
        cp "$REALM_FILE" "$IMPORT_DIR/$REALM-realm.json"
        [ -f "$LOGFILE" ] && mv -f "$LOGFILE" "$LOGFILE.prev"
        log "starting Keycloak $KEYCLOAK_VERSION (dev mode) on $BASE, heap up to $KEYCLOAK_HEAP"
        # setsid: own session, so the server outlives the caller's process group; nohup +
        # redirects: no terminal attachment. $! is kc.sh: it runs the JVM as its child
        # (and lives as long as it), or, when that JVM re-augmented the build for dev mode
        # and exited, execs the server's JVM in its own place; server_pid finds the JVM.
        t0="$EPOCHREALTIME"
        (cd "$KEYCLOAK_RUN_DIR" && exec env \
            KC_BOOTSTRAP_ADMIN_USERNAME="$ADMIN_USER" KC_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
            JAVA_OPTS_KC_HEAP="-Xms64m -Xmx$KEYCLOAK_HEAP" JAVA_OPTS_APPEND="$KEYCLOAK_JAVA_OPTS" \
            setsid nohup "$DIST/bin/kc.sh" start-dev \
            --http-host=127.0.0.1 --http-port="$KEYCLOAK_PORT" \
            --hostname="$BASE" \
            --import-realm \
            --log-console-color=false \
            >"$LOGFILE" 2>&1 </dev/null) &
        pid=$!
        echo "$KEYCLOAK_PORT" >"$PORTFILE"
        echo "$pid" >"$PIDFILE"
        # What this start imports and when it must be ready by, for whichever `start` waits.
        echo "$(realm_hash) $(($(date +%s) + timeout)) $t0" >"$STARTING"
        if [ "$wait" -eq 0 ]; then
            log "launched (pid $pid); \`$0 start\` waits until it is ready"
            return 0
        fi
    fi

    local deadline launched_at
    read -r _ deadline launched_at 2>/dev/null <"$STARTING" || true
    deadline="${deadline:-$(($(date +%s) + timeout))}"
    t0="${launched_at:-$t0}"
    while :; do
        if realm_answers; then
            promote_realm_stamp
            pid="$(server_pid)"
            log "ready $(elapsed "$t0") s after launch (pid $pid, issuer $ISSUER, log $LOGFILE)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            local other
            other="$(find_pid)"
            if [ -n "$other" ]; then # setsid forked
                pid="$other"
                echo "$pid" >"$PIDFILE"
                continue
            fi
            log "Keycloak exited during start-up; last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            rm -f "$PIDFILE" "$PORTFILE" "$STARTING"
            exit 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "the realm does not answer in time (pid $pid still running; KEYCLOAK_START_TIMEOUT=$KEYCLOAK_START_TIMEOUT); last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

wait_gone() { # pid timeout_s -> 0 if the process is gone in time
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

cmd_stop() {
    local pid
    pid="$(server_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE" "$PORTFILE"
        log "not running"
        return 0
    fi
    log "stopping Keycloak (pid $pid, SIGTERM, up to ${KEYCLOAK_STOP_TIMEOUT} s)"
    local start=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$KEYCLOAK_STOP_TIMEOUT"; then
        log "still running after ${KEYCLOAK_STOP_TIMEOUT} s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$PIDFILE" "$PORTFILE" "$STARTING"
    log "stopped after $((SECONDS - start)) s"
}

cmd_kill() {
    local pid
    pid="$(server_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE" "$PORTFILE"
        log "not running"
        return 0
    fi
    log "killing Keycloak (pid $pid, SIGKILL)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    rm -f "$PIDFILE" "$PORTFILE"
}

cmd_status() {
    local pid
    pid="$(server_pid)"
    if [ -n "$pid" ]; then
        check_port "$pid"
        if realm_answers; then
            echo "keycloak: running (pid $pid) on $BASE, issuer $ISSUER"
            return 0
        fi
        echo "keycloak: process running (pid $pid) but $DISCOVERY does not answer yet"
        return 3
    fi
    if port_open "$KEYCLOAK_PORT"; then
        echo "keycloak: not running from $DIST, but something else listens on 127.0.0.1:$KEYCLOAK_PORT"
    else
        echo "keycloak: not running"
    fi
    return 3
}

cmd_reset() {
    cmd_stop
    log "deleting the database $H2 (realm re-imported at next start)"
    rm -rf "$H2" "$REALM_STAMP" "$PIDFILE" "$PORTFILE" "$STARTING"
}

cmd_logs() {
    tail -n "${1:-100}" "$LOGFILE"
}

cmd_env() {
    echo "CORNERSHOP_TEST_OIDC_ISSUER=$ISSUER"
    echo "CORNERSHOP_TEST_OIDC_CLIENT_ID=$CLIENT_ID"
    echo "CORNERSHOP_TEST_OIDC_CLIENT_SECRET=$CLIENT_SECRET"
    echo "CORNERSHOP_TEST_OIDC_ADMIN_URL=$BASE"
}

# POST a form to a token endpoint, print .access_token (or fail with the answer).
token_request() { # realm then curl -d arguments
    local realm=$1 answer
    shift
    answer="$(curl -sS --max-time 10 "$@" "$BASE/realms/$realm/protocol/openid-connect/token")" ||
        die "no answer from $BASE/realms/$realm/protocol/openid-connect/token (is Keycloak running?)"
    jq -er '.access_token // empty' <<<"$answer" 2>/dev/null ||
        die "no access token from realm $realm: $answer"
}

admin_token() {
    token_request master -d grant_type=password -d client_id=admin-cli \
        -d username="$ADMIN_USER" -d password="$ADMIN_PASSWORD"
}

cmd_token() {
    [ $# -ge 1 ] || die "usage: $0 token USER [PASSWORD]"
    ensure_jq
    token_request "$REALM" -d grant_type=password -d client_id="$CLIENT_ID" \
        -d client_secret="$CLIENT_SECRET" -d scope=openid \
        -d username="$1" -d password="${2:-$1-password}"
}

# curl the admin REST API: method path [curl args...]; prints the body, fails on >= 400
admin_api() {
    local method=$1 path=$2
    shift 2
    curl -fsS --max-time 10 -X "$method" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' "$@" "$BASE/admin/realms/$REALM$path"
}

cmd_rotate_key() {
    local old_mode="${1:-keep}"
    case "$old_mode" in keep | passive | delete) ;; *) die "usage: $0 rotate-key [keep|passive|delete]" ;; esac
    ensure_jq
    ADMIN_TOKEN="$(admin_token)"
    local keys realm_id old_providers top name location new_id new_kid p
    keys="$(admin_api GET /keys)" || die "GET /admin/realms/$REALM/keys failed"
    realm_id="$(admin_api GET "" | jq -er .id)" || die "GET /admin/realms/$REALM failed"
    # The RSA signing key providers there are now, and the highest priority among them.
    old_providers="$(jq -r '[.keys[] | select(.type == "RSA" and .use == "SIG")] | map(.providerId) | unique | .[]' <<<"$keys")"
    top="$(jq -r '[.keys[] | select(.type == "RSA" and .use == "SIG") | .providerPriority] | max // 100' <<<"$keys")"
    name="rsa-rotated-$((top + 100))"
    location="$(admin_api POST /components -o /dev/null -D - -d "$(jq -n \
        --arg name "$name" --arg parent "$realm_id" --arg prio "$((top + 100))" '{
            name: $name, providerId: "rsa-generated", providerType: "org.keycloak.keys.KeyProvider",
            parentId: $parent,
            config: { priority: [$prio], enabled: ["true"], active: ["true"],
                      algorithm: ["RS256"], keySize: ["2048"] } }')" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')" || die "POST /admin/realms/$REALM/components failed"
    new_id="${location##*/}"
    [ -n "$new_id" ] || die "the new key provider's id is not in the answer's Location header"
    new_kid="$(admin_api GET /keys | jq -er --arg id "$new_id" \
        '.keys[] | select(.providerId == $id and .use == "SIG") | .kid')" ||
        die "the new key provider $new_id has no signing key"
    log "new RSA signing key $new_kid (provider $name, id $new_id, priority $((top + 100)))"
    for p in $old_providers; do
        case "$old_mode" in
        passive)
            admin_api GET "/components/$p" | jq '.config.active = ["false"]' |
                admin_api PUT "/components/$p" --data-binary @- >/dev/null ||
                die "could not make key provider $p passive"
            log "made the previous key provider $p passive (still in the JWKS, no longer signs)"
            ;;
        delete)
            admin_api DELETE "/components/$p" >/dev/null || die "could not delete key provider $p"
            log "deleted the previous key provider $p (its keys left the JWKS)"
            ;;
        esac
    done
    echo "$new_kid"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start 1 ;;
launch) cmd_start 0 ;;
stop) cmd_stop ;;
kill) cmd_kill ;;
restart) cmd_stop && cmd_start 1 ;;
status) cmd_status ;;
reset) cmd_reset ;;
logs) shift; cmd_logs "$@" ;;
url) echo "$ISSUER" ;;
env) cmd_env ;;
token) shift; cmd_token "$@" ;;
rotate-key) shift; cmd_rotate_key "$@" ;;
*)
    echo "usage: $0 {install|start|launch|stop|kill|restart|status|reset|logs [N]|url|env|token USER [PASSWORD]|rotate-key [keep|passive|delete]}" >&2
    exit 2
    ;;
esac
