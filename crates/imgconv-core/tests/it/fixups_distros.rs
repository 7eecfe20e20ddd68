//! Fixups on file trees shaped like the guests Xen fleets hold: CentOS 5/6/7, Amazon
//! Linux 1, SLES 11/12, Ubuntu 10.04/14.04/16.04/18.04. Each test gives the exact content
//! of every file changed or created, checks that each backup holds the original, lists
//! the nodes added and removed, and runs the fixups a second time to see nothing change.

use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::fixups::FixupContext;
use imgconv_core::guestfs::{MemFs, TreeRead};

const UUID_FSTAB: &str = "UUID=6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f / ext4 defaults 0 1\nUUID=0d9e8f7a-6b5c-4d3e-9f1a-2b3c4d5e6f70 none swap sw 0 0\n";

/// Serial console and interface names every regenerated menu must keep.
const ARGS: &str = "console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0";

/// Apply twice, then check: `files` hold exactly the given text, each `(backup,
/// original)` pair exists, and the tree gained `added` and lost `removed`.
fn check(
    g: &mut MemFs,
    c: &FixupContext,
    files: &[(&str, &str)],
    backups: &[(&str, &str)],
    added: &[&str],
    removed: &[&str],
) -> imgconv_core::report::Report {
    let before = snapshot(g);
    let report = apply_twice(g, c);
    for (path, want) in files {
        assert_eq!(g.text(path).as_deref(), Some(*want), "{path}");
    }
    for (backup, original) in backups {
        assert_eq!(g.text(backup).as_deref(), Some(*original), "{backup}");
    }
    let (a, r) = diff(&before, &snapshot(g));
    assert_eq!(a, added, "added");
    assert_eq!(r, removed, "removed");
    for change in &report.changes {
        assert!(
            !change.why.is_empty() && !change.what.is_empty(),
            "{change:?}"
        );
    }
    report
}

fn vsyscall_ctx() -> FixupContext {
    FixupContext {
        extra_kernel_args: vec!["vsyscall=emulate".into()],
        ..ctx()
    }
}

const C5_INITTAB: &str = "id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\nco:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n1:2345:respawn:/sbin/mingetty tty1\n";

#[test]
fn centos5() {
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/agetty", "ELF")
        .with_file("/sbin/mingetty", "ELF")
        .with_file("/sbin/modprobe", "ELF")
        .with_file("/lib64/libc-2.5.so", "ELF")
        .with_symlink("/lib64/libc.so.6", "libc-2.5.so")
        .with_file("/etc/inittab", C5_INITTAB)
        .with_file("/etc/securetty", "console\ntty1\nxvc0\n")
        .with_file("/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")
        .with_file(
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "DEVICE=eth0\nBOOTPROTO=dhcp\nHWADDR=00:16:3E:5A:01:02\nONBOOT=yes\n",
        )
        .with_file(
            "/etc/modprobe.conf",
            "alias eth0 xennet\nalias scsi_hostadapter xenblk\n",
        )
        .with_file("/boot/grub/menu.lst", "default=0\ntitle CentOS (2.6.18-398.el5xen)\n\tkernel /vmlinuz-2.6.18-398.el5xen console=xvc0 root=/dev/xvda1\n")
        .with_file("/etc/fstab", UUID_FSTAB);
    let report = check(
        &mut g,
        &vsyscall_ctx(),
        &[
            (
                "/etc/inittab",
                "id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\n\
                 # imgconv: co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n\
                 T0:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n\
                 1:2345:respawn:/sbin/mingetty tty1\n",
            ),
            ("/etc/securetty", "console\ntty1\nxvc0\nttyS0\n"),
            (
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "DEVICE=eth0\nBOOTPROTO=dhcp\n# imgconv: HWADDR=00:16:3E:5A:01:02\nONBOOT=yes\n",
            ),
            (
                "/etc/modprobe.conf",
                "# imgconv: alias eth0 xennet\nalias eth0 virtio_net\n# imgconv: alias scsi_hostadapter xenblk\nalias scsi_hostadapter virtio_blk\n",
            ),
            ("/.autorelabel", ""),
        ],
        &[
            ("/etc/inittab.imgconv-orig", C5_INITTAB),
            ("/etc/securetty.imgconv-orig", "console\ntty1\nxvc0\n"),
        ],
        &[
            "/.autorelabel",
            "/etc/inittab.imgconv-orig",
            "/etc/modprobe.conf.imgconv-orig",
            "/etc/securetty.imgconv-orig",
            "/etc/sysconfig/network-scripts/ifcfg-eth0.imgconv-orig",
        ],
        &[],
    );
    let relabel = report.changes.last().unwrap();
    assert_eq!(
        (relabel.step.as_str(), relabel.path.as_str()),
        ("selinux", "/.autorelabel")
    );
    assert!(relabel.why.contains("SELINUX=enforcing"), "{}", relabel.why);
    assert_eq!(
        g.text("/boot/grub/menu.lst").unwrap(),
        "default=0\ntitle CentOS (2.6.18-398.el5xen)\n\tkernel /vmlinuz-2.6.18-398.el5xen console=xvc0 root=/dev/xvda1\n",
        "the pv-grub menu is not the converted disk's boot menu: left alone"
    );
}

/// RHEL 6 upstart jobs: serial.conf follows the kernel's console, start-ttys.conf the
/// virtual consoles.
const SERIAL_CONF: &str = "start on fedora.serial-console-available DEV=* and stopped rc RUNLEVEL=[2345]\nstop on runlevel [S016]\n\ninstance $DEV\nrespawn\npre-start exec /sbin/securetty $DEV\nexec /sbin/agetty /dev/$DEV $SPEED vt100-nav\n";
const START_TTYS: &str = "start on stopped rc RUNLEVEL=[2345]\n\nenv ACTIVE_CONSOLES=/dev/tty[1-6]\nenv X_TTY=/dev/tty1\ntask\nscript\n\t. /etc/sysconfig/init\n\tfor tty in $(echo $ACTIVE_CONSOLES) ; do\n\t\tinitctl start tty TTY=$tty\n\tdone\nend script\n";

fn rhel6_upstart() -> MemFs {
    MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/sbin/agetty", "ELF")
        .with_file("/sbin/mingetty", "ELF")
        .with_file("/sbin/modprobe", "ELF")
        .with_file("/etc/inittab", "id:3:initdefault:\n")
        .with_file("/etc/init/serial.conf", SERIAL_CONF)
        .with_file("/etc/init/start-ttys.conf", START_TTYS)
        .with_file(
            "/etc/init/tty.conf",
            "instance $TTY\nexec /sbin/mingetty $TTY\n",
        )
        .with_file("/lib64/libc-2.12.so", "ELF")
        .with_symlink("/lib64/libc.so.6", "libc-2.12.so")
}

#[test]
fn centos6() {
    let rules = "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:16:3e:5a:01:02\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n";
    let mut g = rhel6_upstart()
        .with_file("/etc/securetty", "console\nvc/1\ntty1\nhvc0\n")
        .with_file("/etc/selinux/config", "SELINUX=permissive\n")
        .with_file("/etc/udev/rules.d/70-persistent-net.rules", rules)
        .with_file(
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "DEVICE=\"eth0\"\nHWADDR=\"00:16:3E:5A:01:02\"\nNM_CONTROLLED=\"no\"\nONBOOT=\"yes\"\n",
        )
        .with_file("/etc/fstab", UUID_FSTAB);
    let report = check(
        &mut g,
        &vsyscall_ctx(),
        &[
            ("/etc/securetty", "console\nvc/1\ntty1\nhvc0\nttyS0\n"),
            (
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "DEVICE=\"eth0\"\n# imgconv: HWADDR=\"00:16:3E:5A:01:02\"\nNM_CONTROLLED=\"no\"\nONBOOT=\"yes\"\n",
            ),
            ("/etc/init/serial.conf", SERIAL_CONF),
            ("/.autorelabel", ""),
        ],
        &[(
            "/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig",
            rules,
        )],
        &[
            "/.autorelabel",
            "/etc/securetty.imgconv-orig",
            "/etc/sysconfig/network-scripts/ifcfg-eth0.imgconv-orig",
            "/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig",
        ],
        &["/etc/udev/rules.d/70-persistent-net.rules"],
    );
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.step != "console" || c.path == "/etc/securetty"),
        "serial.conf and start-ttys.conf already give gettys on the kernel console and tty1: {:#?}",
        report.changes
    );
    assert!(report
        .changes
        .last()
        .unwrap()
        .why
        .contains("SELINUX=permissive"));
}

#[test]
fn amazon_linux1_with_a_hvc0_job_and_cloud_init() {
    let hvc0 = "# hvc0 - getty on the Xen console\nstart on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\nrespawn\nexec /sbin/agetty hvc0 38400 vt100-nav\n";
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/sbin/agetty", "ELF")
        .with_file("/sbin/mingetty", "ELF")
        .with_file("/etc/init/hvc0.conf", hvc0)
        .with_file("/etc/init/rc.conf", "task\n")
        .with_file("/etc/cloud/cloud.cfg", "datasource_list: [ Ec2, None ]\n")
        .with_file("/lib64/libc-2.17.so", "ELF")
        .with_symlink("/lib64/libc.so.6", "libc-2.17.so")
        .with_file("/etc/fstab", UUID_FSTAB);
    check(
        &mut g,
        &ctx(),
        &[
            (
                "/etc/init/ttyS0.conf",
                "# ttyS0 - getty on the Xen console\nstart on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\nrespawn\nexec /sbin/agetty -L ttyS0 115200 vt102\n",
            ),
            (
                "/etc/init/tty1.conf",
                "# tty1 - getty on the Xen console\nstart on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\nrespawn\nexec /sbin/mingetty tty1\n",
            ),
            (
                "/etc/cloud/cloud.cfg.d/99-imgconv-datasource.cfg",
                imgconv_core::fixups::cloud_init::DROP_IN_TEXT,
            ),
            ("/etc/cloud/cloud.cfg", "datasource_list: [ Ec2, None ]\n"),
        ],
        &[("/etc/init/hvc0.conf.imgconv-orig", hvc0)],
        &[
            "/etc/cloud/cloud.cfg.d",
            "/etc/cloud/cloud.cfg.d/99-imgconv-datasource.cfg",
            "/etc/init/hvc0.conf.imgconv-orig",
            "/etc/init/tty1.conf",
            "/etc/init/ttyS0.conf",
        ],
        &["/etc/init/hvc0.conf"],
    );
    assert!(imgconv_core::fixups::cloud_init::DROP_IN_TEXT
        .contains("datasource_list: [ NoCloud, None ]\n"));
    // --keep-cloud-init: no drop-in, a warning instead.
    let mut kept = MemFs::new()
        .with_file("/etc/cloud/cloud.cfg", "x\n")
        .with_file("/etc/fstab", UUID_FSTAB);
    let c = FixupContext {
        keep_cloud_init: true,
        ..ctx()
    };
    let report = apply_twice(&mut kept, &c);
    assert!(kept.lstat("/etc/cloud/cloud.cfg.d").unwrap().is_none());
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("--keep-cloud-init")));
}

#[test]
fn centos7() {
    let default_grub = "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\nGRUB_CMDLINE_LINUX=\"crashkernel=auto console=hvc0 rhgb quiet\"\nGRUB_DISABLE_RECOVERY=\"true\"\n";
    let grub_cfg = "### BEGIN /etc/grub.d/10_linux ###\nmenuentry 'CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)' --class centos {\n\tload_video\n\tset gfxpayload=keep\n\tinsmod xfs\n\tlinux16 /boot/vmlinuz-3.10.0-1160.el7.x86_64 root=UUID=6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f ro crashkernel=auto console=hvc0 rhgb quiet\n\tinitrd16 /boot/initramfs-3.10.0-1160.el7.x86_64.img\n}\n";
    let nm = "[connection]\nid=eth0\nuuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03\ntype=ethernet\n\n[ethernet]\nmac-address=00:16:3E:5A:01:02\n\n[ipv4]\nmethod=auto\n";
    let mut g = memfs(&[
        Entry::File("/usr/lib/systemd/systemd", "ELF"),
        Entry::File("/usr/lib/systemd/system/serial-getty@.service", "[Unit]\n"),
        Entry::File("/usr/lib/systemd/system/getty@.service", "[Unit]\n"),
        Entry::Link("/sbin/init", "../lib/systemd/systemd"),
        Entry::Link("/lib", "usr/lib"),
        Entry::Link(
            "/etc/systemd/system/getty.target.wants/getty@tty1.service",
            "/usr/lib/systemd/system/getty@.service",
        ),
        Entry::File("/usr/lib64/libc-2.17.so", "ELF"),
        Entry::Link("/lib64", "usr/lib64"),
        Entry::Link("/usr/lib64/libc.so.6", "libc-2.17.so"),
        Entry::File("/etc/default/grub", default_grub),
        Entry::Link("/etc/sysconfig/grub", "../default/grub"),
        Entry::File("/boot/grub2/grub.cfg", grub_cfg),
        Entry::File("/etc/selinux/config", "SELINUX=enforcing\n"),
        Entry::File(
            "/etc/NetworkManager/system-connections/eth0.nmconnection",
            nm,
        ),
        Entry::File("/etc/fstab", UUID_FSTAB),
    ]);
    check(
        &mut g,
        &ctx(),
        &[
            (
                "/etc/default/grub",
                &format!("GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rhgb quiet {ARGS}\"\nGRUB_DISABLE_RECOVERY=\"true\"\n# imgconv: boot settings for the converted (KVM) disk\nGRUB_TERMINAL=\"serial console\"\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"),
            ),
            (
                "/boot/grub2/grub.cfg",
                &format!("### BEGIN /etc/grub.d/10_linux ###\nmenuentry 'CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)' --class centos {{\n\tload_video\n\tset gfxpayload=keep\n\tinsmod xfs\n\tlinux16 /boot/vmlinuz-3.10.0-1160.el7.x86_64 root=UUID=6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f ro crashkernel=auto rhgb quiet {ARGS}\n\tinitrd16 /boot/initramfs-3.10.0-1160.el7.x86_64.img\n}}\n"),
            ),
            (
                "/etc/NetworkManager/system-connections/eth0.nmconnection",
                "[connection]\nid=eth0\nuuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03\ntype=ethernet\n\n[ethernet]\n# imgconv: mac-address=00:16:3E:5A:01:02\n\n[ipv4]\nmethod=auto\n",
            ),
        ],
        &[
            ("/etc/default/grub.imgconv-orig", default_grub),
            ("/boot/grub2/grub.cfg.imgconv-orig", grub_cfg),
            (
                "/etc/NetworkManager/system-connections/.eth0.nmconnection.imgconv-orig",
                nm,
            ),
        ],
        &[
            "/.autorelabel",
            "/boot/grub2/grub.cfg.imgconv-orig",
            "/etc/NetworkManager/system-connections/.eth0.nmconnection.imgconv-orig",
            "/etc/default/grub.imgconv-orig",
            "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
        ],
        &[],
    );
    assert_eq!(
        g.read_link("/etc/sysconfig/grub").unwrap().as_deref(),
        Some("../default/grub"),
        "edited through the link, the link kept"
    );
}

#[test]
fn sles11() {
    let inittab = "id:3:initdefault:\nl3:3:wait:/etc/init.d/rc 3\n1:2345:respawn:/sbin/mingetty --noclear tty1\n#S0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt102\nx0:12345:respawn:/sbin/agetty -L 9600 xvc0 vt102\n";
    let bootloader = "## Path: System/Bootloader\nLOADER_TYPE=\"grub\"\nDEFAULT_APPEND=\"resume=/dev/xvda1 splash=silent showopts console=xvc0,115200\"\nFAILSAFE_APPEND=\"ide=nodma apm=off noresume edd=off powersaved=off nohz=off highres=off processor.max_cstate=1 nomodeset x11failsafe console=xvc0\"\nXEN_KERNEL_APPEND=\"\"\n";
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/agetty", "ELF")
        .with_file("/sbin/mingetty", "ELF")
        .with_file("/etc/inittab", inittab)
        .with_file("/etc/sysconfig/bootloader", bootloader)
        .with_file(
            "/etc/sysconfig/kernel",
            "INITRD_MODULES=\"xenblk processor thermal fan\"\nDOMU_INITRD_MODULES=\"xennet xenblk\"\n",
        )
        .with_file("/lib64/libc-2.11.3.so", "ELF")
        .with_symlink("/lib64/libc.so.6", "libc-2.11.3.so")
        .with_file("/etc/fstab", UUID_FSTAB);
    check(
        &mut g,
        &vsyscall_ctx(),
        &[
            (
                "/etc/inittab",
                "id:3:initdefault:\nl3:3:wait:/etc/init.d/rc 3\n1:2345:respawn:/sbin/mingetty --noclear tty1\n#S0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt102\n\
                 # imgconv: x0:12345:respawn:/sbin/agetty -L 9600 xvc0 vt102\n\
                 T0:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n",
            ),
            (
                "/etc/sysconfig/bootloader",
                &format!("## Path: System/Bootloader\nLOADER_TYPE=\"grub\"\nDEFAULT_APPEND=\"splash=silent showopts {ARGS} vsyscall=emulate\"\nFAILSAFE_APPEND=\"ide=nodma apm=off noresume edd=off powersaved=off nohz=off highres=off processor.max_cstate=1 nomodeset x11failsafe\"\nXEN_KERNEL_APPEND=\"\"\n"),
            ),
            (
                "/etc/sysconfig/kernel",
                "INITRD_MODULES=\"processor thermal fan\"\nDOMU_INITRD_MODULES=\"\"\n",
            ),
        ],
        &[("/etc/sysconfig/bootloader.imgconv-orig", bootloader)],
        &[
            "/etc/inittab.imgconv-orig",
            "/etc/sysconfig/bootloader.imgconv-orig",
            "/etc/sysconfig/kernel.imgconv-orig",
        ],
        &[],
    );
}

#[test]
fn sles12() {
    let default_grub = "GRUB_DISTRIBUTOR=\"SLES12\"\nGRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX_DEFAULT=\" resume=/dev/xvda1 splash=silent quiet showopts console=hvc0\"\nGRUB_CMDLINE_LINUX=\"\"\nGRUB_TERMINAL=\"gfxterm\"\nGRUB_GFXMODE=\"auto\"\n";
    let bootloader = "LOADER_TYPE=\"grub2\"\nSECURE_BOOT=\"no\"\nDEFAULT_APPEND=\" resume=/dev/xvda1 splash=silent quiet showopts console=hvc0\"\nFAILSAFE_APPEND=\"ide=nodma apm=off noresume edd=off x11failsafe\"\n";
    let mut g = memfs(&[
        Entry::File("/usr/lib/systemd/systemd", "ELF"),
        Entry::File("/usr/lib/systemd/system/serial-getty@.service", "[Unit]\n"),
        Entry::File("/usr/lib/systemd/system/getty@.service", "[Unit]\n"),
        Entry::Link("/sbin/init", "/usr/lib/systemd/systemd"),
        Entry::Link(
            "/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
            "/usr/lib/systemd/system/serial-getty@.service",
        ),
        Entry::File("/lib64/libc-2.22.so", "ELF"),
        Entry::Link("/lib64/libc.so.6", "libc-2.22.so"),
        Entry::File("/etc/default/grub", default_grub),
        Entry::File("/etc/sysconfig/bootloader", bootloader),
        Entry::File("/etc/fstab", UUID_FSTAB),
    ]);
    check(
        &mut g,
        &ctx(),
        &[
            (
                "/etc/default/grub",
                &format!("GRUB_DISTRIBUTOR=\"SLES12\"\nGRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash=silent quiet showopts\"\nGRUB_CMDLINE_LINUX=\"{ARGS}\"\nGRUB_TERMINAL=\"serial console\"\nGRUB_GFXMODE=\"auto\"\n# imgconv: boot settings for the converted (KVM) disk\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"),
            ),
            (
                "/etc/sysconfig/bootloader",
                &format!("LOADER_TYPE=\"grub2\"\nSECURE_BOOT=\"no\"\nDEFAULT_APPEND=\"splash=silent quiet showopts {ARGS}\"\nFAILSAFE_APPEND=\"ide=nodma apm=off noresume edd=off x11failsafe\"\n"),
            ),
        ],
        &[
            ("/etc/default/grub.imgconv-orig", default_grub),
            ("/etc/sysconfig/bootloader.imgconv-orig", bootloader),
        ],
        &[
            "/etc/default/grub.imgconv-orig",
            "/etc/sysconfig/bootloader.imgconv-orig",
            "/etc/systemd/system/getty.target.wants/.serial-getty@hvc0.service.imgconv-orig",
            "/etc/systemd/system/getty.target.wants/getty@tty1.service",
            "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
        ],
        &["/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service"],
    );
}

const DEBCONF: &str = "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/xvda\nOwners: grub-pc\nFlags: seen\n\nName: grub-pc/install_devices_empty\nTemplate: grub-pc/install_devices_empty\nValue: false\nOwners: grub-pc\n\n";

const HVC0_CONF: &str = "# hvc0 - getty\nstart on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\n\nrespawn\nexec /sbin/getty -8 38400 hvc0\n";

#[test]
fn ubuntu1004() {
    let default_grub = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=2\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"console=hvc0 root=/dev/xvda1\"\n#GRUB_TERMINAL=console\n";
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/sbin/getty", "ELF")
        .with_file("/etc/init/hvc0.conf", HVC0_CONF)
        .with_file(
            "/etc/init/tty1.conf",
            "respawn\nexec /sbin/getty -8 38400 tty1\n",
        )
        .with_file("/lib/libc-2.11.1.so", "ELF")
        .with_symlink("/lib/libc.so.6", "libc-2.11.1.so")
        .with_file("/etc/default/grub", default_grub)
        .with_file("/var/cache/debconf/config.dat", DEBCONF)
        .with_file("/etc/fstab", UUID_FSTAB);
    check(
        &mut g,
        &vsyscall_ctx(),
        &[
            (
                "/etc/default/grub",
                &format!("GRUB_DEFAULT=0\nGRUB_TIMEOUT=2\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"{ARGS} vsyscall=emulate\"\n#GRUB_TERMINAL=console\n# imgconv: boot settings for the converted (KVM) disk\nGRUB_TERMINAL=\"serial console\"\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"),
            ),
            (
                "/var/cache/debconf/config.dat",
                &DEBCONF.replace("Value: /dev/xvda", "Value: /dev/vda"),
            ),
            (
                "/etc/init/ttyS0.conf",
                "# ttyS0 - getty\nstart on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\n\nrespawn\nexec /sbin/getty -L 115200 ttyS0 vt102\n",
            ),
        ],
        &[
            ("/etc/default/grub.imgconv-orig", default_grub),
            ("/var/cache/debconf/config.dat.imgconv-orig", DEBCONF),
            ("/etc/init/hvc0.conf.imgconv-orig", HVC0_CONF),
        ],
        &[
            "/etc/default/grub.imgconv-orig",
            "/etc/init/hvc0.conf.imgconv-orig",
            "/etc/init/ttyS0.conf",
            "/var/cache/debconf/config.dat.imgconv-orig",
        ],
        &["/etc/init/hvc0.conf"],
    );
}

#[test]
fn ubuntu1404_cloud_image() {
    let default_grub = "GRUB_DEFAULT=0\nGRUB_HIDDEN_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=hvc0\"\nGRUB_CMDLINE_LINUX=\"\"\n";
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/sbin/getty", "ELF")
        .with_file("/etc/init/hvc0.conf", HVC0_CONF)
        .with_file(
            "/etc/init/tty1.conf",
            "respawn\nexec /sbin/getty -8 38400 tty1\n",
        )
        .with_file("/lib/x86_64-linux-gnu/libc-2.19.so", "ELF")
        .with_symlink("/lib/x86_64-linux-gnu/libc.so.6", "libc-2.19.so")
        .with_file("/etc/default/grub", default_grub)
        .with_file("/etc/cloud/cloud.cfg", "datasource_list: [ Ec2 ]\n")
        .with_file("/var/cache/debconf/config.dat", DEBCONF)
        .with_file("/etc/fstab", UUID_FSTAB);
    let c = FixupContext {
        disk_bus: imgconv_core::fixups::DiskBus::Sata,
        ..ctx()
    };
    check(
        &mut g,
        &c,
        &[
            (
                "/etc/default/grub",
                "GRUB_DEFAULT=0\nGRUB_HIDDEN_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\"\n# imgconv: boot settings for the converted (KVM) disk\nGRUB_TERMINAL=\"serial console\"\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n",
            ),
            (
                "/var/cache/debconf/config.dat",
                &DEBCONF.replace("Value: /dev/xvda", "Value: /dev/sda"),
            ),
        ],
        &[("/etc/default/grub.imgconv-orig", default_grub)],
        &[
            "/etc/cloud/cloud.cfg.d",
            "/etc/cloud/cloud.cfg.d/99-imgconv-datasource.cfg",
            "/etc/default/grub.imgconv-orig",
            "/etc/init/hvc0.conf.imgconv-orig",
            "/etc/init/ttyS0.conf",
            "/var/cache/debconf/config.dat.imgconv-orig",
        ],
        &["/etc/init/hvc0.conf"],
    );
}

#[test]
fn ubuntu1604() {
    let default_grub = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=hvc0 xencons=tty\"\nGRUB_CMDLINE_LINUX=\"\"\nGRUB_TERMINAL=console\n";
    let mut g = memfs(&[
        Entry::File("/lib/systemd/systemd", "ELF"),
        Entry::File("/lib/systemd/system/serial-getty@.service", "[Unit]\n"),
        Entry::File("/lib/systemd/system/getty@.service", "[Unit]\n"),
        Entry::File(
            "/lib/systemd/system/getty.target.wants/getty@tty1.service",
            "[Unit]\n",
        ),
        Entry::Link("/sbin/init", "/lib/systemd/systemd"),
        Entry::File("/lib/x86_64-linux-gnu/libc-2.23.so", "ELF"),
        Entry::Link("/lib/x86_64-linux-gnu/libc.so.6", "libc-2.23.so"),
        Entry::File("/etc/default/grub", default_grub),
        Entry::File("/var/cache/debconf/config.dat", DEBCONF),
        Entry::File(
            "/etc/udev/rules.d/70-persistent-net.rules",
            "NAME=\"eth0\"\n",
        ),
        Entry::File("/etc/fstab", UUID_FSTAB),
    ]);
    check(
        &mut g,
        &ctx(),
        &[(
            "/etc/default/grub",
            "GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\"\nGRUB_TERMINAL=\"serial console\"\n# imgconv: boot settings for the converted (KVM) disk\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n",
        )],
        &[("/etc/default/grub.imgconv-orig", default_grub)],
        &[
            "/etc/default/grub.imgconv-orig",
            "/etc/systemd",
            "/etc/systemd/system",
            "/etc/systemd/system/getty.target.wants",
            "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
            "/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig",
            "/var/cache/debconf/config.dat.imgconv-orig",
        ],
        &["/etc/udev/rules.d/70-persistent-net.rules"],
    );
}

#[test]
fn ubuntu1804_netplan_and_networkd() {
    let netplan = "network:\n    version: 2\n    ethernets:\n        eth0:\n            dhcp4: true\n            match:\n                macaddress: 06:5f:1e:2a:3b:4c\n            set-name: eth0\n";
    let link = "[Match]\nMACAddress=06:5f:1e:2a:3b:4c\n\n[Link]\nName=eth0\n";
    let network = "[Match]\nMACAddress=06:5f:1e:2a:3b:4c\n\n[Network]\nDHCP=ipv4\n";
    let mut g = memfs(&[
        Entry::File("/lib/systemd/systemd", "ELF"),
        Entry::File("/lib/systemd/system/serial-getty@.service", "[Unit]\n"),
        Entry::File("/lib/systemd/system/getty@.service", "[Unit]\n"),
        Entry::File(
            "/lib/systemd/system/getty.target.wants/getty@tty1.service",
            "[Unit]\n",
        ),
        Entry::File(
            "/lib/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
            "[Unit]\n",
        ),
        Entry::Link("/sbin/init", "/lib/systemd/systemd"),
        Entry::File("/etc/netplan/50-cloud-init.yaml", netplan),
        Entry::File("/etc/systemd/network/10-eth0.link", link),
        Entry::File("/etc/systemd/network/20-eth0.network", network),
        Entry::File("/etc/fstab", UUID_FSTAB),
    ]);
    check(
        &mut g,
        &ctx(),
        &[
            (
                "/etc/netplan/50-cloud-init.yaml",
                "network:\n    version: 2\n    ethernets:\n        eth0:\n            dhcp4: true\n            match:\n# imgconv:                 macaddress: 06:5f:1e:2a:3b:4c\n                name: \"eth0\"\n            set-name: eth0\n",
            ),
            (
                "/etc/systemd/network/20-eth0.network",
                "[Match]\n# imgconv: MACAddress=06:5f:1e:2a:3b:4c\nName=eth*\n\n[Network]\nDHCP=ipv4\n",
            ),
        ],
        &[
            ("/etc/netplan/50-cloud-init.yaml.imgconv-orig", netplan),
            ("/etc/systemd/network/10-eth0.link.imgconv-orig", link),
            ("/etc/systemd/network/20-eth0.network.imgconv-orig", network),
        ],
        &[
            "/etc/netplan/50-cloud-init.yaml.imgconv-orig",
            "/etc/systemd/network/10-eth0.link.imgconv-orig",
            "/etc/systemd/network/20-eth0.network.imgconv-orig",
        ],
        &["/etc/systemd/network/10-eth0.link"],
    );
}

/// The old upstart job of the Xen guides: `/etc/event.d/tty1` running its login on xvc0.
#[test]
fn event_d_tty1_on_xvc0_goes_back_to_tty1() {
    let tty1 = "# tty1 - getty\nstart on runlevel 2\nstop on runlevel 0\nrespawn\nexec /sbin/getty 38400 xvc0\n";
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/sbin/getty", "ELF")
        .with_file("/etc/event.d/tty1", tty1)
        .with_file("/etc/fstab", UUID_FSTAB);
    let report = check(
        &mut g,
        &ctx(),
        &[
            (
                "/etc/event.d/tty1",
                "# tty1 - getty\nstart on runlevel 2\nstop on runlevel 0\nrespawn\nexec /sbin/getty 38400 tty1\n",
            ),
            (
                "/etc/event.d/ttyS0",
                "# tty1 - getty\nstart on runlevel 2\nstop on runlevel 0\nrespawn\nexec /sbin/getty -L 115200 ttyS0 vt102\n",
            ),
        ],
        &[("/etc/event.d/.tty1.imgconv-orig", tty1)],
        &["/etc/event.d/.tty1.imgconv-orig", "/etc/event.d/ttyS0"],
        &[],
    );
    assert_eq!(
        report.changes[0].what,
        "the getty job now runs on tty1 instead of xvc0"
    );
}
