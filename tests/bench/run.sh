#!/usr/bin/env bash
# run.sh: build release, make (or reuse) the benchmark image, run ota-bench. One command:
#
#   tests/bench/run.sh                       # bundle scenario, 1 GiB image, level 3, 5 runs
#   LEVEL=19 RUNS=1 tests/bench/run.sh       # the default bundle level (slow: ~7 min per compression)
#   tests/bench/run.sh --json /tmp/b.json    # extra arguments go to `ota-bench bundle`
#   SCENARIO=install tests/bench/run.sh      # ota-client install (file and http://127.0.0.1) vs zstd -d
#   SCENARIO=install IMG_MB=256 CONTENT_MB=190 OUT=/tmp/ota-bench-256 tests/bench/run.sh   # same, 256 MiB image
#   SCENARIO=delta LEVEL=19 tests/bench/run.sh          # issue 11: v1 -> v2 delta, wire bytes, vs zstd (1 run)
#   SCENARIO=delta V1=/tmp/otabench/rootfs-v1.ext4 V2=/tmp/otabench/rootfs-v2.ext4 tests/bench/run.sh   # given pair
#   SCENARIO=download tests/bench/run.sh     # issue 14: a ~1 GiB bundle with curl from ota-server vs nginx (sendfile)
#
# Environment: LEVEL (3), RUNS (5; 1 for delta), SCENARIO (bundle, install or delta), V1/V2 (delta: use this image
# pair instead of make-image.sh's), plus make-image.sh's OUT, IMG_MB, CONTENT_MB, FORCE.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LEVEL="${LEVEL:-3}"
SCENARIO="${SCENARIO:-bundle}"
if [[ "$SCENARIO" == delta ]]; then RUNS="${RUNS:-1}"; else RUNS="${RUNS:-5}"; fi

# Tools the benchmark runs: GNU time (peak RSS), zstd (baseline), e2fsprogs (image; make-image.sh checks too).
need=()
[[ -x /usr/bin/time ]] || need+=(time)
command -v zstd >/dev/null || need+=(zstd)
if ((${#need[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "run.sh: installing ${need[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2 ||
    { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2; }
fi

packages=(-p ota-bundle-tool -p ota-bench)
[[ "$SCENARIO" != install ]] || packages+=(-p ota-client)
[[ "$SCENARIO" != delta ]] || packages+=(-p ota-client -p ota-server)
[[ "$SCENARIO" != download ]] || packages+=(-p ota-server)
if [[ "$SCENARIO" == download ]]; then "$ROOT/scripts/install-deps.sh" bench; fi
echo "run.sh: cargo build --release ${packages[*]}" >&2
(cd "$ROOT" && cargo build --release "${packages[@]}")
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

if [[ "$SCENARIO" == delta ]]; then
  if [[ -z "${V1:-}" || -z "${V2:-}" ]]; then
    V1="$(V2=1 "$HERE/make-image.sh" | tail -n 1)"
    V2="$(dirname "$V1")/rootfs-v2.ext4"
  fi
  exec "$TARGET_DIR/release/ota-bench" delta --v1 "$V1" --v2 "$V2" --level "$LEVEL" --runs "$RUNS" "$@"
fi

if [[ "$SCENARIO" == download ]]; then
  exec "$TARGET_DIR/release/ota-bench" download --runs "$RUNS" "$@"
fi

IMAGE="$("$HERE/make-image.sh" | tail -n 1)"
[[ -f "$IMAGE" ]] || { echo "run.sh: make-image.sh gave no image" >&2; exit 1; }

exec "$TARGET_DIR/release/ota-bench" "$SCENARIO" --image "$IMAGE" --level "$LEVEL" --runs "$RUNS" "$@"
