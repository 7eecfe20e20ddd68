//! End-to-end conversions of the synthetic Xen guests with the synthetic donor, judged by
//! outside tools: sfdisk, blkid, e2fsck, debugfs and grub-fstest (GRUB's own fs code).

use crate::support;

use imgconv_core::convert::{convert, plan, Conversion, ConvertOptions};
use imgconv_core::{Error, NoProgress, Stage};
use std::path::{Path, PathBuf};
use support::{blkid_at, tool_merged, CancelAt};

const KERNEL: &str = "6.1.0-99-amd64";

fn sha256(path: &Path) -> String {
    tool_merged("sha256sum", &[path.to_str().unwrap()])
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn convert_fixture(name: &str, donor: &str, dir: &Path) -> (Conversion, PathBuf) {
    let fx = support::synthetic();
    let src = fx.join(name);
    let before = sha256(&src);
    let out = dir.join(format!("{name}.raw"));
    let opts = ConvertOptions::new(&src, Some(fx.join(donor)), &out);
    let done = convert(&opts, &mut NoProgress).unwrap_or_else(|e| panic!("convert {name}: {e}"));
    assert_eq!(sha256(&src), before, "the input must not change");
    (done, out)
}

/// Check a converted image with outside tools; return the root partition offset.
fn check_output(done: &Conversion, out: &Path) -> u64 {
    let img = out.to_str().unwrap();
    // The partition table, as sfdisk reads it.
    let (rc, json) = tool_merged("sfdisk", &["-J", img]);
    assert_eq!(rc, 0, "{json}");
    let table: serde_json::Value = serde_json::from_str(&json).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "dos");
    assert_eq!(parts.len(), 2, "{json}");
    assert_eq!(parts[0]["type"], "83");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[1]["type"], "82");
    let root_offset = parts[0]["start"].as_u64().unwrap() * 512;
    let swap_offset = parts[1]["start"].as_u64().unwrap() * 512;

    // The filesystem oracle.
    let (rc, fsck) = tool_merged("e2fsck", &["-fn", &format!("{img}?offset={root_offset}")]);
    assert_eq!(rc, 0, "e2fsck on the converted root:\n{fsck}");

    // Root keeps the source's UUID; swap carries the planned one.
    assert_eq!(blkid_at(out, root_offset, "UUID"), done.root_uuid);
    assert_eq!(blkid_at(out, swap_offset, "TYPE"), "swap");
    assert_eq!(
        Some(blkid_at(out, swap_offset, "UUID")),
        done.swap_uuid.map(|u| u.to_string())
    );

    // Boot code in LBA 0 and the core image after it.
    let mbr = std::fs::read(out).unwrap();
    assert_eq!(&mbr[510..512], &[0x55, 0xaa]);
    assert!(
        mbr[..440].windows(5).any(|w| w == b"GRUB "),
        "boot.img in the MBR"
    );

    // GRUB's own filesystem code reads the grafted kernel and our grub.cfg.
    let (rc, ls) = tool_merged("grub-fstest", &[img, "ls", "(loop0,msdos1)/boot"]);
    assert_eq!(rc, 0, "{ls}");
    assert!(
        ls.contains(&format!("vmlinuz-{KERNEL}")),
        "grub-fstest ls /boot: {ls}"
    );
    let (rc, cfg) = tool_merged(
        "grub-fstest",
        &[img, "cat", "(loop0,msdos1)/boot/grub/grub.cfg"],
    );
    assert_eq!(rc, 0, "{cfg}");
    assert!(
        cfg.contains(&format!("root=UUID={}", done.root_uuid)),
        "{cfg}"
    );
    assert!(cfg.contains(&format!("/boot/vmlinuz-{KERNEL}")), "{cfg}");

    // fstab now mounts root and swap by UUID, with the original kept.
    let fs = format!("{img}?offset={root_offset}");
    let (_, fstab) = tool_merged("debugfs", &["-R", "cat /etc/fstab", &fs]);
    assert!(
        fstab.contains(&format!("UUID={}", done.root_uuid)),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("UUID={}", done.swap_uuid.as_ref().unwrap())),
        "{fstab}"
    );
    let (_, orig) = tool_merged("debugfs", &["-R", "cat /etc/fstab.imgconv-orig", &fs]);
    assert!(
        orig.contains("/dev/xvda"),
        "backup keeps the Xen fstab: {orig}"
    );
    assert!(
        done.report.changes.iter().any(|c| c.step == "fstab"),
        "{:?}",
        done.report.changes
    );
    root_offset
}

#[test]
fn converts_bare_ext2_ext3_ext4_and_partitioned_guests() {
    let dir = tempfile::tempdir().unwrap();
    for (name, donor) in [
        ("xen-ext4.img", "donor-dir"),
        ("xen-ext3.img", "donor.img"),
        ("xen-ext2.img", "donor-sepboot.img"),
        ("xen-ext4-mbr.img", "donor-dir"),
        ("xen-ext4-gpt.img", "donor.img"),
    ] {
        let (done, out) = convert_fixture(name, donor, dir.path());
        let root_offset = check_output(&done, &out);
        // The grafted kernel is byte-identical to the donor's.
        let dumped = dir.path().join("vmlinuz");
        let _ = std::fs::remove_file(&dumped);
        let fs = format!("{}?offset={root_offset}", out.display());
        let (rc, msg) = tool_merged(
            "debugfs",
            &[
                "-R",
                &format!("dump /boot/vmlinuz-{KERNEL} {}", dumped.display()),
                &fs,
            ],
        );
        assert_eq!(rc, 0, "{msg}");
        let donor_kernel = support::synthetic().join(format!("donor-dir/boot/vmlinuz-{KERNEL}"));
        assert_eq!(
            std::fs::read(&dumped).unwrap(),
            std::fs::read(donor_kernel).unwrap(),
            "{name}"
        );
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn dirty_journal_is_refused_unless_replay_is_asked_for() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dirty.raw");
    let mut opts = ConvertOptions::new(fx.join("dirty-ext4.img"), Some(fx.join("donor-dir")), &out);
    let err = convert(&opts, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );

    let before = sha256(&fx.join("dirty-ext4.img"));
    opts.replay_journal = true;
    let done = convert(&opts, &mut NoProgress).expect("replayed conversion");
    assert!(done.report.changes.iter().any(|c| c.step == "journal"));
    check_output(&done, &out);
    assert_eq!(
        sha256(&fx.join("dirty-ext4.img")),
        before,
        "the input's journal is not replayed"
    );
}

#[test]
fn cancellation_at_any_write_stage_leaves_nothing() {
    let fx = support::synthetic();
    for stage in [Stage::Stream, Stage::Graft, Stage::Fixups, Stage::Boot] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let opts = ConvertOptions::new(fx.join("xen-ext4.img"), Some(fx.join("donor-dir")), &out);
        let err = convert(&opts, &mut CancelAt(stage, false)).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{stage}: {err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{stage}: left behind {left:?}");
    }
}

#[test]
fn existing_output_is_refused_without_force() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    std::fs::write(&out, b"keep me").unwrap();
    let mut opts = ConvertOptions::new(fx.join("xen-ext4.img"), Some(fx.join("donor-dir")), &out);
    assert!(convert(&opts, &mut NoProgress).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    opts.force = true;
    let done = convert(&opts, &mut NoProgress).unwrap();
    check_output(&done, &out);
}

#[test]
fn dry_run_plans_everything_and_writes_nothing() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    let opts = ConvertOptions::new(
        fx.join("xen-ext4-mbr.img"),
        Some(fx.join("donor.img")),
        &out,
    );
    let p = plan(&opts, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(p.kernel.version, KERNEL);
    assert!(
        p.fixups.changes.iter().any(|c| c.path == "/etc/fstab"),
        "{:?}",
        p.fixups.changes
    );
    let text = p.to_string();
    assert!(
        text.contains(KERNEL) && text.contains("/etc/fstab"),
        "{text}"
    );
    // The planned swap UUID is the one the conversion writes.
    let done = convert(&opts, &mut NoProgress).unwrap();
    assert_eq!(done.plan.disk.root().start_lba, p.disk.root().start_lba);
}

#[test]
fn missing_donor_is_a_clear_error() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let opts = ConvertOptions::new(fx.join("xen-ext4.img"), None, dir.path().join("o.raw"));
    assert!(matches!(
        convert(&opts, &mut NoProgress),
        Err(Error::NoDonor)
    ));
}
