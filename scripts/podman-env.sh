#!/usr/bin/env bash
# Rootful Podman's Docker-compatible API for the tests: its own containers.conf and storage.conf
# (own graphroot, runroot, network config dir; netavark; subnets in 198.18.0.0/15), served on its
# own socket, with the busybox test image imported. Safe to re-run.
# Usage: podman-env.sh [start|stop]
set -euo pipefail

PODMAN_DIR="${PODMAN_DIR:-/run/dockernet-podman}"
PODMAN_ROOT="${PODMAN_ROOT:-/var/lib/dockernet-podman}"
PODMAN_CONF_DIR=/etc/dockernet-podman
PODMAN_SOCKET="$PODMAN_DIR/podman.sock"
PODMAN_LOG=/var/log/dockernet-test-podman.log
PODMAN_IMAGE="${TEST_IMAGE:-dockernet-test:busybox}"
export CONTAINERS_CONF="$PODMAN_CONF_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_CONF_DIR/storage.conf"

log() { echo "podman-env: $*" >&2; }

write_config() {
    mkdir -p "$PODMAN_CONF_DIR/networks" "$PODMAN_DIR" "$PODMAN_ROOT"
    cat >"$CONTAINERS_CONF" <<TOML
[containers]
# This VM lacks CAP_SYS_RESOURCE: no limit may be raised above the service's own (which sets its
# own process limit to 32768).
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]

[network]
network_backend = "netavark"
network_config_dir = "$PODMAN_CONF_DIR/networks"
default_subnet = "198.18.160.0/24"
default_subnet_pools = [{"base" = "198.18.176.0/20", "size" = 24}]

[engine]
tmp_dir = "$PODMAN_DIR/tmp"
TOML
    cat >"$CONTAINERS_STORAGE_CONF" <<TOML
[storage]
driver = "overlay"
graphroot = "$PODMAN_ROOT/storage"
runroot = "$PODMAN_DIR/storage"
TOML
}

podman_() { podman --url "unix://$PODMAN_SOCKET" --remote "$@"; }
ready() { timeout 5 curl -sf --unix-socket "$PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1; }

start() {
    write_config
    if ! ready; then
        log "starting podman system service on $PODMAN_SOCKET (log: $PODMAN_LOG)"
        # From /: its conmon children fail ("Failed to get working directory") once the directory
        # it was started in is gone, a clone that CI removed, say.
        # exec: no shell lingers holding test-env.sh's lock (fd 9).
        (cd / && exec setsid podman system service --time=0 "unix://$PODMAN_SOCKET" \
            >>"$PODMAN_LOG" 2>&1 </dev/null) 9>&- &
        for _ in $(seq 1 60); do
            ready && break
            sleep 0.5
        done
        ready || { log "podman did not come up; last lines of $PODMAN_LOG:"; tail -n 20 "$PODMAN_LOG" >&2; exit 1; }
    fi
    podman_ image exists "$PODMAN_IMAGE" && return 0
    log "importing $PODMAN_IMAGE from busybox-static"
    local root
    root=$(mktemp -d)
    bash "$(dirname "$0")/busybox-rootfs.sh" "$root"
    tar -C "$root" -c . | podman_ import --change 'CMD ["/bin/sh"]' - "$PODMAN_IMAGE" >/dev/null
    rm -rf "$root"
}

stop() {
    local pid
    pid=$(pgrep -f "podman system service --time=0 unix://$PODMAN_SOCKET" | head -n1 || true)
    [ -n "$pid" ] && kill "$pid"
    return 0
}

case "${1:-start}" in
    start) start; log "ready: $PODMAN_SOCKET" ;;
    stop) stop ;;
    *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
