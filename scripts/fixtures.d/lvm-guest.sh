# The LVM layout of the real guest (sourced by scripts/fixtures real after real.sh and
# lvm.sh, whose private lvm2 configuration, loop handling and write_lv it uses; not
# executable). build_lvm_guest OUT WORK TREE writes, from the Xen guest tree TREE:
#
#   lvm-guest.img   the RHEL/CentOS default layout: MBR, p1 /boot ext3 (1 KiB blocks, the
#                   pygrub grub.conf), p2 LVM2 PV (type 8e) of VolGroup00 holding LogVol00
#                   (/ ext4 in two segments, the second after LogVol01 on the PV) and
#                   LogVol01 (swap). fstab: /dev/mapper/VolGroup00-LogVol00 /,
#                   /dev/xvda1 /boot, /dev/VolGroup00/LogVol01 swap; /etc/default/grub and
#                   grub.conf name the root by its mapper name with rd.lvm.lv= for both
#                   volumes; host xenlvm, /home marker home-lvm-guest.
#
# The volumes are made with lvm2's tools on a loop-attached file without device-mapper
# (metadata only) and the filesystems written into the extents lvs reports; the loop
# device is detached on every exit path. Facts go to INFO (lvm_guest_*).

REAL_LVM_BOOT_UUID=4c4c4c4c-0001-4000-8000-0000000000e1
REAL_LVM_ROOT_UUID=4c4c4c4c-0002-4000-8000-0000000000e2
REAL_LVM_SWAP_UUID=4c4c4c4c-0003-4000-8000-0000000000e3

build_lvm_guest() (
  local out=$1 work=$2 src=$3 t="$2/lvm-root" disk="$1/lvm-guest.img" pv="$2/lvm-pv.img"
  local t0 dev start size i segs
  t0=$(date +%s.%N)
  command -v lvm >/dev/null || die "lvm2 is not installed (run scripts/setup)"
  LVM_LOOPS=()
  export LVM_SYSTEM_DIR=$work/lvm-guest-conf LVM_SUPPRESS_FD_WARNINGS=1
  mkdir -p "$LVM_SYSTEM_DIR/lock"
  trap 'detach_all; rm -rf "$LVM_SYSTEM_DIR"' EXIT
  layout_tree "$src" "$t" xenlvm home-lvm-guest
  cat >"$t/etc/fstab" <<'FSTAB'
# /etc/fstab: static file system information (Xen PV guest, root on LVM).
/dev/mapper/VolGroup00-LogVol00 /     ext4 errors=remount-ro 0 1
/dev/xvda1                      /boot ext3 defaults          0 2
/dev/VolGroup00/LogVol01        swap  swap defaults          0 0
FSTAB
  cat >"$t/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="root=/dev/mapper/VolGroup00-LogVol00 rd.lvm.lv=VolGroup00/LogVol00 rd.lvm.lv=VolGroup00/LogVol01 resume=/dev/VolGroup00/LogVol01 console=hvc0"
GRUB
  rm -f "$t/boot/grub/menu.lst"
  cat >"$t/boot/grub/grub.conf" <<'GRUBCONF'
# grub.conf for pygrub: /boot is its own filesystem, so paths start at its root.
default=0
timeout=2

title Debian GNU/Linux 12, kernel 6.1.0-18-amd64
	root (hd0,0)
	kernel /vmlinuz-6.1.0-18-amd64 ro root=/dev/mapper/VolGroup00-LogVol00 rd.lvm.lv=VolGroup00/LogVol00 rd.lvm.lv=VolGroup00/LogVol01 console=hvc0
	initrd /initrd.img-6.1.0-18-amd64
GRUBCONF
  ln -s ./grub.conf "$t/boot/grub/menu.lst"
  split_off "$t" /boot "$work/lvm-boot"

  # The PV on its own loop device: LogVol00 1 GiB, LogVol01 64 MiB, then LogVol00 grows by
  # 1 GiB past LogVol01.
  new_sparse_file "$pv" $((2176 * MiB))
  attach "$pv"
  dev=$ATTACHED
  lv_cmd pvcreate --quiet "$dev"
  lv_cmd vgcreate --quiet -s 4M VolGroup00 "$dev"
  lv_cmd lvcreate "${NODM[@]}" -L 1G -n LogVol00 VolGroup00
  lv_cmd lvcreate "${NODM[@]}" -L 64M -n LogVol01 VolGroup00
  lv_cmd lvextend --driverloaded n --quiet -L +1G VolGroup00/LogVol00
  segs=$(lv_cmd lvs --noheadings --segments -o seg_pe_ranges VolGroup00/LogVol00 | sed 's/[^ ]*://' | tr -s ' \n' ' ')
  new_sparse_file "$work/lvm-root.ext4" $((2 * 1024 * MiB))
  mkfs.ext4 -q -F -U "$REAL_LVM_ROOT_UUID" -L lvmroot -d "$t" "$work/lvm-root.ext4" 2G
  check_clean "$work/lvm-root.ext4"
  new_sparse_file "$work/lvm-swap.img" $((64 * MiB))
  mkswap -q -U "$REAL_LVM_SWAP_UUID" -L lvmswap "$work/lvm-swap.img" >/dev/null
  write_lv VolGroup00/LogVol00 "$work/lvm-root.ext4"
  write_lv VolGroup00/LogVol01 "$work/lvm-swap.img"
  detach_all
  rm -f "$work/lvm-root.ext4" "$work/lvm-swap.img"

  new_sparse_file "$disk" $((2434 * MiB))
  partition_disk "$disk" "label: dos
label-id: 0x4c4c4c4c
unit: sectors
start=2048, size=$((256 * MiB / 512)), type=83, bootable
size=$((2176 * MiB / 512)), type=8e"
  start=$(part_start "$disk" 1) size=$(part_size "$disk" 1)
  mkfs.ext3 -q -F -b 1024 -U "$REAL_LVM_BOOT_UUID" -L boot -E "offset=$start" -d "$work/lvm-boot" "$disk" $((size / 1024))k
  check_clean "$disk?offset=$start"
  place_image "$pv" "$disk" "$(part_start "$disk" 2)"
  rm -f "$pv"
  for i in 1 2; do
    start=$(part_start "$disk" $i) size=$(part_size "$disk" $i)
    manifest_line "$out/MANIFEST" "$disk" mbr $i "$start" "$size"
    echo "lvm_guest_p${i}_offset=$start" >>"$out/INFO"
  done
  {
    echo "lvm_guest_boot_uuid=$REAL_LVM_BOOT_UUID"
    echo "lvm_guest_root_uuid=$REAL_LVM_ROOT_UUID"
    echo "lvm_guest_swap_uuid=$REAL_LVM_SWAP_UUID"
    echo "lvm_guest_root_segments=$(echo $segs)"
    echo "lvm_guest_home_marker=home-lvm-guest"
  } >>"$out/INFO"
  rm -rf "$t" "$work/lvm-boot"
  losetup -a | grep -F "$work" && die "a loop device is still attached to $work"
  log "lvm guest: built in $(elapsed_since "$t0") s"
)
