//! Fixups planned (dry run, through ExtReader) on the team's synthetic Xen guest images
//! (scripts/fixtures synthetic): one guest per init system, bare and partitioned.

use crate::support;
use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::blockio::Region;
use imgconv_core::ext::read::ExtReader;
use imgconv_core::fixups::{self, dry_run::Overlay, FixupContext};
use imgconv_core::guestfs::TreeRead;
use imgconv_core::report::Report;

const DATA_UUID: &str = "3b1f8c52-9d0e-4a67-b2c1-6e5d4f3a2b10";

fn open(image: &str, part: Option<u32>) -> (ExtReader, FixupContext) {
    let dir = support::synthetic();
    let row = support::manifest_row(&dir, image, part);
    let region = Region::open(&dir.join(image)).unwrap();
    let region = region.sub(row.start, row.size).unwrap();
    let reader = ExtReader::open(region, image).unwrap();
    let ctx = FixupContext {
        root_uuid: row.uuid.clone(),
        root_fstype: row.fs_type.clone(),
        ..ctx()
    };
    (reader, ctx)
}

/// Plan on the image, check the report against `expected` (step, path), and return the
/// overlay's view of the planned files plus the report.
fn plan(
    image: &str,
    part: Option<u32>,
    expected: &[(&str, &str)],
    files: &[&str],
) -> (Vec<String>, Report, FixupContext) {
    let (reader, ctx) = open(image, part);
    let report = fixups::plan(&reader, &ctx).unwrap();
    let got: Vec<(&str, &str)> = report
        .changes
        .iter()
        .map(|c| (c.step.as_str(), c.path.as_str()))
        .collect();
    assert_eq!(got, expected, "{image}: {:#?}", report.changes);
    let mut overlay = Overlay::over_ext(&reader);
    let mut again = Report::default();
    fixups::apply(&mut overlay, &ctx, &mut again).unwrap();
    assert_eq!(again, report, "plan is deterministic");
    let mut second = Report::default();
    fixups::apply(&mut overlay, &ctx, &mut second).unwrap();
    assert_nothing_new(&report, &second);
    let texts = files
        .iter()
        .map(|f| String::from_utf8(overlay.read_file(f, 1 << 20).unwrap().unwrap()).unwrap())
        .collect();
    (texts, report, ctx)
}

fn expected_fstab(ctx: &FixupContext, type_: &str) -> String {
    format!(
        "# /etc/fstab: static file system information (written by xen-tools).
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
proc            /proc           proc    defaults        0       0
UUID={}      /               {type_}    errors=remount-ro 0       1
UUID={SWAP_UUID}      none            swap    sw              0       0
/dev/vdb1      /srv            ext4    defaults,nofail 0       2
UUID={DATA_UUID} /data ext4 defaults,nofail 0 2
",
        ctx.root_uuid
    )
}

#[test]
fn systemd_guest_ext4() {
    let wants = "/etc/systemd/system/getty.target.wants";
    let hvc0 = format!("{wants}/serial-getty@hvc0.service");
    let ttys0 = format!("{wants}/serial-getty@ttyS0.service");
    let (texts, report, ctx) = plan(
        "xen-ext4.img",
        None,
        &[
            ("fstab", "/etc/fstab"),
            ("console", &hvc0),
            ("console", &ttys0),
            ("console", "/etc/securetty"),
            ("network", "/etc/udev/rules.d/70-persistent-net.rules"),
            ("modules", "/etc/modules"),
        ],
        &["/etc/fstab", "/etc/securetty", "/etc/modules"],
    );
    assert_eq!(texts[0], expected_fstab(&ctx, "ext4"));
    assert_eq!(texts[1], "console\nhvc0\ntty1\ntty2\nttyS0\n");
    assert_eq!(
        texts[2],
        "# /etc/modules: kernel modules to load at boot time.\n# imgconv: xen-blkfront\n# imgconv: xen-netfront\n# imgconv: xenblk\n"
    );
    // The fixture ships no getty@.service: reported, not invented.
    assert!(
        report.warnings.iter().any(|w| w.contains("getty@.service")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn sysvinit_guest_ext3() {
    let (texts, _, ctx) = plan(
        "xen-ext3.img",
        None,
        &[
            ("fstab", "/etc/fstab"),
            ("console", "/etc/inittab"),
            ("console", "/etc/securetty"),
            ("network", "/etc/udev/rules.d/70-persistent-net.rules"),
            ("modules", "/etc/modules"),
        ],
        &["/etc/fstab", "/etc/inittab"],
    );
    assert_eq!(texts[0], expected_fstab(&ctx, "ext3"));
    assert!(texts[1].ends_with(
        "# Xen console (xen-tools): the only getty of a PV guest
# imgconv: co:2345:respawn:/sbin/getty 38400 hvc0
T0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100
1:2345:respawn:/sbin/getty 38400 tty1
#1:2345:respawn:/sbin/getty 38400 tty1
"
    ));
}

#[test]
fn upstart_guest_ext2() {
    let (texts, _, ctx) = plan(
        "xen-ext2.img",
        None,
        &[
            ("fstab", "/etc/fstab"),
            ("console", "/etc/init/ttyS0.conf"),
            ("console", "/etc/init/tty1.conf"),
            ("console", "/etc/init/hvc0.conf"),
            ("console", "/etc/securetty"),
            ("network", "/etc/udev/rules.d/70-persistent-net.rules"),
            ("modules", "/etc/modules"),
        ],
        &["/etc/fstab", "/etc/init/ttyS0.conf"],
    );
    assert_eq!(texts[0], expected_fstab(&ctx, "ext2"));
    assert!(texts[1].ends_with("respawn\nexec /sbin/getty -L 115200 ttyS0 vt102\n"));
}

#[test]
fn xen_tools_partitioned_guest_root_on_xvda2() {
    let (texts, _, ctx) = plan(
        "xen-ext4-mbr.img",
        Some(2),
        &[
            ("fstab", "/etc/fstab"),
            (
                "console",
                "/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
            ),
            (
                "console",
                "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
            ),
            ("console", "/etc/securetty"),
            ("network", "/etc/udev/rules.d/70-persistent-net.rules"),
            ("modules", "/etc/modules"),
        ],
        &["/etc/fstab"],
    );
    assert_eq!(texts[0], expected_fstab(&ctx, "ext4"));
}
