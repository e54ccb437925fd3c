#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmarks use: the real bootloader tools the
# env-file tests compare against, openssl for key/signature interop, zstd and e2fsprogs for the benchmarks.
# Idempotent and quick when everything is present. Needs root or sudo.
# Never removes, downgrades or replaces what is there: a package installed at any version (even a newer one
# from elsewhere, or held) is left alone, it says what it will install first, and apt runs with --no-remove
# (and without --allow-downgrades), so a plan that would remove or downgrade anything stops instead.
set -euo pipefail

# The decision, without I/O (tested by packaging/tests/it/install_deps.rs): reads
# `dpkg-query -W -f='${Package}\t${db:Status-Status}\n'` lines on stdin and prints, once each and in order,
# the wanted packages that are not on the machine at any version (unknown to dpkg, or only config files left).
to_install() {
  awk -F'\t' -v want="$*" '
    $2 != "" && $2 != "not-installed" && $2 != "config-files" { present[$1] = 1 }
    END {
      n = split(want, w, " ")
      for (i = 1; i <= n; i++) if (!(w[i] in present) && !(w[i] in seen)) { seen[w[i]] = 1; print w[i] }
    }'
}
# Sourced (by the test): the function only.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then return 0; fi

packages=(
  openssl            # key and signature interop tests
  grub-common        # grub-editenv, grub-script-check: grubenv and grub.cfg checks
  libubootenv-tool   # fw_printenv / fw_setenv: U-Boot env checks
  u-boot-tools       # mkimage, mkenvimage: U-Boot script and env checks
  zstd               # payload interop test and benchmark baseline
  e2fsprogs          # mke2fs -d for benchmark images
  time               # /usr/bin/time -v for peak RSS in benchmarks
  tar
  ca-certificates
  python3-venv       # scripts/openapi-validator.sh: openapi-spec-validator from PyPI in a cached virtualenv
  binutils man-db systemd  # packaging test: strip, man, systemd-analyze (dpkg is always there)
  postgresql         # initdb, postgres: throwaway clusters for the PostgreSQL store tests (ota_testkit::postgres)
  haproxy            # ota-server replicas test: the load balancer in front of three replicas
)
# Extra groups, opt-in by argument: "browser" (dashboard test), "vm" (QEMU full-system tests), "uboot-build"
# (the VM tests' U-Boot, built from Debian's source package), "bench"
# (tests/bench's download scenario: nginx as the baseline), "pkcs11" (release keys on a SoftHSM token), "fuzz"
# (scripts/fuzz.sh).
for group in "$@"; do
  case "$group" in
    browser) packages+=(chromium chromium-driver fonts-dejavu-core) ;;
    vm) packages+=(qemu-system-x86 ovmf grub-efi-amd64-bin grub-common mtools dosfstools e2fsprogs gdisk
                   linux-image-amd64 busybox-static cpio) ;;
    bench) packages+=(nginx curl) ;;
    pkcs11) packages+=(softhsm2) ;;
    fuzz) packages+=(g++) ;;  # scripts/fuzz.sh: libfuzzer-sys compiles libFuzzer's C++ sources
    uboot-build) packages+=(gcc make bc bison flex swig python3-dev python3-setuptools libssl-dev libgnutls28-dev
                            uuid-dev curl xz-utils patch u-boot-tools) ;;  # tests/vm/uboot/build-u-boot.sh
    *) echo "install-deps.sh: unknown group '$group' (known: browser, vm, uboot-build, bench, pkcs11, fuzz)" >&2; exit 2 ;;
  esac
done

mapfile -t missing < <(dpkg-query -W -f='${Package}\t${db:Status-Status}\n' "${packages[@]}" 2>/dev/null \
                        | to_install "${packages[@]}")
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps.sh: installing (with what they depend on; nothing is removed or downgraded): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The first apt run on a fresh machine sometimes fails transiently: try twice.
for attempt in 1 2; do
  if $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"; then
    exit 0
  fi
  echo "install-deps.sh: apt-get failed (attempt $attempt)" >&2
  sleep 5
done
exit 1
