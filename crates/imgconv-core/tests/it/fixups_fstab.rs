//! /etc/fstab fixups: every line kind, exact output, backups and idempotency.

use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::fixups::{self, FixupContext, FixupError};
use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{GuestFsError, MemFs, TreeRead};
use imgconv_core::report::Report;

/// Fix fstab twice; the second run must change and report nothing.
fn fix_twice(fs: &mut MemFs, ctx: &FixupContext) -> Report {
    let mut report = Report::default();
    fixups::fstab::fix_fstab(fs, ctx, &mut report).unwrap();
    let after = snapshot(fs);
    let mut again = Report::default();
    fixups::fstab::fix_fstab(fs, ctx, &mut again).unwrap();
    assert_eq!(again, Report::default());
    assert_eq!(snapshot(fs), after);
    report
}

fn fixed(original: &str, ctx: &FixupContext) -> (String, Report) {
    let mut fs = MemFs::new().with_file("/etc/fstab", original);
    let report = fix_twice(&mut fs, ctx);
    if !report.changes.is_empty() {
        assert_eq!(fs.text("/etc/fstab.imgconv-orig").unwrap(), original);
        assert_eq!(
            report.changes[0].backup.as_deref(),
            Some("/etc/fstab.imgconv-orig")
        );
    }
    (fs.text("/etc/fstab").unwrap(), report)
}

#[test]
fn xen_tools_layout_comments_and_tabs_preserved_byte_for_byte() {
    // Odd spacing, tabs, trailing blanks, a comment between entries, an unknown
    // one-field line: everything that is not a rewritten field must survive as is.
    let original = "# /etc/fstab: static file system information.\n\
                    #\n\
                    #   <file system>\t<mount point>  <type>\n\
                    \n\
                    proc\t\t/proc\tproc\tdefaults\t0\t0\n\
                    /dev/xvda2\t  /\text4\t errors=remount-ro\t0 1   \n\
                    # swap was on its own image, xvda1\n\
                    /dev/xvda1   none    swap    sw      0       0\n\
                    garbage-line\n\
                    \t# indented comment\n";
    let (text, report) = fixed(original, &ctx());
    let expected = original
        .replace("/dev/xvda2\t  /", &format!("UUID={ROOT_UUID}\t  /"))
        .replace("/dev/xvda1   none", &format!("UUID={SWAP_UUID}   none"));
    assert_eq!(text, expected);
    assert_eq!(
        report.changes[0].what,
        format!(
            "root entry /dev/xvda2 → UUID={ROOT_UUID}; swap entry /dev/xvda1 → UUID={SWAP_UUID}"
        )
    );
    assert!(report.warnings.is_empty());
}

#[test]
fn root_by_label_and_dev_root_become_uuid() {
    for spec in [
        "LABEL=root",
        "/dev/root",
        "UUID=11111111-2222-3333-4444-555555555555",
        "/dev/disk/by-label/root",
    ] {
        let (text, report) = fixed(
            &format!("{spec} / ext4 defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n"),
            &ctx(),
        );
        assert_eq!(
            text,
            format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n"),
            "{spec}"
        );
        assert_eq!(report.changes.len(), 1);
    }
    // Already right (UUID case differs): nothing to do.
    let (text, report) = fixed(
        &format!(
            "UUID={} / auto defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n",
            ROOT_UUID.to_uppercase()
        ),
        &ctx(),
    );
    assert!(text.contains("/ auto defaults"), "auto is kept");
    assert!(report.changes.is_empty());
}

#[test]
fn missing_root_is_added_with_a_warning() {
    let (text, report) = fixed("proc /proc proc defaults 0 0", &ctx());
    assert_eq!(
        text,
        format!(
            "proc /proc proc defaults 0 0\n\
             # imgconv: root filesystem (this fstab had no entry for /)\n\
             UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             # imgconv: the new swap partition\n\
             UUID={SWAP_UUID} none swap sw 0 0\n"
        )
    );
    assert_eq!(
        report.warnings,
        ["/etc/fstab had no entry for /; imgconv added one by UUID"]
    );
}

#[test]
fn data_disks_are_renamed_for_the_bus_and_converted_disk_partitions_disabled() {
    let original = "/dev/xvda2 / ext3 defaults 0 1
/dev/xvda1 none swap sw 0 0
/dev/xvda3 /home ext4 defaults 0 2
/dev/xvda4 /boot ext2 defaults 0 2
/dev/xvdb1 /srv ext4 defaults 0 2
/dev/xvdc none swap sw 0 0
/dev/hdd1 /mnt/old ext3 noauto 0 0
UUID=abcd /var ext4 defaults 0 2
LABEL=logs /var/log ext4 defaults 0 2
PARTUUID=0001-02 /opt ext4 defaults 0 2
/dev/disk/by-id/xyz /x ext4 defaults 0 2
/dev/mapper/vg-lv /y ext4 defaults 0 2
server:/export /nfs nfs defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
";
    let (text, report) = fixed(original, &ctx());
    assert_eq!(
        text,
        format!(
            "UUID={ROOT_UUID} / ext4 defaults 0 1
UUID={SWAP_UUID} none swap sw 0 0
# imgconv: next entry disabled: /dev/xvda3 was a partition of the converted Xen disk, which only keeps the root filesystem
# imgconv: /dev/xvda3 /home ext4 defaults 0 2
# imgconv: next entry disabled: the converted disk has no separate /boot (/dev/xvda4); the kernel is in the root filesystem's /boot
# imgconv: /dev/xvda4 /boot ext2 defaults 0 2
/dev/vdb1 /srv ext4 defaults 0 2
# imgconv: next entry disabled: swap device /dev/xvdc is not part of the converted disk
# imgconv: /dev/xvdc none swap sw 0 0
/dev/vdd1 /mnt/old ext3 noauto 0 0
UUID=abcd /var ext4 defaults 0 2
LABEL=logs /var/log ext4 defaults 0 2
PARTUUID=0001-02 /opt ext4 defaults 0 2
/dev/disk/by-id/xyz /x ext4 defaults 0 2
/dev/mapper/vg-lv /y ext4 defaults 0 2
server:/export /nfs nfs defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
"
        )
    );
    assert_eq!(report.warnings.len(), 5, "{:#?}", report.warnings);
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("/dev/xvdb1") && w.contains("/dev/vdb1")));
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("/dev/hdd1") && w.contains("/dev/vdd1")));
}

#[test]
fn fstab_through_a_symlink_is_edited_at_its_target() {
    let mut fs = MemFs::new()
        .with_file("/etc/fstab.d/real", "/dev/xvda1 / ext4 defaults 0 1\n")
        .with_symlink("/etc/fstab", "fstab.d/real");
    let mut c = ctx();
    c.swap_uuid = None;
    c.new_swap_partition_exists = false;
    let report = fix_twice(&mut fs, &c);
    assert_eq!(
        fs.lstat("/etc/fstab").unwrap().unwrap().kind,
        NodeKind::Symlink
    );
    assert_eq!(
        fs.text("/etc/fstab.d/real").unwrap(),
        format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n")
    );
    assert_eq!(
        fs.text("/etc/fstab.imgconv-orig").unwrap(),
        "/dev/xvda1 / ext4 defaults 0 1\n"
    );
    assert_eq!(report.changes.len(), 1);
}

#[test]
fn fstab_symlink_loop_is_a_clear_error() {
    let mut fs = MemFs::new()
        .with_symlink("/etc/fstab", "fstab.d/loop")
        .with_symlink("/etc/fstab.d/loop", "/etc/fstab");
    let mut report = Report::default();
    let err = fixups::apply(&mut fs, &ctx(), &mut report).unwrap_err();
    match &err {
        FixupError::Guest {
            step: "fstab",
            path,
            source: GuestFsError::SymlinkLoop { .. },
        } => assert_eq!(path, "/etc/fstab"),
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("/etc/fstab") && msg.contains("symbolic links"),
        "{msg}"
    );
    // The library error wraps it too.
    let top: imgconv_core::Error = err.into();
    assert!(matches!(top, imgconv_core::Error::Fixup(_)));
}

#[test]
fn missing_fstab_is_created() {
    let mut fs = MemFs::new().with_file("/etc/hostname", "g\n");
    let report = fix_twice(&mut fs, &ctx());
    assert_eq!(
        fs.text("/etc/fstab").unwrap(),
        format!(
            "# /etc/fstab written by imgconv: the guest had none\n\
             UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             UUID={SWAP_UUID} none swap sw 0 0\n"
        )
    );
    assert_eq!(report.changes[0].backup, None);
    assert_eq!(report.warnings.len(), 1);
}

#[test]
fn second_swap_partition_is_disabled_and_existing_backup_kept() {
    let mut fs = MemFs::new()
        .with_file(
            "/etc/fstab",
            "/dev/xvda2 / ext4 defaults 0 1\n/dev/xvda1 none swap sw 0 0\n/dev/xvdb2 none swap sw,pri=1 0 0\n",
        )
        .with_file("/etc/fstab.imgconv-orig", "an older backup\n");
    let report = fix_twice(&mut fs, &ctx());
    assert_eq!(
        fs.text("/etc/fstab").unwrap(),
        format!(
            "UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n\
             # imgconv: next entry disabled: swap device /dev/xvdb2 is not part of the converted disk\n\
             # imgconv: /dev/xvdb2 none swap sw,pri=1 0 0\n"
        )
    );
    assert_eq!(
        fs.text("/etc/fstab.imgconv-orig").unwrap(),
        "an older backup\n"
    );
    assert_eq!(
        report.changes[0].backup.as_deref(),
        Some("/etc/fstab.imgconv-orig.2")
    );
    assert!(fs
        .text("/etc/fstab.imgconv-orig.2")
        .unwrap()
        .starts_with("/dev/xvda2 /"));
}

#[test]
fn crypttab_and_resume() {
    let mut fs = MemFs::new()
        .with_file(
            "/etc/fstab",
            &format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={SWAP_UUID} none swap sw 0 0\n"),
        )
        .with_file("/etc/crypttab", "data /dev/xvdb1 none luks\n")
        .with_file("/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/xvda1\n");
    let mut report = Report::default();
    fixups::fstab::fix_crypttab(&mut fs, &ctx(), &mut report).unwrap();
    fixups::fstab::fix_resume(&mut fs, &ctx(), &mut report).unwrap();
    assert_eq!(
        fs.text("/etc/crypttab").unwrap(),
        "data /dev/vdb1 none luks\n"
    );
    assert_eq!(
        fs.text("/etc/initramfs-tools/conf.d/resume").unwrap(),
        format!("RESUME=UUID={SWAP_UUID}\n")
    );
    assert_eq!(
        changes(&report),
        [
            ch(
                "crypttab",
                "/etc/crypttab",
                Some("/etc/crypttab.imgconv-orig")
            ),
            ch(
                "resume",
                "/etc/initramfs-tools/conf.d/resume",
                Some("/etc/initramfs-tools/conf.d/resume.imgconv-orig")
            ),
        ]
    );
}
