#!/usr/bin/env bash
# Power-cut campaign under the client's simulated robot (file slots, grubenv or state file, reboots
# through the shipped GRUB script): N cuts (default 1000) at random checkpoints and byte offsets of
# random install / confirm / rollback / live / mark-bad scenarios. Prints runs, bricks and strands;
# exits non-zero if any robot was bricked or stranded. The VM campaign is tests/vm/power-cut-campaign.sh.
#   ota-client/power-cut-campaign.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OTA_POWER_CUTS="${1:-1000}" OTA_POWER_CUT_SEED="${2:-1}" \
  cargo test --locked -p ota-client --test it power_cut::power_cut_campaign -- --ignored --nocapture
