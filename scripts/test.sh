#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole suite.
# Reuses what is already there (packages, venv, images), so a second run is quick.
#   scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/setup.sh" --test
export DSW_STATE="${DSW_STATE:-/var/lib/dsw-hub}"
mkdir -p "$DSW_STATE"
"$ROOT/scripts/engine.sh" >/dev/null
"$ROOT/images/build.sh"
exec "$ROOT/.venv/bin/python" -m pytest -ra "$@"
