#!/usr/bin/env bash
# Builds the VM tests' U-Boot (qemu-x86: 32-bit U-Boot on QEMU's x86_64 q35 machine, boots the 64-bit kernel) from Debian bookworm's u-boot source package with the
# environment on the disk's FAT partition (uboot.config, uboot.env), and caches it:
#
#   ~/.cache/ota-tools/u-boot-<version>-<hash of this script, uboot.config, uboot.env>/
#       u-boot.rom          the firmware (qemu-system-x86_64 -bios)
#       u-boot-initial-env  the default environment as U-Boot holds it (the guest's fw_setenv -f file)
#       config              the .config it was built with
#
# Prints the cache directory on stdout. Uncached: downloads ~16 MB from deb.debian.org (snapshot.debian.org
# if the pool no longer has this version), checks the .dsc's SHA-256 sums, applies Debian's patches, builds.
# Needs `scripts/install-deps.sh uboot-build` (bison, flex, swig, python3-dev, ...).
# Usage: build-u-boot.sh [--print-dir]   (--print-dir: print the cache directory, build nothing)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=2023.01+dfsg
DEBREV=2+deb12u3
ORIG=u-boot_$VERSION.orig.tar.xz
ORIG_SHA256=e75da6f089d063aaef39a1c17f1631791d87700662624e18de2121fa39a1ed44
ORIG_SHA1=f4b94556f10cf7ff07807c3b1390ee190ca8028c
DEB=u-boot_$VERSION-$DEBREV.debian.tar.xz
DEB_SHA256=f9d96a5095d542d8732eccdabcd1d1e7eaaa832311ce395f78b8ead1fad9845e
DEB_SHA1=46e9c22cf21e67c042807c11c3db08ff8628782b

hash=$(cat "$0" "$HERE/uboot.config" "$HERE/uboot.env" | sha256sum | cut -c1-12)
CACHE=${OTA_TOOLS_CACHE:-$HOME/.cache/ota-tools}/u-boot-${VERSION%+dfsg}-$hash
if [ "${1:-}" = --print-dir ] || [ -f "$CACHE/u-boot.rom" ]; then echo "$CACHE"; exit 0; fi

fetch() { # FILE SHA256 SHA1
  local url
  for url in "https://deb.debian.org/debian/pool/main/u/u-boot/$1" "https://snapshot.debian.org/file/$3"; do
    if curl -fsSL --retry 3 -o "$W/$1" "$url" && echo "$2  $W/$1" | sha256sum -c --quiet -; then return 0; fi
    echo "build-u-boot.sh: $url failed or did not match its SHA-256" >&2
  done
  return 1
}

mkdir -p "$(dirname "$CACHE")"
W=$(mktemp -d "$(dirname "$CACHE")/u-boot-build.XXXXXX")
trap 'rm -rf "$W"' EXIT
fetch "$ORIG" "$ORIG_SHA256" "$ORIG_SHA1"
fetch "$DEB" "$DEB_SHA256" "$DEB_SHA1"
mkdir "$W/src"
tar -xJf "$W/$ORIG" -C "$W/src" --strip-components=1
tar -xJf "$W/$DEB" -C "$W/src"
(cd "$W/src" && grep -v '^#' debian/patches/series | while read -r p; do
   [ -n "$p" ] && patch -p1 -s < "debian/patches/$p"; done)

# The system python (binman and pylibfdt need its setuptools and headers, not a pyenv's).
export PATH=/usr/bin:$PATH
M=(make -C "$W/src" O="$W/build" PYTHON3=/usr/bin/python3 -j"$(nproc)")
"${M[@]}" -s qemu-x86_defconfig
sed "s|@ENV_FILE@|$HERE/uboot.env|" "$HERE/uboot.config" >> "$W/build/.config"
"${M[@]}" -s olddefconfig
for want in CONFIG_ENV_IS_IN_FAT=y CONFIG_SYS_REDUNDAND_ENVIRONMENT=y 'CONFIG_ENV_FAT_INTERFACE="scsi"'; do
  grep -qx "$want" "$W/build/.config" || { echo "build-u-boot.sh: $want did not stick" >&2; exit 1; }
done
"${M[@]}" -s all u-boot-initial-env
mkdir "$W/out"
cp "$W/build/u-boot.rom" "$W/build/u-boot-initial-env" "$W/out/"
cp "$W/build/.config" "$W/out/config"
rm -rf "$CACHE" && mv "$W/out" "$CACHE"
echo "$CACHE"
