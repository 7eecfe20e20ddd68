//! Fixups on upstart guests: /etc/init/*.conf (Ubuntu 10.04–14.10) and the old
//! /etc/event.d jobs (Ubuntu 6.10–9.04).

use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::fixups::{self, InitSystem};
use imgconv_core::guestfs::{MemFs, TreeRead};

const HVC0_CONF: &str = "# hvc0 - getty
#
# This service maintains a getty on hvc0 from the point the system is
# started until it is shut down again.

start on stopped rc RUNLEVEL=[2345]
stop on runlevel [!2345]

respawn
exec /sbin/getty -8 38400 hvc0
";

const TTY1_CONF: &str = "# tty1 - getty\nstart on stopped rc RUNLEVEL=[2345]\nrespawn\nexec /sbin/getty -8 38400 tty1\n";

fn init_guest() -> MemFs {
    MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/etc/init/hvc0.conf", HVC0_CONF)
        .with_file("/etc/init/tty1.conf", TTY1_CONF)
        .with_file("/etc/init/rc.conf", "task\n")
        .with_file(
            "/etc/fstab",
            &format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n"),
        )
}

#[test]
fn detects_upstart() {
    let mut g = init_guest();
    assert_eq!(
        fixups::console::detect_init(&mut g).unwrap(),
        Some(InitSystem::Upstart)
    );
    let mut old = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/etc/event.d/tty1", "");
    assert_eq!(
        fixups::console::detect_init(&mut old).unwrap(),
        Some(InitSystem::Upstart)
    );
}

#[test]
fn upstart_etc_init_exact_result_backups_and_idempotency() {
    let mut g = init_guest();
    let before = snapshot(&mut g);
    let report = apply_twice(&mut g, &ctx());
    assert_eq!(
        g.text("/etc/init/ttyS0.conf").unwrap(),
        "# ttyS0 - getty
#
# This service maintains a getty on ttyS0 from the point the system is
# started until it is shut down again.

start on stopped rc RUNLEVEL=[2345]
stop on runlevel [!2345]

respawn
exec /sbin/getty -L 115200 ttyS0 vt102
"
    );
    assert_eq!(g.text("/etc/init/tty1.conf").unwrap(), TTY1_CONF, "kept");
    assert_eq!(
        g.text("/etc/init/hvc0.conf.imgconv-orig").unwrap(),
        HVC0_CONF
    );
    let (added, removed) = diff(&before, &snapshot(&mut g));
    assert_eq!(
        added,
        ["/etc/init/hvc0.conf.imgconv-orig", "/etc/init/ttyS0.conf"]
    );
    assert_eq!(removed, ["/etc/init/hvc0.conf"]);
    assert_eq!(
        changes(&report),
        [
            ch("console", "/etc/init/ttyS0.conf", None),
            ch(
                "console",
                "/etc/init/hvc0.conf",
                Some("/etc/init/hvc0.conf.imgconv-orig")
            ),
        ]
    );
    assert_eq!(
        report.changes[0].what,
        "created an upstart job for a getty on ttyS0, based on /etc/init/hvc0.conf"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let meta = g.lstat("/etc/init/ttyS0.conf").unwrap().unwrap();
    assert_eq!((meta.mode, meta.mtime), (0o644, ctx().mtime));
}

const XVC0_JOB: &str = "# xvc0 - getty
#
# This service maintains a getty on xvc0 from the point the system is
# started until it is shut down again.

start on runlevel 2
start on runlevel 3

stop on runlevel 0
stop on runlevel 6

respawn
exec /sbin/getty 38400 xvc0
";

#[test]
fn upstart_event_d_exact_result_backups_and_idempotency() {
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/etc/event.d/xvc0", XVC0_JOB)
        .with_file("/etc/event.d/rcS", "exec /etc/init.d/rcS\n")
        .with_file("/etc/securetty", "console\nxvc0\n")
        .with_file("/etc/fstab", "/dev/xvda1 / ext3 defaults 0 1\n");
    let before = snapshot(&mut g);
    let report = apply_twice(&mut g, &ctx());
    let derived = |dev: &str, exec: &str| {
        format!(
            "# {dev} - getty
#
# This service maintains a getty on {dev} from the point the system is
# started until it is shut down again.

start on runlevel 2
start on runlevel 3

stop on runlevel 0
stop on runlevel 6

respawn
{exec}
"
        )
    };
    assert_eq!(
        g.text("/etc/event.d/ttyS0").unwrap(),
        derived("ttyS0", "exec /sbin/getty -L 115200 ttyS0 vt102")
    );
    assert_eq!(
        g.text("/etc/event.d/tty1").unwrap(),
        derived("tty1", "exec /sbin/getty -8 38400 tty1")
    );
    assert_eq!(
        g.text("/etc/event.d/.xvc0.imgconv-orig").unwrap(),
        XVC0_JOB,
        "hidden: every file in /etc/event.d is a job"
    );
    assert_eq!(
        g.text("/etc/securetty").unwrap(),
        "console\nxvc0\nttyS0\ntty1\n"
    );
    assert_eq!(
        g.text("/etc/fstab").unwrap(),
        format!(
            "UUID={ROOT_UUID} / ext4 defaults 0 1\n# imgconv: the new swap partition\nUUID={SWAP_UUID} none swap sw 0 0\n"
        )
    );
    let (added, removed) = diff(&before, &snapshot(&mut g));
    assert_eq!(
        added,
        [
            "/etc/event.d/.xvc0.imgconv-orig",
            "/etc/event.d/tty1",
            "/etc/event.d/ttyS0",
            "/etc/fstab.imgconv-orig",
            "/etc/securetty.imgconv-orig",
        ]
    );
    assert_eq!(removed, ["/etc/event.d/xvc0"]);
    assert_eq!(report.changes.len(), 5, "{:#?}", report.changes);
}

#[test]
fn upstart_without_a_xen_job_gets_template_jobs() {
    let mut g = MemFs::new()
        .with_file("/sbin/init", "ELF")
        .with_file("/sbin/initctl", "ELF")
        .with_file("/etc/init/rc.conf", "task\n")
        .with_file(
            "/etc/fstab",
            &format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n"),
        );
    let report = apply_twice(&mut g, &ctx());
    assert_eq!(
        g.text("/etc/init/ttyS0.conf").unwrap(),
        "# ttyS0 - getty on the serial console, added by imgconv for KVM

start on stopped rc RUNLEVEL=[2345]
stop on runlevel [!2345]

respawn
exec /sbin/getty -L 115200 ttyS0 vt102
"
    );
    assert_eq!(
        g.text("/etc/init/tty1.conf").unwrap(),
        "# tty1 - getty on the first virtual console, added by imgconv for KVM

start on stopped rc RUNLEVEL=[2345]
stop on runlevel [!2345]

respawn
exec /sbin/getty -8 38400 tty1
"
    );
    assert_eq!(report.changes.len(), 2);
}
