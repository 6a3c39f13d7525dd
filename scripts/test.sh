#!/usr/bin/env bash
# The one command that runs every test on a fresh machine (the README's test command).
# It installs what the tests need and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust from https://rustup.rs first" >&2
    exit 1
fi

cargo test --workspace --locked
