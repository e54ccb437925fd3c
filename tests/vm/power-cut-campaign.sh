#!/usr/bin/env bash
# Power-cut campaign: N (default 100) cuts of the VM's power at random moments of an update (slot write,
# around arming the trial in grubenv, during confirm/commit). After each cut the robot must boot a good slot
# with its original content (else: brick) and take a fresh update that boots and commits (else: strand).
# Prints bricks / strands / runs; exit code 1 on any brick or strand. About 30-40 s of VM time per cut.
#   tests/vm/power-cut-campaign.sh [N] [SEED]
#   JOBS=2 tests/vm/power-cut-campaign.sh 100    # two VMs at once (each on its own copy of the image);
#                                                # seeds SEED+1, SEED+2, ...; totals summed at the end
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-100}
SEED=${2:-$(date +%s)}
JOBS=${JOBS:-1}
if ((JOBS <= 1)); then
  exec cargo run --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ota-vm-tests --bin ota-vm-power-cuts -- "$N" "$SEED"
fi

cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ota-vm-tests --bin ota-vm-power-cuts
BIN="$ROOT/target/release/ota-vm-power-cuts"
IMAGE="$ROOT/target/vm/image"
"$ROOT/tests/vm/build-image.sh" "$IMAGE" >&2
pids=()
for ((j = 1; j <= JOBS; j++)); do
  dir="$ROOT/target/vm/campaign-$j"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$IMAGE" "$dir/image"
  cuts=$((N / JOBS + (j <= N % JOBS ? 1 : 0)))
  echo "job $j: $cuts cuts, seed $((SEED + j)), log $dir/campaign.err" >&2
  OTA_VM_IMAGE_DIR="$dir/image" OTA_VM_REUSE_IMAGE=1 "$BIN" "$cuts" "$((SEED + j))" \
    >"$dir/campaign.out" 2>"$dir/campaign.err" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
# This run's jobs only: a campaign-N left by an earlier run with more jobs is not counted.
outs=()
for ((j = 1; j <= JOBS; j++)); do
  outs+=("$ROOT/target/vm/campaign-$j/campaign.out")
  sed -n '/^seed /p; /BRICK\|STRAND/p' "${outs[-1]}"
done
total() { awk -F': ' -v key="$1" '$1 == key { sum += $2 } END { print sum + 0 }' "${outs[@]}"; }
echo "bricks: $(total bricks)"
echo "strands: $(total strands)"
echo "runs: $(total runs)"
exit "$failed"
