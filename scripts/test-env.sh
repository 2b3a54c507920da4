#!/usr/bin/env bash
# Prepare this machine for the test suite: system packages, a running dockerd
# with non-private address pools, the local busybox test image, and a standalone
# containerd with its CRI plugin and hand-made images (scripts/cri-env.sh), and rootful
# Podman's Docker-compatible service (scripts/podman-env.sh).
# Safe to re-run: every step checks first and does only what is missing.
set -euo pipefail

TEST_IMAGE="${TEST_IMAGE:-dockernet-test:busybox}"
APT_PACKAGES=(docker.io iptables nftables busybox-static prometheus prometheus-node-exporter iproute2 bridge-utils docker-compose debootstrap openssl curl systemd containerd containernetworking-plugins runc podman netavark chromium chromium-driver psmisc conntrack)
DOCKERD_LOG=/var/log/dockernet-test-dockerd.log

log() { echo "test-env: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root (installs packages, starts dockerd, creates namespaces)"
        exit 1
    fi
}

install_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_ready() { timeout 5 docker info >/dev/null 2>&1; }

start_dockerd() {
    docker_ready && return 0
    if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null; then
        log "dockerd is running but not answering yet; waiting"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        rm -f /var/run/docker.pid
        setsid /usr/sbin/dockerd \
            --bip 198.18.0.1/24 \
            --default-address-pool base=198.19.0.0/16,size=24 \
            >>"$DOCKERD_LOG" 2>&1 < /dev/null 9>&- &
    fi
    for _ in $(seq 1 60); do
        docker_ready && return 0
        sleep 0.5
    done
    log "dockerd did not come up; last lines of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" >&2
    exit 1
}

build_test_image() {
    docker image inspect "$TEST_IMAGE" >/dev/null 2>&1 && return 0
    log "building $TEST_IMAGE from busybox-static"
    local root
    root=$(mktemp -d)
    bash "$(dirname "$0")/busybox-rootfs.sh" "$root"
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$TEST_IMAGE" >/dev/null
    rm -rf "$root"
}

# One at a time: two runs at once would both start a dockerd, and the loser's cleanup would
# remove the winner's pid file. Taken after apt (whose package scripts may start services), and
# no daemon started here inherits it (9>&-), or the next run would wait for ever.
lock_env() {
    exec 9>/run/dockernet-test-env.lock
    flock -w 300 9 || {
        log "another test-env.sh has held /run/dockernet-test-env.lock for 5 minutes; holders:"
        fuser -v /run/dockernet-test-env.lock >&2 || true
        exit 1
    }
}

need_root
case "${1:-all}" in
    all)
        install_packages
        lock_env
        start_dockerd
        build_test_image
        bash "$(dirname "$0")/cri-env.sh" start
        bash "$(dirname "$0")/podman-env.sh" start
        log "ready: dockerd $(docker version -f '{{.Server.Version}}'), image $TEST_IMAGE, CRI containerd, Podman"
        ;;
    dockerd)
        lock_env
        start_dockerd
        ;;
    dockerd-if-installed)
        if command -v dockerd >/dev/null; then lock_env; start_dockerd
        else log "dockerd is not installed; the exporter will serve what the kernel knows (apt-get install docker.io)"
        fi
        ;;
    *) log "usage: $0 [all|dockerd|dockerd-if-installed]"; exit 2 ;;
esac
