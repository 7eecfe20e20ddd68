//! The overlapped conversion (graft, fixups and boot files beside the stream, through the
//! copy-on-write device) gives the same guest as the sequential one (`Overlap::Sequential`):
//! for bios, uefi and hybrid on the synthetic bare ext4 guest and bios on the
//! MBR-partitioned one, both outputs' root filesystems are `e2fsck -fn` clean and
//! `debugfs rdump` extracts the same tree from both (type, permission bits, owner, content, symlink targets; in fstab the
//! fresh swap UUID and ESP serial are left out). The same holds between a raw and a qcow2
//! output (written directly, or rewritten from raw after a sequential conversion): the
//! qcow2 is `qemu-img check` clean, has the same partition table and takes no more space
//! than the raw disk.

use crate::support;

use imgconv_core::convert::{convert, ConvertOptions, DiskFormat, Firmware, Overlap};
use imgconv_core::NoProgress;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use support::tool_merged;

/// Byte offset of partition 1, read by sfdisk.
pub(crate) fn root_offset(img: &Path) -> u64 {
    let (rc, json) = tool_merged("sfdisk", &["-J", img.to_str().unwrap()]);
    assert_eq!(rc, 0, "{json}");
    let t: serde_json::Value = serde_json::from_str(&json).unwrap();
    t["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512
}

/// fstab with the swap and ESP lines' first field dropped: each conversion makes a new
/// swap UUID and ESP serial (the root keeps the guest's UUID and is compared as is).
fn without_fresh_uuids(fstab: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(fstab);
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            if fields.len() > 2 && (fields[2] == "swap" || fields[2] == "vfat") {
                fields[1..].join(" ")
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.join("\n").into_bytes()
}

/// Every path under `root` with what must agree between the two outputs.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let mut data = fs::read(&p).unwrap();
                if p.ends_with("etc/fstab") {
                    data = without_fresh_uuids(&data);
                }
                // A cheap, order-sensitive digest (FNV-1a 64) of the content.
                let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                format!("file {} {h:016x}", data.len())
            } else if ft.is_block_device() || ft.is_char_device() {
                format!("dev {}", m.rdev())
            } else {
                "other".to_string()
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} {}:{}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
        }
    }
    out
}

fn convert_one(
    src: &Path,
    donor: &Path,
    out: &Path,
    fw: Firmware,
    overlap: Overlap,
) -> BTreeMap<String, String> {
    let opts = ConvertOptions::new(src, Some(donor.to_path_buf()), out)
        .with_firmware(fw)
        .with_overlap(overlap);
    convert(&opts, &mut NoProgress).unwrap_or_else(|e| panic!("convert {}: {e}", src.display()));
    tree_of(out)
}

/// The root filesystem's tree of the raw disk `out` (checked with `e2fsck -fn` first);
/// `out` is removed.
fn tree_of(out: &Path) -> BTreeMap<String, String> {
    let spec = format!("{}?offset={}", out.display(), root_offset(out));
    let (rc, fsck) = tool_merged("e2fsck", &["-fn", &spec]);
    assert_eq!(rc, 0, "e2fsck -fn {spec}:\n{fsck}");
    let dump = out.with_extension("tree");
    fs::create_dir(&dump).unwrap();
    let (rc, log) = tool_merged(
        "debugfs",
        &["-R", &format!("rdump / {}", dump.display()), &spec],
    );
    assert_eq!(rc, 0, "debugfs rdump:\n{log}");
    let t = tree(&dump);
    fs::remove_dir_all(&dump).unwrap();
    fs::remove_file(out).unwrap();
    t
}

#[test]
fn overlapped_and_sequential_conversions_give_the_same_guest() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("xen-ext4.img", Firmware::Bios),
        ("xen-ext4.img", Firmware::Uefi),
        ("xen-ext4.img", Firmware::Hybrid),
        ("xen-ext4-mbr.img", Firmware::Bios),
    ];
    for (src, fw) in cases {
        {
            let src_p = fx.join(src);
            let donor = fx.join("donor.img");
            let a = convert_one(&src_p, &donor, &dir.path().join("a.raw"), fw, Overlap::Auto);
            let b = convert_one(
                &src_p,
                &donor,
                &dir.path().join("b.raw"),
                fw,
                Overlap::Sequential,
            );
            assert!(a.len() > 20, "{src} {fw:?}: too few paths extracted: {a:?}");
            assert!(
                a.contains_key("boot/grub/grub.cfg"),
                "{src} {fw:?}: no grub.cfg"
            );
            assert_same_tree(&a, &b, &format!("{src} {fw:?}: overlapped vs sequential"));
        }
    }
}

fn assert_same_tree(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let diff: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} vs {:?}", b.get(k)))
        .chain(
            b.keys()
                .filter(|k| !a.contains_key(*k))
                .map(|k| format!("{k}: only in the second")),
        )
        .collect();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// `sfdisk -J`'s partitions: (start, size, type) each.
fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    support::sfdisk_table(img)
        .1
        .into_iter()
        .map(|(_, kind, start, size)| (start, size, kind))
        .collect()
}

/// A qcow2 output holds the disk the raw one does: for bios, uefi and hybrid (written
/// directly, the ESP and boot code through the qcow2 sink) and for a sequential
/// conversion (rewritten from raw), `qemu-img check` finds it clean, its disk exported by
/// qemu-img has the raw disk's partition table and root tree, and the qcow2 file takes at
/// most the raw disk's allocated space (+10 %, + 1 MiB of tables).
#[test]
fn qcow2_and_raw_conversions_give_the_same_disk() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let src = fx.join("xen-ext4.img");
    let donor = fx.join("donor.img");
    let cases = [
        (Firmware::Bios, Overlap::Auto),
        (Firmware::Uefi, Overlap::Auto),
        (Firmware::Hybrid, Overlap::Auto),
        (Firmware::Bios, Overlap::Sequential),
    ];
    for (fw, overlap) in cases {
        let what = format!("{fw:?} {overlap:?}");
        let raw = dir.path().join("a.raw");
        let q = dir.path().join("b.qcow2");
        for (out, format) in [(&raw, DiskFormat::Raw), (&q, DiskFormat::Qcow2)] {
            let opts = ConvertOptions::new(&src, Some(donor.clone()), out)
                .with_firmware(fw)
                .with_overlap(overlap)
                .with_disk_format(format);
            convert(&opts, &mut NoProgress).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let (rc, check) = tool_merged("qemu-img", &["check", "-f", "qcow2", q.to_str().unwrap()]);
        assert_eq!(rc, 0, "{what}: qemu-img check: {check}");
        let used = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
        let (raw_used, q_used) = (used(&raw), used(&q));
        assert!(
            q_used <= raw_used + raw_used / 10 + (1 << 20),
            "{what}: the qcow2 takes {q_used} bytes, the raw disk {raw_used}"
        );
        let back = dir.path().join("b.raw");
        support::qcow2_to_raw(&q, &back);
        fs::remove_file(&q).unwrap();
        assert_eq!(partitions(&raw), partitions(&back), "{what}");
        if fw == Firmware::Bios {
            // GRUB's boot code and core.img, before the first partition, are the same
            // bytes (the disk signature at 440 is fresh each time).
            let gap = |p: &Path| {
                use std::os::unix::fs::FileExt;
                let mut b = vec![0u8; 1 << 20];
                fs::File::open(p).unwrap().read_exact_at(&mut b, 0).unwrap();
                b[440..446].fill(0);
                b
            };
            assert!(gap(&raw) == gap(&back), "{what}: boot code differs");
        }
        assert_eq!(
            fs::metadata(&raw).unwrap().len(),
            fs::metadata(&back).unwrap().len(),
            "{what}"
        );
        let a = tree_of(&raw);
        let b = tree_of(&back);
        assert!(a.contains_key("boot/grub/grub.cfg"), "{what}: no grub.cfg");
        assert_same_tree(&a, &b, &format!("{what}: raw vs qcow2"));
    }
}
