#!/usr/bin/env bash
# The demo fleet in one command: builds ota-demo (release) and runs it. It starts an OTA server
# (SQLite under ./demo-fleet/server, http://127.0.0.1:8080 or a free port), makes release keys
# and a trust root, builds, signs and publishes release 1.1.0, provisions five simulated robots
# on 1.0.0 and rolls 1.1.0 out to them in two stages; robot-3's health check fails after the
# update, so it rolls back and reports why. Then the operator groups the updated robots and rolls
# out 1.2.0, whose new model passes its health checks but is slower: its inference_latency_ms
# guard halts the rollout after the first stage, and the operator reverts the group to 1.1.0
# (the robots switch back to the slot that still holds it). Prints every robot's steps, a
# summary and the dashboard URL, then serves until Ctrl-C.
#
# Arguments go to ota-demo, e.g.:
#   scripts/demo.sh --exit-when-done      # exit 0 after the summary if 4 updated + 1 rolled back,
#                                         # 1.2.0 halted by its guard and reverted
#   scripts/demo.sh --dir /tmp/fleet --listen 127.0.0.1:9000 --quiet
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ota-demo
exec "${CARGO_TARGET_DIR:-target}/release/ota-demo" "$@"
