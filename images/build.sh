#!/usr/bin/env bash
# Build the DSW managed images with podman (run as root; idempotent).
#
#   images/build.sh                 base (localhost/dsw/debian:bookworm) + notebook-cpu
#   images/build.sh base            only the local Debian base
#   images/build.sh cpu             base (if missing) + notebook-cpu
#   images/build.sh gpu             notebook-gpu on a CUDA runtime image ($CUDA_BASE_IMAGE)
#   images/build.sh all             base + cpu + gpu
#   images/build.sh --rebuild [...] rebuild even if the image is current (notebook images
#                                   are built with --no-cache; without it a notebook image
#                                   is rebuilt, with podman's layer cache, when its recipe
#                                   label io.dsw.recipe differs from the Containerfile's hash; the base is re-debootstrapped
#                                   only for an explicit `base` target)
#
# Image names and the tag come from images/images.yaml (single source of truth:
# the `image:` line of the entries with id notebook-cpu / notebook-gpu).
#
# Environment:
#   DEBIAN_MIRROR     Debian mirror for debootstrap (default: first URIs of
#                     /etc/apt/sources.list.d/debian.sources, else http://deb.debian.org/debian)
#   CUDA_BASE_IMAGE   base of the GPU image (default docker.io/nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04)
#   BASE_IMAGE        Debian base image name (default localhost/dsw/debian:bookworm)
#   CA_CERT_DIR       extra CA certificates copied into builds (default /usr/local/share/ca-certificates)
#   PODMAN_BUILD_ARGS extra arguments for `podman build` (e.g. "--network=host")
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGES_YAML="$HERE/images.yaml"
BASE_IMAGE="${BASE_IMAGE:-localhost/dsw/debian:bookworm}"
CUDA_BASE_IMAGE="${CUDA_BASE_IMAGE:-docker.io/nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04}"
CA_CERT_DIR="${CA_CERT_DIR:-/usr/local/share/ca-certificates}"
SUITE=bookworm

CLEANUP=()
cleanup() { local d; for d in "${CLEANUP[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

log() { echo "[images] $*" >&2; }
die() { echo "[images] ERROR: $*" >&2; exit 1; }

REBUILD=0
TARGETS=()
for a in "$@"; do
  case "$a" in
    --rebuild) REBUILD=1 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
    base|cpu|gpu|all) TARGETS+=("$a") ;;
    *) die "unknown argument: $a (see --help)" ;;
  esac
done
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=(cpu)

[[ $EUID -eq 0 ]] || die "run as root (debootstrap and rootful podman)"
command -v podman >/dev/null || die "podman not installed (see scripts/setup.sh)"
[[ -f "$IMAGES_YAML" ]] || die "missing $IMAGES_YAML"

# image reference of the entry with the given id in images.yaml
image_ref() {
  awk -v want="$1" '
    /^[[:space:]]*-[[:space:]]*id:/ { sub(/^[[:space:]]*-[[:space:]]*id:[[:space:]]*/, ""); gsub(/["\047[:space:]]/, ""); id=$0; next }
    /^[[:space:]]*image:/ && id==want { sub(/^[[:space:]]*image:[[:space:]]*/, ""); gsub(/["\047[:space:]]/, ""); print; exit }
  ' "$IMAGES_YAML"
}
CPU_IMAGE="$(image_ref notebook-cpu)"
GPU_IMAGE="$(image_ref notebook-gpu)"
[[ -n "$CPU_IMAGE" && -n "$GPU_IMAGE" ]] || die "could not read notebook-cpu/notebook-gpu image from $IMAGES_YAML"
TAG="${CPU_IMAGE##*:}"

debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local m=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    m="$(awk '/^URIs:/ { for (i=2;i<=NF;i++) if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list.d/debian.sources)"
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

exists() { podman image exists "$1"; }

build_base() {
  if exists "$BASE_IMAGE" && [[ $REBUILD -eq 0 || "$1" != explicit ]]; then
    log "$BASE_IMAGE exists, skipping"; return
  fi
  command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install -y debootstrap)"
  local mirror rootfs
  mirror="$(debian_mirror)"
  rootfs="$(mktemp -d /var/tmp/dsw-rootfs.XXXXXX)"
  CLEANUP+=("$rootfs")
  log "debootstrap --variant=minbase $SUITE from $mirror"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
  rm -f "$rootfs.log"

  # apt sources: main suite + updates + security (plain HTTP)
  local secmirror="${mirror%/debian}/debian-security"
  [[ "$mirror" == */debian ]] || secmirror="http://deb.debian.org/debian-security"
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $secmirror
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # keep the image lean: no recommends, no docs/man/locales from later installs
  cat >"$rootfs/etc/apt/apt.conf.d/90dsw-lean" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dpkg::Use-Pty "0";
EOF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90dsw-excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  # trim
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
         "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  : >"$rootfs/etc/hostname"
  rm -f "$rootfs/etc/resolv.conf"  # provided by the container runtime

  log "importing $BASE_IMAGE"
  exists "$BASE_IMAGE" && podman rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true
  tar --numeric-owner -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE $mirror" \
    --quiet - "$BASE_IMAGE" >/dev/null
  log "built $BASE_IMAGE"
}

# build context: Containerfile + host CA certificates (HTTPS is intercepted on some hosts)
make_context() {
  local ctx
  ctx="$(mktemp -d /var/tmp/dsw-ctx.XXXXXX)"
  cp "$HERE/notebook/Containerfile" "$HERE/notebook/jupyter_server_config.py" "$ctx/"
  mkdir -p "$ctx/certs"
  shopt -s nullglob
  local c
  for c in "$CA_CERT_DIR"/*.crt "$CA_CERT_DIR"/*/*.crt; do cp "$c" "$ctx/certs/"; done
  shopt -u nullglob
  echo "$ctx"
}

build_notebook() { # accelerator image base
  local accel="$1" image="$2" base="$3"
  # The image carries the hash of its recipe (Containerfile + server config): an image built
  # from an older recipe is rebuilt; podman's layer cache keeps the unchanged steps (Node,
  # code-server) so only the changed steps run again. --rebuild builds everything anew.
  local recipe; recipe="$(cat "$HERE/notebook/Containerfile" "$HERE/notebook/jupyter_server_config.py" | sha256sum | cut -c1-16)"
  if exists "$image" && [[ $REBUILD -eq 0 ]] \
      && [[ "$(podman image inspect --format '{{index .Labels "io.dsw.recipe"}}' "$image")" == "$recipe" ]]; then
    log "$image exists (recipe $recipe), skipping"; return
  fi
  if [[ "$base" == localhost/* ]]; then
    exists "$base" || die "base image $base missing (run: images/build.sh base)"
  elif ! exists "$base"; then
    log "base image $base not present locally, trying to pull it"
    if ! podman pull "$base" >&2; then
      die "cannot build $image: base image '$base' is not available locally and cannot be pulled (no registry reachable?). Load it first (podman load -i cuda.tar / podman pull from a mirror) or set CUDA_BASE_IMAGE to a local CUDA runtime image, then rerun 'images/build.sh gpu'."
    fi
  fi
  local ctx start; ctx="$(make_context)"; CLEANUP+=("$ctx")
  local nocache=(); [[ $REBUILD -eq 1 ]] && nocache=(--no-cache)
  start=$SECONDS
  log "building $image (accelerator=$accel, base=$base)"
  # shellcheck disable=SC2086
  if ! podman build "${nocache[@]}" ${PODMAN_BUILD_ARGS:-} \
      --build-arg "BASE_IMAGE=$base" \
      --build-arg "ACCELERATOR=$accel" \
      --build-arg "IMAGE_VERSION=$TAG" \
      --label "io.dsw.recipe=$recipe" \
      -t "$image" -f "$ctx/Containerfile" "$ctx"; then
    die "podman build of $image failed"
  fi
  log "built $image in $((SECONDS - start)) s"
}

want() { local t; for t in "${TARGETS[@]}"; do [[ $t == "$1" || $t == all ]] && return 0; done; return 1; }

if want base; then build_base explicit; fi
if want cpu; then build_base implicit; build_notebook cpu "$CPU_IMAGE" "$BASE_IMAGE"; fi
if want gpu; then build_notebook gpu "$GPU_IMAGE" "$CUDA_BASE_IMAGE"; fi

summary=()
for img in "$BASE_IMAGE" "$CPU_IMAGE" "$GPU_IMAGE"; do
  if exists "$img"; then
    summary+=("$img=$(podman image inspect --format '{{.Size}}' "$img" | awk '{printf "%.0fMB", $1/1e6}')")
  else
    summary+=("$img=absent")
  fi
done
echo "images: ${summary[*]}"
