#!/usr/bin/env bash
# A single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) for local
# development and tests. No Docker: the jars come from Maven Central through
# deploy/kafka/pom.xml and the broker runs as a plain java process.
#
# Usage: scripts/kafka.sh {install|start|stop|kill|restart|status|reset|logs|env|tool CLASS [ARGS...]}
#
#   install   gather the Kafka jars into $KAFKA_RUN_DIR/libs (skipped when already there)
#   start     install if needed, format the log dir on first use, start the broker in the
#             background and wait until it logs "Kafka Server started"
#   stop      graceful stop: SIGTERM, wait up to $KAFKA_STOP_TIMEOUT s, then SIGKILL
#   kill      SIGKILL at once (crash simulation; data is kept)
#   restart   stop + start (data is kept)
#   status    say whether the broker runs; exit 0 if it does, 3 if not
#   reset     stop and delete the broker's data (topics, offsets); the jars are kept
#   logs      print the tail of the broker log
#   env       print what clients of the SASL_SSL listener need, one KEY=value a line:
#             CORNERSHOP_TEST_KAFKA_BROKERS, _SECURITY_PROTOCOL, _SASL_MECHANISM,
#             _SASL_USERNAME, _SASL_PASSWORD, _CA_FILE (the PLAINTEXT listener without TLS)
#   tool      run a Kafka tool class with the broker's classpath, e.g.
#             scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
#                 --bootstrap-server 127.0.0.1:9092 --create --topic t --partitions 3
#
# Environment (all optional):
#   CORNERSHOP_DEPLOY_RUN   runtime state root            (default <repo>/.deploy-run)
#   KAFKA_RUN_DIR           this broker's state            (default $CORNERSHOP_DEPLOY_RUN/kafka)
#   KAFKA_PORT              PLAINTEXT listener port        (default 9092)
#   KAFKA_CONTROLLER_PORT   KRaft controller port          (default 9093)
#   KAFKA_SASL_SSL_PORT     SASL_SSL listener port         (default 9094)
#   KAFKA_TLS               1: also the SASL_SSL listener   (default 1)
#   CORNERSHOP_TLS_DIR      the CA and certificates         (default: scripts/tls.sh dir)
#
# The SASL_SSL listener (TLS with the certificate of scripts/tls.sh, SCRAM-SHA-512) is the
# one clients use; the PLAINTEXT listener (loopback) carries the broker's own traffic and
# the tools. The SCRAM user `cornershop` gets a random password on first use, kept in
# $KAFKA_RUN_DIR/scram-password (0600); it is created when the log dir is formatted
# (StorageTool format --add-scram), or with ConfigCommand on a log dir formatted before.
#   KAFKA_HEAP              JVM heap (-Xms/-Xmx)           (default 512m)
#   KAFKA_START_TIMEOUT     seconds to wait for readiness  (default 90)
#   KAFKA_STOP_TIMEOUT      seconds before SIGKILL on stop (default 30)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
KAFKA_RUN_DIR="${KAFKA_RUN_DIR:-$DEPLOY_RUN/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9094}"
KAFKA_TLS="${KAFKA_TLS:-1}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

POM="$REPO_ROOT/deploy/kafka/pom.xml"
LIBS="$KAFKA_RUN_DIR/libs"
LIBS_STAMP="$LIBS/.complete"
DATA="$KAFKA_RUN_DIR/data"
PROPS="$KAFKA_RUN_DIR/server.properties"
LOG4J="$KAFKA_RUN_DIR/log4j2.properties"
TOOLS_LOG4J="$KAFKA_RUN_DIR/log4j2-tools.properties"
PIDFILE="$KAFKA_RUN_DIR/kafka.pid"
LOGFILE="$KAFKA_RUN_DIR/kafka.log"
CLUSTER_ID_FILE="$KAFKA_RUN_DIR/cluster-id"
SCRAM_USER=cornershop
SCRAM_PASSWORD_FILE="$KAFKA_RUN_DIR/scram-password"
# The password's hash once the broker holds it (a log dir formatted without it gets it
# through ConfigCommand after start).
SCRAM_APPLIED="$KAFKA_RUN_DIR/scram-applied"
TLS_DIR="$("$REPO_ROOT/scripts/tls.sh" dir)"
# AppCDS archive of the broker's classes: halves JVM start-up on 2 busy cores. Recorded
# by a broker run with -XX:ArchiveClassesAtExit (written when the JVM exits), kept only
# after a clean `stop`, and used by later starts with -XX:SharedArchiveFile.
CDS="$KAFKA_RUN_DIR/kafka-cds.jsa"
CDS_NEW="$CDS.new"
CDS_KEY="$CDS.key"

log() { echo "kafka.sh: $*" >&2; }
die() { echo "kafka.sh: ERROR: $*" >&2; exit 1; }

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

ensure_java_maven() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

libs_ready() {
    [ -f "$LIBS_STAMP" ] && [ "$(cat "$LIBS_STAMP")" = "$(pom_hash)" ]
}

listeners() { # the listeners= line of server.properties
    if [ "$KAFKA_TLS" = 1 ]; then
        echo "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
    else
        echo "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
    fi
}

scram_password() { # the SCRAM user's password, made on first use
    if [ ! -s "$SCRAM_PASSWORD_FILE" ]; then
        mkdir -p "$KAFKA_RUN_DIR"
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$SCRAM_PASSWORD_FILE")
    fi
    cat "$SCRAM_PASSWORD_FILE"
}

scram_hash() { scram_password | sha256sum | cut -d' ' -f1; }

elapsed() { # EPOCHREALTIME value -> seconds since then, one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

port_open() { # port -> 0 if something accepts connections on 127.0.0.1:port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid of our broker, or empty. Guards against stale pid files and pid reuse by checking
# that the process really is a kafka.Kafka running our server.properties.
broker_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 0
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $PROPS"; then
        echo "$pid"
    fi
}

JAVA_OPTS=(-Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

cds_key() { # what the archive depends on: the jars and the JVM build
    local java_bin
    java_bin="$(readlink -f "$(command -v java)")"
    echo "$(cat "$LIBS_STAMP" 2>/dev/null) $java_bin" \
        "$(stat -c '%s-%Y' "$(dirname "$java_bin")/../lib/server/libjvm.so" 2>/dev/null || true)"
}

# Sets CDS_OPTS (JVM options for class data sharing); tidies archives of earlier runs.
cds_opts() {
    rm -f "$CDS_NEW" # left by a run that did not end with a clean stop
    if [ -f "$CDS" ] && [ "$(cat "$CDS_KEY" 2>/dev/null)" = "$(cds_key)" ]; then
        CDS_OPTS=("-XX:SharedArchiveFile=$CDS" "-Xlog:cds*=off")
    else
        rm -f "$CDS" "$CDS_KEY"
        CDS_OPTS=("-XX:ArchiveClassesAtExit=$CDS_NEW" "-Xlog:cds*=off")
    fi
}

# After a clean stop, keep the archive the JVM wrote at exit.
cds_promote() {
    if [ -s "$CDS_NEW" ]; then
        mv -f "$CDS_NEW" "$CDS"
        cds_key >"$CDS_KEY"
        log "saved class-data-sharing archive for faster starts ($CDS)"
    fi
}

write_config() {
    mkdir -p "$KAFKA_RUN_DIR" "$DATA"
    [ "$KAFKA_TLS" = 1 ] && "$REPO_ROOT/scripts/tls.sh" make
    (umask 077 && cat >"$PROPS.tmp" <<EOF
# Generated by scripts/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
$(listeners)
advertised.$(listeners | sed 's/,CONTROLLER:[^,]*$//')
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$DATA
$(tls_config)

# Single node: every internal topic has one replica.
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4

# Quick tests: no rebalance delay, topics only on purpose.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true

# After a crash (kill -9) the new incarnation can register only once the old one's
# session has expired (default 9 s): a shorter session makes a killed broker come back sooner.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000

# Small footprint (512 MiB heap).
log.cleaner.dedupe.buffer.size=16777216
num.network.threads=3
num.io.threads=4
num.recovery.threads.per.data.dir=2
log.retention.hours=168
log.segment.bytes=268435456
EOF
    )
    mv "$PROPS.tmp" "$PROPS"

    cat >"$LOG4J" <<'EOF'
# Generated by scripts/kafka.sh. The broker logs to stdout, which the script sends to kafka.log.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
EOF

    write_tools_log4j
}

tls_config() { # the SASL_SSL listener's settings (TLS keystore, SCRAM-SHA-512)
    [ "$KAFKA_TLS" = 1 ] || return 0
    cat <<EOF

# SASL_SSL: TLS with the stack's certificate (scripts/tls.sh), SCRAM-SHA-512 logins.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/kafka.p12
ssl.keystore.password=$(cat "$TLS_DIR/kafka.p12.password")
ssl.key.password=$(cat "$TLS_DIR/kafka.p12.password")
ssl.client.auth=none
EOF
}

write_tools_log4j() {
    mkdir -p "$KAFKA_RUN_DIR"
    cat >"$TOOLS_LOG4J" <<'EOF'
# Generated by scripts/kafka.sh. Command-line tools: warnings only, on stderr.
status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
EOF
}

new_cluster_id() { # 16 random bytes, base64url without padding, not starting with '-'
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        case "$id" in -*) ;; *) echo "$id"; return ;; esac
    done
}

format_if_needed() {
    if [ -f "$DATA/meta.properties" ]; then
        return 0
    fi
    local cid
    if [ -s "$CLUSTER_ID_FILE" ]; then
        cid="$(cat "$CLUSTER_ID_FILE")"
    else
        cid="$(new_cluster_id)"
        echo "$cid" >"$CLUSTER_ID_FILE"
    fi
    log "formatting log dir $DATA (cluster id $cid)"
    # A half-formatted dir (e.g. interrupted format) would make the tool refuse: start clean.
    rm -rf "$DATA"
    mkdir -p "$DATA"
    java -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" kafka.tools.StorageTool \
        format -t "$cid" -c "$PROPS" \
        --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$(scram_password)]" >&2 ||
        die "kafka.tools.StorageTool format failed"
    scram_hash >"$SCRAM_APPLIED"
}

# A log dir formatted before the SCRAM user existed (or with another password): set it
# through the PLAINTEXT listener.
ensure_scram_user() {
    [ "$KAFKA_TLS" = 1 ] || return 0
    [ "$(cat "$SCRAM_APPLIED" 2>/dev/null)" = "$(scram_hash)" ] && return 0
    log "setting the SCRAM-SHA-512 credentials of user $SCRAM_USER"
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" kafka.admin.ConfigCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users \
        --entity-name "$SCRAM_USER" \
        --add-config "SCRAM-SHA-512=[password=$(scram_password)]" >&2 ||
        die "cannot set the SCRAM credentials (kafka.admin.ConfigCommand)"
    scram_hash >"$SCRAM_APPLIED"
}

cmd_env() {
    if [ "$KAFKA_TLS" = 1 ]; then
        echo "CORNERSHOP_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT"
        echo "CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL=sasl_ssl"
        echo "CORNERSHOP_TEST_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
        echo "CORNERSHOP_TEST_KAFKA_SASL_USERNAME=$SCRAM_USER"
        echo "CORNERSHOP_TEST_KAFKA_SASL_PASSWORD=$(scram_password)"
        echo "CORNERSHOP_TEST_KAFKA_CA_FILE=$TLS_DIR/ca.pem"
        # For Debian's kcat only: its librdkafka (2.0) fails SCRAM against Kafka 4.
        echo "CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS=127.0.0.1:$KAFKA_PORT"
    else
        echo "CORNERSHOP_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    fi
}

# ---------------------------------------------------------------- commands

cmd_install() {
    if libs_ready; then
        log "jars already in $LIBS ($(find "$LIBS" -name '*.jar' | wc -l) jars)"
        return 0
    fi
    ensure_java_maven
    [ -f "$POM" ] || die "missing $POM"
    log "gathering Kafka jars with Maven into $LIBS"
    local tmp="$LIBS.tmp"
    rm -rf "$tmp"
    mkdir -p "$KAFKA_RUN_DIR"
    # (Debian's Maven prints stray ANSI resets even with -B: strip them.)
    mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1 |
        sed 's/\x1b\[[0-9;]*m//g' >&2 ||
        die "mvn dependency:copy-dependencies failed (is Maven Central reachable?)"
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven gathered no kafka_2.13 jar into $tmp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_hash >"$LIBS_STAMP"
    log "installed $(find "$LIBS" -name '*.jar' | wc -l) jars ($(basename "$(ls "$LIBS"/kafka_2.13-*.jar)" .jar))"
}

cmd_start() {
    local pid t0="$EPOCHREALTIME"
    pid="$(broker_pid)"
    if [ -n "$pid" ]; then
        if ! grep -qxF "$(listeners)" "$PROPS"; then
            die "the broker (pid $pid) runs with $(grep '^listeners=' "$PROPS"), not $(listeners): stop it first, or use its ports"
        fi
        if port_open "$KAFKA_PORT"; then
            log "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
            ensure_scram_user
            return 0
        fi
        log "process $pid exists but the port is not open yet; waiting for it"
    else
        cmd_install
        if port_open "$KAFKA_PORT"; then
            die "port 127.0.0.1:$KAFKA_PORT is in use by another process (not our broker): $(ss -ltnpH "sport = :$KAFKA_PORT" 2>/dev/null | head -1)"
        fi
        if [ "$KAFKA_TLS" = 1 ] && port_open "$KAFKA_SASL_SSL_PORT"; then
            die "SASL_SSL port 127.0.0.1:$KAFKA_SASL_SSL_PORT is in use by another process: $(ss -ltnpH "sport = :$KAFKA_SASL_SSL_PORT" 2>/dev/null | head -1)"
        fi
        if port_open "$KAFKA_CONTROLLER_PORT"; then
            die "controller port 127.0.0.1:$KAFKA_CONTROLLER_PORT is in use by another process: $(ss -ltnpH "sport = :$KAFKA_CONTROLLER_PORT" 2>/dev/null | head -1)"
        fi
        write_config
        format_if_needed
        [ -f "$LOGFILE" ] && mv -f "$LOGFILE" "$LOGFILE.prev"
        log "starting broker (PLAINTEXT 127.0.0.1:$KAFKA_PORT,$([ "$KAFKA_TLS" = 1 ] && echo " SASL_SSL 127.0.0.1:$KAFKA_SASL_SSL_PORT,") CONTROLLER 127.0.0.1:$KAFKA_CONTROLLER_PORT, heap $KAFKA_HEAP)"
        # setsid: own session, so the broker outlives the caller's process group (a test
        # harness, CTRL-C on a terminal); nohup + redirects: no terminal attachment.
        cds_opts
        t0="$EPOCHREALTIME"
        (cd "$KAFKA_RUN_DIR" && exec setsid nohup java "${JAVA_OPTS[@]}" "${CDS_OPTS[@]}" \
            -Dlog4j2.configurationFile="$LOG4J" \
            -cp "$LIBS/*" kafka.Kafka "$PROPS" >"$LOGFILE" 2>&1 </dev/null) &
        pid=$!
        # setsid execs in place unless it is a process-group leader, in which case it
        # forks: then find the java process by its (unique) properties path.
        sleep 0.3
        if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS"; then
            pid="$(pgrep -n -f "kafka.Kafka $PROPS" || true)"
            [ -n "$pid" ] || { tail -n 40 "$LOGFILE" >&2 || true; die "the broker did not start"; }
        fi
        echo "$pid" >"$PIDFILE"
    fi

    local start=$SECONDS
    while :; do
        if grep -q "Kafka Server started" "$LOGFILE" 2>/dev/null && port_open "$KAFKA_PORT"; then
            ensure_scram_user
            log "ready after $(elapsed "$t0") s (pid $pid, log $LOGFILE)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "the broker exited during start-up; last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            rm -f "$PIDFILE"
            exit 1
        fi
        if [ $((SECONDS - start)) -ge "$KAFKA_START_TIMEOUT" ]; then
            log "not ready after ${KAFKA_START_TIMEOUT} s (pid $pid still running); last lines of $LOGFILE:"
            tail -n 40 "$LOGFILE" >&2 || true
            exit 1
        fi
        sleep 0.2
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
    pid="$(broker_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    log "stopping broker (pid $pid, SIGTERM, up to ${KAFKA_STOP_TIMEOUT} s)"
    local start=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    if wait_gone "$pid" "$KAFKA_STOP_TIMEOUT"; then
        cds_promote
    else
        log "still running after ${KAFKA_STOP_TIMEOUT} s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
        rm -f "$CDS_NEW"
    fi
    rm -f "$PIDFILE"
    log "stopped after $((SECONDS - start)) s"
}

cmd_kill() {
    local pid
    pid="$(broker_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    log "killing broker (pid $pid, SIGKILL)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    rm -f "$PIDFILE" "$CDS_NEW"
}

cmd_status() {
    local pid
    pid="$(broker_pid)"
    if [ -n "$pid" ]; then
        if ! grep -qxF "$(listeners)" "$PROPS"; then
            die "the broker (pid $pid) runs with $(grep '^listeners=' "$PROPS"), not $(listeners): stop it first, or use its ports"
        fi
        if port_open "$KAFKA_PORT"; then
            echo "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT, controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, data $DATA"
        else
            echo "kafka: process running (pid $pid) but 127.0.0.1:$KAFKA_PORT does not answer yet"
        fi
        return 0
    fi
    if port_open "$KAFKA_PORT"; then
        echo "kafka: not running from $KAFKA_RUN_DIR, but something else listens on 127.0.0.1:$KAFKA_PORT"
    else
        echo "kafka: not running"
    fi
    return 3
}

cmd_reset() {
    cmd_stop
    log "deleting broker data $DATA"
    rm -rf "$DATA" "$CLUSTER_ID_FILE" "$PIDFILE"
}

cmd_logs() {
    tail -n "${1:-100}" "$LOGFILE"
}

cmd_tool() {
    [ $# -ge 1 ] || die "usage: $0 tool CLASS [ARGS...]"
    libs_ready || cmd_install
    [ -f "$TOOLS_LOG4J" ] || write_tools_log4j
    local cls=$1
    shift
    exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" "$cls" "$@"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
kill) cmd_kill ;;
restart) cmd_stop && cmd_start ;;
status) cmd_status ;;
reset) cmd_reset ;;
logs) shift; cmd_logs "$@" ;;
env) cmd_env ;;
tool) shift; cmd_tool "$@" ;;
*)
    echo "usage: $0 {install|start|stop|kill|restart|status|reset|logs [N]|env|tool CLASS [ARGS...]}" >&2
    exit 2
    ;;
esac
