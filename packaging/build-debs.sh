#!/usr/bin/env bash
# Builds the Debian packages ota-client, ota-server and ota-bundle with cargo-deb (variants in
# packaging/Cargo.toml; maintainer scripts in packaging/debian/NAME) into OUT.
#
# Binaries: the static release build the VM tests use (build-image.sh: same flags, target and
# target dir, so whichever runs first builds them and the other reuses them), plus ota-server
# in a cargo run of its own (a joint run would unify features and rebuild what the VM build
# made). Each binary writes its own man pages and completions (`generate-docs`).
#
# Usage: build-debs.sh [OUT]   (default: <repo>/target/debian; prints the .deb paths)
# Env:   OTA_DEB_BIN_DIR=DIR      package ota-client, ota-server, ota-bundle from DIR (no build)
#        OTA_TOOLS_CACHE=DIR      where cargo-deb is installed if missing (default ~/.cache/ota-packaging)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-$ROOT/target/debian}
CACHE=${OTA_TOOLS_CACHE:-$HOME/.cache/ota-packaging}
BINARIES=(ota-client ota-server ota-bundle)

# ---- cargo-deb: the one on PATH, else the cached one, else install it into the cache --------------------
export PATH="$CACHE/bin:$PATH"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-debs.sh: installing cargo-deb into $CACHE" >&2
  cargo install --quiet --locked cargo-deb --root "$CACHE" >&2
fi

# ---- binaries ---------------------------------------------------------------------------------------------
if [ -n "${OTA_DEB_BIN_DIR:-}" ]; then
  BIN=$OTA_DEB_BIN_DIR
else
  export RUSTFLAGS="-C target-feature=+crt-static"
  for packages in "-p ota-client -p ota-bundle-tool" "-p ota-server"; do
    # shellcheck disable=SC2086 # two package flags per run
    cargo build --quiet --release --locked --manifest-path "$ROOT/Cargo.toml" $packages \
      --target x86_64-unknown-linux-gnu --target-dir "$ROOT/target/vm" >&2
  done
  unset RUSTFLAGS
  BIN=$ROOT/target/vm/x86_64-unknown-linux-gnu/release
fi

# ---- stage: stripped binaries, gzipped man pages, completions under the names each shell looks up -------
STAGE=$ROOT/target/debian/stage  # fixed: packaging/Cargo.toml's assets point here
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$OUT"
for b in "${BINARIES[@]}"; do
  [ -x "$BIN/$b" ] || { echo "build-debs.sh: $BIN/$b missing" >&2; exit 1; }
  strip -o "$STAGE/bin/$b" "$BIN/$b"  # the release profile keeps line tables
  d=$STAGE/$b
  mkdir -p "$d/man" "$d/bash" "$d/zsh" "$d/fish"
  "$STAGE/bin/$b" generate-docs "$d/gen" >/dev/null
  for page in "$d"/gen/man/man1/*.1; do
    gzip -9n < "$page" > "$d/man/$(basename "$page").gz"
  done
  cp "$d/gen/completions/$b.bash" "$d/bash/$b"
  cp "$d/gen/completions/_$b" "$d/zsh/_$b"
  cp "$d/gen/completions/$b.fish" "$d/fish/$b.fish"
done

# ---- packages: versioned like the binary they ship ---------------------------------------------------------
for b in "${BINARIES[@]}"; do
  version=$("$STAGE/bin/$b" --version | awk '{print $2}')
  cargo deb --quiet --manifest-path "$HERE/Cargo.toml" --variant "$b" --no-build --no-strip \
    --deb-version "$version" --output "$OUT" >/dev/null
  ls "$OUT/${b}_${version}"*.deb
done
