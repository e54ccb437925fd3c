#!/usr/bin/env bash
# Builds everything the VM tests boot, without loop devices, mounts or network:
#
#   $OUT/base.img      GPT disk (the robot's eMMC):
#                        p1 esp      FAT16 "OTAESP": EFI/BOOT/BOOTX64.EFI (grub-mkstandalone; embedded grub.cfg =
#                                    guest/grub-settings.cfg + bootloader-hooks/grub/ota.cfg verbatim) and
#                                    EFI/BOOT/grubenv (grub-editenv create: never written by the client)
#                        p2 rootfs_a ext4 slot image, release 1.0.0 (factory content)
#                        p3 rootfs_b EMPTY (never written: the factory case)
#                        p4 data     ext4, empty: the client's data_dir
#   $OUT/bundles.img   FAT "OTABUNDLE" (second virtio disk, the guest has no network): signed bundles
#                        good (2.0.0), next (3.0.0), unhealthy (2.1.0, health check fails), panic (2.2.0, init
#                        dies), other (2.0.0 for compatible other-robot), old (1.5.0), tampered-payload,
#                        tampered-manifest, delta (3.0.0 built --delta-from good)
#   $OUT/slots/*.ext4  every slot image (host-side checksums), $OUT/layout (partition offsets for the driver)
#
# A slot image holds boot/vmlinuz (the Debian kernel) and boot/initrd.img: busybox, the kernel modules
# (modules.dep order), guest/init, the static ota-client, its config and trust root, and the release marker.
#
# Board OTA_VM_BOARD=uboot (default grub): the same disk and slots, but the firmware is U-Boot
# (uboot/build-u-boot.sh, cached; $OUT/u-boot.rom), the ESP holds boot.scr (bootloader-hooks/u-boot/boot.cmd via
# mkimage) and the two blank environment copies uboot.env / uboot-redund.env (never written: a factory robot),
# the disk is an AHCI disk (Linux: /dev/sda, the bundles disk /dev/vda) and the client uses its U-Boot backend
# (/etc/fw_env.config naming the two files on the mounted ESP, /etc/u-boot-initial-env from the U-Boot build).
#
# Usage: build-image.sh [OUT]   (default: <repo>/target/vm/image, or <repo>/target/vm/uboot-image for uboot)
# Env:   OTA_VM_CLIENT_BIN / OTA_VM_BUNDLE_BIN: use these binaries instead of building them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BOARD=${OTA_VM_BOARD:-grub}
case "$BOARD" in
  grub) OUT=${1:-$ROOT/target/vm/image}; DISK=/dev/vda; BUNDLES=/dev/vdb ;;
  uboot) OUT=${1:-$ROOT/target/vm/uboot-image}; DISK=/dev/sda; BUNDLES=/dev/vda ;;
  *) echo "build-image.sh: unknown OTA_VM_BOARD '$BOARD' (grub or uboot)" >&2; exit 2 ;;
esac
KVER=${OTA_VM_KVER:-$(ls /lib/modules | sort -V | tail -1)}
VMLINUZ=/boot/vmlinuz-$KVER
COMPATIBLE=ota-vm-robot
t0=$(date +%s.%N)

"$ROOT/scripts/install-deps.sh" vm >&2
if [ "$BOARD" = uboot ]; then
  "$ROOT/scripts/install-deps.sh" uboot-build >&2
  UBOOT=$("$HERE/uboot/build-u-boot.sh")
fi

# ---- binaries: the static client (runs in the guest) and the bundle tool (host) --------------------------
if [ -z "${OTA_VM_CLIENT_BIN:-}" ] || [ -z "${OTA_VM_BUNDLE_BIN:-}" ]; then
  # musl is not installable here: a glibc static build. Own target dir, so other builds are not clobbered.
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
    --manifest-path "$ROOT/Cargo.toml" -p ota-client -p ota-bundle-tool \
    --target x86_64-unknown-linux-gnu --target-dir "$ROOT/target/vm" >&2
fi
CLIENT=${OTA_VM_CLIENT_BIN:-$ROOT/target/vm/x86_64-unknown-linux-gnu/release/ota-client}
BUNDLE=${OTA_VM_BUNDLE_BIN:-$ROOT/target/vm/x86_64-unknown-linux-gnu/release/ota-bundle}
head -c 4096 "$CLIENT" | grep -qa 'ld-linux' && { echo "$CLIENT is dynamically linked: the guest has no libc" >&2; exit 1; }

W=$OUT/work
rm -rf "$OUT"; mkdir -p "$W" "$OUT/slots" "$OUT/bundles"

# ---- initramfs: a shared base archive + one small archive per release (the kernel unpacks both) ---------
WANT_MODS="virtio_pci virtio_blk qemu_fw_cfg vfat nls_cp437 nls_ascii nls_iso8859-1 nls_utf8 crc32c_generic ext4"
[ "$BOARD" = uboot ] && WANT_MODS="$WANT_MODS ahci sd_mod"
add_mod() { # NAME ROOT: dependencies first (modules.dep order)
  local m=$1 r=$2 line path dep
  grep -qx "$m" "$r/lib/modules/load-order" && return 0
  line=$(grep -E "^[^:]*/$m\.ko(\.[a-z]+)?:" "/lib/modules/$KVER/modules.dep" | head -1)
  [ -n "$line" ] || { echo "module $m not found for $KVER" >&2; exit 1; }
  path=${line%%:*}
  for dep in ${line#*:}; do dep=$(basename "$dep"); add_mod "${dep%%.ko*}" "$r"; done
  case "$path" in
    *.ko.xz) xz -dc "/lib/modules/$KVER/$path" > "$r/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "/lib/modules/$KVER/$path" > "$r/lib/modules/$m.ko" ;;
    *) cp "/lib/modules/$KVER/$path" "$r/lib/modules/$m.ko" ;;
  esac
  echo "$m" >> "$r/lib/modules/load-order"
}
r=$W/initrd-base
mkdir -p "$r"/{bin,dev,proc,sys,tmp,etc/ota,lib/modules,boot/efi,data,bundles}
cp /bin/busybox "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
: > "$r/lib/modules/load-order"
for m in $WANT_MODS; do add_mod "$m" "$r"; done
install -m 755 "$HERE/guest/init" "$r/init"
printf 'BOARD=%s\nDISK=%s\nBUNDLES=%s\n' "$BOARD" "$DISK" "$BUNDLES" > "$r/etc/ota/board"
if [ "$BOARD" = uboot ]; then
  printf '/boot/efi/uboot.env 0x0 0x4000\n/boot/efi/uboot-redund.env 0x0 0x4000\n' > "$r/etc/fw_env.config"
  cp "$UBOOT/u-boot-initial-env" "$r/etc/u-boot-initial-env"
fi
strip -o "$r/bin/ota-client" "$CLIENT"  # release profile keeps debug info
chmod 755 "$r/bin/ota-client"
"$BUNDLE" keygen "$OUT/release" >&2
cp "$OUT/release.pub" "$r/etc/ota/trust.pub"
(cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$W/initrd-base.cpio.gz"

mk_slot() { # NAME VERSION VARIANT: $OUT/slots/NAME.ext4
  local name=$1 version=$2 variant=$3 v=$W/initrd-$1 s=$W/slot-$1
  mkdir -p "$v/etc/ota" "$s/boot"
  echo "$version" > "$v/etc/ota-version"
  echo "$variant" > "$v/etc/ota-variant"
  { sed "s/@VARIANT@/$variant/; s|@DISK@|$DISK|" "$HERE/guest/client.toml.in"
    cat "$HERE/guest/bootloader-$BOARD.toml"; } > "$v/etc/ota/client.toml"
  if [ "$variant" = unhealthy ]; then cp "$HERE/guest/health-bad.sh" "$v/etc/ota/health.sh"
  else cp "$HERE/guest/health-ok.sh" "$v/etc/ota/health.sh"; fi
  (cd "$v" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$W/initrd-$1.cpio.gz"
  cp "$VMLINUZ" "$s/boot/vmlinuz"
  cat "$W/initrd-base.cpio.gz" "$W/initrd-$1.cpio.gz" > "$s/boot/initrd.img"
  echo "$version $variant" > "$s/ota-version"
  truncate -s 32M "$OUT/slots/$name.ext4"
  mke2fs -q -F -t ext4 -L "rootfs" -O ^metadata_csum_seed,^orphan_file \
    -d "$s" "$OUT/slots/$name.ext4"
}
mk_slot factory 1.0.0 good
mk_slot good 2.0.0 good
mk_slot next 3.0.0 good
mk_slot unhealthy 2.1.0 unhealthy
mk_slot panic 2.2.0 panic
mk_slot old 1.5.0 good

# ---- bundles -----------------------------------------------------------------------------------------
mk_bundle() { # NAME SLOTIMAGE VERSION COMPATIBLE [CREATE ARGS...]
  # Every release names its image rootfs.ext4, as a release pipeline does (a delta pairs images by name).
  mkdir -p "$W/release-$1" && ln -sf "$OUT/slots/$2.ext4" "$W/release-$1/rootfs.ext4"
  "$BUNDLE" create --version "$3" --compatible "$4" --image "rootfs=$W/release-$1/rootfs.ext4" \
    --key "$OUT/release.key" --level 3 "${@:5}" -o "$OUT/bundles/$1.otab" >&2
}
mk_bundle good good 2.0.0 $COMPATIBLE
mk_bundle next next 3.0.0 $COMPATIBLE
mk_bundle unhealthy unhealthy 2.1.0 $COMPATIBLE
mk_bundle panic panic 2.2.0 $COMPATIBLE
mk_bundle old old 1.5.0 $COMPATIBLE
mk_bundle other good 2.0.0 other-robot
# 3.0.0 as a delta against good (2.0.0): a robot on good fetches only what changed.
mk_bundle delta next 3.0.0 $COMPATIBLE --delta-from "$OUT/bundles/good.otab"
# Tampered copies of "good": one byte flipped in the middle (payload), and the manifest's version
# string changed in place (same length, so framing stays intact and only the signature can catch it).
cp "$OUT/bundles/good.otab" "$OUT/bundles/tampered-payload.otab"
size=$(stat -c %s "$OUT/bundles/good.otab")
off=$((size / 2))
b=$(dd if="$OUT/bundles/good.otab" bs=1 skip=$off count=1 status=none | od -An -tu1 | tr -d ' ')
printf "\\$(printf %03o $(( (b ^ 0x01) & 255 )))" | dd of="$OUT/bundles/tampered-payload.otab" bs=1 seek=$off conv=notrunc status=none
cp "$OUT/bundles/good.otab" "$OUT/bundles/tampered-manifest.otab"
voff=$(grep -abo -m1 '"2\.0\.0"' "$OUT/bundles/good.otab" | head -1 | cut -d: -f1)
[ -n "$voff" ] || { echo "version string not found in good.otab" >&2; exit 1; }
printf '"9.0.0"' | dd of="$OUT/bundles/tampered-manifest.otab" bs=1 seek="$voff" conv=notrunc status=none
cmp -s "$OUT/bundles/good.otab" "$OUT/bundles/tampered-payload.otab" && { echo "tampering failed" >&2; exit 1; }

bsize=0
for f in "$OUT"/bundles/*.otab; do bsize=$((bsize + $(stat -c %s "$f"))); done
bkib=$(( (bsize / 1024) * 11 / 10 + 4096 ))
mkfs.vfat -n OTABUNDLE -C "$OUT/bundles.img" $bkib >/dev/null
mcopy -i "$OUT/bundles.img" "$OUT"/bundles/*.otab ::/

# ---- ESP, data, disk ------------------------------------------------------------------------------------
mkfs.vfat -F 16 -n OTAESP -C "$W/esp.img" $((16 * 1024)) >/dev/null
if [ "$BOARD" = uboot ]; then
  # U-Boot: the project's boot.cmd as boot.scr, and two blank (never written) environment copies.
  mkimage -A x86_64 -T script -C none -n "OTA boot" -d "$ROOT/bootloader-hooks/u-boot/boot.cmd" "$W/boot.scr" >/dev/null
  head -c $((0x4000)) /dev/zero | tr '\0' '\377' > "$W/uboot.env"
  cp "$W/uboot.env" "$W/uboot-redund.env"
  mcopy -i "$W/esp.img" "$W/boot.scr" "$W/uboot.env" "$W/uboot-redund.env" ::/
  cp "$UBOOT/u-boot.rom" "$OUT/u-boot.rom"
  cp "$ROOT/bootloader-hooks/u-boot/boot.cmd" "$OUT/boot.cmd"
else
# ---- GRUB: standalone EFI with the embedded config = board settings + the project's ota.cfg ----------
cat "$HERE/guest/grub-settings.cfg" "$ROOT/bootloader-hooks/grub/ota.cfg" > "$W/grub.cfg"
grub-script-check "$W/grub.cfg"
grub-mkstandalone -O x86_64-efi -o "$W/BOOTX64.EFI" \
  --modules="part_gpt fat ext2" \
  --install-modules="part_gpt fat ext2 normal linux loadenv test echo search search_label regexp configfile gzio halt reboot efi_gop" \
  --locales= --themes= --fonts= \
  "boot/grub/grub.cfg=$W/grub.cfg"
cp "$W/grub.cfg" "$OUT/grub.cfg"
grub-editenv "$W/grubenv" create
mmd -i "$W/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$W/esp.img" "$W/BOOTX64.EFI" "$W/grubenv" ::/EFI/BOOT/
fi
truncate -s 16M "$W/data.img"
mke2fs -q -F -t ext4 -L data "$W/data.img"

# 1 MiB | esp 16M | rootfs_a 40M | rootfs_b 40M | data 16M | 1 MiB backup GPT
IMG=$OUT/base.img
truncate -s 115M "$IMG"
sgdisk -o \
  -n 1:1M:+16M -t 1:ef00 -c 1:esp \
  -n 2:17M:+40M -t 2:8304 -c 2:rootfs_a \
  -n 3:57M:+40M -t 3:8304 -c 3:rootfs_b \
  -n 4:97M:+16M -t 4:8300 -c 4:data "$IMG" >/dev/null
sgdisk -v "$IMG" | grep -q 'No problems found' || { sgdisk -v "$IMG"; exit 1; }
[ "$(sgdisk -p "$IMG" | grep -c '^ *[1-4] ')" = 4 ] || { sgdisk -p "$IMG"; echo "partitions missing" >&2; exit 1; }
put() { dd if="$1" of="$IMG" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$W/esp.img" 1
put "$OUT/slots/factory.ext4" 17
put "$W/data.img" 97
cat > "$OUT/layout" <<EOF
esp $((1 << 20)) $((16 << 20))
rootfs_a $((17 << 20)) $((40 << 20))
rootfs_b $((57 << 20)) $((40 << 20))
data $((97 << 20)) $((16 << 20))
EOF
rm -rf "$W"
t1=$(date +%s.%N)
echo "built $OUT in $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s: disk $(du -h --apparent-size "$IMG" | cut -f1)," \
  "slot image $(du -h --apparent-size "$OUT/slots/good.ext4" | cut -f1), bundle $(du -h "$OUT/bundles/good.otab" | cut -f1)," \
  "initrd $(debugfs -R 'stat /boot/initrd.img' "$OUT/slots/good.ext4" 2>/dev/null | sed -n 's/.*Size: \([0-9]*\).*/\1/p' | head -1) bytes" >&2
