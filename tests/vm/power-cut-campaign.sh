#!/usr/bin/env bash
# Power-cut campaign: N (default 100) cuts of the VM's power at random moments of an update (slot write,
# around arming the trial in grubenv, during confirm/commit). After each cut the robot must boot a good slot
# with its original content (else: brick) and take a fresh update that boots and commits (else: strand).
# Prints bricks / strands / runs; exit code 1 on any brick or strand. About 30-40 s of VM time per cut.
#   tests/vm/power-cut-campaign.sh [--board grub|uboot] [N] [SEED]
#   JOBS=2 tests/vm/power-cut-campaign.sh 100    # two VMs at once (each on its own copy of the image);
#                                                # seeds SEED+1, SEED+2, ...; totals summed at the end
# --board uboot: the same under the real U-Boot (image in target/vm/uboot-image, jobs in target/vm/uboot-campaign-N).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BOARD=grub
if [ "${1:-}" = --board ]; then BOARD=${2:?--board needs grub or uboot}; shift 2; fi
case "$BOARD" in
  grub) IMAGE="$ROOT/target/vm/image"; CAMPAIGN="$ROOT/target/vm/campaign" ;;
  uboot) IMAGE="$ROOT/target/vm/uboot-image"; CAMPAIGN="$ROOT/target/vm/uboot-campaign" ;;
  *) echo "power-cut-campaign.sh: unknown board '$BOARD' (grub or uboot)" >&2; exit 2 ;;
esac
N=${1:-100}
SEED=${2:-$(date +%s)}
JOBS=${JOBS:-1}
if ((JOBS <= 1)); then
  exec cargo run --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ota-vm-tests --bin ota-vm-power-cuts -- \
    --board "$BOARD" "$N" "$SEED"
fi

cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ota-vm-tests --bin ota-vm-power-cuts
BIN="$ROOT/target/release/ota-vm-power-cuts"
OTA_VM_BOARD=$BOARD "$ROOT/tests/vm/build-image.sh" "$IMAGE" >&2
pids=()
for ((j = 1; j <= JOBS; j++)); do
  dir="$CAMPAIGN-$j"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$IMAGE" "$dir/image"
  cuts=$((N / JOBS + (j <= N % JOBS ? 1 : 0)))
  echo "job $j: $cuts cuts, seed $((SEED + j)), log $dir/campaign.err" >&2
  OTA_VM_IMAGE_DIR="$dir/image" OTA_VM_REUSE_IMAGE=1 "$BIN" --board "$BOARD" "$cuts" "$((SEED + j))" \
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
  outs+=("$CAMPAIGN-$j/campaign.out")
  sed -n '/seed [0-9]*: /p; /BRICK\|STRAND/p' "${outs[-1]}"
done
total() { awk -F': ' -v key="$1" '$1 == key { sum += $2 } END { print sum + 0 }' "${outs[@]}"; }
echo "bricks: $(total bricks)"
echo "strands: $(total strands)"
echo "runs: $(total runs)"
exit "$failed"
