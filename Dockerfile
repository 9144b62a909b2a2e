# The agent's image: FROM scratch, one static musl binary that scripts/build-release.sh wrote to
# dist/<arch>/ (no compiler, no shell, no base image: it builds without any registry).
#   scripts/build-release.sh x86_64-unknown-linux-musl && scripts/build-images.sh
# Multi-arch with buildx (TARGETARCH/TARGETVARIANT set by it): dist/amd64, dist/arm64, dist/armv7.
# The classic builder needs them as --build-arg (scripts/build-images.sh passes them).
FROM scratch

ARG TARGETARCH
ARG TARGETVARIANT
ARG VERSION=dev
ARG REVISION=unknown

LABEL org.opencontainers.image.title="orchestrator-agent" \
      org.opencontainers.image.description="Edge agent: runs OpenPLC runtimes on Docker as a mutual-TLS Socket.IO cloud commands" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/autonomy-logic/orchestrator-agent" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY dist/${TARGETARCH}${TARGETVARIANT}/orchestrator-agent /orchestrator-agent

# HOST_NAME names the agent's own container, as the original image sets it: the agent joins it to
# runtimes' internal networks and removes it last on delete_orchestrator (the installer sets it to
# the container's real name). The mTLS directory is where the installer mounts ~/.mtls (read-only).
ENV HOST_NAME=orchestrator_agent \
    ORCHESTRATOR_MTLS_DIR=/root/.mtls

# Root, deliberately: the agent drives the Docker socket (root-equivalent in any case) and reads a
# root-owned key and the state files the Python agent left; the installer drops every capability
# (--cap-drop ALL, no-new-privileges, read-only root filesystem). docs/install.md has the reasons.
USER 0:0

# Asks the running agent over <state-dir>/agent-health.sock: no cloud, no engine, no file writes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/orchestrator-agent", "health"]

ENTRYPOINT ["/orchestrator-agent"]
