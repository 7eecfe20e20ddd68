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
#   MANIFEST             as for the synthetic set
#   INFO                 key=value facts for scripts: donor kernel version, UUIDs, offsets
#
# Environment: IMGCONV_DEBIAN_MIRROR (default http://deb.debian.org/debian).

REAL_SUITE=bookworm
REAL_XEN_UUID=5e5e5e5e-0001-4000-8000-00000000c0de
REAL_DONOR_UUID=d0d0d0d0-0001-4000-8000-00000000d0d0
REAL_XEN_MAC=00:16:3e:2a:4b:6c
REAL_ROOT_PASSWORD=imgconv

# The marker script shared by both images (installed as /usr/local/sbin/imgconv-marker).
marker_script() {
  cat <<'EOF'
#!/bin/sh
# imgconv-marker: print ONE line describing how this system booted, on the serial console.
# Read by scripts/boot-check (imgconv test fixtures).
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
  mkdir -p "$r/etc/systemd/system/getty.target.wants"
  ln -sf /lib/systemd/system/serial-getty@.service \
    "$r/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service"
  mkdir -p "$r/etc/udev/rules.d"
  cat >"$r/etc/udev/rules.d/70-persistent-net.rules" <<EOF
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.

# Xen virtual interface (vif)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$REAL_XEN_MAC", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
EOF
  mkdir -p "$r/etc/network"
  cat >"$r/etc/network/interfaces" <<'EOF'
# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# Xen netfront
auto eth0
iface eth0 inet dhcp
EOF
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
  rm -f "$out/bookworm-xen.img"
  mkfs.ext4 -q -F -U "$REAL_XEN_UUID" -L xenroot -d "$r" "$out/bookworm-xen.img" 2G
  check_clean "$out/bookworm-xen.img"
  manifest_line "$out/MANIFEST" "$out/bookworm-xen.img" bare - 0 "$(stat -c %s "$out/bookworm-xen.img")"
  rm -rf "$r"
  log "xen guest: built in $(elapsed_since "$t0") s"
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
