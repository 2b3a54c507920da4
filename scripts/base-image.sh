#!/usr/bin/env bash
# A local Debian base image for `docker build` on hosts that reach no image
# registry: debootstrap a minimal bookworm with Python, iptables (nft and
# legacy) and nft, then `docker import` it. Idempotent: does nothing when the
# image already exists, so re-runs are instant.
#   scripts/base-image.sh [IMAGE]      (default dockernet-base:bookworm)
set -euo pipefail

IMAGE="${1:-${BASE_IMAGE:-dockernet-base:bookworm}}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-venv,iptables,nftables,iproute2

log() { echo "base-image: $*" >&2; }

# dockerd may be restarting (tests do that); wait for it rather than fail.
wait_docker() {
    for _ in $(seq 1 60); do timeout 5 docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
    log "dockerd is not answering"; exit 1
}

wait_docker
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root=$(mktemp -d /var/tmp/dockernet-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
log "debootstrap $SUITE into $root (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# What an image needs no copy of: package lists, caches, docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
wait_docker
tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
log "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
