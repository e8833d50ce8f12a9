#!/usr/bin/env bash
# Make sure a Docker-Engine-API endpoint is up and print its URL.
# Uses DOCKER_HOST when it already answers; otherwise starts podman's
# Docker-compatible service on a unix socket under $DSW_STATE (default /var/lib/dsw-hub).
set -euo pipefail
STATE="${DSW_STATE:-/var/lib/dsw-hub}"
SOCK="${DSW_ENGINE_SOCKET:-$STATE/podman.sock}"
ping() { curl -sf --max-time 3 --unix-socket "$1" http://d/_ping >/dev/null 2>&1; }
if [[ -n "${DOCKER_HOST:-}" && "$DOCKER_HOST" == unix://* ]] && ping "${DOCKER_HOST#unix://}"; then
  echo "$DOCKER_HOST"; exit 0
fi
if ! ping "$SOCK"; then
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK"
  nohup podman system service --time=0 "unix://$SOCK" >"$STATE/podman-service.log" 2>&1 &
  for _ in $(seq 1 100); do ping "$SOCK" && break; sleep 0.1; done
  ping "$SOCK" || { echo "podman service did not start; see $STATE/podman-service.log" >&2; exit 1; }
fi
echo "unix://$SOCK"
