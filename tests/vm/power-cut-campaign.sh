#!/usr/bin/env bash
# Power-cut campaign: N (default 100) cuts of the VM's power at random moments of an update (slot write,
# around arming the trial in grubenv, during confirm/commit). After each cut the robot must boot a good slot
# with its original content (else: brick) and take a fresh update that boots and commits (else: strand).
# Prints bricks / strands / runs; exit code 1 on any brick or strand. About 40 s of VM time per cut.
#   tests/vm/power-cut-campaign.sh [N] [SEED]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
exec cargo run --quiet --release --manifest-path "$ROOT/Cargo.toml" -p ota-vm-tests --bin ota-vm-power-cuts -- "${1:-100}" ${2:+"$2"}
