# The stock-kernel Xen guest of the real fixture set (sourced by scripts/fixtures real after
# real.sh; not executable). build_stock_guest OUT WORK writes:
#
#   bookworm-stock.img   a pygrub-booted Xen PV disk (MBR, p1 ext4 2 GiB at 1 MiB) whose guest
#                        runs Debian's own stock kernel: linux-image-amd64, initramfs-tools,
#                        grub-pc (update-grub, debconf install device /dev/xvda), an
#                        /etc/default/grub and a /boot/grub/grub.cfg from its Xen days
#                        (console=hvc0, console-only GRUB terminal, no net.ifnames=0), fstab
#                        on /dev/xvda1, a getty on hvc0, eth0 pinned to the Xen MAC, ifupdown
#                        dhcp on eth0; the shared marker service, and imgconv-regrub.service:
#                        on the first boot after the marker it runs update-grub, as every
#                        kernel update does, prints "IMGCONV-REGRUB ok" and reboots once (or
#                        prints "IMGCONV-REGRUB failed" and stays up).
#
# A boot test converts it, lets QEMU reboot once and expects the marker of the second boot,
# made from the grub.cfg the guest regenerated, to show boot=2 and eth0 with an address.

REAL_STOCK_UUID=5e5e5e5e-0003-4000-8000-00000000c0de

regrub_unit() {
  cat <<'EOF2'
[Unit]
Description=imgconv fixture: regenerate grub.cfg as a kernel update does, then reboot once
After=imgconv-marker.service
ConditionPathExists=!/var/lib/imgconv-regrub.done

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'if update-grub >/var/log/imgconv-regrub.log 2>&1; then touch /var/lib/imgconv-regrub.done; sync; echo "IMGCONV-REGRUB ok" >/dev/ttyS0; systemctl reboot; else echo "IMGCONV-REGRUB failed: $(tail -n 3 /var/log/imgconv-regrub.log | tr "\\n" " ")" >/dev/ttyS0; fi'

[Install]
WantedBy=multi-user.target
EOF2
}

build_stock_guest() {
  local out=$1 work=$2 r="$2/stock-root" t0 kver disk="$1/bookworm-stock.img"
  local p1_start=$((1 * MiB)) p1_size=$((2048 * MiB))
  t0=$(date +%s.%N)
  # grub-pc with no install device yet: its postinst then neither runs grub-install nor
  # update-grub (no grub.cfg exists) in the chroot.
  run_mmdebstrap "$r" systemd-sysv,udev,linux-image-amd64,initramfs-tools,zstd,grub-pc,kmod,ifupdown,isc-dhcp-client,iproute2,netbase,procps,dbus
  log "stock guest: mmdebstrap took $(elapsed_since "$t0") s"
  kver=$(basename "$(find "$r/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n1)")
  [ -n "$kver" ] && [ -f "$r/boot/vmlinuz-$kver" ] && [ -f "$r/boot/initrd.img-$kver" ] ||
    die "stock guest: no kernel and initrd installed"
  [ -x "$r/usr/sbin/update-grub" ] || die "stock guest: grub-pc did not install update-grub"
  common_config "$r" stockguest
  # What the guest recorded on Xen: its install device, as the grub-pc postinst saves it.
  echo "grub-pc grub-pc/install_devices multiselect /dev/xvda" | chroot "$r" debconf-set-selections
  cat >"$r/etc/default/grub" <<'EOF2'
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# (Xen PV era: pygrub reads grub.cfg, the console is the Xen console.)

GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=hvc0 xencons=hvc0"
GRUB_TERMINAL=console
EOF2
  cat >"$r/etc/fstab" <<'EOF2'
# /etc/fstab: static file system information (Xen PV guest booted by pygrub).
/dev/xvda1      /               ext4    errors=remount-ro 0       1
EOF2
  xen_console_and_net "$r"
  # The grub.cfg pygrub booted: root and console as on Xen.
  mkdir -p "$r/boot/grub"
  cat >"$r/boot/grub/grub.cfg" <<EOF2
# Written for pygrub on the Xen host (update-grub had never run under HVM).
set default=0
set timeout=1
menuentry 'Debian GNU/Linux, with Linux $kver' {
	insmod ext2
	set root='hd0,msdos1'
	linux /boot/vmlinuz-$kver root=/dev/xvda1 ro console=hvc0 xencons=hvc0 quiet
	initrd /boot/initrd.img-$kver
}
EOF2
  regrub_unit >"$r/etc/systemd/system/imgconv-regrub.service"
  ln -sf /etc/systemd/system/imgconv-regrub.service \
    "$r/etc/systemd/system/multi-user.target.wants/imgconv-regrub.service"
  new_sparse_file "$disk" $((p1_start + p1_size))
  partition_disk "$disk" "label: dos
label-id: 0x5e5e0003
unit: sectors
start=$((p1_start / 512)), size=$((p1_size / 512)), type=83, bootable"
  mkfs.ext4 -q -F -U "$REAL_STOCK_UUID" -L stockroot -E "offset=$p1_start" -d "$r" "$disk" $((p1_size / 1024))k
  check_clean "$disk?offset=$p1_start"
  manifest_line "$out/MANIFEST" "$disk" mbr 1 "$p1_start" "$p1_size"
  {
    echo "stock_kernel=$kver"
    echo "stock_root_uuid=$REAL_STOCK_UUID"
  } >>"$out/INFO"
  rm -rf "$r"
  log "stock guest: built in $(elapsed_since "$t0") s (kernel $kver)"
}
