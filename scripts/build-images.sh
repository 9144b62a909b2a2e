#!/usr/bin/env bash
# Builds the agent and netmon images for this machine's Docker engine from dist/<arch>/ (made by
# scripts/build-release.sh), with no registry: both are FROM scratch.
#
#   scripts/build-images.sh [--agent-image REF] [--netmon-image REF] [--save FILE]
#
# Defaults: orchestrator-agent:<version> and autonomy-netmon:<version> (the workspace version).
# --save writes both into one `docker save` archive, for `install.sh --image-archive FILE`.
# Prints each image's size and fails when one is over its budget (5 MiB). The release workflow
# builds the multi-arch images with buildx from the same Dockerfiles instead.
set -euo pipefail

BUDGET=$((5 * 1048576))

root=$(cd "$(dirname "$0")/.." && pwd)
die() {
  printf 'build-images.sh: %s\n' "$*" >&2
  exit 1
}

main() {
  cd "$root"
  local version revision agent netmon save=""
  version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  agent="orchestrator-agent:$version" netmon="autonomy-netmon:$version"
  while [ $# -gt 0 ]; do
    case "$1" in
      --agent-image) agent=${2:?--agent-image needs a value}; shift ;;
      --netmon-image) netmon=${2:?--netmon-image needs a value}; shift ;;
      --save) save=${2:?--save needs a value}; shift ;;
      -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
  done

  # Docker's platform names: TARGETARCH, and TARGETVARIANT for 32-bit ARM.
  local arch variant=""
  arch=$(docker version --format '{{.Server.Arch}}') || die "the Docker engine does not answer"
  [ "$arch" = arm ] && variant=v7
  local dir="dist/$arch$variant"
  if [ ! -x "$dir/orchestrator-agent" ] || [ ! -x "$dir/autonomy-netmon" ]; then
    die "$dir/ has no binaries: run scripts/build-release.sh for this machine's target first"
  fi

  local file ref size
  for pair in "Dockerfile=$agent" "Dockerfile.netmon=$netmon"; do
    file=${pair%%=*} ref=${pair#*=}
    # The classic builder (Debian's docker.io 20.10; no buildx needed) gets the platform as
    # build arguments; buildx would set them itself.
    DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -q -f "$file" \
      --build-arg "TARGETARCH=$arch" --build-arg "TARGETVARIANT=$variant" \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
      -t "$ref" . >/dev/null 2>"$root/target/build-images.err" ||
      die "docker build -f $file failed: $(cat "$root/target/build-images.err")"
    size=$(docker image inspect --format '{{.Size}}' "$ref")
    printf '%-50s %9s bytes (%s MiB)\n' "$ref" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')"
    [ "$size" -le "$BUDGET" ] || die "$ref is $size bytes, over the image budget of $BUDGET"
  done
  if [ -n "$save" ]; then
    docker save -o "$save" "$agent" "$netmon" || die "docker save failed"
    printf 'saved both to %s\n' "$save"
  fi
}

main "$@"
