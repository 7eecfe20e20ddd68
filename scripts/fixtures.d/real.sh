# Real fixture builder (sourced by scripts/fixtures after lib.sh; not executable).
# Needs the Debian mirror and root (mmdebstrap --mode=root, mkfs.ext4 -d). Minutes.
# build_real OUT writes into OUT:
#
#   bookworm-xen.img     bare ext4 (2 GiB) Xen PV guest: bookworm + systemd, NO kernel,
#                        hostname xenguest, root password "imgconv", Xen-isms (fstab on
#                        /dev/xvda1 + /dev/xvda2 swap, serial-getty@hvc0, 70-persistent-net
#                        rules for a 00:16:3e MAC, eth0 dhcp, pv-grub menu.lst, xen modules)
#                        and imgconv-marker.service printing the IMGCONV-MARKER line
#   bookworm-donor.img   bootable MBR disk (p1 ext4 2 GiB): bookworm + linux-image-amd64,
#                        initramfs-tools (MODULES=most), grub-pc-bin, grub-efi-amd64-bin,
#                        fstab by UUID, getty on ttyS0, GRUB BIOS boot code written without
#                        loop devices or grub-install, same marker service (host=kvmdonor)
#   split-layout.img     MBR disk of the same guest laid out the CentOS/pygrub way: p1 /boot
#                        ext3 with 1 KiB blocks (grub.conf + menu.lst link), p2 / ext4, p3
#                        /home ext4 (fstab by UUID=), p4 swap; fstab names /boot, / and swap
#                        by /dev/xvda1, /dev/xvda2, /dev/xvda4; host xensplit
#   logical-root.img     old-style MBR disk: p1 swap at sector 63, extended p2 holding p5 /
#                        ext4 (/dev/xvda5) and p6 /home ext4 (fstab by LABEL=); host xenlogical
#   xen-tools/           a xen-tools guest, one image per filesystem: disk.img (bare ext4 /,
#                        xvda2), swap.img (xvda1), home.img (bare ext4 /home, xvdb1) and the
#                        domU config web1.cfg naming them by dom0 paths under
#                        /srv/xen/domains/web1/ that do not exist here; host web1
#                        Each /home holds imgconv-home-marker with content distinct per image
#                        (bookworm-xen.img: home-in-root), which the marker line prints.
#   lvm-guest.img        the same guest with / and swap on LVM2 (scripts/fixtures.d/lvm-guest.sh)
#   MANIFEST             as for the synthetic set
#   INFO                 key=value facts for scripts: donor kernel version, UUIDs, offsets
#
# Environment: IMGCONV_DEBIAN_MIRROR (default http://deb.debian.org/debian).

REAL_SUITE=bookworm
REAL_XEN_UUID=5e5e5e5e-0001-4000-8000-00000000c0de
REAL_DONOR_UUID=d0d0d0d0-0001-4000-8000-00000000d0d0
REAL_XEN_MAC=00:16:3e:2a:4b:6c
REAL_ROOT_PASSWORD=imgconv
# The layouts built from the same guest tree (split-layout.img, logical-root.img, xen-tools/).
REAL_SPLIT_BOOT_UUID=5a5a5a5a-0001-4000-8000-0000000000b1
REAL_SPLIT_ROOT_UUID=5a5a5a5a-0002-4000-8000-0000000000b2
REAL_SPLIT_HOME_UUID=5a5a5a5a-0003-4000-8000-0000000000b3
REAL_SPLIT_SWAP_UUID=5a5a5a5a-0004-4000-8000-0000000000b4
REAL_LOGICAL_SWAP_UUID=1a1a1a1a-0001-4000-8000-0000000000c1
REAL_LOGICAL_ROOT_UUID=1a1a1a1a-0005-4000-8000-0000000000c5
REAL_LOGICAL_HOME_UUID=1a1a1a1a-0006-4000-8000-0000000000c6
REAL_XT_ROOT_UUID=7e7e7e7e-0002-4000-8000-0000000000d2
REAL_XT_SWAP_UUID=7e7e7e7e-0001-4000-8000-0000000000d1
REAL_XT_HOME_UUID=7e7e7e7e-0003-4000-8000-0000000000d3

# The marker script shared by both images (installed as /usr/local/sbin/imgconv-marker).
marker_script() {
  cat <<'EOF'
#!/bin/sh
# imgconv-marker: print ONE line describing how this system booted, on the serial console.
# Read by `imgconv verify --boot --expect` (imgconv test fixtures). Fields are only ever appended.
root=$(findmnt -no SOURCE /)
case ",$(findmnt -no OPTIONS /)," in *,rw,*) rootopts=rw ;; *) rootopts=ro ;; esac
rootuuid=none
for arg in $(cat /proc/cmdline); do
  case $arg in root=UUID=*) rootuuid=${arg#root=UUID=} ;; esac
done
swap=$(awk 'NR > 1 { printf "%s%s", sep, $1; sep = "," }' /proc/swaps)
line="IMGCONV-MARKER host=$(cat /proc/sys/kernel/hostname) kernel=$(uname -r) root=$root rootopts=$rootopts rootuuid=$rootuuid swap=${swap:-none}"
# Which boot of this system this is, and eth0's IPv4 address (none when it did not come up).
boots=$(( $(cat /var/lib/imgconv-marker.boots 2>/dev/null || echo 0) + 1 ))
echo "$boots" >/var/lib/imgconv-marker.boots
eth0=$(ip -o -4 addr show dev eth0 2>/dev/null | awk '{ print $4; exit }')
consoles=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^console=//p' | paste -sd, -)
line="$line boot=$boots eth0=${eth0:-none} consoles=${consoles:-none}"
# What /home holds, and every filesystem fstab names (swap aside), mounted or missing.
home=$(head -c 64 /home/imgconv-home-marker 2>/dev/null | tr -cd 'A-Za-z0-9._-')
mounted= missing=
for mp in $(awk '$1 !~ /^#/ && NF >= 3 && $3 != "swap" && $2 ~ /^\// { print $2 }' /etc/fstab); do
  if mountpoint -q "$mp"; then mounted=$mounted${mounted:+,}$mp; else missing=$missing${missing:+,}$mp; fi
done
line="$line home=${home:-none} mounted=${mounted:-none} missing=${missing:-none}"
for tty in /dev/ttyS0 /dev/console; do
  { echo "$line" >"$tty"; } 2>/dev/null || true
done
echo "$line"
EOF
}

marker_unit() {
  cat <<'EOF'
[Unit]
Description=imgconv boot marker on the serial console
After=local-fs.target swap.target networking.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/imgconv-marker
RemainAfterExit=yes
StandardOutput=journal

[Install]
WantedBy=multi-user.target
EOF
}

# common_config ROOT HOSTNAME: hostname, root password, marker service.
common_config() {
  local r=$1 host=$2
  echo "$host" >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$host" >"$r/etc/hosts"
  echo "root:$REAL_ROOT_PASSWORD" | chroot "$r" chpasswd
  mkdir -p "$r/usr/local/sbin"
  marker_script >"$r/usr/local/sbin/imgconv-marker"
  chmod 0755 "$r/usr/local/sbin/imgconv-marker"
  marker_unit >"$r/etc/systemd/system/imgconv-marker.service"
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/imgconv-marker.service \
    "$r/etc/systemd/system/multi-user.target.wants/imgconv-marker.service"
  # No machine-id: systemd generates one at first boot (as on a fresh Debian image).
  : >"$r/etc/machine-id"
}

# xen_console_and_net ROOT: what a Xen PV guest has for its console and NIC: a getty on
# hvc0, eth0 pinned to the Xen MAC by a persistent-net rule, ifupdown dhcp on eth0.
xen_console_and_net() {
  local r=$1
  mkdir -p "$r/etc/systemd/system/getty.target.wants"
  ln -sf /lib/systemd/system/serial-getty@.service \
    "$r/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service"
  mkdir -p "$r/etc/udev/rules.d"
  cat >"$r/etc/udev/rules.d/70-persistent-net.rules" <<EOF2
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.

# Xen virtual interface (vif)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$REAL_XEN_MAC", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
EOF2
  mkdir -p "$r/etc/network"
  cat >"$r/etc/network/interfaces" <<'EOF2'
# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# Xen netfront
auto eth0
iface eth0 inet dhcp
EOF2
}

# run_mmdebstrap DIR PACKAGES: bookworm minbase + PACKAGES into DIR. Downloaded .debs are
# kept in $(fixtures_cache_root)/debs and offered to later runs (apt checks their hashes
# against the index, so stale files are simply not used).
run_mmdebstrap() {
  local dir=$1 include=$2 debs
  local mirror=${IMGCONV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  debs="$(fixtures_cache_root)/debs"
  mkdir -p "$debs"
  mmdebstrap --mode=root --variant=minbase --include="$include" \
    --aptopt='Acquire::Retries "3"' --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $debs /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $debs" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$REAL_SUITE" "$dir" "deb $mirror $REAL_SUITE main" ||
    die "mmdebstrap failed (is $mirror reachable?)"
}

build_xen_guest() {
  local out=$1 work=$2 r="$2/xen-root" t0
  t0=$(date +%s.%N)
  run_mmdebstrap "$r" systemd-sysv,udev,ifupdown,isc-dhcp-client,iproute2,netbase,kmod,procps,dbus
  [ -z "$(ls "$r/boot" 2>/dev/null)" ] || die "the Xen guest must have no kernel in /boot"
  [ ! -d "$r/lib/modules" ] || [ -z "$(ls "$r/lib/modules")" ] || die "the Xen guest has modules"
  log "xen guest: mmdebstrap took $(elapsed_since "$t0") s"
  common_config "$r" xenguest
  cat >"$r/etc/fstab" <<'EOF'
# /etc/fstab: static file system information (Xen PV guest, written by xen-tools).
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/xvda1      /               ext4    errors=remount-ro 0       1
/dev/xvda2      none            swap    sw              0       0
EOF
  xen_console_and_net "$r"
  mkdir -p "$r/boot/grub"
  cat >"$r/boot/grub/menu.lst" <<'EOF'
# menu.lst for pv-grub / pygrub (written by xen-tools)
default         0
timeout         2

title           Debian GNU/Linux 12, kernel 6.1.0-18-amd64
root            (hd0,0)
kernel          /boot/vmlinuz-6.1.0-18-amd64 root=/dev/xvda1 ro console=hvc0
initrd          /boot/initrd.img-6.1.0-18-amd64
EOF
  cat >>"$r/etc/modules" <<'EOF'
xen-blkfront
xen-netfront
EOF
  echo home-in-root >"$r/home/imgconv-home-marker"
  rm -f "$out/bookworm-xen.img"
  mkfs.ext4 -q -F -U "$REAL_XEN_UUID" -L xenroot -d "$r" "$out/bookworm-xen.img" 2G
  check_clean "$out/bookworm-xen.img"
  manifest_line "$out/MANIFEST" "$out/bookworm-xen.img" bare - 0 "$(stat -c %s "$out/bookworm-xen.img")"
  build_split_layout "$out" "$work" "$r"
  build_logical_root "$out" "$work" "$r"
  build_xen_tools "$out" "$work" "$r"
  build_lvm_guest "$out" "$work" "$r"
  rm -rf "$r"
  log "xen guest: built in $(elapsed_since "$t0") s"
}

# --- the guest in other layouts (same tree, no second mmdebstrap, no loop devices) --------

# layout_tree SRC DST HOST HOME_MARKER: a copy of the guest tree with its own host name and
# /home marker (fstab and boot menu are the caller's).
layout_tree() {
  local src=$1 dst=$2 host=$3 marker=$4
  rm -rf "$dst"
  cp -a --reflink=auto "$src" "$dst"
  echo "$host" >"$dst/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$host" >"$dst/etc/hosts"
  echo "$marker" >"$dst/home/imgconv-home-marker"
}

# split_off TREE MOUNTPOINT DIR: move what TREE holds under MOUNTPOINT into DIR (a tree of
# its own for mkfs -d), leaving the empty mount point behind as a real system has it.
split_off() {
  local tree=$1 mp=$2 dir=$3
  rm -rf "$dir"
  mkdir -p "$dir"
  find "$tree$mp" -mindepth 1 -maxdepth 1 -exec mv -t "$dir" {} +
}

# part_start DISK N / part_size DISK N: a partition's byte offset and size, read back with
# sfdisk -J (sfdisk chose where the logical partitions go).
part_field() {
  sfdisk -J "$1" | python3 -c 'import json, sys
n, f = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    node = p["node"]
    if node.endswith(n) and not node[: -len(n)][-1:].isdigit():
        print(p[f] * 512)' "$2" "$3"
}
part_start() { part_field "$1" "$2" start; }
part_size() { part_field "$1" "$2" size; }

# CentOS-style pygrub disk: p1 /boot ext3 (1 KiB blocks), p2 /, p3 /home by UUID, p4 swap.
build_split_layout() {
  local out=$1 work=$2 src=$3 t="$2/split-root" disk="$1/split-layout.img" i start size t0
  t0=$(date +%s.%N)
  layout_tree "$src" "$t" xensplit home-split-layout
  cat >"$t/etc/fstab" <<FSTAB
# /etc/fstab: static file system information (Xen PV guest, pygrub disk).
/dev/xvda2                                / ext4 errors=remount-ro 0 1
/dev/xvda1                                /boot ext3 defaults 0 2
UUID=$REAL_SPLIT_HOME_UUID /home ext4 defaults 0 2
/dev/xvda4                                none swap sw 0 0
FSTAB
  rm -f "$t/boot/grub/menu.lst"
  cat >"$t/boot/grub/grub.conf" <<'GRUBCONF'
# grub.conf for pygrub: /boot is its own filesystem, so paths start at its root.
default=0
timeout=2

title Debian GNU/Linux 12, kernel 6.1.0-18-amd64
	root (hd0,0)
	kernel /vmlinuz-6.1.0-18-amd64 ro root=/dev/xvda2 console=hvc0
	initrd /initrd.img-6.1.0-18-amd64
GRUBCONF
  ln -s ./grub.conf "$t/boot/grub/menu.lst"
  split_off "$t" /boot "$work/split-boot"
  split_off "$t" /home "$work/split-home"
  new_sparse_file "$disk" $((2433 * MiB))
  partition_disk "$disk" "label: dos
label-id: 0x5a5a5a5a
unit: sectors
start=2048, size=$((256 * MiB / 512)), type=83, bootable
size=$((2048 * MiB / 512)), type=83
size=$((64 * MiB / 512)), type=83
type=82"
  start=$(part_start "$disk" 1) size=$(part_size "$disk" 1)
  mkfs.ext3 -q -F -b 1024 -U "$REAL_SPLIT_BOOT_UUID" -L boot -E "offset=$start" -d "$work/split-boot" "$disk" $((size / 1024))k
  start=$(part_start "$disk" 2) size=$(part_size "$disk" 2)
  mkfs.ext4 -q -F -U "$REAL_SPLIT_ROOT_UUID" -L splitroot -E "offset=$start" -d "$t" "$disk" $((size / 1024))k
  start=$(part_start "$disk" 3) size=$(part_size "$disk" 3)
  mkfs.ext4 -q -F -U "$REAL_SPLIT_HOME_UUID" -L home -E "offset=$start" -d "$work/split-home" "$disk" $((size / 1024))k
  size=$(part_size "$disk" 4)
  new_sparse_file "$work/split-swap.img" "$size"
  mkswap -q -U "$REAL_SPLIT_SWAP_UUID" -L splitswap "$work/split-swap.img" >/dev/null
  place_at "$work/split-swap.img" "$disk" "$(part_start "$disk" 4)"
  for i in 1 2 3 4; do
    start=$(part_start "$disk" $i) size=$(part_size "$disk" $i)
    [ $i -eq 4 ] || check_clean "$disk?offset=$start"
    manifest_line "$out/MANIFEST" "$disk" mbr $i "$start" "$size"
    echo "split_p${i}_offset=$start" >>"$out/INFO"
  done
  {
    echo "split_boot_uuid=$REAL_SPLIT_BOOT_UUID"
    echo "split_root_uuid=$REAL_SPLIT_ROOT_UUID"
    echo "split_home_uuid=$REAL_SPLIT_HOME_UUID"
    echo "split_swap_uuid=$REAL_SPLIT_SWAP_UUID"
    echo "split_home_marker=home-split-layout"
  } >>"$out/INFO"
  rm -rf "$t" "$work/split-boot" "$work/split-home" "$work/split-swap.img"
  log "split layout: built in $(elapsed_since "$t0") s"
}

# Old-style disk: p1 swap at sector 63, root in logical p5, /home in logical p6 (by LABEL=).
build_logical_root() {
  local out=$1 work=$2 src=$3 t="$2/logical-root" disk="$1/logical-root.img" i start size t0
  t0=$(date +%s.%N)
  layout_tree "$src" "$t" xenlogical home-logical-root
  cat >"$t/etc/fstab" <<'FSTAB'
# /etc/fstab: static file system information (Xen PV guest, root in a logical partition).
/dev/xvda5      /               ext4    errors=remount-ro 0       1
LABEL=lhome     /home           ext4    defaults        0       2
/dev/xvda1      none            swap    sw              0       0
FSTAB
  sed -i 's/(hd0,0)/(hd0,4)/; s|root=/dev/xvda1|root=/dev/xvda5|' "$t/boot/grub/menu.lst"
  split_off "$t" /home "$work/logical-home"
  new_sparse_file "$disk" $((2245 * MiB))
  # sfdisk places the logical partitions (each after its EBR); their offsets are read back.
  partition_disk "$disk" "label: dos
label-id: 0x1a1a1a1a
unit: sectors
start=63, size=$((128 * MiB / 512 - 63)), type=82
start=$((128 * MiB / 512)), type=5
size=$((2048 * MiB / 512)), type=83
type=83"
  size=$(part_size "$disk" 1)
  new_sparse_file "$work/logical-swap.img" "$size"
  mkswap -q -U "$REAL_LOGICAL_SWAP_UUID" -L lswap "$work/logical-swap.img" >/dev/null
  place_at "$work/logical-swap.img" "$disk" "$(part_start "$disk" 1)"
  start=$(part_start "$disk" 5) size=$(part_size "$disk" 5)
  mkfs.ext4 -q -F -U "$REAL_LOGICAL_ROOT_UUID" -L lroot -E "offset=$start" -d "$t" "$disk" $((size / 1024))k
  start=$(part_start "$disk" 6) size=$(part_size "$disk" 6)
  mkfs.ext4 -q -F -U "$REAL_LOGICAL_HOME_UUID" -L lhome -E "offset=$start" -d "$work/logical-home" "$disk" $((size / 1024))k
  for i in 1 5 6; do
    start=$(part_start "$disk" $i) size=$(part_size "$disk" $i)
    [ $i -eq 1 ] || check_clean "$disk?offset=$start"
    manifest_line "$out/MANIFEST" "$disk" mbr $i "$start" "$size"
    echo "logical_p${i}_offset=$start" >>"$out/INFO"
  done
  {
    echo "logical_swap_uuid=$REAL_LOGICAL_SWAP_UUID"
    echo "logical_root_uuid=$REAL_LOGICAL_ROOT_UUID"
    echo "logical_home_uuid=$REAL_LOGICAL_HOME_UUID"
    echo "logical_home_label=lhome"
    echo "logical_home_marker=home-logical-root"
  } >>"$out/INFO"
  rm -rf "$t" "$work/logical-home" "$work/logical-swap.img"
  log "logical root: built in $(elapsed_since "$t0") s"
}

# A xen-tools guest: one image per filesystem and the domU config naming them by dom0 paths
# that do not exist on this machine (so a converter must look for them beside the config).
build_xen_tools() {
  local out=$1 work=$2 src=$3 t="$2/xt-root" d="$1/xen-tools" f t0
  t0=$(date +%s.%N)
  mkdir -p "$d"
  layout_tree "$src" "$t" web1 home-xen-tools-web1
  cat >"$t/etc/fstab" <<'FSTAB'
# /etc/fstab: static file system information (written by xen-tools, /home added by hand).
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
proc            /proc           proc    defaults        0       0
devpts          /dev/pts        devpts  rw,noexec,nosuid,gid=5,mode=620 0  0
/dev/xvda1      none            swap    sw              0       0
/dev/xvda2      /               ext4    noatime,nodiratime,errors=remount-ro  0       1
/dev/xvdb1      /home           ext4    defaults        0       2
FSTAB
  # xen-tools boots a dom0 kernel (kernel = in the config): no boot menu in the guest.
  rm -f "$t/boot/grub/menu.lst"
  split_off "$t" /home "$work/xt-home"
  mkfs.ext4 -q -F -U "$REAL_XT_ROOT_UUID" -L web1root -d "$t" "$d/disk.img" 2G
  mkfs.ext4 -q -F -U "$REAL_XT_HOME_UUID" -L web1home -d "$work/xt-home" "$d/home.img" 64M
  new_sparse_file "$d/swap.img" $((128 * MiB))
  mkswap -q -U "$REAL_XT_SWAP_UUID" -L web1swap "$d/swap.img" >/dev/null
  check_clean "$d/disk.img"
  check_clean "$d/home.img"
  for f in disk swap home; do
    manifest_line "$out/MANIFEST" "$d/$f.img" bare - 0 "$(stat -c %s "$d/$f.img")" "xen-tools/$f.img"
  done
  # As xen-tools' xl.tmpl writes it (quoted numbers, vdev=/target= disks), plus the /home
  # image added by hand in the older file: syntax.
  cat >"$d/web1.cfg" <<CFG
#
# Configuration file for the Xen instance web1, created
# by xen-tools 4.9.2 on Mon Jan  8 10:00:00 2024.
#

#
#  Kernel + memory size
#
kernel = '/boot/vmlinuz-6.1.0-18-amd64'
ramdisk = '/boot/initrd.img-6.1.0-18-amd64'
cmdline = 'root=/dev/xvda2 ro console=hvc0'
vcpus = '2'
memory = '512'
maxmem = '1024'
type = 'pv'

#
#  Disk device(s).
#
disk = [
                  'vdev=xvda2, target=/srv/xen/domains/web1/disk.img',
                  'vdev=xvda1, target=/srv/xen/domains/web1/swap.img',
                  'file:/srv/xen/domains/web1/home.img,xvdb1,w',
              ]

#
#  Hostname
#
name = 'web1'

#
#  Networking
#
vif = [ 'ip=192.0.2.10 ,mac=$REAL_XEN_MAC,bridge=xenbr0' ]

#
#  Behaviour
#
on_poweroff = 'destroy'
on_reboot   = 'restart'
on_crash    = 'restart'
CFG
  {
    echo "xentools_cfg=xen-tools/web1.cfg"
    echo "xentools_root_uuid=$REAL_XT_ROOT_UUID"
    echo "xentools_swap_uuid=$REAL_XT_SWAP_UUID"
    echo "xentools_home_uuid=$REAL_XT_HOME_UUID"
    echo "xentools_home_marker=home-xen-tools-web1"
    echo "xentools_mac=$REAL_XEN_MAC"
  } >>"$out/INFO"
  rm -rf "$t" "$work/xt-home"
  log "xen-tools guest: built in $(elapsed_since "$t0") s"
}

build_donor() {
  local out=$1 work=$2 r="$2/donor-root" t0 kver disk="$1/bookworm-donor.img"
  local p1_start=$((1 * MiB)) p1_size=$((2048 * MiB))
  t0=$(date +%s.%N)
  run_mmdebstrap "$r" systemd-sysv,udev,linux-image-amd64,initramfs-tools,zstd,grub-pc-bin,grub-efi-amd64-bin,kmod,ifupdown,isc-dhcp-client,iproute2,netbase,procps,dbus
  log "donor: mmdebstrap took $(elapsed_since "$t0") s"
  kver=$(basename "$(find "$r/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n1)")
  [ -n "$kver" ] && [ -f "$r/boot/vmlinuz-$kver" ] || die "donor: no kernel installed"
  grep -q '^MODULES=most' "$r/etc/initramfs-tools/initramfs.conf" ||
    sed -i 's/^MODULES=.*/MODULES=most/' "$r/etc/initramfs-tools/initramfs.conf"
  if [ ! -f "$r/boot/initrd.img-$kver" ]; then
    log "donor: no initrd after install; running update-initramfs"
    chroot "$r" update-initramfs -c -k "$kver" >&2 || die "update-initramfs failed"
  fi
  common_config "$r" kvmdonor
  cat >"$r/etc/fstab" <<EOF
# /etc/fstab: static file system information.
UUID=$REAL_DONOR_UUID / ext4 errors=remount-ro 0 1
EOF
  mkdir -p "$r/etc/systemd/system/getty.target.wants"
  ln -sf /lib/systemd/system/serial-getty@.service \
    "$r/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
  # GRUB: modules from the donor's own grub-pc-bin, core.img made with the same modules.
  mkdir -p "$r/boot/grub/i386-pc"
  cp "$r/usr/lib/grub/i386-pc/"*.mod "$r/usr/lib/grub/i386-pc/"*.lst "$r/boot/grub/i386-pc/"
  grub-mkimage -d "$r/usr/lib/grub/i386-pc" -O i386-pc -o "$work/core.img" \
    -p '(,msdos1)/boot/grub' biosdisk part_msdos ext2
  cp "$work/core.img" "$r/usr/lib/grub/i386-pc/boot.img" "$r/boot/grub/i386-pc/"
  cat >"$r/boot/grub/grub.cfg" <<EOF
# imgconv donor fixture: serial console, one entry, root by UUID.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $REAL_DONOR_UUID
menuentry 'Debian GNU/Linux 12 (imgconv donor, $kver)' {
	insmod gzio
	linux /boot/vmlinuz-$kver root=UUID=$REAL_DONOR_UUID ro console=tty0 console=ttyS0,115200n8
	initrd /boot/initrd.img-$kver
}
EOF
  # The disk: partition table first, then the filesystem at its offset, then boot code.
  new_sparse_file "$disk" $((p1_start + p1_size))
  partition_disk "$disk" "label: dos
label-id: 0x1d0d0d0d
unit: sectors
start=$((p1_start / 512)), size=$((p1_size / 512)), type=83, bootable"
  mkfs.ext4 -q -F -U "$REAL_DONOR_UUID" -L donorroot -E "offset=$p1_start" -d "$r" "$disk" $((p1_size / 1024))k
  python3 "$FIXTURES_D/grub-bios.py" "$disk" "$r/usr/lib/grub/i386-pc/boot.img" "$work/core.img"
  check_clean "$disk?offset=$p1_start"
  manifest_line "$out/MANIFEST" "$disk" mbr 1 "$p1_start" "$p1_size"
  {
    echo "donor_kernel=$kver"
    echo "donor_root_uuid=$REAL_DONOR_UUID"
    echo "donor_p1_offset=$p1_start"
    echo "xen_root_uuid=$REAL_XEN_UUID"
    echo "root_password=$REAL_ROOT_PASSWORD"
  } >>"$out/INFO"
  rm -rf "$r"
  log "donor: built in $(elapsed_since "$t0") s (kernel $kver)"
}

build_real() {
  local out=$1 work
  [ "$(id -u)" -eq 0 ] || die "scripts/fixtures real needs root (mmdebstrap --mode=root, chroot)"
  work=$(mktemp -d "$out/.work.XXXXXX")
  {
    printf '# imgconv real fixtures (scripts/fixtures real). Offsets and sizes in bytes;\n'
    printf '# type and uuid read back with blkid -p. kind: bare | mbr | gpt\n'
    printf '# image\tkind\tpart\tstart\tsize\ttype\tuuid\n'
  } >"$out/MANIFEST"
  build_xen_guest "$out" "$work"
  build_donor "$out" "$work"
  build_stock_guest "$out" "$work"
  rm -rf "$work"
  cat "$out/MANIFEST" "$out/INFO"
}
