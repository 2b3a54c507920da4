# dockernet-exporter image: the exporter as entrypoint, iptables (nft and legacy)
# and nft for the NAT collector, no build tools in the final stage.
#
#   make image                      # wheels built on the host, then docker build
#   docker build -t dockernet-exporter .               # from PyPI, official base
#   docker build --build-arg BASE_IMAGE=dockernet-base:bookworm .   # local base
#
# Run it (the minimum, found by test; see docs/deploy.md):
#   docker run -d --name dockernet-exporter --restart unless-stopped \
#     --network host --pid host --read-only --cap-drop ALL --cap-add NET_ADMIN --cap-add SYS_PTRACE \
#     --cap-add NET_RAW --security-opt no-new-privileges \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro dockernet-exporter
#
# It runs as root inside, with every capability dropped but the three above:
# opening other processes' network namespaces needs CAP_SYS_PTRACE, dumping
# their links by namespace id needs CAP_NET_ADMIN, iptables-legacy-save needs
# CAP_NET_RAW (drop it on nftables hosts), and a non-root uid gets
# none of them from --cap-add (Docker sets no ambient capabilities), while file
# capabilities on the interpreter would be ignored under no-new-privileges.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Offline when build/wheels exists (wheels built on the host: `make image`),
# else from the package index.
COPY . /src
RUN python3 -m venv /opt/venv \
    && if [ -d /src/build/wheels ]; then \
         /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /src/build/wheels dockernet-exporter; \
       else \
         /opt/venv/bin/pip install --no-cache-dir /src; \
       fi \
    && (/opt/venv/bin/pip uninstall -y -q pip setuptools wheel || true) \
    && /opt/venv/bin/dockernet-exporter --version

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
# Where the source lives, e.g. --build-arg SOURCE=https://git.example/dockernet-exporter
ARG SOURCE=""
LABEL org.opencontainers.image.title="dockernet-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Docker's host-side networking: veth <-> container map, bridges, NAT, orphaned veths" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}"
# The local base carries them already; the official one gets them from Debian.
RUN if ! command -v nft >/dev/null || ! command -v iptables-legacy >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends iptables nftables \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && nft --version && iptables-legacy --version && iptables-nft --version
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 9917
ENTRYPOINT ["dockernet-exporter"]
