#!/usr/bin/env bash
# Installs, updates or removes the orchestrator agent on a device (Raspberry Pi 2/3/4/5, any
# armv7, arm64 or amd64 Linux with Docker):
#
#   curl -fsSL https://getedge.me | sudo bash                         install or update
#   curl -fsSL https://getedge.me | sudo bash -s -- --uninstall       remove the containers
#   curl -fsSL https://getedge.me | sudo bash -s -- --uninstall --purge   ... and the volume,
#                                                                    runtimes and credentials
#   sudo bash install.sh --help                                       every option
#
# What it does: checks the machine (architecture, docker, openssl, curl, jq), provisions the
# device's identity once (an id from the provisioning API, an RSA-4096 key made here and a CSR for
# CN=<id>, enrolled; the returned certificate is checked before anything is replaced), gets the
# images (pulled, or loaded from --image-archive for offline installs), then runs the shared volume,
# the network monitor and the agent with --restart unless-stopped. Running it again keeps a valid
# identity and the volume and replaces the two containers: that is also how the Python agent is
# migrated in place (same names, its state files are adopted). A failure before the containers
# are replaced leaves the running install as it was.
#
# Everything is in functions and `main "$@"` is the last line: under `curl | bash`, bash has read
# the whole script before anything runs, and a truncated download runs nothing.
set -euo pipefail

# --- defaults (each one has a flag and an environment variable) -----------------------------------
DEFAULT_API_BASE=https://api.autonomylogic.com
DEFAULT_CLOUD_URL=https://api.autonomylogic.com:3001
DEFAULT_AGENT_IMAGE=ghcr.io/autonomy-logic/orchestrator-agent:latest
DEFAULT_NETMON_IMAGE=ghcr.io/autonomy-logic/autonomy-netmon:latest
DEFAULT_AGENT_NAME=orchestrator_agent
DEFAULT_NETMON_NAME=autonomy_netmon
DEFAULT_VOLUME=orchestrator-shared
DEFAULT_STATE_DIR=/var/orchestrator

# The subject the original installer requests (upstream-head §11.1); the CN is the device's id.
CSR_SUBJECT_PREFIX="C=BR, ST=SP, L=SaoPaulo, O=AutonomyLogic, OU=Production"
# Inside the agent's container (the original's mount point; the image points the agent at it).
CONTAINER_MTLS_DIR=/root/.mtls
# Capabilities the network monitor needs (docs/netmon.md "Privileges"): watching rtnetlink and
# serving its socket need none; dedicated NICs do: NET_ADMIN to move a link between network
# namespaces and set it up, SYS_ADMIN to enter a runtime's namespace (setns) to give it back,
# SYS_PTRACE to open /proc/<pid>/ns/net of a runtime that holds capabilities netmon lacks. With
# --pid host, so a runtime's PID is netmon's too. Serial ports: MKNOD to create a port's node in a
# runtime's /dev, SYS_CHROOT (with SYS_ADMIN) to setns into the runtime's mount namespace for it,
# and the host's /dev read-only (NETMON_MOUNTS) to see the ports and their by-id links. DHCP:
# NET_BIND_SERVICE for the client's port 68 (a Wi-Fi vNIC's client runs in the host's namespace,
# where ports below 1024 are privileged). Not --privileged.
NETMON_CAPS=(NET_ADMIN NET_BIND_SERVICE SYS_ADMIN SYS_PTRACE MKNOD SYS_CHROOT)
# Read-only is enough: netmon only stats the host's nodes; it creates nodes in runtimes' own /dev.
NETMON_MOUNTS=(-v /dev:/dev:ro)

# --- output --------------------------------------------------------------------------------------
c_red="" c_green="" c_yellow="" c_bold="" c_off=""
setup_colours() {
  if [ -t 1 ] && command -v tput >/dev/null 2>&1 && [ "$(tput colors 2>/dev/null || echo 0)" -ge 8 ]; then
    c_red=$(tput setaf 1) c_green=$(tput setaf 2) c_yellow=$(tput setaf 3) c_bold=$(tput bold) c_off=$(tput sgr0)
  fi
}
info() { printf '[INFO] %s\n' "$*"; }
ok() { printf '%s[OK]%s %s\n' "$c_green" "$c_off" "$*"; }
warn() { printf '%s[WARNING]%s %s\n' "$c_yellow" "$c_off" "$*" >&2; }
die() {
  printf '%s[ERROR]%s %s\n' "$c_red" "$c_off" "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
Usage: install.sh [options]

Installs or updates the orchestrator agent and its network monitor on this device.

Options (environment variable in brackets):
  --api-base URL        provisioning API [ORCHESTRATOR_API_BASE] (default $DEFAULT_API_BASE)
  --cloud-url URL       cloud the agent connects to [ORCHESTRATOR_SERVER] (default $DEFAULT_CLOUD_URL)
  --ca-file PEM         extra trusted CA for the provisioning API and the cloud, e.g. staging
                        [ORCHESTRATOR_CA_FILE]
  --agent-image REF     [ORCHESTRATOR_AGENT_IMAGE] (default $DEFAULT_AGENT_IMAGE)
  --netmon-image REF    [ORCHESTRATOR_NETMON_IMAGE] (default $DEFAULT_NETMON_IMAGE)
  --runtime-image REF   image of the PLC runtimes the agent creates [ORCHESTRATOR_RUNTIME_IMAGE]
                        (default: the agent's own)
  --image-archive FILE  load the images from this file (docker save; offline install) instead of
                        pulling them [ORCHESTRATOR_IMAGE_ARCHIVE]
  --reprovision         get a new identity even when the current one is valid
  --log-level LEVEL     the agent's log level [ORCHESTRATOR_LOG_LEVEL]
  --uninstall           remove the agent and network monitor containers (runtimes keep running)
  --purge               with --uninstall: also remove the runtimes and networks the agent made,
                        the shared volume, the credentials and the two images
  -h, --help            this text

For tests and a second instance on one engine (defaults are the names every install uses):
  --mtls-dir DIR        credentials directory [ORCHESTRATOR_MTLS_DIR] (default \$HOME/.mtls)
  --agent-name NAME     agent container [ORCHESTRATOR_AGENT_CONTAINER] (default $DEFAULT_AGENT_NAME)
  --netmon-name NAME    network monitor container [ORCHESTRATOR_NETMON_CONTAINER]
                        (default $DEFAULT_NETMON_NAME)
  --volume NAME         shared volume [ORCHESTRATOR_VOLUME] (default $DEFAULT_VOLUME)
  --state-dir DIR       where the volume is mounted in both containers [ORCHESTRATOR_STATE_DIR]
                        (default $DEFAULT_STATE_DIR)
EOF
}

# --- configuration -------------------------------------------------------------------------------
parse_args() {
  API_BASE=${ORCHESTRATOR_API_BASE:-$DEFAULT_API_BASE}
  CLOUD_URL=${ORCHESTRATOR_SERVER:-$DEFAULT_CLOUD_URL}
  CA_FILE=${ORCHESTRATOR_CA_FILE:-}
  AGENT_IMAGE=${ORCHESTRATOR_AGENT_IMAGE:-$DEFAULT_AGENT_IMAGE}
  NETMON_IMAGE=${ORCHESTRATOR_NETMON_IMAGE:-$DEFAULT_NETMON_IMAGE}
  RUNTIME_IMAGE=${ORCHESTRATOR_RUNTIME_IMAGE:-}
  IMAGE_ARCHIVE=${ORCHESTRATOR_IMAGE_ARCHIVE:-}
  LOG_LEVEL=${ORCHESTRATOR_LOG_LEVEL:-}
  MTLS_DIR=${ORCHESTRATOR_MTLS_DIR:-${HOME:?HOME is not set}/.mtls}
  AGENT_NAME=${ORCHESTRATOR_AGENT_CONTAINER:-$DEFAULT_AGENT_NAME}
  NETMON_NAME=${ORCHESTRATOR_NETMON_CONTAINER:-$DEFAULT_NETMON_NAME}
  VOLUME=${ORCHESTRATOR_VOLUME:-$DEFAULT_VOLUME}
  STATE_DIR=${ORCHESTRATOR_STATE_DIR:-$DEFAULT_STATE_DIR}
  REPROVISION="" UNINSTALL="" PURGE=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --api-base) API_BASE=$(need_value "$@"); shift ;;
      --cloud-url) CLOUD_URL=$(need_value "$@"); shift ;;
      --ca-file) CA_FILE=$(need_value "$@"); shift ;;
      --agent-image) AGENT_IMAGE=$(need_value "$@"); shift ;;
      --netmon-image) NETMON_IMAGE=$(need_value "$@"); shift ;;
      --runtime-image) RUNTIME_IMAGE=$(need_value "$@"); shift ;;
      --image-archive) IMAGE_ARCHIVE=$(need_value "$@"); shift ;;
      --log-level) LOG_LEVEL=$(need_value "$@"); shift ;;
      --mtls-dir) MTLS_DIR=$(need_value "$@"); shift ;;
      --agent-name) AGENT_NAME=$(need_value "$@"); shift ;;
      --netmon-name) NETMON_NAME=$(need_value "$@"); shift ;;
      --volume) VOLUME=$(need_value "$@"); shift ;;
      --state-dir) STATE_DIR=$(need_value "$@"); shift ;;
      --reprovision) REPROVISION=1 ;;
      --uninstall) UNINSTALL=1 ;;
      --purge) PURGE=1 ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  [ -z "$PURGE" ] || [ -n "$UNINSTALL" ] || die "--purge goes with --uninstall"
  API_BASE=${API_BASE%/}
  local n
  for n in "$AGENT_NAME" "$NETMON_NAME" "$VOLUME"; do
    [[ "$n" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "'$n' is not a valid Docker name"
  done
  [ "$AGENT_NAME" != "$NETMON_NAME" ] || die "the agent and the network monitor need different container names"
  [[ "$STATE_DIR" == /* ]] || die "--state-dir must be an absolute path"
  [[ "$MTLS_DIR" == /* ]] || MTLS_DIR="$PWD/$MTLS_DIR"
  if [ -z "$UNINSTALL" ]; then
    [[ "$API_BASE" == https://* ]] || die "--api-base must be an https:// URL"
    [[ "$CLOUD_URL" == https://* ]] || die "--cloud-url must be an https:// URL"
    if [ -n "$CA_FILE" ]; then
      [ -r "$CA_FILE" ] || die "--ca-file $CA_FILE cannot be read"
      openssl x509 -noout -in "$CA_FILE" 2>/dev/null || die "--ca-file $CA_FILE is not a PEM certificate"
    fi
    [ -z "$IMAGE_ARCHIVE" ] || [ -r "$IMAGE_ARCHIVE" ] || die "--image-archive $IMAGE_ARCHIVE cannot be read"
  fi
}

# Prints the value of the option in $1 (the rest of the arguments follow it).
need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi
  printf '%s' "$2"
}

# --- the machine ---------------------------------------------------------------------------------
check_platform() {
  [ "$(uname -s)" = Linux ] || die "this installer supports Linux only"
  if [ "$(id -u)" -ne 0 ]; then
    if [ -f "$0" ] && command -v sudo >/dev/null 2>&1; then
      info "root is needed (Docker, credentials): re-running with sudo"
      exec sudo -- bash "$0" "$@"
    fi
    die "run it as root: curl -fsSL <url> | sudo bash"
  fi
  case "$(uname -m)" in
    x86_64 | amd64) MACHINE=amd64 ;;
    aarch64 | arm64) MACHINE=arm64 ;;
    armv7l | armv8l) MACHINE=armv7 ;;
    armv6l) die "ARMv6 (Raspberry Pi 1, Zero, Zero W) is not supported: the agent needs ARMv7 or newer (Pi 2 and later, Zero 2)" ;;
    *) die "unsupported architecture $(uname -m) (supported: armv7l, aarch64, x86_64)" ;;
  esac
}

check_dependencies() {
  local missing=() cmd
  for cmd in docker openssl curl jq; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    install_packages "${missing[@]}"
  fi
  if ! docker info >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1; then
      info "starting the Docker service"
      systemctl enable --now docker >/dev/null 2>&1 || true
    fi
    docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed); start it and run this again"
  fi
  # The engine decides which image variant runs: a 64-bit kernel with a 32-bit Docker is arm.
  ENGINE_ARCH=$(docker version --format '{{.Server.Arch}}' 2>/dev/null || echo unknown)
  case "$ENGINE_ARCH" in
    amd64 | arm64) PLATFORM="linux/$ENGINE_ARCH" ;;
    arm) PLATFORM=linux/arm/v7 ;;
    *) die "the Docker engine reports architecture '$ENGINE_ARCH'; supported: amd64, arm64, arm (v7)" ;;
  esac
  ok "machine: $MACHINE ($(uname -m)), Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) ($PLATFORM)"
}

install_packages() {
  local pkgs=() cmd
  for cmd in "$@"; do
    case "$cmd" in
      docker) command -v apt-get >/dev/null 2>&1 && pkgs+=(docker.io) || pkgs+=(docker) ;;
      *) pkgs+=("$cmd") ;;
    esac
  done
  info "installing missing dependencies: ${pkgs[*]}"
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q "${pkgs[@]}"
  elif command -v yum >/dev/null 2>&1; then
    yum install -y -q "${pkgs[@]}"
  else
    false
  fi || die "could not install ${pkgs[*]}; install them (docker, openssl, curl, jq) and run this again"
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing ${pkgs[*]}"
  done
}

# --- identity ------------------------------------------------------------------------------------
# Succeeds when $1 (cert) and $2 (key) are a usable client identity: both parse, the key is the
# certificate's, the certificate is valid now and allows TLS client authentication; sets CERT_CN.
# Otherwise sets ID_PROBLEM to why and fails.
check_identity() {
  local crt=$1 key=$2 purpose
  CERT_CN="" ID_PROBLEM=""
  if ! openssl x509 -noout -in "$crt" 2>/dev/null; then
    ID_PROBLEM="not a PEM certificate"
  elif ! openssl pkey -noout -in "$key" 2>/dev/null; then
    ID_PROBLEM="the private key cannot be read"
  elif [ "$(openssl x509 -noout -pubkey -in "$crt")" != "$(openssl pkey -pubout -in "$key")" ]; then
    ID_PROBLEM="the certificate does not match the private key"
  elif ! openssl x509 -noout -checkend 0 -in "$crt" >/dev/null 2>&1; then
    ID_PROBLEM="the certificate expired on $(openssl x509 -noout -enddate -in "$crt" | cut -d= -f2)"
  else
    purpose=$(openssl x509 -noout -purpose -in "$crt" 2>/dev/null) || purpose=""
    CERT_CN=$(cert_cn "$crt")
    if ! grep -q '^SSL client : Yes' <<<"$purpose"; then
      ID_PROBLEM="the certificate is not valid for TLS client authentication"
    elif [ -z "$CERT_CN" ]; then
      ID_PROBLEM="the certificate has no subject CN"
    fi
  fi
  [ -z "$ID_PROBLEM" ]
}

# The subject CN of certificate $1 (empty when none).
cert_cn() {
  openssl x509 -noout -subject -nameopt RFC2253 -in "$1" 2>/dev/null |
    sed -e 's/^subject=//' | tr ',' '\n' | sed -n 's/^CN=//p' | head -n 1
}

# Keeps the current identity when it is valid (unless --reprovision), else provisions a new one.
ensure_identity() {
  mkdir -p "$MTLS_DIR"
  chmod 700 "$MTLS_DIR"
  local crt="$MTLS_DIR/client.crt" key="$MTLS_DIR/client.key"
  ID_EXPIRES_AT="" ID_EXPIRES_IN="" NEW_IDENTITY=""
  if [ -f "$crt" ] && [ -f "$key" ]; then
    if check_identity "$crt" "$key"; then
      if [ -z "$REPROVISION" ]; then
        DEVICE_ID=$CERT_CN
        fix_identity_modes
        ok "keeping the existing identity $DEVICE_ID (valid until $(openssl x509 -noout -enddate -in "$crt" | cut -d= -f2); --reprovision makes a new one)"
        return 0
      fi
      info "--reprovision: replacing the identity $CERT_CN"
    else
      warn "the identity in $MTLS_DIR is not usable ($ID_PROBLEM): provisioning a new one"
    fi
  fi
  provision
}

fix_identity_modes() {
  chmod 600 "$MTLS_DIR/client.key"
  chmod 644 "$MTLS_DIR/client.crt"
  # The agent runs as root without CAP_DAC_OVERRIDE: root must own what it reads.
  chown 0:0 "$MTLS_DIR" "$MTLS_DIR/client.key" "$MTLS_DIR/client.crt"
}

# curl against the provisioning API, trusting the system roots plus --ca-file.
api_curl() {
  local args=(--silent --show-error --connect-timeout 15 --max-time 120 --retry 3 --retry-delay 2)
  [ -n "$CA_BUNDLE" ] && args+=(--cacert "$CA_BUNDLE")
  curl "${args[@]}" "$@"
}

provision() {
  local work resp code crt_new key_new
  work=$(mktemp -d "$MTLS_DIR/.provision.XXXXXX")
  WORK_DIRS+=("$work")

  info "requesting a device id from $API_BASE/orchestrators/id"
  resp="$work/id.json"
  code=$(api_curl -o "$resp" -w '%{http_code}' "$API_BASE/orchestrators/id") ||
    die "cannot reach the provisioning API at $API_BASE (check the network and the address); nothing was changed"
  [ "$code" = 200 ] || die "the provisioning API answered HTTP $code to the id request: $(head -c 300 "$resp")"
  jq -e . "$resp" >/dev/null 2>&1 || die "the provisioning API's id answer is not JSON: $(head -c 300 "$resp")"
  DEVICE_ID=$(jq -r '.data.id // empty | tostring' "$resp")
  [ -n "$DEVICE_ID" ] || die "the provisioning API's answer has no data.id: $(head -c 300 "$resp")"
  # It goes into an OpenSSL config and a certificate subject: no room for anything but a name.
  [[ "$DEVICE_ID" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || die "the provisioning API returned an invalid id '$DEVICE_ID'"
  ID_EXPIRES_AT=$(jq -r '.data.expiresAt // empty | tostring' "$resp")
  ID_EXPIRES_IN=$(jq -r '.data.expiresIn // empty | tostring' "$resp")
  ok "device id: $DEVICE_ID"

  info "generating an RSA-4096 key and a certificate request for CN=$DEVICE_ID"
  key_new="$work/client.key"
  (umask 077 && openssl genrsa -out "$key_new" 4096 2>/dev/null) || die "openssl genrsa failed"
  cat >"$work/csr.conf" <<EOF
[req]
prompt = no
distinguished_name = dn
req_extensions = ext

[dn]
$(tr ',' '\n' <<<"$CSR_SUBJECT_PREFIX" | sed 's/^ *//; s/=/ = /')
CN = $DEVICE_ID

[ext]
keyUsage = digitalSignature, keyEncipherment, dataEncipherment
extendedKeyUsage = clientAuth
EOF
  openssl req -new -key "$key_new" -out "$work/client.csr" -config "$work/csr.conf" 2>/dev/null ||
    die "openssl req failed"

  info "enrolling at $API_BASE/orchestrators/enroll"
  resp="$work/enroll.json"
  code=$(api_curl -o "$resp" -w '%{http_code}' -X POST -F "csr=@$work/client.csr;filename=client.csr" \
    "$API_BASE/orchestrators/enroll") ||
    die "the enrollment request failed (network?); nothing was changed"
  [[ "$code" =~ ^[0-9]{3}$ ]] || die "invalid HTTP response code from the enrollment: $code"
  [ "$code" = 200 ] || die "enrollment refused: HTTP $code: $(head -c 300 "$resp"); nothing was changed"
  jq -e . "$resp" >/dev/null 2>&1 || die "the enrollment answer is not JSON: $(head -c 300 "$resp")"
  local status
  status=$(jq -r '.statusCode // empty | tostring' "$resp")
  [ -z "$status" ] || [ "$status" = 200 ] || die "enrollment refused: statusCode $status: $(head -c 300 "$resp"); nothing was changed"
  crt_new="$work/client.crt"
  jq -r '.data.certificate // empty' "$resp" >"$crt_new"
  [ -s "$crt_new" ] || die "the enrollment answer has no data.certificate: $(head -c 300 "$resp")"
  local enrolled_id
  enrolled_id=$(jq -r '.data.id // empty | tostring' "$resp")
  [ -z "$enrolled_id" ] || [ "$enrolled_id" = "$DEVICE_ID" ] ||
    die "the enrollment answer is for id $enrolled_id, not $DEVICE_ID; nothing was changed"
  check_identity "$crt_new" "$key_new" ||
    die "the certificate returned by the enrollment is unusable: $ID_PROBLEM; nothing was changed"
  [ "$CERT_CN" = "$DEVICE_ID" ] ||
    die "the certificate returned by the enrollment is for CN=$CERT_CN, not the id $DEVICE_ID; nothing was changed"

  # Checked: now replace, the old pair kept once as *.previous.
  local f
  for f in client.crt client.key; do
    [ -f "$MTLS_DIR/$f" ] && mv -f "$MTLS_DIR/$f" "$MTLS_DIR/$f.previous"
  done
  chmod 644 "$crt_new"
  mv -f "$key_new" "$MTLS_DIR/client.key"
  mv -f "$crt_new" "$MTLS_DIR/client.crt"
  fix_identity_modes
  NEW_IDENTITY=1
  ok "enrolled: certificate for $DEVICE_ID valid until $(openssl x509 -noout -enddate -in "$MTLS_DIR/client.crt" | cut -d= -f2), SHA-256 $(openssl x509 -noout -fingerprint -sha256 -in "$MTLS_DIR/client.crt" | cut -d= -f2)"
  local message
  message=$(jq -r '.data.message // empty' "$resp")
  [ -z "$message" ] || info "enrollment: $message"
}

# --- images --------------------------------------------------------------------------------------
ensure_images() {
  local ref
  if [ -n "$IMAGE_ARCHIVE" ]; then
    info "loading images from $IMAGE_ARCHIVE"
    docker load -q -i "$IMAGE_ARCHIVE" >/dev/null || die "docker load -i $IMAGE_ARCHIVE failed; nothing was changed"
    for ref in "$AGENT_IMAGE" "$NETMON_IMAGE"; do
      docker image inspect "$ref" >/dev/null 2>&1 || die "$IMAGE_ARCHIVE does not hold $ref; nothing was changed"
    done
  else
    for ref in "$AGENT_IMAGE" "$NETMON_IMAGE"; do
      info "pulling $ref ($PLATFORM)"
      if docker pull -q --platform "$PLATFORM" "$ref" >/dev/null 2>&1; then
        :
      elif docker image inspect "$ref" >/dev/null 2>&1; then
        warn "cannot pull $ref; using the copy already on this machine"
      else
        die "cannot pull $ref and there is no local copy (offline? use --image-archive); nothing was changed"
      fi
    done
  fi
  local ref_arch
  for ref in "$AGENT_IMAGE" "$NETMON_IMAGE"; do
    ref_arch=$(docker image inspect --format '{{.Architecture}}' "$ref")
    [ "$ref_arch" = "$ENGINE_ARCH" ] || die "$ref is an image for $ref_arch, this engine runs $ENGINE_ARCH; nothing was changed"
  done
  ok "images: $AGENT_IMAGE ($(image_version "$AGENT_IMAGE")), $NETMON_IMAGE ($(image_version "$NETMON_IMAGE"))"
}

image_version() {
  local v
  v=$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$1" 2>/dev/null) || v=""
  [ -n "$v" ] && [ "$v" != "<no value>" ] && printf '%s' "$v" || printf 'unversioned'
}

# --- containers ----------------------------------------------------------------------------------
container_exists() { docker container inspect "$1" >/dev/null 2>&1; }

# The host's Docker socket, which the agent drives.
docker_socket() {
  case "${DOCKER_HOST:-}" in
    unix://*) printf '%s' "${DOCKER_HOST#unix://}" ;;
    *) printf '/var/run/docker.sock' ;;
  esac
}

ensure_volume() {
  if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
    ok "volume $VOLUME kept (its state files are the agent's)"
  else
    docker volume create --label edge.autonomy.role=shared-state "$VOLUME" >/dev/null || die "docker volume create $VOLUME failed"
    ok "volume $VOLUME created"
  fi
}

# The options both containers share: restart policy, bounded logs (SD cards), no privileges.
common_run_options() {
  printf '%s\n' --restart unless-stopped --read-only --security-opt no-new-privileges \
    --log-driver json-file --log-opt max-size=10m --log-opt max-file=3 \
    -v "$VOLUME:$STATE_DIR"
}

netmon_run_args() {
  local args=(--name "$NETMON_NAME" --network host --pid host --label edge.autonomy.role=netmon --cap-drop ALL)
  local cap
  for cap in "${NETMON_CAPS[@]}"; do args+=(--cap-add "$cap"); done
  args+=("${NETMON_MOUNTS[@]}")
  mapfile -t -O ${#args[@]} args < <(common_run_options)
  args+=(-e "NETMON_SOCKET=$STATE_DIR/netmon.sock" "$NETMON_IMAGE")
  printf '%s\n' "${args[@]}"
}

agent_run_args() {
  local sock
  sock=$(docker_socket)
  # On the default bridge, as the original: the agent joins each runtime's internal network to
  # reach it. Root in the container (the Docker socket is root-equivalent anyway, and the key and
  # the state files are root's), but without any capability.
  local args=(--name "$AGENT_NAME" --label edge.autonomy.role=orchestrator-agent --cap-drop ALL
    -v "$MTLS_DIR:$CONTAINER_MTLS_DIR:ro" -v "$sock:/var/run/docker.sock"
    -e "HOST_NAME=$AGENT_NAME" -e "ORCHESTRATOR_SERVER=$CLOUD_URL"
    -e "ORCHESTRATOR_STATE_DIR=$STATE_DIR" -e "ORCHESTRATOR_MTLS_DIR=$CONTAINER_MTLS_DIR"
    -e "ORCHESTRATOR_NETMON_CONTAINER=$NETMON_NAME")
  [ -n "$CA_FILE" ] && args+=(-e "ORCHESTRATOR_CA_FILE=$CONTAINER_MTLS_DIR/extra-ca.crt")
  [ -n "$RUNTIME_IMAGE" ] && args+=(-e "ORCHESTRATOR_RUNTIME_IMAGE=$RUNTIME_IMAGE")
  [ -n "$LOG_LEVEL" ] && args+=(-e "ORCHESTRATOR_LOG_LEVEL=$LOG_LEVEL")
  mapfile -t -O ${#args[@]} args < <(common_run_options)
  args+=("$AGENT_IMAGE")
  printf '%s\n' "${args[@]}"
}

# Waits until container $1 runs and, when $2 is given, that command exits 0 inside it.
wait_ready() {
  local name=$1 probe=${2:-} i
  for i in $(seq 1 30); do
    if [ "$(docker container inspect --format '{{.State.Running}} {{.State.Restarting}}' "$name" 2>/dev/null)" = "true false" ]; then
      [ -z "$probe" ] && return 0
      docker exec "$name" "$probe" health >/dev/null 2>&1 && return 0
    fi
    [ "$i" -lt 30 ] && sleep 0.5
  done
  return 1
}

# Replaces container $1 with a new one made from the run arguments in the rest; the old one is
# stopped first (it holds the socket, the identity's session) and comes back if the new one does
# not start.
replace_container() {
  local name=$1 probe=$2
  shift 2
  local old="$name.previous" had_old=""
  if container_exists "$name"; then
    had_old=1
    docker rm -f "$old" >/dev/null 2>&1 || true
    docker rename "$name" "$old"
    docker stop -t 10 "$old" >/dev/null 2>&1 || true
  fi
  if docker run -d "$@" >/dev/null && wait_ready "$name" "$probe"; then
    [ -z "$had_old" ] || docker rm -f "$old" >/dev/null
    return 0
  fi
  warn "$name did not start; its log:"
  docker logs --tail 20 "$name" >&2 2>&1 || true
  docker rm -f "$name" >/dev/null 2>&1 || true
  if [ -n "$had_old" ]; then
    docker rename "$old" "$name" && docker start "$name" >/dev/null 2>&1 &&
      warn "the previous $name is running again"
  fi
  die "could not start $name"
}

describe_previous() {
  local name=$1 image
  container_exists "$name" || return 0
  image=$(docker container inspect --format '{{.Config.Image}}' "$name")
  case "$(docker container inspect --format '{{index .Config.Labels "edge.autonomy.role"}}' "$name" 2>/dev/null)" in
    orchestrator-agent | netmon) info "replacing $name ($image)" ;;
    *) info "migrating $name ($image, not made by this installer): it is replaced, the state in $VOLUME is kept" ;;
  esac
}

deploy() {
  local args
  [ -z "$CA_FILE" ] || install -m 644 "$CA_FILE" "$MTLS_DIR/extra-ca.crt"
  [ -n "$CA_FILE" ] || rm -f "$MTLS_DIR/extra-ca.crt"
  ensure_volume
  describe_previous "$NETMON_NAME"
  mapfile -t args < <(netmon_run_args)
  replace_container "$NETMON_NAME" /autonomy-netmon "${args[@]}"
  ok "network monitor $NETMON_NAME running"
  describe_previous "$AGENT_NAME"
  mapfile -t args < <(agent_run_args)
  replace_container "$AGENT_NAME" /orchestrator-agent "${args[@]}"
  ok "agent $AGENT_NAME running"
}

# --- uninstall -----------------------------------------------------------------------------------
uninstall() {
  local name
  for name in "$AGENT_NAME" "$NETMON_NAME"; do
    if container_exists "$name"; then
      docker rm -f "$name" >/dev/null && ok "removed container $name"
    fi
    docker rm -f "$name.previous" >/dev/null 2>&1 || true
  done
  if [ -z "$PURGE" ]; then
    ok "uninstalled; kept: volume $VOLUME, credentials in $MTLS_DIR, the runtimes (--uninstall --purge removes them)"
    return 0
  fi
  # The runtimes and networks the agent made carry its labels (instance = its state dir).
  local filters=(--filter label=edge.autonomy.managed-by=orchestrator-agent --filter "label=edge.autonomy.instance=$STATE_DIR")
  local ids id
  ids=$(docker ps -aq "${filters[@]}")
  for id in $ids; do docker rm -f "$id" >/dev/null && ok "removed runtime $id"; done
  ids=$(docker network ls -q "${filters[@]}")
  for id in $ids; do docker network rm "$id" >/dev/null && ok "removed network $id"; done
  if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
    docker volume rm "$VOLUME" >/dev/null && ok "removed volume $VOLUME"
  fi
  if [ -d "$MTLS_DIR" ]; then
    rm -rf -- "$MTLS_DIR" && ok "removed credentials $MTLS_DIR"
  fi
  for id in "$AGENT_IMAGE" "$NETMON_IMAGE"; do
    docker image rm "$id" >/dev/null 2>&1 && ok "removed image $id"
  done
  ok "purged"
}

# --- summary -------------------------------------------------------------------------------------
summary() {
  local line="====================================================="
  printf '\n%s%s%s\n%s\n' "$c_bold" "INSTALLATION COMPLETE" "$c_off" "$line"
  printf 'Orchestrator ID: %s%s%s\n' "$c_bold" "$DEVICE_ID" "$c_off"
  if [ -n "$NEW_IDENTITY" ] && [ -n "$ID_EXPIRES_IN" ]; then
    printf 'Expires in:      %s seconds%s\n' "$ID_EXPIRES_IN" "${ID_EXPIRES_AT:+ (at $ID_EXPIRES_AT)}"
  fi
  printf 'Agent:           %s (%s, %s)\n' "$AGENT_NAME" "$AGENT_IMAGE" "$(image_version "$AGENT_IMAGE")"
  printf 'Network monitor: %s (%s, %s)\n' "$NETMON_NAME" "$NETMON_IMAGE" "$(image_version "$NETMON_IMAGE")"
  printf 'Cloud:           %s\n' "$CLOUD_URL"
  printf 'State:           volume %s at %s\n' "$VOLUME" "$STATE_DIR"
  printf 'Credentials:     %s\n' "$MTLS_DIR"
  if [ -n "$NEW_IDENTITY" ]; then
    printf '\nCopy the Orchestrator ID above and paste it into the Autonomy Edge app to link your device.\n'
  else
    printf '\nThe identity was kept: a device already linked stays linked.\n'
  fi
  printf '%s\n' "$line"
}

# --- main ----------------------------------------------------------------------------------------
WORK_DIRS=()
CA_BUNDLE=""
cleanup() {
  local d
  for d in "${WORK_DIRS[@]}"; do rm -rf -- "$d"; done
}

make_ca_bundle() {
  [ -n "$CA_FILE" ] || return 0
  local bundle
  bundle=$(mktemp "${TMPDIR:-/tmp}/orchestrator-ca.XXXXXX")
  WORK_DIRS+=("$bundle")
  # curl's --cacert replaces the system roots: keep them and add the extra CA.
  local system
  for system in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    [ -r "$system" ] && { cat "$system" >>"$bundle"; break; }
  done
  cat "$CA_FILE" >>"$bundle"
  CA_BUNDLE=$bundle
}

main() {
  setup_colours
  local a
  for a in "$@"; do
    case "$a" in -h | --help) usage; return 0 ;; esac
  done
  check_platform "$@"
  parse_args "$@"
  trap cleanup EXIT
  check_dependencies
  if [ -n "$UNINSTALL" ]; then
    uninstall
    return 0
  fi
  mkdir -p "$MTLS_DIR"
  # One run at a time per identity.
  exec 9>"$MTLS_DIR/.install.lock"
  flock -n 9 || die "another install.sh is running for $MTLS_DIR"
  make_ca_bundle
  # Everything that can fail for outside reasons happens before anything running is replaced.
  ensure_identity
  ensure_images
  deploy
  summary
}

main "$@"
