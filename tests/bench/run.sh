#!/usr/bin/env bash
# run.sh: build release, make (or reuse) the benchmark image, run ota-bench. One command:
#
#   tests/bench/run.sh                       # bundle scenario, 1 GiB image, level 3, 5 runs
#   LEVEL=19 RUNS=1 tests/bench/run.sh       # the default bundle level (slow: ~7 min per compression)
#   tests/bench/run.sh --json /tmp/b.json    # extra arguments go to `ota-bench bundle`
#   SCENARIO=install tests/bench/run.sh      # ota-client install (file and http://127.0.0.1) vs zstd -d
#   SCENARIO=install IMG_MB=256 CONTENT_MB=190 OUT=/tmp/ota-bench-256 tests/bench/run.sh   # same, 256 MiB image
#
# Environment: LEVEL (3), RUNS (5), SCENARIO (bundle or install), plus make-image.sh's OUT, IMG_MB, CONTENT_MB,
# FORCE.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LEVEL="${LEVEL:-3}"
RUNS="${RUNS:-5}"
SCENARIO="${SCENARIO:-bundle}"

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
echo "run.sh: cargo build --release ${packages[*]}" >&2
(cd "$ROOT" && cargo build --release "${packages[@]}")
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

IMAGE="$("$HERE/make-image.sh" | tail -n 1)"
[[ -f "$IMAGE" ]] || { echo "run.sh: make-image.sh gave no image" >&2; exit 1; }

exec "$TARGET_DIR/release/ota-bench" "$SCENARIO" --image "$IMAGE" --level "$LEVEL" --runs "$RUNS" "$@"
