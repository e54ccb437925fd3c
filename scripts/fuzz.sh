#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each and fails on any crash, hang or leak it finds.
#
#   scripts/fuzz.sh                          # every target, FUZZ_SECONDS (default 10) each
#   FUZZ_SECONDS=300 scripts/fuzz.sh grubenv # one target, five minutes
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 10)
#   FUZZ_SANITIZER   address (default) or none: `none` builds with ~40 % less CPU (measured 150-180 s vs 257 s
#                    uncached) and runs several times faster, but finds only panics, overflows and hangs, not
#                    memory errors (the workspace forbids unsafe code: those could come only from a dependency)
#   FUZZ_OUT=DIR     keep the inputs the run finds in DIR/<target>/ (to merge the useful ones into the
#                    committed corpus, fuzz/README.md); by default they go to a temporary directory
#   FUZZ_TARGET_DIR  where the targets build (default ~/.cache/ota-tools/cargo-fuzz/target: kept between runs,
#                    so a run after a small change rebuilds only what changed; nightly and the coverage
#                    instrumentation share nothing with the workspace's target/)
#   CI=true          a missing nightly toolchain is a failure (elsewhere the run is SKIPPED, loudly)
#
# cargo-fuzz is installed once into ~/.cache/ota-tools/cargo-fuzz; the targets build once per run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-10}
sanitizer=${FUZZ_SANITIZER:-address}
cache=${OTA_TOOLS_CACHE:-$HOME/.cache/ota-tools}/cargo-fuzz

if ! cargo +nightly --version >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then
    echo "fuzz: FAILED: the Rust nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly" >&2
    exit 1
  fi
  echo "fuzz: SKIPPED: no Rust nightly toolchain (rustup toolchain install nightly)" >&2
  exit 0
fi

if [ "$("$cache/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $cache (once)"
  cargo install --quiet --locked --root "$cache" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
export PATH="$cache/bin:$PATH"
target_dir=$(mkdir -p "${FUZZ_TARGET_DIR:-$cache/target}" && cd "${FUZZ_TARGET_DIR:-$cache/target}" && pwd)
# The crate is outside the workspace, so `cargo fmt --all` does not see it.
cargo fmt --manifest-path fuzz/Cargo.toml --check

# Which dictionary each target uses (fuzz/dict/*.dict).
dict_for() {
  case "$1" in
    bundle_stream | bundle_head) echo bundle ;;
    manifest) echo manifest ;;
    grubenv | uboot_env | statefile) echo env ;;
    protocol_* | trust_chain) echo protocol ;;
    *) echo "" ;;
  esac
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

start=$(date +%s)
if [ $# -eq 0 ]; then
  (cd fuzz && cargo +nightly fuzz build --target-dir "$target_dir" --sanitizer "$sanitizer")
else
  for target in "${targets[@]}"; do
    (cd fuzz && cargo +nightly fuzz build --target-dir "$target_dir" --sanitizer "$sanitizer" "$target")
  done
fi
echo "fuzz: built ${#targets[@]} targets (sanitizer: $sanitizer) in $(($(date +%s) - start)) s"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=()
printf '%-16s %12s %9s %7s %7s %7s %7s\n' target executions exec/s cov ft corpus crashes
for target in "${targets[@]}"; do
  corpus=$root/fuzz/corpus/$target
  mkdir -p "$corpus"
  out=${FUZZ_OUT:-$tmp}
  out=$(mkdir -p "$out/$target" && cd "$out/$target" && pwd)
  dirs=("$out" "$corpus")
  args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1)
  dict=$(dict_for "$target")
  if [ -n "$dict" ]; then
    args+=(-dict="$root/fuzz/dict/$dict.dict")
  fi
  log=$tmp/$target.log
  status=0
  (cd fuzz && cargo +nightly fuzz run --target-dir "$target_dir" --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- "${args[@]}") \
    >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=0
  if [ "$status" -ne 0 ]; then
    crashes=1
    failed+=("$target")
  fi
  printf '%-16s %12s %9s %7s %7s %7s %7s\n' "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$crashes"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target FAILED (exit $status); the end of its log:" >&2
    tail -40 "$log" >&2
    echo "fuzz: the input is under fuzz/artifacts/$target/; reproduce: (cd fuzz && cargo +nightly fuzz run $target artifacts/$target/<file>)" >&2
  fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $(($(date +%s) - start)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
