#!/usr/bin/env bash
# The demo fleet in one command: builds ota-demo (release) and runs it. It starts an OTA server
# (SQLite under ./demo-fleet/server, http://127.0.0.1:8080 or a free port), makes release keys
# and a trust root, builds, signs and publishes release 1.1.0, provisions five simulated robots
# on 1.0.0 and rolls 1.1.0 out to them in two stages; robot-3's health check fails after the
# update, so it rolls back and reports why. Prints every robot's steps, a summary and the
# dashboard URL, then serves until Ctrl-C.
#
# Arguments go to ota-demo, e.g.:
#   scripts/demo.sh --exit-when-done      # exit 0 after the summary if 4 updated + 1 rolled back
#   scripts/demo.sh --dir /tmp/fleet --listen 127.0.0.1:9000 --quiet
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ota-demo
exec target/release/ota-demo "$@"
