#!/usr/bin/env bash
# A standalone containerd with its CRI plugin for the tests: its own root, state, sockets, runc
# root and CNI configuration, so that it never meets Docker's containerd nor Podman's CNI files.
# Images are written by hand (no registry is reachable): a pause and a busybox image from
# busybox-static, imported as docker archives. Safe to re-run.
# Usage: cri-env.sh [start|stop|images]
set -euo pipefail

CRI_DIR="${CRI_DIR:-/run/dockernet-cri}"
CRI_ROOT="${CRI_ROOT:-/var/lib/dockernet-cri}"
CRI_CONF_DIR=/etc/dockernet-cri
CRI_SOCKET="$CRI_DIR/containerd.sock"
CRI_LOG=/var/log/dockernet-test-containerd.log
CRI_BRIDGE="${CRI_BRIDGE:-dncni0}"
CRI_SUBNET="${CRI_SUBNET:-198.18.128.0/20}"
PAUSE_IMAGE=dockernet.test/pause:1
BUSYBOX_IMAGE=dockernet.test/busybox:1

log() { echo "cri-env: $*" >&2; }

write_config() {
    mkdir -p "$CRI_CONF_DIR/net.d" "$CRI_DIR" "$CRI_ROOT"
    cat >"$CRI_CONF_DIR/config.toml" <<TOML
version = 2
root = "$CRI_ROOT/root"
state = "$CRI_DIR/state"
disabled_plugins = ["io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CRI_SOCKET"

[ttrpc]
  address = "$CRI_DIR/containerd.sock.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CRI_ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CRI_CONF_DIR/net.d"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$CRI_DIR/runc"
        SystemdCgroup = false
TOML
    cat >"$CRI_CONF_DIR/net.d/10-dockernet.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "dockernet-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CRI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CRI_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

ready() { timeout 5 ctr --address "$CRI_SOCKET" version >/dev/null 2>&1; }

# containerd pins each pod's namespace in /run/netns. The first `ip netns add` on a host (the tests
# run several) bind-mounts that directory onto itself; a pin made before that is hidden under the
# new mount, and containerd can never remove it (EBUSY). So do iproute2's step first.
netns_dir() {
    mkdir -p /run/netns
    mountpoint -q /run/netns || mount --bind /run/netns /run/netns
    mount --make-rshared /run/netns
}

start() {
    write_config
    netns_dir
    ready && return 0
    log "starting containerd with CRI on $CRI_SOCKET (log: $CRI_LOG)"
    setsid /usr/bin/containerd --config "$CRI_CONF_DIR/config.toml" >>"$CRI_LOG" 2>&1 </dev/null 9>&- &  # without test-env.sh's lock
    for _ in $(seq 1 60); do
        ready && return 0
        sleep 0.5
    done
    log "containerd did not come up; last lines of $CRI_LOG:"
    tail -n 20 "$CRI_LOG" >&2
    exit 1
}

# One docker-archive image: a single layer (the rootfs dir), a config naming its diff id.
import_image() {
    local tag=$1 rootfs=$2 cmd=$3 work
    work=$(mktemp -d)
    tar -C "$rootfs" -cf "$work/layer.tar" .
    local diff
    diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    printf '{"architecture":"amd64","os":"linux","config":{"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$cmd" "$diff" >"$work/config.json"
    local config
    config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
    mv "$work/config.json" "$work/$config.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$config" "$tag" >"$work/manifest.json"
    tar -C "$work" -c manifest.json "$config.json" layer.tar |
        ctr --address "$CRI_SOCKET" -n k8s.io images import - >/dev/null
    rm -rf "$work"
}

images() {
    local have
    have=$(ctr --address "$CRI_SOCKET" -n k8s.io images ls -q)
    if grep -qx "$PAUSE_IMAGE" <<<"$have" && grep -qx "$BUSYBOX_IMAGE" <<<"$have"; then
        return 0
    fi
    log "importing $PAUSE_IMAGE and $BUSYBOX_IMAGE"
    local root
    root=$(mktemp -d)
    bash "$(dirname "$0")/busybox-rootfs.sh" "$root"
    printf '#!/bin/sh\ntrap "exit 0" TERM INT\nwhile :; do sleep 3600 & wait $!; done\n' >"$root/pause"
    chmod +x "$root/pause"
    import_image "$PAUSE_IMAGE" "$root" '["/pause"]'
    rm "$root/pause"
    import_image "$BUSYBOX_IMAGE" "$root" '["/bin/sh"]'
    rm -rf "$root"
}

stop() {
    local pid
    pid=$(pgrep -f "containerd --config $CRI_CONF_DIR/config.toml" | head -n1 || true)
    [ -n "$pid" ] && kill "$pid"
    return 0
}

case "${1:-start}" in
    start) start; images; log "ready: $CRI_SOCKET" ;;
    images) images ;;
    stop) stop ;;
    *) log "usage: $0 [start|stop|images]"; exit 2 ;;
esac
