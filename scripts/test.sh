#!/usr/bin/env bash
# The one command that runs every test on a fresh machine (the README's test command).
#
# 1. Installs and starts what the production-path tests need: PostgreSQL (Debian's
#    package), Apache Kafka in KRaft mode (jars from Maven Central, started with java) and
#    Keycloak, the identity provider of tests/oidc.rs (Maven Central's zip), with
#    scripts/stack.sh. They keep running afterwards; `scripts/stack.sh stop` stops them.
# 2. Runs the whole workspace's tests: unit tests, the store contract suite on SQLite and
#    PostgreSQL, the HTTP and workflow tests on the embedded default, the crash tests, and
#    the production-path fault tests (separate processes on PostgreSQL + Kafka).
# 3. Runs the end-to-end workflow suite a second time, on PostgreSQL + Kafka with the
#    services in separate processes.
# 4. Fuzzes the HTTP API against its OpenAPI document (scripts/fuzz.sh: Schemathesis,
#    every check, a fixed seed).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust from https://rustup.rs first" >&2
    exit 1
fi

echo "== starting PostgreSQL, Kafka and Keycloak (scripts/stack.sh start)"
# Into a variable first: a stack that does not start stops the run here (inside `eval
# "$(...)"` its failure would be ignored, and every test needing it would fail instead).
stack_env="$(scripts/stack.sh start)"
set -a
eval "$stack_env"
set +a

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== the end-to-end workflow suite on PostgreSQL + Kafka, services in separate processes"
CORNERSHOP_TEST_BACKEND=production cargo test --locked --workspace --test workflow

echo "== the read models on PostgreSQL + Kafka: queries, verify after the workflow's kinds of orders, rebuild, a killed reporting process"
CORNERSHOP_TEST_BACKEND=production cargo test --locked --workspace --test readmodels

echo "== personal data on PostgreSQL + Kafka: nothing in clear in pg_dump or on the topics, erasure, the master key"
CORNERSHOP_TEST_BACKEND=production cargo test --locked --workspace --test privacy

echo "== API fuzzing: Schemathesis (--checks all) against a real embedded shop (scripts/fuzz.sh)"
./scripts/fuzz.sh
