//! Guests on LVM2 inside their disk images: the volume group is flattened, each logical
//! volume the guest uses becoming a plain partition of the output, judged by sfdisk,
//! blkid, e2fsck and debugfs; volumes that cannot be read are refused by name when the
//! guest uses them (and nothing is written), left out with a warning when it does not.
//! The LVM images are made by lvm2's own tools (`scripts/fixtures lvm`, root).

use crate::lvm_fixtures::fixtures;
use crate::support::{self, qemu, tool_merged};
use imgconv_core::convert::{convert, plan, ConvertOptions, SourceDisk};
use imgconv_core::source::{self, VolumeAction};
use imgconv_core::{Error, ErrorKind, Hint, NoProgress};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT_UUID: &str = "1f0e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const BOOT_UUID: &str = "2a0b1c2d-3e4f-4051-8263-748596a7b8c9";
const SWAP_UUID: &str = "3b1c2d3e-4f50-4162-9374-8596a7b8c9da";

/// sfdisk's partitions: (number, type, start byte, size in bytes).
fn sfdisk(img: &Path) -> (String, Vec<(u32, String, u64, u64)>) {
    let (label, parts) = support::sfdisk_table(img);
    let bytes = parts
        .into_iter()
        .map(|(n, t, start, size)| (n, t, start * 512, size * 512))
        .collect();
    (label, bytes)
}

fn blkid(img: &Path, offset: u64, tag: &str) -> String {
    support::blkid_at(img, offset, tag)
}

fn spec(img: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", img.display())
}

/// The partition holding UUID `uuid`: (number, type, start byte).
fn part_with(img: &Path, parts: &[(u32, String, u64, u64)], uuid: &str) -> (u32, String, u64) {
    parts
        .iter()
        .find(|p| blkid(img, p.2, "UUID") == uuid)
        .map(|p| (p.0, p.1.clone(), p.2))
        .unwrap_or_else(|| panic!("no partition with UUID {uuid} in {parts:?}"))
}

/// Every regular file under `dir` of an ext filesystem, with its bytes (debugfs `rdump`).
fn files_of(spec: &str, scratch: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch).unwrap();
    support::debugfs(spec, &format!("rdump / {}", scratch.display()));
    let mut out = Vec::new();
    let mut stack = vec![scratch.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.push((
                    p.strip_prefix(scratch).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn donor() -> PathBuf {
    support::synthetic().join("donor.img")
}

#[test]
fn rhel_layout_is_flattened_into_plain_partitions() {
    let Some(lvm) = fixtures() else { return };
    let src = lvm.join("lvm-rhel.img");
    let i = source::inspect(&src).unwrap();
    let actions: Vec<(String, VolumeAction, Option<String>)> = i
        .volumes
        .iter()
        .map(|v| (v.name.clone(), v.action.clone(), v.mount.clone()))
        .collect();
    assert_eq!(actions[0].1, VolumeAction::Boot, "{actions:?}");
    assert!(
        matches!(&actions[1].1, VolumeAction::Skip { why } if why.contains("volume group VolGroup00")),
        "{actions:?}"
    );
    assert_eq!(
        actions[2..],
        [
            (
                "VolGroup00/LogVol00".into(),
                VolumeAction::Root,
                Some("/".into())
            ),
            (
                "VolGroup00/LogVol01".into(),
                VolumeAction::Swap,
                Some("swap".into())
            ),
        ]
    );
    assert_eq!(i.place(), "logical volume VolGroup00/LogVol00");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.img");
    let opts = ConvertOptions::new(&src, Some(donor()), &out);
    let dry = plan(&opts, &mut NoProgress).unwrap();
    let shown = dry.to_string();
    assert!(!out.exists());
    let done = convert(&opts, &mut NoProgress).unwrap();
    assert_eq!(done.root_uuid, ROOT_UUID);

    let (label, parts) = sfdisk(&out);
    assert_eq!(label, "dos");
    assert_eq!(parts.len(), 3, "root, /boot and swap, no LVM: {parts:?}");
    let root = part_with(&out, &parts, ROOT_UUID);
    let boot = part_with(&out, &parts, BOOT_UUID);
    let swap = part_with(&out, &parts, SWAP_UUID);
    assert_eq!(
        (root.1.as_str(), boot.1.as_str(), swap.1.as_str()),
        ("83", "83", "82")
    );
    assert!(parts.iter().all(|p| p.1 != "8e"), "{parts:?}");
    assert_eq!(blkid(&out, swap.2, "LABEL"), "swap0");
    assert_eq!(blkid(&out, root.2, "TYPE"), "ext4");
    for p in [root.2, boot.2] {
        support::assert_e2fsck_clean(&spec(&out, p));
    }

    // The plan and the report say the group is flattened, naming where each volume lands.
    let note = format!(
        "volume group VolGroup00 is flattened: LogVol00 \u{2192} p{} (root), LogVol01 \u{2192} p{} (swap); the guest will no longer see LVM",
        root.0, swap.0
    );
    assert!(shown.contains(&note), "{shown}");
    assert!(
        done.report.warnings.contains(&note),
        "{:?}",
        done.report.warnings
    );

    // Every file of LogVol00 is in the root partition with the same bytes (the 12 MiB one
    // crosses the break between the volume's two segments), except what the conversion
    // changes: the grafted kernel and boot files and the fixed configuration.
    let lv_files = files_of(
        &lvm.join("lvm-rhel-LogVol00.ext4").display().to_string(),
        &dir.path().join("lv"),
    );
    let out_files = files_of(&spec(&out, root.2), &dir.path().join("outroot"));
    let changed: Vec<String> = done.report.changes.iter().map(|c| c.path.clone()).collect();
    assert!(lv_files.len() > 5);
    for (path, bytes) in &lv_files {
        let guest_path = format!("/{}", path.display());
        if changed.contains(&guest_path) {
            continue;
        }
        let got = out_files.iter().find(|(p, _)| p == path);
        assert!(
            got.is_some_and(|(_, b)| b == bytes),
            "{guest_path} differs or is missing"
        );
    }
    assert!(lv_files
        .iter()
        .any(|(p, b)| p.ends_with("srv/big.bin") && b.len() == 12 << 20));

    // fstab names every volume by UUID; no LVM name is left.
    let fstab = support::debugfs(&spec(&out, root.2), "cat /etc/fstab");
    assert!(fstab.contains(&format!("UUID={ROOT_UUID} /")), "{fstab}");
    assert!(fstab.contains(&format!("UUID={SWAP_UUID} swap")), "{fstab}");
    assert!(
        !fstab
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("VolGroup00")),
        "{fstab}"
    );
}

/// The synthetic guest root, its fstab replaced by `fstab`.
fn root_with_fstab(dir: &Path, fstab: &str) -> PathBuf {
    let root = dir.join("root.img");
    fs::copy(support::synthetic().join("xen-ext4.img"), &root).unwrap();
    let host = dir.join("fstab");
    fs::write(&host, fstab).unwrap();
    for req in [
        "rm /etc/fstab".to_string(),
        format!("write {} /etc/fstab", host.display()),
    ] {
        let (rc, out) = tool_merged("debugfs", &["-w", "-R", &req, root.to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}");
    }
    root
}

/// Convert the synthetic root with `fstab` and the given LVM disks; `Err` must leave no
/// output behind.
fn convert_with(
    fstab: &str,
    disks: &[(&str, &str)],
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<imgconv_core::convert::Conversion, Error>,
) {
    let lvm = fixtures().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_fstab(dir.path(), fstab);
    let out = dir.path().join("out.img");
    let disks = disks
        .iter()
        .map(|(img, dev)| SourceDisk::new(lvm.join(img), *dev))
        .collect();
    let opts = ConvertOptions::new(&root, Some(donor()), &out).with_disks(disks);
    let r = convert(&opts, &mut NoProgress);
    (dir, out, r)
}

const BASE_FSTAB: &str = "/dev/xvda1 / ext4 errors=remount-ro 0 1\n";

#[test]
fn a_striped_volume_the_guest_mounts_is_refused_by_name() {
    if fixtures().is_none() {
        return;
    }
    let fstab = format!("{BASE_FSTAB}/dev/vgtwo/stripes /srv ext4 defaults 0 2\n");
    let (_dir, out, r) = convert_with(
        &fstab,
        &[("lvm-two-a.img", "xvdb"), ("lvm-two-b.img", "xvdc")],
    );
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "logical volume vgtwo/stripes is striped (2 stripes); only linear volumes can be converted"
    );
    assert_eq!(e.kind(), ErrorKind::Input);
    assert_eq!(e.hint(), Some(Hint::LinearVolume));
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn a_volume_on_a_missing_disk_the_guest_mounts_is_refused_by_name() {
    if fixtures().is_none() {
        return;
    }
    let fstab = format!("{BASE_FSTAB}/dev/mapper/vgtwo-span /srv ext4 defaults 0 2\n");
    let (_dir, out, r) = convert_with(&fstab, &[("lvm-two-a.img", "xvdb")]);
    let e = r.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("logical volume vgtwo/span lies partly on physical volume ")
            && msg.ends_with("which is not among the disks given"),
        "{msg}"
    );
    assert_eq!(e.kind(), ErrorKind::Input);
    assert_eq!(e.hint(), Some(Hint::GiveMissingDisk));
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn volumes_the_guest_does_not_use_are_left_out_with_a_warning() {
    if fixtures().is_none() {
        return;
    }
    // Both disks: span (on both) is carried; stripes is left out.
    let fstab = format!("{BASE_FSTAB}/dev/vgtwo/span /srv ext4 defaults 0 2\n");
    let (dir, out, r) = convert_with(
        &fstab,
        &[("lvm-two-a.img", "xvdb"), ("lvm-two-b.img", "xvdc")],
    );
    let done = r.unwrap();
    let w = &done.report.warnings;
    assert!(
        w.iter().any(|w| w == "logical volume vgtwo/stripes is striped (2 stripes); only linear volumes can be converted: the guest does not use it, so it is left out"),
        "{w:?}"
    );
    assert!(
        w.iter().any(
            |w| w.starts_with("volume group vgtwo is flattened: span \u{2192} p")
                && w.ends_with("(/srv); the guest will no longer see LVM")
        ),
        "{w:?}"
    );
    // span's bytes (6 MiB on each disk) are a partition of the output, verbatim.
    let want = fs::read(fixtures().unwrap().join("lvm-two-span.bin")).unwrap();
    let (_, parts) = sfdisk(&out);
    let img = fs::read(&out).unwrap();
    assert!(
        parts.iter().any(|p| p.3 >= want.len() as u64
            && img[p.2 as usize..p.2 as usize + want.len()] == want[..]),
        "no partition holds span's bytes: {parts:?}"
    );
    drop(dir);
}

/// The Debian guest with / and swap on LVM (`lvm-guest.img` of `scripts/fixtures real`),
/// converted with the real donor, boots to its marker with / from the former LogVol00, its
/// /boot mounted and the former LogVol01 as swap.
#[test]
#[ignore = "slow: QEMU boot of the real LVM guest (scripts/fixtures real)"]
fn real_lvm_guest_boots_flattened() {
    let Some(real) = support::real() else {
        support::skip(
            support::SkipKind::CiCanRun,
            "the real fixtures are not built (scripts/fixtures real)",
        );
        return;
    };
    let info = fs::read_to_string(real.join("INFO")).unwrap();
    let fact = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("INFO has no {k}"))
            .to_string()
    };
    let (root_uuid, swap_uuid) = (fact("lvm_guest_root_uuid"), fact("lvm_guest_swap_uuid"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lvm-kvm.img");
    let opts = ConvertOptions::new(
        real.join("lvm-guest.img"),
        Some(real.join("bookworm-donor.img")),
        &out,
    );
    let done = convert(&opts, &mut NoProgress).unwrap();
    assert_eq!(done.root_uuid, root_uuid);
    let (_, parts) = sfdisk(&out);
    let root = part_with(&out, &parts, &root_uuid);
    let swap = part_with(&out, &parts, &swap_uuid);
    support::assert_e2fsck_clean(&spec(&out, root.2));
    let grub = support::debugfs(&spec(&out, root.2), "cat /etc/default/grub");
    assert!(
        grub.contains(&format!("root=UUID={root_uuid}")) && !grub.contains("rd.lvm"),
        "{grub}"
    );
    let log = qemu::boot(
        &out,
        qemu::Firmware::SeaBios,
        &["IMGCONV-MARKER"],
        Duration::from_secs(300),
    );
    let line = log
        .line_with("IMGCONV-MARKER")
        .unwrap_or_else(|| panic!("no marker:\n{}", log.text));
    assert!(line.contains(&format!("rootuuid={root_uuid}")), "{line}");
    assert!(line.contains("home=home-lvm-guest"), "{line}");
    assert!(
        line.contains("missing=none"),
        "every fstab filesystem is mounted: {line}"
    );
    assert!(
        ["sda", "vda"]
            .iter()
            .any(|d| line.contains(&format!("swap=/dev/{d}{} ", swap.0))),
        "the former LogVol01 is the active swap: {line}"
    );
    // The guest keeps its separate /boot mounted, the kernel grafted into it.
    assert!(
        line.contains("mounted=/,/boot "),
        "/boot (p1 of the source) is mounted: {line}"
    );
}
