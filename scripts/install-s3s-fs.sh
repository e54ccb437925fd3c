#!/usr/bin/env bash
# Installs s3s-fs, the real S3-compatible server the S3 bundle-store tests start (ota_testkit::s3), under
# ~/.cache/ota-tools/s3s-fs from crates.io. Idempotent and instant when the pinned version is there.
# Why not Garage (the issue's suggestion): `cargo install garage` took over 750 s of CPU before it was a little
# past half of its 525 crates, more than 6 minutes of a fresh 2-core CI machine; s3s-fs takes ~220 s of CPU
# (about 2 minutes there). s3s-fs 0.13 is the newest that builds with our Rust (later ones need 1.96).
set -euo pipefail
version=0.13.0
root="${HOME}/.cache/ota-tools/s3s-fs"
stamp="$root/version"
if [ -x "$root/bin/s3s-fs" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
echo "install-s3s-fs.sh: building s3s-fs $version into $root (about 2 minutes on 2 cores, once)"
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
CARGO_TARGET_DIR="$target" cargo install "s3s-fs@$version" --features binary --locked --root "$root" --force
echo "$version" > "$stamp"
