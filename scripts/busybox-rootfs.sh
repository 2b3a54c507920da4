#!/usr/bin/env bash
# Fill DIR with the tests' image root: Debian's busybox-static and its applets' links.
# Usage: busybox-rootfs.sh DIR
set -euo pipefail
root=$1
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
cp /bin/busybox "$root/bin/busybox"
for tool in sh sleep ip ping nc wget cat httpd ls echo ifconfig route top ps kill true; do
    ln -sf busybox "$root/bin/$tool"
done
