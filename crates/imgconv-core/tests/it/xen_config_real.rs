//! The Debian-built whole-guest fixtures (`scripts/fixtures real`): the xen-tools guest's
//! domU config is read and its disks found beside it, and the split, logical and xen-tools
//! layouts are what they claim to be, judged by sfdisk, blkid, e2fsck and debugfs.

use crate::support;

use imgconv_core::xen_config::{Found, XenConfig};
use std::path::{Path, PathBuf};
use support::{debugfs, e2fs_spec, manifest_row, tool};

fn real_or_skip() -> Option<PathBuf> {
    let dir = support::real();
    if dir.is_none() {
        support::skip(
            support::SkipKind::CiCanRun,
            "the real fixtures are not built (scripts/fixtures real)",
        );
    }
    dir
}

fn info(dir: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join("INFO")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("INFO has no {key}"))
        .to_string()
}

fn blkid(path: &Path, offset: u64, tag: &str) -> String {
    let off = offset.to_string();
    let (code, out, err) = tool(
        "blkid",
        &[
            "-p",
            "-O",
            &off,
            "-o",
            "value",
            "-s",
            tag,
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "blkid {path:?}@{offset}: {err}");
    out.trim().to_string()
}

#[test]
fn xen_tools_config_is_read_and_its_disks_found_beside_it() {
    let Some(dir) = real_or_skip() else { return };
    let cfg_path = dir.join(info(&dir, "xentools_cfg"));
    let cfg = XenConfig::from_file(&cfg_path).unwrap();
    assert_eq!(cfg.name.as_deref(), Some("web1"));
    assert_eq!((cfg.memory_mib, cfg.vcpus), (Some(512), Some(2)));
    let facts = cfg.vm_facts();
    assert_eq!(facts.nics.len(), 1);
    assert_eq!(facts.nics[0].mac, info(&dir, "xentools_mac"));
    assert_eq!(facts.memory_bytes, Some(512 << 20));

    let disks = cfg.resolve_disks().unwrap();
    let got: Vec<(String, PathBuf)> = disks
        .iter()
        .map(|d| (d.disk.vdev.to_string(), d.path.clone()))
        .collect();
    let beside = cfg_path.parent().unwrap();
    assert_eq!(
        got,
        [
            ("xvda2".to_string(), beside.join("disk.img")),
            ("xvda1".to_string(), beside.join("swap.img")),
            ("xvdb1".to_string(), beside.join("home.img")),
        ]
    );
    for d in &disks {
        // The config names /srv/xen/domains/web1/..., which this machine does not have.
        assert!(d.disk.target.starts_with("/srv/xen/domains/web1/"));
        assert!(!Path::new(&d.disk.target).exists());
        assert_eq!(d.found, Found::BesideConfig, "{}", d.note());
        let note = d.note();
        assert!(
            note.contains("does not exist here") && note.contains("beside the config"),
            "{note}"
        );
        assert!(note.ends_with(&d.path.display().to_string()), "{note}");
    }
    // Each image is the filesystem the guest's fstab expects at that device (blkid).
    let uuids: Vec<String> = disks.iter().map(|d| blkid(&d.path, 0, "UUID")).collect();
    assert_eq!(
        uuids,
        [
            info(&dir, "xentools_root_uuid"),
            info(&dir, "xentools_swap_uuid"),
            info(&dir, "xentools_home_uuid"),
        ]
    );
    let fstab = debugfs(&disks[0].path.display().to_string(), "cat /etc/fstab");
    assert!(fstab.contains("/dev/xvdb1      /home"), "{fstab}");
}

/// sfdisk -J's partitions as (number, start sector, size in sectors, type).
fn partitions(image: &Path) -> Vec<(u32, u64, u64, String)> {
    let (code, out, err) = tool("sfdisk", &["-J", image.to_str().unwrap()]);
    assert_eq!(code, 0, "sfdisk -J {image:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let n = node
                .trim_start_matches(image.to_str().unwrap())
                .parse()
                .unwrap();
            (
                n,
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn whole_guest_layout_fixtures_are_what_they_claim() {
    let Some(dir) = real_or_skip() else { return };
    // (image, [(partition, MBR type, filesystem, the INFO key of its UUID)], home partition,
    // the home marker's INFO key)
    type Part = (u32, &'static str, &'static str, &'static str);
    let layouts: [(&str, Vec<Part>, u32, &str); 2] = [
        (
            "split-layout.img",
            vec![
                (1, "83", "ext3", "split_boot_uuid"),
                (2, "83", "ext4", "split_root_uuid"),
                (3, "83", "ext4", "split_home_uuid"),
                (4, "82", "swap", "split_swap_uuid"),
            ],
            3,
            "split_home_marker",
        ),
        (
            "logical-root.img",
            vec![
                (1, "82", "swap", "logical_swap_uuid"),
                (2, "5", "", ""),
                (5, "83", "ext4", "logical_root_uuid"),
                (6, "83", "ext4", "logical_home_uuid"),
            ],
            6,
            "logical_home_marker",
        ),
    ];
    for (image, parts, home, marker) in layouts {
        let path = dir.join(image);
        let got = partitions(&path);
        assert_eq!(got.len(), parts.len(), "{image}: {got:?}");
        for ((n, ty, fs, uuid_key), (gn, start, size, gty)) in parts.iter().zip(&got) {
            assert_eq!((n, *ty), (gn, gty.as_str()), "{image}");
            if fs.is_empty() {
                continue;
            }
            let row = manifest_row(&dir, image, Some(*n));
            assert_eq!(
                (row.start, row.size),
                (start * 512, size * 512),
                "{image} p{n}"
            );
            assert_eq!(blkid(&path, row.start, "TYPE"), *fs, "{image} p{n}");
            assert_eq!(blkid(&path, row.start, "UUID"), info(&dir, uuid_key));
            if *fs != "swap" {
                support::assert_e2fsck_clean(&e2fs_spec(&path, row.start));
            }
        }
        let row = manifest_row(&dir, image, Some(home));
        let text = debugfs(&e2fs_spec(&path, row.start), "cat /imgconv-home-marker");
        assert_eq!(text.trim(), info(&dir, marker), "{image}");
    }
    // The old layout: swap at sector 63, the root after an EBR in the extended partition.
    assert_eq!(info(&dir, "logical_p1_offset"), "32256");
    // A 1 KiB-block ext3 /boot holding the pygrub menu.
    let boot = e2fs_spec(&dir.join("split-layout.img"), 1 << 20);
    let stats = debugfs(&boot, "stats");
    assert!(stats.contains("Block size:               1024"), "{stats}");
    assert!(debugfs(&boot, "cat /grub/grub.conf").contains("root=/dev/xvda2"));
    for f in ["disk.img", "home.img"] {
        support::assert_e2fsck_clean(&dir.join("xen-tools").join(f).display().to_string());
    }
    let home = dir.join("xen-tools/home.img").display().to_string();
    assert_eq!(
        debugfs(&home, "cat /imgconv-home-marker").trim(),
        info(&dir, "xentools_home_marker")
    );
}
