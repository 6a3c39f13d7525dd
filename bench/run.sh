#!/usr/bin/env bash
# One command for every benchmark of one configuration; writes bench/results/<date>-<config>.md.
#   bench/run.sh [--embedded | --production] [--quick]
# See bench/run.py (Debian's python3, standard library only) and BENCHMARKS.md.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/run.py" "$@"
