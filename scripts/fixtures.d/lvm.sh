# LVM fixture builder (sourced by scripts/fixtures after lib.sh; not executable).
# Needs root, loop devices and lvm2's tools (scripts/setup); no device-mapper: volumes are
# created with `--driverloaded n` (metadata only, never activated), and their contents are
# written with dd into the extents LVM reports (`lvs --segments -o seg_pe_ranges`, `pvs -o
# pe_start`). Every PV is made on its own loop-attached file; a partitioned disk gets the
# PV file copied into its partition afterwards. lvm runs with a private configuration
# (LVM_SYSTEM_DIR: only this builder's loop devices are scanned, no udev, no backups, no
# hints, locks in the work directory), so the host's own LVM setup is neither read nor
# written, and detaching the loop devices (on every exit path) leaves nothing behind.
# Snapshot and thin volumes need device-mapper to be created, so their metadata is made
# by editing a `vgcfgbackup` and restoring it with `vgcfgrestore --force` (lvm2 itself
# checks and writes it). build_lvm OUT writes into OUT:
#
#   lvm-rhel.img          MBR: p1 ext3 /boot (1 KiB blocks), p2 LVM2 PV (type 8e) of
#                         VolGroup00: LogVol00 (ext4 root, 24 MiB: extents 0-1 then 4-7 of
#                         the PV, around LogVol01), LogVol01 (swap, extents 2-3)
#   lvm-rhel-LogVol00.ext4   the root filesystem written into LogVol00 (what the LV holds)
#   lvm-rhel-LogVol01.swap   the swap area written into LogVol01
#   lvm-two-a.img lvm-two-b.img   whole-disk PVs of vgtwo: solo (on a), span (6 MiB on a
#                         then 6 MiB on b), stripes (2 stripes over a and b)
#   lvm-two-span.bin      the bytes written into span
#   lvm-snapthin.img      whole-disk PV of vgsnap: root (origin of snap), snap (a snapshot),
#                         pool (thin pool), thin1 (thin volume in pool)
#   lvm-wrap.img          whole-disk PV of vgwrap, 32 KiB metadata area whose current
#                         metadata text wraps around the end of its circular buffer; LV data
#   lvm-wrap-data.bin     the bytes written into data
#   <image>.lvs.json      `lvs --segments --reportformat json` of the image's volumes (bytes)
#   <image>.pvs.json      `pvs --reportformat json` (pv_name, pv_uuid, pe_start, vg_name)
#   <image>.pvck.txt      `pvck --dump headers` of the image's PV
#   MANIFEST              one row per partition or whole-disk PV (blkid: LVM2_member, ext3)

LVM_ROOT_UUID=1f0e2d3c-4b5a-4978-8695-a4b3c2d1e0f9
LVM_BOOT_UUID=2a0b1c2d-3e4f-4051-8263-748596a7b8c9
LVM_SWAP_UUID=3b1c2d3e-4f50-4162-9374-8596a7b8c9da

# lvm_conf: (re)write the private lvm.conf accepting exactly the attached loop devices.
lvm_conf() {
  local accept="" d
  for d in "${LVM_LOOPS[@]}"; do accept+="\"a|^$d\$|\", "; done
  cat >"$LVM_SYSTEM_DIR/lvm.conf" <<EOF
devices {
  scan = [ "/dev" ]
  filter = [ $accept"r|.*|" ]
  global_filter = [ $accept"r|.*|" ]
  obtain_device_list_from_udev = 0
  external_device_info_source = "none"
  use_devicesfile = 0
  hints = "none"
}
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
global { locking_dir = "$LVM_SYSTEM_DIR/lock" use_lvmpolld = 0 event_activation = 0 }
backup { backup = 0 archive = 0 }
EOF
}

# attach FILE: attach a loop device to FILE, named in $ATTACHED; it is detached on exit.
attach() {
  ATTACHED=$(losetup --find --show "$1") || die "losetup failed for $1"
  LVM_LOOPS+=("$ATTACHED")
  lvm_conf
}

detach_all() {
  local d
  for d in "${LVM_LOOPS[@]}"; do losetup -d "$d" 2>/dev/null || true; done
  LVM_LOOPS=()
}

# lv_cmd ARGS...: an lvm command, quiet, with the private configuration.
lv_cmd() {
  lvm "$@" 2> >(grep -v -e 'WARNING: ' -e 'device-mapper' -e 'mapper/control' \
    -e 'Check that device-mapper' -e 'Incompatible libdevmapper' >&2)
}

# Create a volume without device-mapper.
NODM=(--driverloaded n --activate n --zero n --yes --quiet)

# write_lv VG/LV SRC: write SRC (as long as the LV) into the LV's extents as lvs and pvs
# report them.
write_lv() {
  local lv=$1 src=$2 start size ranges dev pe pe_start extent
  extent=$(lv_cmd vgs --noheadings --units b --nosuffix -o vg_extent_size "${lv%/*}" | tr -d ' ')
  while read -r start size ranges; do
    [ -n "$start" ] || continue
    dev=${ranges%%:*} pe=${ranges#*:} pe=${pe%%-*}
    pe_start=$(lv_cmd pvs --noheadings --units b --nosuffix -o pe_start "$dev" | tr -d ' ')
    dd if="$src" of="$dev" bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes \
      skip="$start" count="$size" seek=$((pe_start + pe * extent)) conv=notrunc,sparse status=none
  done < <(lv_cmd lvs --noheadings --units b --nosuffix --segments \
    -o seg_start,seg_size,seg_pe_ranges "$lv")
}

# report NAME VG DEV...: what LVM says about the image's volumes and PVs.
report() {
  local name=$1 vg=$2 d
  shift 2
  lv_cmd lvs -a --segments --reportformat json --units b --nosuffix \
    -o lv_name,lv_attr,segtype,seg_start,seg_size,stripes,seg_pe_ranges,origin,pool_lv "$vg" \
    >"$OUT/$name.lvs.json"
  lv_cmd pvs --reportformat json --units b --nosuffix -o pv_name,pv_uuid,pe_start,vg_name "$@" \
    >"$OUT/$name.pvs.json"
  for d in "$@"; do lv_cmd pvck --dump headers "$d" >>"$OUT/$name.pvck.txt" 2>/dev/null; done
}

random_file() { python3 -c "import random,sys; sys.stdout.buffer.write(random.Random($2).randbytes($3))" >"$1"; }

rhel_tree() {
  local t=$1
  mkdir -p "$t"/{etc,srv,boot,home/user,usr/sbin}
  install -m 0755 /usr/bin/true "$t/usr/sbin/init"
  cat >"$t/etc/os-release" <<'EOF'
NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
EOF
  cat >"$t/etc/fstab" <<EOF
/dev/mapper/VolGroup00-LogVol00 /                       ext4    defaults        1 1
UUID=$LVM_BOOT_UUID /boot                   ext3    defaults        1 2
/dev/VolGroup00/LogVol01 swap                    swap    defaults        0 0
EOF
  echo "root filesystem on LVM: VolGroup00/LogVol00" >"$t/etc/lvm-marker"
  echo "a file in the user's home" >"$t/home/user/notes.txt"
  # 12 MiB of data: it spans the break between LogVol00's two segments.
  random_file "$t/srv/big.bin" 11 $((12 * MiB))
}

build_rhel() {
  local w=$1 p2=$1/rhel-p2.img disk=$OUT/lvm-rhel.img dev
  new_sparse_file "$p2" $((56 * MiB))
  attach "$p2"
  dev=$ATTACHED
  lv_cmd pvcreate --quiet "$dev"
  lv_cmd vgcreate --quiet -s 4M VolGroup00 "$dev"
  lv_cmd lvcreate "${NODM[@]}" -L 8M -n LogVol00 VolGroup00
  lv_cmd lvcreate "${NODM[@]}" -L 8M -n LogVol01 VolGroup00
  lv_cmd lvextend --driverloaded n --quiet -L +16M VolGroup00/LogVol00
  rhel_tree "$w/rhel-root"
  mkfs.ext4 -q -F -U "$LVM_ROOT_UUID" -L root -d "$w/rhel-root" "$OUT/lvm-rhel-LogVol00.ext4" 24M
  check_clean "$OUT/lvm-rhel-LogVol00.ext4"
  new_sparse_file "$OUT/lvm-rhel-LogVol01.swap" $((8 * MiB))
  mkswap -q -U "$LVM_SWAP_UUID" -L swap0 "$OUT/lvm-rhel-LogVol01.swap" >/dev/null
  write_lv VolGroup00/LogVol00 "$OUT/lvm-rhel-LogVol00.ext4"
  write_lv VolGroup00/LogVol01 "$OUT/lvm-rhel-LogVol01.swap"
  report lvm-rhel VolGroup00 "$dev"
  detach_all
  mkdir -p "$w/rhel-boot"
  echo "kernel placeholder" >"$w/rhel-boot/vmlinuz-3.10.0-1160.el7.x86_64"
  mkfs.ext3 -q -F -b 1024 -U "$LVM_BOOT_UUID" -L boot -d "$w/rhel-boot" "$w/rhel-p1.img" 7M
  new_sparse_file "$disk" $((64 * MiB))
  partition_disk "$disk" "label: dos
start=2048, size=14336, type=83, bootable
start=16384, size=114688, type=8e"
  place_image "$w/rhel-p1.img" "$disk" $((1 * MiB))
  place_image "$p2" "$disk" $((8 * MiB))
  rm -f "$p2" "$w/rhel-p1.img"
}

build_two() {
  local a=$OUT/lvm-two-a.img b=$OUT/lvm-two-b.img da db
  new_sparse_file "$a" $((24 * MiB))
  new_sparse_file "$b" $((24 * MiB))
  attach "$a"
  da=$ATTACHED
  attach "$b"
  db=$ATTACHED
  lv_cmd pvcreate --quiet "$da" "$db"
  lv_cmd vgcreate --quiet -s 1M vgtwo "$da" "$db"
  lv_cmd lvcreate "${NODM[@]}" -L 4M -n solo vgtwo "$da"
  lv_cmd lvcreate "${NODM[@]}" -L 6M -n span vgtwo "$da"
  lv_cmd lvextend --driverloaded n --quiet -L +6M vgtwo/span "$db"
  lv_cmd lvcreate "${NODM[@]}" -i 2 -I 64k -L 4M -n stripes vgtwo "$da" "$db"
  random_file "$OUT/lvm-two-span.bin" 22 $((12 * MiB))
  write_lv vgtwo/span "$OUT/lvm-two-span.bin"
  report lvm-two vgtwo "$da" "$db"
  detach_all
}

# snapthin_edit BACKUP OUT: the snapshot and thin volumes added to a vgcfgbackup, as lvm2
# writes them (lib/metadata/snapshot_manip.c: the copy-on-write volume is hidden and a
# visible `snapshot0` ties it to its origin; lib/thin/thin.c: pool and thin segments).
snapthin_edit() {
  python3 - "$1" "$2" <<'PY'
import re, sys
t = open(sys.argv[1]).read()

def block(name):
    m = re.search(r'^\t\t%s \{\n.*?^\t\t\}\n' % re.escape(name), t, re.S | re.M)
    assert m, name
    return m

def hide(name, new=None):
    global t
    m = block(name)
    b = m.group(0).replace('"READ", "WRITE", "VISIBLE"', '"READ", "WRITE"')
    if new:
        b = b.replace('\t\t%s {' % name, '\t\t%s {' % new, 1)
    t = t[:m.start()] + b + t[m.end():]

def add(name, uid, extents, seg):
    global t
    text = ('\t\t%s {\n\t\t\tid = "%s"\n\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]\n\t\t\tflags = []\n'
            '\t\t\tsegment_count = 1\n\n\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n'
            '\t\t\t\textent_count = %d\n\n%s\t\t\t}\n\t\t}\n\n'
            % (name, uid, extents, ''.join('\t\t\t\t%s\n' % l for l in seg)))
    at = block('root').start()
    at += re.search(r'^\t\}\n', t[at:], re.M).start()
    t = t[:at] + text + t[at:]

hide('snap')
hide('pooldata', 'pool_tdata')
hide('poolmeta', 'pool_tmeta')
hide('pmspare', 'lvol0_pmspare')
add('snapshot0', 'SNAPsh-0000-0000-0000-0000-0000-000000', 4,
    ['type = "snapshot"', 'chunk_size = 8', 'origin = "root"', 'cow_store = "snap"'])
add('pool', 'THINpl-0000-0000-0000-0000-0000-000000', 4,
    ['type = "thin-pool"', 'metadata = "pool_tmeta"', 'pool = "pool_tdata"',
     'transaction_id = 1', 'chunk_size = 128', 'discards = "passdown"', 'zero_new_blocks = 1'])
add('thin1', 'THINvl-0000-0000-0000-0000-0000-000000', 8,
    ['type = "thin"', 'thin_pool = "pool"', 'transaction_id = 0', 'device_id = 1'])
open(sys.argv[2], 'w').write(t)
PY
}

build_snapthin() {
  local w=$1 img=$OUT/lvm-snapthin.img dev
  new_sparse_file "$img" $((32 * MiB))
  attach "$img"
  dev=$ATTACHED
  lv_cmd pvcreate --quiet "$dev"
  lv_cmd vgcreate --quiet -s 1M vgsnap "$dev"
  lv_cmd lvcreate "${NODM[@]}" -L 4M -n root vgsnap
  lv_cmd lvcreate "${NODM[@]}" -L 2M -n snap vgsnap
  lv_cmd lvcreate "${NODM[@]}" -L 4M -n pooldata vgsnap
  lv_cmd lvcreate "${NODM[@]}" -L 1M -n poolmeta vgsnap
  lv_cmd lvcreate "${NODM[@]}" -L 1M -n pmspare vgsnap
  lv_cmd vgcfgbackup --quiet -f "$w/vgsnap.txt" vgsnap
  snapthin_edit "$w/vgsnap.txt" "$w/vgsnap-edited.txt"
  lv_cmd vgcfgrestore --quiet --force -f "$w/vgsnap-edited.txt" vgsnap
  report lvm-snapthin vgsnap "$dev"
  grep -q '"segtype":"thin"' "$OUT/lvm-snapthin.lvs.json" || die "lvm did not restore the thin volume"
  detach_all
}

build_wrap() {
  local img=$OUT/lvm-wrap.img dev i o s z
  new_sparse_file "$img" $((8 * MiB))
  attach "$img"
  dev=$ATTACHED
  lv_cmd pvcreate --quiet --metadatasize 32k --dataalignment 4k "$dev"
  lv_cmd vgcreate --quiet -s 1M vgwrap "$dev"
  lv_cmd lvcreate "${NODM[@]}" -L 2M -n data vgwrap
  # Each change writes the next copy after the previous one: until it wraps.
  for i in $(seq 1 80); do
    lv_cmd lvchange --quiet --addtag "change$i" vgwrap/data >/dev/null
    read -r o z s < <(lv_cmd pvck --dump headers "$dev" 2>/dev/null | awk '
      /mda_header_1.size/ { s = $2 } /raw_locn\[0\].offset/ { o = $2 } /raw_locn\[0\].size/ { z = $2 }
      END { print o, z, s }')
    [ $((o + z)) -gt "$s" ] && break
  done
  [ $((o + z)) -gt "$s" ] || die "the metadata of vgwrap never wrapped"
  random_file "$OUT/lvm-wrap-data.bin" 33 $((2 * MiB))
  write_lv vgwrap/data "$OUT/lvm-wrap-data.bin"
  report lvm-wrap vgwrap "$dev"
  detach_all
}

build_lvm() (
  OUT=$1
  [ "$(id -u)" -eq 0 ] || die "the LVM fixtures need root (loop devices)"
  command -v lvm >/dev/null || die "lvm2 is not installed (run scripts/setup)"
  work=$(mktemp -d)
  LVM_LOOPS=()
  export LVM_SYSTEM_DIR=$work/lvm LVM_SUPPRESS_FD_WARNINGS=1
  mkdir -p "$LVM_SYSTEM_DIR/lock"
  trap 'detach_all; rm -rf "$work"' EXIT
  build_rhel "$work"
  build_two
  build_snapthin "$work"
  build_wrap
  man=$OUT/MANIFEST
  printf '# image\tkind\tpart\tstart\tsize\ttype\tuuid\n' >"$man"
  manifest_line "$man" "$OUT/lvm-rhel.img" mbr 1 $((1 * MiB)) $((7 * MiB))
  manifest_line "$man" "$OUT/lvm-rhel.img" mbr 2 $((8 * MiB)) $((56 * MiB))
  for img in lvm-two-a lvm-two-b lvm-snapthin lvm-wrap; do
    manifest_line "$man" "$OUT/$img.img" bare - 0 "$(stat -c %s "$OUT/$img.img")"
  done
  losetup -a | grep -F "$OUT" && die "a loop device is still attached to $OUT"
  true
)
