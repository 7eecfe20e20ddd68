# Shared helpers for the fixture builders (sourced by scripts/fixtures; not executable).
#
# Cache layout:  $IMGCONV_FIXTURES_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/imgconv-fixtures)
#                  synthetic-<key>/   complete synthetic set (appears atomically)
#                  real-<key>/        complete real set (appears atomically)
#                  .<kind>-<key>.lock flock(1) lock so concurrent callers wait instead of
#                                     building twice
# <key> is a hash of the builder scripts (and of the host tool versions whose output ends up
# in the images), so editing a builder invalidates its cache and nothing else.

fixtures_cache_root() {
  printf '%s\n' "${IMGCONV_FIXTURES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgconv-fixtures}"
}

log() { printf 'fixtures: %s\n' "$*" >&2; }
die() { printf 'fixtures: error: %s\n' "$*" >&2; exit 1; }

# fixture_key FILE... -> 16 hex digits over the files' contents plus the versions of the
# host packages whose bits are copied into the images (e2fsprogs formats, GRUB modules).
fixture_key() {
  {
    cat "$@"
    dpkg-query -W -f='${Package} ${Version}\n' e2fsprogs grub-pc-bin fdisk 2>/dev/null || true
  } | sha256sum | cut -c1-16
}

# publish_atomically TMPDIR FINALDIR: rename a completely built directory into place. A
# concurrent builder may have won the race; then its result is kept and ours discarded.
publish_atomically() {
  local tmp=$1 final=$2
  : >"$tmp/.complete"
  if ! mv -T "$tmp" "$final" 2>/dev/null; then
    [ -e "$final/.complete" ] || die "could not move $tmp to $final"
    rm -rf "$tmp"
  fi
}

# with_cache KIND KEY BUILD_FUNCTION: print the cache directory for KIND-KEY on stdout,
# building it first (under a lock, into a temporary directory) when it is missing.
# BUILD_FUNCTION is called with the temporary output directory as $1, stdout sent to stderr.
with_cache() {
  local kind=$1 key=$2 build=$3 root final tmp start
  root=$(fixtures_cache_root)
  mkdir -p "$root"
  final="$root/$kind-$key"
  if [ ! -e "$final/.complete" ]; then
    exec 9>"$root/.$kind-$key.lock"
    flock 9
    if [ ! -e "$final/.complete" ]; then
      tmp=$(mktemp -d "$root/.$kind-$key.tmp.XXXXXX")
      # shellcheck disable=SC2064  # expand $tmp now: the trap must remove this directory
      trap "rm -rf '$tmp'" EXIT
      start=$(date +%s.%N)
      log "building $kind fixtures in $final"
      "$build" "$tmp" >&2
      publish_atomically "$tmp" "$final"
      trap - EXIT
      log "$kind fixtures built in $(elapsed_since "$start") s (cold)"
    fi
    flock -u 9
    exec 9>&-
  else
    log "$kind fixtures cached: $final"
  fi
  printf '%s\n' "$final"
}

elapsed_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# --- disk image helpers (no loop devices, no root-only tricks) -----------------------------

MiB=$((1024 * 1024))

# new_sparse_file PATH BYTES
new_sparse_file() { rm -f "$1"; truncate -s "$2" "$1"; }

# place_image PART_IMAGE DISK_IMAGE OFFSET_BYTES: copy a filesystem image into a disk image
# at a byte offset, keeping holes (conv=sparse) and the rest of the disk (conv=notrunc).
place_image() {
  dd if="$1" of="$2" bs=1M seek="$(($3 / MiB))" conv=notrunc,sparse status=none
}

# place_at PART_IMAGE DISK_IMAGE OFFSET_BYTES: as place_image, at any byte offset (old
# layouts start partitions at sector 63).
place_at() {
  dd if="$1" of="$2" bs=1M oflag=seek_bytes seek="$3" conv=notrunc,sparse status=none
}

# partition_disk DISK SFDISK_SCRIPT: write a partition table into an image file.
partition_disk() {
  sfdisk --quiet --no-reread --no-tell-kernel --wipe never "$1" >/dev/null <<<"$2" ||
    die "sfdisk failed on $1"
}

# run_e2fsck_fix IMAGE: e2fsck -fyD (optimise/index directories). Exit 0/1 are success.
run_e2fsck_fix() {
  local rc=0
  e2fsck -fyD "$1" >/dev/null 2>&1 || rc=$?
  [ "$rc" -le 1 ] || die "e2fsck -fyD $1 failed (exit $rc)"
}

# check_clean IMAGE[?offset=N]: e2fsck -fn must find nothing.
check_clean() {
  e2fsck -fn "$1" >/dev/null 2>&1 || die "e2fsck -fn $1 is not clean"
}

# manifest_line MANIFEST IMAGE KIND PART START SIZE [NAME]: append one row, reading type and
# UUID back from the bytes on disk with blkid (an outside judge, not our own bookkeeping).
# NAME (default: the image's file name) is the image's path relative to the fixture directory.
manifest_line() {
  local manifest=$1 image=$2 kind=$3 part=$4 start=$5 size=$6 name=${7:-} type uuid
  type=$(blkid -p -O "$start" -S "$size" -o value -s TYPE "$image" 2>/dev/null || true)
  uuid=$(blkid -p -O "$start" -S "$size" -o value -s UUID "$image" 2>/dev/null || true)
  [ -n "$type" ] || die "blkid finds no filesystem in $image at offset $start"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${name:-$(basename "$image")}" "$kind" "$part" "$start" "$size" \
    "$type" "${uuid:--}" >>"$manifest"
}
