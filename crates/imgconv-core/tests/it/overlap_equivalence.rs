//! The overlapped conversion (graft, fixups and boot files beside the stream, through the
//! copy-on-write device) gives the same guest as the sequential one (`Overlap::Sequential`):
//! for bios, uefi and hybrid on the synthetic bare ext4 guest and bios on the
//! MBR-partitioned one, both outputs' root filesystems are `e2fsck -fn` clean and
//! `debugfs rdump` extracts the same tree from both (type, permission bits, owner, content, symlink targets; in fstab the
//! fresh swap UUID and ESP serial are left out).

use crate::support;

use imgconv_core::convert::{convert, ConvertOptions, Firmware, Overlap};
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
            let diff: Vec<_> = a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: {v} vs {:?}", b.get(k)))
                .chain(
                    b.keys()
                        .filter(|k| !a.contains_key(*k))
                        .map(|k| format!("{k}: only sequential")),
                )
                .collect();
            assert!(
                diff.is_empty(),
                "{src} {fw:?}: overlapped vs sequential:\n{}",
                diff.join("\n")
            );
        }
    }
}
