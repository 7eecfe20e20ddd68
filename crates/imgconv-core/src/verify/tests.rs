//! The checks on small disks made here: an MBR written byte by byte, an ext4 root made by
//! `mke2fs -d` from a tree (judged by `e2fsck -fn` inside the check), a swap header from
//! [`crate::swap`], GRUB-shaped boot code. Each broken variant fails its own check, and
//! only it, with the detail saying what is wrong.

use super::*;
use crate::boot::grub_bios::core_image::{FIRST_BLOCKLIST, FIRST_SEGMENT};
use crate::boot::grub_bios::mbr::{KERNEL_SECTOR, PART_START, SIGNATURE};
use crate::NoProgress;
use std::os::unix::fs::FileExt;
use std::process::Command;

const KERNEL: &str = "6.1.0-verify";
const ROOT_UUID: &str = "5e1f0c2a-7a43-4c1b-9d7e-0b5c3a2f1e00";
const SWAP_UUID: uuid::Uuid = uuid::Uuid::from_bytes([0x5a; 16]);
const P1_SECTOR: u64 = 2048;
const P1_SECTORS: u64 = 16 * 2048;
const P2_SECTOR: u64 = P1_SECTOR + P1_SECTORS;
const P2_SECTORS: u64 = 4 * 2048;
const DISK_SECTORS: u64 = P2_SECTOR + P2_SECTORS + 2048;

/// What to leave out or break.
#[derive(Default)]
struct Spec {
    no_grub_cfg: bool,
    core_lba: Option<u64>,
    blocklist_start: Option<u64>,
    no_swap_signature: bool,
}

fn mbr_entry(sector0: &mut [u8], i: usize, active: bool, kind: u8, start: u64, len: u64) {
    let e = &mut sector0[PART_START + 16 * i..PART_START + 16 * (i + 1)];
    e[0] = if active { 0x80 } else { 0 };
    e[4] = kind;
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(len as u32).to_le_bytes());
}

/// A converted-looking disk in `dir`: p1 ext4 root (active, 0x83) with grub.cfg, the
/// i386-pc modules, a kernel and its initrd; p2 swap (0x82); boot code in LBA 0 pointing
/// at a core image in sector 1 whose blocklist continues in sector 2.
fn disk(dir: &Path, spec: &Spec) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("boot/grub/i386-pc")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("etc/fstab"),
        format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n"),
    )
    .unwrap();
    if !spec.no_grub_cfg {
        std::fs::write(
            tree.join("boot/grub/grub.cfg"),
            format!(
                "menuentry 'Debian' {{\n  linux /boot/vmlinuz-{KERNEL} root=UUID={ROOT_UUID} ro\n  initrd /boot/initrd.img-{KERNEL}\n}}\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(tree.join("boot/grub/i386-pc/normal.mod"), b"mod").unwrap();
    std::fs::write(tree.join(format!("boot/vmlinuz-{KERNEL}")), b"kernel").unwrap();
    std::fs::write(tree.join(format!("boot/initrd.img-{KERNEL}")), b"initrd").unwrap();
    let fs = dir.join("root.ext4");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-U", ROOT_UUID, "-d"])
        .arg(&tree)
        .arg(&fs)
        .arg(format!("{}k", P1_SECTORS / 2))
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .output()
        .expect("mke2fs (e2fsprogs) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let img = dir.join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(DISK_SECTORS * 512).unwrap();
    let mut sector0 = [0u8; 512];
    // GRUB's boot.img is known by its error message in the code area.
    sector0[0x180..0x185].copy_from_slice(b"GRUB ");
    sector0[KERNEL_SECTOR..KERNEL_SECTOR + 8]
        .copy_from_slice(&spec.core_lba.unwrap_or(1).to_le_bytes());
    mbr_entry(&mut sector0, 0, true, 0x83, P1_SECTOR, P1_SECTORS);
    mbr_entry(&mut sector0, 1, false, 0x82, P2_SECTOR, P2_SECTORS);
    sector0[SIGNATURE..].copy_from_slice(&[0x55, 0xaa]);
    f.write_all_at(&sector0, 0).unwrap();
    let mut diskboot = [0x90u8; 512];
    diskboot[FIRST_BLOCKLIST..FIRST_BLOCKLIST + 8]
        .copy_from_slice(&spec.blocklist_start.unwrap_or(2).to_le_bytes());
    diskboot[FIRST_BLOCKLIST + 8..FIRST_BLOCKLIST + 10].copy_from_slice(&60u16.to_le_bytes());
    diskboot[FIRST_BLOCKLIST + 10..].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
    f.write_all_at(&diskboot, 512).unwrap();
    f.write_all_at(&std::fs::read(&fs).unwrap(), P1_SECTOR * 512)
        .unwrap();
    if !spec.no_swap_signature {
        let page = crate::swap::swap_header(P2_SECTORS * 512, SWAP_UUID, "swap").unwrap();
        f.write_all_at(&page, P2_SECTOR * 512).unwrap();
    }
    img
}

fn check(r: &VerifyReport, name: CheckName) -> &Check {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {r:#?}"))
}

fn verify_disk(spec: &Spec) -> VerifyReport {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), spec);
    verify(&img, &VerifyOptions::new(), &mut NoProgress).unwrap()
}

/// The one check that failed, with its detail.
fn only_failure(r: &VerifyReport) -> &Check {
    let failed: Vec<&Check> = r.failed().collect();
    assert_eq!(failed.len(), 1, "exactly one failed check: {r:#?}");
    assert!(!r.ok());
    failed[0]
}

#[test]
fn a_good_disk_passes_and_what_does_not_apply_is_skipped() {
    let r = verify_disk(&Spec::default());
    assert!(r.ok(), "{r:#?}");
    for name in [
        CheckName::PartitionTable,
        CheckName::Fsck,
        CheckName::GrubFiles,
        CheckName::Swap,
        CheckName::BootCode,
    ] {
        assert_eq!(
            check(&r, name).status,
            CheckStatus::Passed,
            "{name}: {r:#?}"
        );
    }
    for name in [CheckName::Esp, CheckName::Boot] {
        assert_eq!(check(&r, name).status, CheckStatus::Skipped, "{name}");
    }
    assert_eq!(r.run_checks().count(), 5);
    assert!(check(&r, CheckName::GrubFiles).detail.contains(ROOT_UUID));
    assert_eq!(check(&r, CheckName::Fsck).partition, Some(1));
    let (n, swap) = r.swap.as_ref().expect("the swap header");
    assert_eq!((*n, swap.uuid, swap.label.as_str()), (2, SWAP_UUID, "swap"));
    assert_eq!(r.core_lba, Some(1));
    assert_eq!(r.fsck.len(), 1);
    assert!(r.fsck[0].1.clean, "{:?}", r.fsck[0].1);
}

#[test]
fn a_boot_sector_pointing_past_the_gap_fails_boot_code() {
    let r = verify_disk(&Spec {
        core_lba: Some(P1_SECTOR + 8),
        ..Spec::default()
    });
    let c = only_failure(&r);
    assert_eq!(c.name, CheckName::BootCode);
    assert!(
        c.detail.contains("points at sector 2056") && c.detail.contains("outside sectors 1..2048"),
        "{}",
        c.detail
    );
}

#[test]
fn a_core_image_that_loads_from_elsewhere_fails_boot_code() {
    let r = verify_disk(&Spec {
        blocklist_start: Some(700),
        ..Spec::default()
    });
    let c = only_failure(&r);
    assert_eq!(c.name, CheckName::BootCode);
    assert!(
        c.detail.contains("loads its rest from sector 700")
            && c.detail.contains("not from sector 2"),
        "{}",
        c.detail
    );
}

#[test]
fn a_swap_without_signature_fails_swap() {
    let r = verify_disk(&Spec {
        no_swap_signature: true,
        ..Spec::default()
    });
    let c = only_failure(&r);
    assert_eq!((c.name, c.partition), (CheckName::Swap, Some(2)));
    assert!(
        c.detail.contains("no Linux swap signature (SWAPSPACE2)"),
        "{}",
        c.detail
    );
    assert!(r.swap.is_none());
}

#[test]
fn a_missing_grub_cfg_fails_grub_files() {
    let r = verify_disk(&Spec {
        no_grub_cfg: true,
        ..Spec::default()
    });
    let c = only_failure(&r);
    assert_eq!(c.name, CheckName::GrubFiles);
    assert_eq!(
        c.detail, "missing on partition 1: /boot/grub/grub.cfg",
        "{}",
        c.detail
    );
}

#[test]
fn a_bare_filesystem_has_no_table_and_nothing_else_to_check() {
    let dir = tempfile::tempdir().unwrap();
    disk(dir.path(), &Spec::default());
    let r = verify(
        &dir.path().join("root.ext4"),
        &VerifyOptions::new(),
        &mut NoProgress,
    )
    .unwrap();
    let failed: Vec<CheckName> = r.failed().map(|c| c.name).collect();
    assert_eq!(
        failed,
        [
            CheckName::PartitionTable,
            CheckName::Fsck,
            CheckName::GrubFiles,
            CheckName::BootCode
        ]
    );
    assert!(r.partitions.is_none());
}

#[test]
fn an_image_that_cannot_be_opened_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = verify(
        &dir.path().join("nope.img"),
        &VerifyOptions::new(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Input, "{e}");
    assert!(e.to_string().contains("nope.img"), "{e}");
}

#[test]
fn a_missing_qemu_is_reported_before_any_check() {
    let dir = tempfile::tempdir().unwrap();
    let opts = VerifyOptions::new()
        .with_boot(BootCheck::new().with_qemu("/nonexistent/qemu-system-x86_64"));
    // The image does not exist either: QEMU is looked for first.
    let e = verify(&dir.path().join("nope.img"), &opts, &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Tool, "{e}");
    assert_eq!(
        e.to_string(),
        "/nonexistent/qemu-system-x86_64 is not installed: apt-get install qemu-system-x86"
    );
}
