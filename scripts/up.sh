#!/usr/bin/env bash
# Set up DSW Hub on this machine and run it at http://localhost:8000 (Ctrl-C stops the hub;
# running instances keep running and are picked up at the next start).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/scripts/setup.sh"
export DSW_STATE="${DSW_STATE:-/var/lib/dsw-hub}"
mkdir -p "$DSW_STATE"
export DSW_ENGINE_URL="$("$ROOT/scripts/engine.sh")"
"$ROOT/images/build.sh"
cd "$DSW_STATE"
exec "$ROOT/.venv/bin/jupyterhub" -f "$ROOT/hub_config/jupyterhub_config.py" "$@"
