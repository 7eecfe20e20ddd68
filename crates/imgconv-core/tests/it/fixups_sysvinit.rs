//! Fixups on a SysV init guest (Debian wheezy-like Xen guest with sd* names, Citrix
//! tools, no swap planned, SATA target).

use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::fixups::{self, DiskBus, FixupContext, InitSystem};
use imgconv_core::guestfs::{MemFs, TreeRead};

const INITTAB: &str = "# /etc/inittab for a Xen guest
id:2:initdefault:

si::sysinit:/etc/init.d/rcS
~~:S:wait:/sbin/sulogin

l0:0:wait:/etc/init.d/rc 0
l2:2:wait:/etc/init.d/rc 2
l6:6:wait:/etc/init.d/rc 6

ca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now

1:2345:respawn:/sbin/getty 38400 hvc0
#2:23:respawn:/sbin/getty 38400 tty2

# a serial getty, disabled:
#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100
";

const FSTAB: &str = "# xen guest
LABEL=root  /  ext3  defaults,errors=remount-ro  0  1
/dev/sda1 none swap sw 0 0
proc /proc proc defaults 0 0
";

fn guest() -> MemFs {
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/getty", "ELF")
        .with_file("/etc/inittab", INITTAB)
        .with_file("/etc/securetty", "console\nhvc0\ntty1\n")
        .with_file("/etc/fstab", FSTAB)
        .with_file("/etc/init.d/xe-linux-distribution", "#!/bin/sh\n")
        .with_file("/etc/init.d/ssh", "#!/bin/sh\n")
        .with_symlink(
            "/etc/rc0.d/K01xe-linux-distribution",
            "../init.d/xe-linux-distribution",
        )
        .with_symlink("/etc/rc2.d/S02ssh", "../init.d/ssh")
        .with_file(
            "/etc/udev/rules.d/70-persistent-net.rules",
            "SUBSYSTEM==\"net\", ATTR{address}==\"00:16:3e:00:00:01\", NAME=\"eth0\"\n",
        )
        .with_file(
            "/etc/udev/rules.d/75-persistent-net-generator.rules",
            "# override\n",
        )
        .with_file(
            "/etc/modprobe.conf",
            "alias eth0 xennet\nalias char-major-10-135 rtc\n",
        );
    for level in 2..=5 {
        g = g.with_symlink(
            &format!("/etc/rc{level}.d/S20xe-linux-distribution"),
            "../init.d/xe-linux-distribution",
        );
    }
    g
}

fn sysv_ctx() -> FixupContext {
    FixupContext {
        root_fstype: "ext3".into(),
        swap_uuid: None,
        new_swap_partition_exists: false,
        disk_bus: DiskBus::Sata,
        ..ctx()
    }
}

#[test]
fn detects_sysvinit() {
    let mut g = guest();
    assert_eq!(
        fixups::console::detect_init(&mut g).unwrap(),
        Some(InitSystem::Sysvinit)
    );
}

#[test]
fn sysvinit_guest_exact_result_backups_and_idempotency() {
    let mut g = guest();
    let before = snapshot(&mut g);
    let report = apply_twice(&mut g, &sysv_ctx());

    assert_eq!(
        g.text("/etc/inittab").unwrap(),
        "# /etc/inittab for a Xen guest
id:2:initdefault:

si::sysinit:/etc/init.d/rcS
~~:S:wait:/sbin/sulogin

l0:0:wait:/etc/init.d/rc 0
l2:2:wait:/etc/init.d/rc 2
l6:6:wait:/etc/init.d/rc 6

ca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now

# imgconv: 1:2345:respawn:/sbin/getty 38400 hvc0
T0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100
1:2345:respawn:/sbin/getty 38400 tty1
#2:23:respawn:/sbin/getty 38400 tty2

# a serial getty, disabled:
#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100
"
    );
    assert_eq!(g.text("/etc/inittab.imgconv-orig").unwrap(), INITTAB);
    assert_eq!(
        g.text("/etc/securetty").unwrap(),
        "console\nhvc0\ntty1\nttyS0\n"
    );
    assert_eq!(
        g.text("/etc/securetty.imgconv-orig").unwrap(),
        "console\nhvc0\ntty1\n"
    );
    assert_eq!(
        g.text("/etc/fstab").unwrap(),
        format!(
            "# xen guest
UUID={ROOT_UUID}  /  ext3  defaults,errors=remount-ro  0  1
# imgconv: next entry disabled: swap device /dev/sda1 is not part of the converted disk
# imgconv: /dev/sda1 none swap sw 0 0
proc /proc proc defaults 0 0
"
        )
    );
    assert_eq!(
        g.text("/etc/modprobe.conf").unwrap(),
        "# imgconv: alias eth0 xennet\nalias char-major-10-135 rtc\n",
        "on SATA the xennet alias is only commented out"
    );
    for level in 2..=5 {
        assert_eq!(
            g.read_link(&format!("/etc/rc{level}.d/K80xe-linux-distribution"))
                .unwrap()
                .as_deref(),
            Some("../init.d/xe-linux-distribution")
        );
    }

    let (added, removed) = diff(&before, &snapshot(&mut g));
    assert_eq!(
        added,
        [
            "/etc/fstab.imgconv-orig",
            "/etc/inittab.imgconv-orig",
            "/etc/modprobe.conf.imgconv-orig",
            "/etc/rc2.d/K80xe-linux-distribution",
            "/etc/rc3.d/K80xe-linux-distribution",
            "/etc/rc4.d/K80xe-linux-distribution",
            "/etc/rc5.d/K80xe-linux-distribution",
            "/etc/securetty.imgconv-orig",
            "/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig",
            "/etc/udev/rules.d/75-persistent-net-generator.rules.imgconv-orig",
        ]
    );
    assert_eq!(
        removed,
        [
            "/etc/rc2.d/S20xe-linux-distribution",
            "/etc/rc3.d/S20xe-linux-distribution",
            "/etc/rc4.d/S20xe-linux-distribution",
            "/etc/rc5.d/S20xe-linux-distribution",
            "/etc/udev/rules.d/70-persistent-net.rules",
            "/etc/udev/rules.d/75-persistent-net-generator.rules",
        ]
    );
    let steps: Vec<&str> = report.changes.iter().map(|c| c.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "fstab",
            "console",
            "console",
            "network",
            "network",
            "modules",
            "xen-tools",
            "xen-tools",
            "xen-tools",
            "xen-tools"
        ]
    );
    assert_eq!(
        report.changes[1].what,
        "added a getty on ttyS0; added a getty on tty1; commented out the Xen console getty `/sbin/getty 38400 hvc0`"
    );
    assert_eq!(report.changes[2].what, "added ttyS0");
    assert_eq!(
        report.changes[6].backup.as_deref(),
        Some("/etc/rc2.d/K80xe-linux-distribution")
    );
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("/dev/sda1"));
}

#[test]
fn agetty_is_used_when_getty_is_missing() {
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/agetty", "ELF")
        .with_file(
            "/etc/inittab",
            "co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n",
        );
    let mut c = sysv_ctx();
    c.init_system = Some(InitSystem::Sysvinit);
    apply_twice(&mut g, &c);
    assert_eq!(
        g.text("/etc/inittab").unwrap(),
        "# imgconv: co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n\
         T0:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n\
         1:2345:respawn:/sbin/agetty 38400 tty1\n"
    );
}

/// A RHEL 5-like Xen guest: xvc0 agetty, modprobe.conf aliases, ifcfg HWADDR,
/// /etc/rcN.d as links into /etc/rc.d, and a SUSE-style sysconfig/kernel list.
#[test]
fn rhel_like_guest() {
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/agetty", "ELF")
        .with_file("/sbin/mingetty", "ELF")
        .with_file(
            "/etc/inittab",
            "id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\nco:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n1:2345:respawn:/sbin/mingetty tty1\n",
        )
        .with_file("/etc/securetty", "console\nvc/1\ntty1\nxvc0\n")
        .with_file(
            "/etc/modprobe.conf",
            "alias eth0 xennet\nalias scsi_hostadapter xenblk\n",
        )
        .with_file(
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "DEVICE=eth0\nBOOTPROTO=dhcp\nHWADDR=00:16:3E:11:22:33\nONBOOT=yes\n",
        )
        .with_file("/etc/sysconfig/network-scripts/ifcfg-lo", "DEVICE=lo\n")
        .with_file(
            "/etc/sysconfig/kernel",
            "INITRD_MODULES=\"xenblk processor\"\n",
        )
        .with_file(
            "/etc/fstab",
            "/dev/VolGroup00/LogVol00 / ext3 defaults 1 1\nLABEL=/boot /boot ext3 defaults 1 2\n/dev/VolGroup00/LogVol01 swap swap defaults 0 0\n",
        )
        .with_symlink(
            "/etc/rc.d/rc3.d/S14xe-linux-distribution",
            "../init.d/xe-linux-distribution",
        )
        .with_symlink("/etc/rc3.d", "rc.d/rc3.d");
    let c = FixupContext {
        root_fstype: "ext3".into(),
        ..ctx()
    };
    let report = apply_twice(&mut g, &c);
    assert_eq!(
        g.text("/etc/inittab").unwrap(),
        "id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\n\
         # imgconv: co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n\
         T0:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n\
         1:2345:respawn:/sbin/mingetty tty1\n"
    );
    assert_eq!(
        g.text("/etc/securetty").unwrap(),
        "console\nvc/1\ntty1\nxvc0\nttyS0\n"
    );
    assert_eq!(
        g.text("/etc/modprobe.conf").unwrap(),
        "# imgconv: alias eth0 xennet\nalias eth0 virtio_net\n# imgconv: alias scsi_hostadapter xenblk\nalias scsi_hostadapter virtio_blk\n"
    );
    assert_eq!(
        g.text("/etc/sysconfig/network-scripts/ifcfg-eth0").unwrap(),
        "DEVICE=eth0\nBOOTPROTO=dhcp\n# imgconv: HWADDR=00:16:3E:11:22:33\nONBOOT=yes\n"
    );
    assert_eq!(
        g.text("/etc/sysconfig/kernel").unwrap(),
        "INITRD_MODULES=\"processor\"\n"
    );
    assert_eq!(
        g.text("/etc/fstab").unwrap(),
        format!(
            "UUID={ROOT_UUID} / ext3 defaults 1 1\n\
             # imgconv: next entry disabled: the converted disk has no separate /boot (LABEL=/boot); the kernel is in the root filesystem's /boot\n\
             # imgconv: LABEL=/boot /boot ext3 defaults 1 2\n\
             /dev/VolGroup00/LogVol01 swap swap defaults 0 0\n\
             # imgconv: the new swap partition\n\
             UUID={SWAP_UUID} none swap sw 0 0\n"
        ),
        "an LVM swap is not a partition of the converted disk: kept, and the new swap added"
    );
    assert_eq!(
        g.read_link("/etc/rc.d/rc3.d/K86xe-linux-distribution")
            .unwrap()
            .as_deref(),
        Some("../init.d/xe-linux-distribution")
    );
    assert!(g
        .lstat("/etc/rc.d/rc3.d/S14xe-linux-distribution")
        .unwrap()
        .is_none());
    let paths: Vec<&str> = report.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc/fstab",
            "/etc/inittab",
            "/etc/securetty",
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "/etc/modprobe.conf",
            "/etc/sysconfig/kernel",
            "/etc/rc3.d/S14xe-linux-distribution",
        ]
    );
}
