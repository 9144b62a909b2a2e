#!/usr/bin/env bash
# Static release binaries of orchestrator-agent and autonomy-netmon for the devices.
#
#   scripts/build-release.sh [TARGET...]               build (default: all three targets)
#   scripts/build-release.sh --env-file [TARGET...]    set the toolchain up only; print the path of
#                                                      a file to source for cross `cargo` commands
#
# TARGETs and their dist/ directory (Docker's TARGETARCH + TARGETVARIANT, as the Dockerfiles read it):
#   armv7-unknown-linux-musleabihf   dist/armv7   Raspberry Pi 2/3/4 (32-bit OS), ARMv7-A + VFPv3
#   aarch64-unknown-linux-musl       dist/arm64   Raspberry Pi 3/4/5 (64-bit OS), other arm64 boards
#   x86_64-unknown-linux-musl        dist/amd64   PCs, the CI machine
# Output: dist/<arch>/{orchestrator-agent,autonomy-netmon,SHA256SUMS}; sizes are printed, and the
# build fails when a binary is over its budget (5 MiB; the armv7 agent 3 MiB).
#
# It needs a Debian 12 (bookworm) amd64 machine that reaches Debian's archive and the crate registry,
# and root the first time (apt-get install of the cross gcc and qemu-user-static). No rustup target
# is needed: the standard library is compiled from source (-Zbuild-std) by Debian's own Rust 1.96
# (rustc-web, cargo-web, rust-web-src), whose library source matches its compiler exactly. Those
# packages, musl and LLVM's libunwind for each target are downloaded with `apt-get download` into a
# private apt state (the machine's dpkg architectures are left alone) and extracted, not installed,
# under target/toolchains/ (ORCH_TOOLCHAINS); later runs reuse them. docs/release.md explains the
# recipe and what to do when Debian moves a pinned package.
set -euo pipefail

# --- pins: what decides the bytes of the binaries -------------------------------------------------
# Debian keeps only the newest version of a package in bookworm(-security). When one of these is
# gone, the build stops and names the versions Debian has now: update the pin here (and
# RUST_SERIES when rustc-web moves to a new release), run the build, and commit.
RUST_DEB=1.96.0+dfsg1-1~deb12u2   # rustc-web, cargo-web, rust-web-src, libstd-rust-web-*
RUST_SERIES=1.96                  # in the name of libstd-rust-web-<series>
LLVM_MAJOR=22                     # rustc-web's LLVM: libllvm<major>, libunwind-<major>-dev
LLVM_DEB=1:22.1.8-1~deb12u1
MUSL_DEB=1.2.3-1                  # musl, musl-dev (bookworm main)
# Installed from Debian by name (bookworm's gcc 12; their versions are recorded in the manifest):
# gcc-arm-linux-gnueabihf, gcc-aarch64-linux-gnu, qemu-user-static, and the shared libraries
# Debian's cargo and rustc load.

MIB=1048576
BUDGET_DEFAULT=$((5 * MIB))      # each binary (an image is the binary plus a few KiB)
BUDGET_ARMV7_AGENT=$((3 * MIB))  # the 32-bit Pi build of the agent

ALL_TARGETS=(armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
BINARIES=(orchestrator-agent autonomy-netmon)

root=$(cd "$(dirname "$0")/.." && pwd)
toolchains=${ORCH_TOOLCHAINS:-$root/target/toolchains}
dist=${DIST_DIR:-$root/dist}
tc="$toolchains/debian-rust-${RUST_DEB//[^A-Za-z0-9.+-]/_}"

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'build-release.sh: %s\n' "$*" >&2
  exit 1
}

# Per-target facts: Debian architecture, GNU triple of the cross gcc, musl's triple, dist dir, qemu.
target_facts() {
  case "$1" in
    armv7-unknown-linux-musleabihf)
      debarch=armhf gnu=arm-linux-gnueabihf musl=arm-linux-musleabihf arch=armv7
      qemu=qemu-arm-static machine=ARM ldso=/lib/ld-musl-armhf.so.1 ;;
    aarch64-unknown-linux-musl)
      debarch=arm64 gnu=aarch64-linux-gnu musl=aarch64-linux-musl arch=arm64
      qemu=qemu-aarch64-static machine=AArch64 ldso=/lib/ld-musl-aarch64.so.1 ;;
    x86_64-unknown-linux-musl)
      debarch=amd64 gnu=x86_64-linux-gnu musl=x86_64-linux-musl arch=amd64
      qemu="" machine=X86-64 ldso=/lib/ld-musl-x86_64.so.1 ;;
    *) die "unknown target '$1' (known: ${ALL_TARGETS[*]})" ;;
  esac
}

# --- host packages ------------------------------------------------------------------------------
# Debian packages this machine needs installed for `targets`.
host_packages() {
  local t pkgs=(binutils gcc libc6-dev)
  for t in "$@"; do
    target_facts "$t"
    case "$debarch" in
      armhf) pkgs+=(gcc-arm-linux-gnueabihf qemu-user-static) ;;
      arm64) pkgs+=(gcc-aarch64-linux-gnu qemu-user-static) ;;
    esac
  done
  # What Debian's cargo and rustc load besides the libraries extracted with them.
  pkgs+=(libcurl4 libssh2-1 libssl3 libsqlite3-0 libgssapi-krb5-2 libpcre2-8-0 zlib1g libzstd1
    libedit2 libffi8 libxml2 libz3-4 libstdc++6)
  printf '%s\n' "${pkgs[@]}" | sort -u
}

install_host_packages() {
  local missing=() p
  while read -r p; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done < <(host_packages "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]}, or run this script as root once)"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed"
}

# --- Debian packages downloaded into a private apt state ----------------------------------------
# apt with a private state: the machine's sources, our own index, cache and architectures, so dpkg
# is never told about armhf/arm64 and the machine's apt lists are not touched.
apt_state="$toolchains/apt"
private_apt() {
  APT_CONFIG="$apt_state/apt.conf" "$@"
}

# Fetches the package indexes, once per run and only when something has to be downloaded.
apt_updated=""
private_apt_update() {
  [ -n "$apt_updated" ] && return 0
  mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial"
  : >"$apt_state/status"
  cat >"$apt_state/apt.conf" <<EOF
Dir::State::Lists "$apt_state/lists";
Dir::State::status "$apt_state/status";
Dir::Cache "$apt_state/cache";
APT::Architectures { "amd64"; "armhf"; "arm64"; };
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
  log "fetching Debian's package indexes (amd64, armhf, arm64) into $apt_state"
  # A foreign index can be mid-sync on a mirror ("File has unexpected size"); the packages we
  # need are checked one by one, so a failed index is only an error if one of them is missing.
  private_apt apt-get update -qq >"$apt_state/update.log" 2>&1 ||
    log "apt-get update reported errors (see $apt_state/update.log); continuing"
  apt_updated=1
}

# Downloads packages into the current directory, each given as `name[:arch]=version` (pinned: it
# must be exactly that version) or `name[:arch]` (whatever Debian has). One apt call for all.
fetch_debs() {
  local spec name version have available
  # "name=version" lines, without the :arch madison prints for some queries and not others.
  available=$(private_apt apt-cache madison "${@%%=*}" 2>/dev/null | awk -F'|' '{gsub(/ /,""); sub(/:.*/,"",$1); print $1"="$2}')
  for spec in "$@"; do
    [ "${spec#*=}" != "$spec" ] || continue
    name=${spec%%=*} version=${spec#*=}
    name=${name%%:*}
    grep -qxF "$name=$version" <<<"$available" && continue
    have=$(grep "^${name}=" <<<"$available" | cut -d= -f2- | sort -u | paste -sd' ' -) || true
    die "Debian no longer offers $name $version (it has: ${have:-nothing}). Update the pin at the top of scripts/build-release.sh (docs/release.md, 'When Debian moves a pin')."
  done
  private_apt apt-get download -qq "$@" >/dev/null 2>"$apt_state/download.err" ||
    die "apt-get download failed: $(tr '\n' ' ' <"$apt_state/download.err")"
}

# Extracts every .deb in `dir` into `dest`.
extract_debs() {
  local dir=$1 dest=$2 f
  mkdir -p "$dest"
  for f in "$dir"/*.deb; do dpkg-deb -x "$f" "$dest"; done
}

# --- the Rust toolchain (host side) -------------------------------------------------------------
setup_rust() {
  [ -f "$tc/.rust.ok" ] && return 0
  local dl="$tc/debs/rust"
  rm -rf "$tc/rust" "$dl"
  mkdir -p "$dl" "$tc/rust"
  private_apt_update
  log "downloading Debian's Rust $RUST_DEB"
  (
    cd "$dl"
    # cargo's own libraries (libgit2 ... mbedx509) at whatever version Debian has: their
    # sonames are in the package names, and they do not change what is built.
    fetch_debs "rustc-web:amd64=$RUST_DEB" "cargo-web:amd64=$RUST_DEB" "rust-web-src=$RUST_DEB" \
      "libstd-rust-web-dev:amd64=$RUST_DEB" "libstd-rust-web-$RUST_SERIES:amd64=$RUST_DEB" \
      "libllvm$LLVM_MAJOR:amd64=$LLVM_DEB" libgit2-1.5:amd64 libhttp-parser2.9:amd64 \
      libmbedcrypto7:amd64 libmbedtls14:amd64 libmbedx509-1:amd64
  )
  log "extracting it into $tc/rust"
  local f
  for f in "$dl"/*.deb; do
    case "$f" in
      # Only library/ of the compiler's source is needed (-Zbuild-std): 69 MB instead of 900.
      */rust-web-src_*) dpkg-deb --fsys-tarfile "$f" | tar -x -C "$tc/rust" --wildcards './usr/src/rustc-*/library/*' ;;
      *) dpkg-deb -x "$f" "$tc/rust" ;;
    esac
  done
  # The sysroot's `lib/rustlib/src/rust` is where cargo looks for the library source.
  mkdir -p "$tc/rust/usr/lib/rustlib/src"
  ln -sfn "../../../src/rustc-${RUST_DEB%%+*}" "$tc/rust/usr/lib/rustlib/src/rust"
  [ -f "$tc/rust/usr/lib/rustlib/src/rust/library/Cargo.lock" ] || die "rust-web-src $RUST_DEB has no library/Cargo.lock: the package layout changed"

  # Wrappers: Debian's binaries load libLLVM, librustc_driver and cargo's libraries from the
  # extracted tree; the variable is set for them only, not for the compilers and linkers they run.
  mkdir -p "$tc/bin"
  local b
  for b in cargo rustc rustdoc; do
    cat >"$tc/bin/$b" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$tc/rust/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$tc/rust/usr/bin/$b" "\$@"
EOF
    chmod +x "$tc/bin/$b"
  done
  local v
  v=$("$tc/bin/rustc" --version) || die "the extracted rustc does not run (a shared library missing? see ldd $tc/rust/usr/bin/rustc)"
  "$tc/bin/cargo" --version >/dev/null || die "the extracted cargo does not run (see ldd $tc/rust/usr/bin/cargo)"
  log "$v"
  rm -rf "$dl"
  touch "$tc/.rust.ok"
}

# --- one target: musl, libunwind, a musl-gcc wrapper --------------------------------------------
setup_target() {
  local t=$1
  target_facts "$t"
  [ -f "$tc/.$t.ok" ] && return 0
  command -v "$gnu-gcc" >/dev/null || die "$gnu-gcc not found (install gcc for $gnu)"
  local dl="$tc/debs/$debarch" sys="$tc/sysroot-$debarch" dir="$tc/$t"
  rm -rf "$dl" "$sys" "$dir"
  mkdir -p "$dl" "$dir/lib"
  private_apt_update
  log "downloading musl and libunwind for $debarch"
  (
    cd "$dl"
    fetch_debs "musl:$debarch=$MUSL_DEB" "musl-dev:$debarch=$MUSL_DEB" \
      "libunwind-$LLVM_MAJOR-dev:$debarch=$LLVM_DEB"
  )
  extract_debs "$dl" "$sys"
  rm -rf "$dl"
  local lib="$sys/usr/lib/$musl" inc="$sys/usr/include/$musl"
  if [ ! -f "$lib/libc.a" ] || [ ! -f "$lib/rcrt1.o" ] || [ ! -d "$inc" ]; then
    die "musl-dev:$debarch $MUSL_DEB has an unexpected layout (no $lib/libc.a)"
  fi

  # musl-gcc-style specs: musl's headers, crt objects and libc instead of glibc's; `-static-pie`
  # (what rustc asks for on x86_64 and aarch64) gets rcrt1.o and no dynamic linker, so the result
  # is really static (Debian's own musl-gcc.specs would leave an interpreter in it).
  cat >"$dir/musl-gcc.specs" <<EOF
%rename cpp_options old_cpp_options

*cpp_options:
-nostdinc -isystem $inc -isystem include%s %(old_cpp_options)

*cc1:
%(cc1_cpu) -nostdinc -isystem $inc -isystem include%s

*link_libgcc:
-L$dir/lib -L$lib -L .%s

*libgcc:
libgcc.a%s %:if-exists(libgcc_eh.a%s)

*startfile:
%{!shared:%{static-pie:$lib/rcrt1.o;:$lib/Scrt1.o}} $lib/crti.o crtbeginS.o%s

*endfile:
crtendS.o%s $lib/crtn.o

*link:
%{static-pie:-static -pie --no-dynamic-linker -z text;:%{!static:-dynamic-linker $ldso}} -nostdlib %{shared:-shared} %{static:-static} %{rdynamic:-export-dynamic}

EOF
  cat >"$tc/bin/$t-gcc" <<EOF
#!/bin/sh
exec $gnu-gcc "\$@" -specs "$dir/musl-gcc.specs"
EOF
  chmod +x "$tc/bin/$t-gcc"

  # Rust's musl std links libunwind statically. LLVM's (what rustup's self-contained musl targets
  # carry) is built by Debian against glibc with _FORTIFY_SOURCE: give it the one glibc-only
  # function it calls.
  cat >"$dir/fortify-shim.c" <<'EOF'
#include <stdarg.h>
#include <stdio.h>
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...) {
  (void)flag;
  va_list ap;
  va_start(ap, fmt);
  int n = vfprintf(f, fmt, ap);
  va_end(ap);
  return n;
}
EOF
  "$tc/bin/$t-gcc" -O2 -fPIC -c "$dir/fortify-shim.c" -o "$dir/fortify-shim.o" || die "cannot compile with $t-gcc"
  cp "$sys/usr/lib/$gnu/libunwind.a" "$dir/lib/libunwind.a" || die "libunwind-$LLVM_MAJOR-dev:$debarch has no usr/lib/$gnu/libunwind.a"
  chmod u+w "$dir/lib/libunwind.a"
  "$gnu-ar" rs "$dir/lib/libunwind.a" "$dir/fortify-shim.o" 2>/dev/null || die "$gnu-ar failed on libunwind.a"
  touch "$tc/.$t.ok"
}

# --- the environment a cross cargo command needs ------------------------------------------------
write_env() {
  local t up low
  {
    echo "# Generated by scripts/build-release.sh: source it, then run cargo with --target <triple> -Zbuild-std."
    echo "export PATH=\"$tc/bin:\$PATH\""
    echo "export RUSTC=\"$tc/bin/rustc\" RUSTDOC=\"$tc/bin/rustdoc\""
    echo "export RUSTC_BOOTSTRAP=1"
    echo "export ORCH_CROSS_TOOLCHAIN=\"$tc\""
    for t in "${ALL_TARGETS[@]}"; do
      [ -f "$tc/.$t.ok" ] || continue
      target_facts "$t"
      up=$(printf '%s' "$t" | tr 'a-z-' 'A-Z_')
      low=${t//-/_}
      echo "export CARGO_TARGET_${up}_LINKER=\"$tc/bin/$t-gcc\""
      # rustup's rust-std carries musl's crt objects ("self-contained"); we link with musl from
      # Debian through the gcc wrapper instead.
      echo "export CARGO_TARGET_${up}_RUSTFLAGS=\"-C link-self-contained=no\""
      [ -n "$qemu" ] && echo "export CARGO_TARGET_${up}_RUNNER=\"$qemu\""
      echo "export CC_${low}=\"$tc/bin/$t-gcc\" AR_${low}=\"$gnu-ar\""
    done
  } >"$tc/env.sh"
  {
    echo "rust $RUST_DEB (llvm $LLVM_DEB, musl $MUSL_DEB)"
    "$tc/bin/rustc" -vV | sed -n 's/^release: /rustc /p'
    dpkg-query -W -f='${Package} ${Version}\n' gcc gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu qemu-user-static 2>/dev/null || true
  } >"$tc/manifest.txt"
}

setup() {
  [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "the build machine must be Debian amd64 (the extracted Rust toolchain is amd64)"
  grep -q '^VERSION_CODENAME=bookworm' /etc/os-release || log "warning: not Debian 12 (bookworm); the pinned packages are bookworm's"
  install_host_packages "$@"
  mkdir -p "$toolchains"
  # One setup at a time (two builds started together must not extract over each other).
  exec 9>"$toolchains/.lock"
  flock 9
  mkdir -p "$tc"
  setup_rust
  local t
  for t in "$@"; do setup_target "$t"; done
  write_env
  exec 9>&-
}

# --- build --------------------------------------------------------------------------------------
check_binary() {
  local bin=$1 t=$2 name size budget
  name=$(basename "$bin")
  target_facts "$t"
  readelf -h "$bin" | grep -q "Machine:.*$machine" || die "$bin is not an $machine binary"
  ! readelf -l "$bin" | grep -q 'INTERP' || die "$bin asks for a dynamic loader: not static"
  ! readelf -d "$bin" 2>/dev/null | grep -q '(NEEDED)' || die "$bin needs shared libraries: not static"
  size=$(stat -c %s "$bin")
  budget=$BUDGET_DEFAULT
  [ "$t/$name" = armv7-unknown-linux-musleabihf/orchestrator-agent ] && budget=$BUDGET_ARMV7_AGENT
  [ "$size" -le "$budget" ] || die "$bin is $size bytes, over its budget of $budget"
}

build() {
  local t=$1 out bin
  target_facts "$t"
  log "building $t (release, static)"
  (
    # shellcheck source=/dev/null
    . "$tc/env.sh"
    cd "$root"
    # Shipped binaries only (not the armv7 test builds that share env.sh): no file/line/column
    # strings for panic locations. A panic still logs its message (and aborts); the size goes to
    # the armv7 agent's 3 MiB budget (docs/benchmarks.md).
    local up
    up=$(printf '%s' "$t" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${up}_RUSTFLAGS=$(printenv "CARGO_TARGET_${up}_RUSTFLAGS") -Zlocation-detail=none"
    # cargo's default std features without `backtrace`: std's DWARF symbolizer (gimli, object,
    # miniz_oxide) has nothing to read in a stripped binary. Frames are still captured: with
    # RUST_BACKTRACE set, the agent's panic hook logs their addresses.
    cargo build --locked --release -Zbuild-std=std,panic_abort \
      -Zbuild-std-features=default,panic-unwind --target "$t" \
      -p orchestrator-agent -p autonomy-netmon --bins
  ) || die "cargo build for $t failed"
  out="$dist/$arch"
  mkdir -p "$out"
  for bin in "${BINARIES[@]}"; do
    install -m 0755 "${CARGO_TARGET_DIR:-$root/target}/$t/release/$bin" "$out/$bin.tmp"
    mv -f "$out/$bin.tmp" "$out/$bin"
    check_binary "$out/$bin" "$t"
  done
  (cd "$out" && sha256sum "${BINARIES[@]}" >SHA256SUMS)
}

report() {
  local t bin size
  printf '\n%-34s %-20s %12s %9s\n' target binary bytes MiB
  for t in "$@"; do
    target_facts "$t"
    for bin in "${BINARIES[@]}"; do
      size=$(stat -c %s "$dist/$arch/$bin")
      printf '%-34s %-20s %12s %9s\n' "$t" "$bin" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')"
    done
  done
  printf '\nchecksums: %s\n' "$(for t in "$@"; do target_facts "$t"; printf '%s ' "$dist/$arch/SHA256SUMS"; done)"
}

main() {
  local env_only="" targets=() a
  for a in "$@"; do
    case "$a" in
      --env-file) env_only=1 ;;
      -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      -*) die "unknown option $a (see --help)" ;;
      *) target_facts "$a"; targets+=("$a") ;;
    esac
  done
  [ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
  setup "${targets[@]}"
  if [ -n "$env_only" ]; then
    printf '%s\n' "$tc/env.sh"
    return 0
  fi
  local t
  for t in "${targets[@]}"; do build "$t"; done
  report "${targets[@]}"
}

main "$@"
