#!/usr/bin/env bash
# make-image.sh: build a realistic ext4 root filesystem image for the OTA benchmarks.
#
# The image holds real files of this machine (binaries, shared libraries, Python and Perl modules, locales,
# configuration), so it compresses like a real robot rootfs and not like zeros or random bytes. It is built with
# `mke2fs -d` from a staging directory: no mounts, no loop devices, no root-only kernel features.
#
# Deterministic: fixed filesystem UUID, directory hash seed, creation time (E2FSPROGS_FAKE_TIME) and file times,
# files taken in sorted order. Two runs on the same machine give the same bytes. Cached: an image built with the
# same parameters is reused unless FORCE=1.
#
# Environment (all optional):
#   OUT=/tmp/ota-bench     where the images go (rootfs-v1.ext4, rootfs-v2.ext4, images.txt)
#   IMG_MB=1024            filesystem size in MiB
#   CONTENT_MB=780         how many MiB of files to put in it (must fit in IMG_MB)
#   SRC_DIRS="..."         directories to take files from, in this order, until CONTENT_MB is reached
#   V2=1                   also build rootfs-v2.ext4: the same tree with a few % changed (for delta work)
#   FORCE=1                rebuild even if a matching image exists
#
# Prints the path of the v1 image on its last line of stdout.
set -euo pipefail

OUT="${OUT:-/tmp/ota-bench}"
IMG_MB="${IMG_MB:-1024}"
CONTENT_MB="${CONTENT_MB:-780}"
SRC_DIRS="${SRC_DIRS:-/etc /usr/bin /usr/sbin /usr/libexec /usr/lib/python3 /usr/lib/python3.11 /usr/lib/git-core /usr/share/perl /usr/share/i18n /usr/share/zoneinfo /usr/lib/x86_64-linux-gnu /usr/lib/gcc /usr/share/locale}"
V2="${V2:-}"
FORCE="${FORCE:-}"

# Fixed identity of the filesystem, so rebuilding gives the same bytes.
FS_UUID=5e1f0c2a-7b3d-4e6f-8a9b-0c1d2e3f4a5b
FS_HASH_SEED=9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d
EPOCH=1704067200 # 2024-01-01T00:00:00Z: creation time and every file's mtime/atime
export E2FSPROGS_FAKE_TIME="$EPOCH"
export LC_ALL=C

log() { echo "make-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$IMG_MB" =~ ^[0-9]+$ && "$IMG_MB" -ge 16 ]] || die "IMG_MB must be a whole number of MiB >= 16"
[[ "$CONTENT_MB" =~ ^[0-9]+$ ]] || die "CONTENT_MB must be a whole number of MiB"
((CONTENT_MB * 100 <= IMG_MB * 90)) || die "CONTENT_MB=$CONTENT_MB does not fit in IMG_MB=$IMG_MB (keep it under 90 %)"

# --- tools ---------------------------------------------------------------------------------------------------------
apt_install() { # apt_install PACKAGE...: install Debian packages, refreshing the lists once if needed
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  log "installing $*"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
  fi
}
need=()
command -v mke2fs >/dev/null || [[ -x /sbin/mke2fs ]] || need+=(e2fsprogs)
command -v python3 >/dev/null || need+=(python3)
command -v tar >/dev/null || need+=(tar)
((${#need[@]} == 0)) || apt_install "${need[@]}"
PATH="$PATH:/sbin:/usr/sbin"

# --- cache -----------------------------------------------------------------------------------------------------------
mkdir -p "$OUT"
V1_IMG="$OUT/rootfs-v1.ext4"
V2_IMG="$OUT/rootfs-v2.ext4"
PARAMS="img_mb=$IMG_MB content_mb=$CONTENT_MB src_dirs=$SRC_DIRS uuid=$FS_UUID epoch=$EPOCH recipe=4"
STAMP="$OUT/params.txt"
if [[ -z "$FORCE" && -f "$V1_IMG" && -f "$STAMP" && "$(cat "$STAMP")" == "$PARAMS" ]] &&
  [[ -z "$V2" || -f "$V2_IMG" ]]; then
  log "cached: $V1_IMG (FORCE=1 rebuilds)"
  cat "$OUT/images.txt" >&2 2>/dev/null || true
  echo "$V1_IMG"
  exit 0
fi
rm -f "$V1_IMG" "$V2_IMG" "$STAMP" "$OUT/images.txt"

STAGE="$(mktemp -d "$OUT/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
ROOT1="$STAGE/v1"
ROOT2="$STAGE/v2"
mkdir -p "$ROOT1"

# --- pick files ------------------------------------------------------------------------------------------------------
# Regular files and symlinks the current user can read, each directory's entries in byte order, directories in
# the order given; a file that would overflow the budget is skipped so smaller ones after it can still fill it.
# Hard links count once. Names with a tab or newline are left out (none in a Debian /usr, and they would break the list format).
LIST="$STAGE/files.txt"
budget=$((CONTENT_MB * 1024 * 1024))
for dir in $SRC_DIRS; do
  [[ -d "$dir" ]] || { log "skipping missing $dir"; continue; }
  { find "$dir" ! -name $'*\n*' ! -name $'*\t*' \( -type f -readable -o -type l \) \
      -printf '%y\t%s\t%D:%i\t%p\n' 2>/dev/null || true; } | sort -t$'\t' -k4,4
done | awk -F'\t' -v budget="$budget" -v list="$LIST" '
  NF != 4 { next }
  { size = ($1 == "l" || ($3 in inode)) ? 0 : $2
    if (seen[$4]++ || total + size > budget) next
    inode[$3] = 1
    total += size; n++
    print substr($4, 2) > list }
  END { printf "selected %d files, %.1f MiB\n", n, total / 1048576 > "/dev/stderr" }'

# Copy them with modes, owners, symlinks and hard links kept; then give every entry the same times.
{ tar -C / --no-recursion --verbatim-files-from -T "$LIST" -cf - 2>/dev/null || true; } |
  tar -C "$ROOT1" --same-owner -xpf -
mkdir -p "$ROOT1"/{boot,data,dev,home,mnt,proc,root,run,sys,tmp,var/lib,var/log}
log "v1 tree: $(du -sm "$ROOT1" | cut -f1) MiB in $(find "$ROOT1" | wc -l) entries"

# --- v2: a few % changed ---------------------------------------------------------------------------------------------
if [[ -n "$V2" ]]; then
  cp -a "$ROOT1" "$ROOT2"
  python3 - "$ROOT2" /usr/share/doc /usr/include <<'PY' >&2
# Turns the v1 tree into a plausible next release, deterministically (fixed seed, sorted walks):
#   rebuilt ELF files (~2.5 % of bytes): a few bytes changed every ~4 KiB and a new build id appended, the way a
#     recompile shifts addresses everywhere; edited config/text files (150 files, one line appended);
#   removed files (~0.5 % of bytes); new files (~1.5 % of bytes) copied from directories v1 does not use.
import os, random, shutil, stat, sys

root, extra_dirs = sys.argv[1], sys.argv[2:]
rng = random.Random(0x07A2)

def walk(top):
    """Regular files under top in sorted order, each inode once (hard links are one file)."""
    inodes = set()
    for d, subdirs, names in os.walk(top):
        subdirs.sort()
        for n in sorted(names):
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in inodes:
                inodes.add((st.st_dev, st.st_ino))
                yield p, st.st_size

files = list(walk(root))
total = sum(s for _, s in files)
elf, text = [], []
for p, s in files:
    with open(p, "rb") as f:
        head = f.read(512)
    if head.startswith(b"\x7fELF"):
        elf.append((p, s))
    elif s and b"\0" not in head:
        text.append((p, s))
rng.shuffle(elf)
rng.shuffle(text)
touched = set()

rebuilt = 0
for p, s in elf:
    if rebuilt >= 0.025 * total:
        break
    if s > 16 << 20 or s < 8192:
        continue
    data = bytearray(open(p, "rb").read())
    step = rng.randrange(3000, 5000)
    for off in range(rng.randrange(64, step), len(data) - 8, step):
        data[off:off + 4] = rng.randbytes(4)
    data += b"\0build-id:" + rng.randbytes(20)
    with open(p, "wb") as f:
        f.write(data)
    rebuilt += s
    touched.add(p)

edited = 0
for p, s in text:
    if edited >= 150:
        break
    if p in touched or os.path.islink(p):
        continue
    with open(p, "ab") as f:
        f.write(b"\n# v2: setting changed by release 2\n")
    edited += 1
    touched.add(p)

removed = 0
doomed = list(files)
rng.shuffle(doomed)
for p, s in doomed:
    if removed >= 0.005 * total:
        break
    if p in touched or s > 4 << 20:
        continue
    os.unlink(p)
    removed += s

added = 0
dest = os.path.join(root, "usr/share/release-2")
for top in extra_dirs:
    for src, s in walk(top):
        if added >= 0.015 * total:
            break
        if not os.access(src, os.R_OK):
            continue
        target = os.path.join(dest, os.path.relpath(src, "/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(src, target)
        added += s

mib = 1 << 20
print(f"v2: rebuilt {rebuilt / mib:.1f} MiB of ELF files, edited {edited} text files, removed {removed / mib:.1f} MiB, "
      f"added {added / mib:.1f} MiB (of {total / mib:.1f} MiB: {100 * (rebuilt + removed + added) / total:.1f} %)")
PY
fi

# --- filesystems -----------------------------------------------------------------------------------------------------
# mke2fs -d copies each file's mtime and atime (fixed here by touch) but also its ctime, which only the kernel sets:
# afterwards every inode in use gets ctime = EPOCH through debugfs. The used inodes are the complement of the
# "Free inodes:" ranges that dumpe2fs prints per group.
fix_ctimes() { # fix_ctimes IMAGE
  dumpe2fs "$1" 2>/dev/null | awk -v epoch="$EPOCH" '
    /^Inodes per group:/ { ipg = $4 }
    /^Group [0-9]+:/ { g = $2 + 0; first = g * ipg + 1; last = first + ipg - 1; next }
    /^  Free inodes:/ && ipg {
      sub(/^  Free inodes: */, ""); n = split($0, r, /, */)
      next_used = first
      for (i = 1; i <= n; i++) {
        if (r[i] == "") continue
        split(r[i], ab, "-"); a = ab[1] + 0; b = (ab[2] == "" ? a : ab[2] + 0)
        for (ino = next_used; ino < a; ino++) if (ino > 11) print "sif <" ino "> ctime @" epoch
        next_used = b + 1
      }
      for (ino = next_used; ino <= last; ino++) if (ino > 11) print "sif <" ino "> ctime @" epoch
    }' >"$STAGE/ctimes.cmd"
  debugfs -w -f "$STAGE/ctimes.cmd" "$1" >"$STAGE/debugfs.log" 2>&1 || { cat "$STAGE/debugfs.log" >&2; die "debugfs failed on $1"; }
  if grep -qv '^debugfs' "$STAGE/debugfs.log"; then grep -v '^debugfs' "$STAGE/debugfs.log" | head >&2; die "debugfs failed on $1"; fi
}
build_fs() { # build_fs TREE IMAGE
  find "$1" -exec touch -h -d "@$EPOCH" {} +
  rm -f "$2"
  mke2fs -q -F -t ext4 -b 4096 -I 256 -m 0 -L rootfs -U "$FS_UUID" \
    -E "hash_seed=$FS_HASH_SEED,root_owner=0:0,lazy_itable_init=0" -d "$1" "$2" "${IMG_MB}M" \
    >"$STAGE/mke2fs.log" 2>&1 || { cat "$STAGE/mke2fs.log" >&2; die "mke2fs failed for $2"; }
  fix_ctimes "$2"
  e2fsck -fn "$2" >"$STAGE/e2fsck.log" 2>&1 || { cat "$STAGE/e2fsck.log" >&2; die "e2fsck found errors in $2"; }
}
log "mke2fs -d -> $V1_IMG"
build_fs "$ROOT1" "$V1_IMG"
if [[ -n "$V2" ]]; then
  log "mke2fs -d -> $V2_IMG"
  build_fs "$ROOT2" "$V2_IMG"
fi

{
  echo "params: $PARAMS"
  for img in "$V1_IMG" ${V2:+"$V2_IMG"}; do
    used=$(dumpe2fs -h "$img" 2>/dev/null | awk -F: '
      /^Block count/ {c=$2} /^Free blocks/ {f=$2} /^Block size/ {b=$2}
      END {printf "%.0f MiB used of %.0f MiB", (c-f)*b/1048576, c*b/1048576}')
    echo "$(sha256sum "$img" | cut -d' ' -f1)  $img  ($used)"
  done
} >"$OUT/images.txt"
cat "$OUT/images.txt" >&2
echo "$PARAMS" >"$STAMP"
echo "$V1_IMG"
