#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20) on the stable toolchain:
#   scripts/fuzz.sh [SECONDS]
# Installs cargo-fuzz (pinned) when it is missing, builds all targets in one cargo invocation, then
# fuzzes them one after another. Each target starts from its checked-in seeds (fuzz/seeds/<t>) and
# regression inputs (fuzz/regressions/<t>), which are replayed first, plus the working corpus
# fuzz/corpus/<t> (not checked in; new inputs land there). Exits non-zero when a target crashes,
# printing the reproducer path and the command that replays it.
#
# Environment:
#   FUZZ_TARGETS    space-separated targets to run (default: all, in `cargo fuzz list` order)
#   FUZZ_SANITIZER  address|none (default none: the code under test is safe Rust, so a sanitizer
#                   finds little here and halves the speed; use address for a long campaign)
#   FUZZ_LOG_DIR    where each target's libFuzzer log goes (default fuzz/logs)
#   FUZZ_JOBS       cargo build jobs (default: cargo's)
# RUSTC_BOOTSTRAP=1 lets the stable compiler take the -Z flags cargo-fuzz passes (sanitizer,
# coverage instrumentation); no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CARGO_FUZZ_VERSION=0.13.2
budget=${1:-20}
sanitizer=${FUZZ_SANITIZER:-none}
log_dir=${FUZZ_LOG_DIR:-$root/fuzz/logs}
export RUSTC_BOOTSTRAP=1

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'fuzz.sh: %s\n' "$*" >&2; exit 1; }

[[ $budget =~ ^[0-9]+$ ]] && [ "$budget" -gt 0 ] || die "SECONDS must be a positive integer, got '$budget'"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust first"

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

cd "$root/fuzz"
build_flags=(--sanitizer "$sanitizer")
[ -n "${FUZZ_JOBS:-}" ] && build_flags+=(--jobs "$FUZZ_JOBS")
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found"

log "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
# One cargo invocation for all targets: the dependency graph is compiled once.
cargo fuzz build "${build_flags[@]}"
log "built in $((SECONDS - start)) s"

mkdir -p "$log_dir"
failed=()
for t in "${targets[@]}"; do
  corpus="$root/fuzz/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus")
  for extra in "$root/fuzz/seeds/$t" "$root/fuzz/regressions/$t"; do
    [ -d "$extra" ] && dirs+=("$extra")
  done
  log "fuzzing $t for $budget s"
  # -timeout: an input that takes 10 s is a hang, and a finding. -rss_limit_mb: libFuzzer's default.
  if cargo fuzz run "${build_flags[@]}" "$t" "${dirs[@]}" -- \
      -max_total_time="$budget" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" >"$log_dir/$t.log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec)' "$log_dir/$t.log" | tr '\n' ' '
    echo
  else
    failed+=("$t")
    tail -n 40 "$log_dir/$t.log" >&2
    repro=$(grep -o "Test unit written to .*" "$log_dir/$t.log" | tail -n 1 | sed 's/Test unit written to //')
    printf '\nfuzz.sh: %s FAILED; reproducer: %s\n  replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s %s %s %s)\n  full log: %s\n' \
      "$t" "${repro:-none written (see the log)}" "$sanitizer" "$t" "${repro:-}" "$log_dir/$t.log" >&2
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  die "${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}"
fi
log "all ${#targets[@]} fuzz targets ran $budget s each without a finding"
