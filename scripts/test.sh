#!/usr/bin/env bash
# The whole test suite: installs the tools the tests check against, then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p ota-client).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh browser vm uboot-build pkcs11
scripts/install-s3s-fs.sh   # the S3 bundle-store tests' server (cached in ~/.cache/ota-tools)
cargo test --workspace --locked "$@"
