//! The first half of a conversion on the shared synthetic Xen fixtures
//! (`support::synthetic()`, built by scripts/fixtures): bare ext2/ext3/ext4, ext4 as
//! partition 2 of an MBR disk after a swap partition, ext4 in a GPT disk, and the
//! dirty-journal guest. Outside judges: MANIFEST UUIDs via blkid, sfdisk -J, e2fsck -fn,
//! debugfs walks.

use crate::support;
use crate::support::stream as stream_util;

use imgconv_core::layout::PlanOptions;
use imgconv_core::source::{Container, InspectError};
use imgconv_core::stream::StreamMethod;
use std::process::Command;
use stream_util::*;

fn convert_fixture(image: &str, part: Option<u32>) {
    let dir = support::synthetic();
    let row = support::manifest_row(&dir, image, part);
    let input = dir.join(image);
    let sha = sha256(&input);
    let source = manifest(&input, row.start);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("kvm.img");
    let c = convert(&input, &dest, PlanOptions::default(), false).unwrap();

    assert_eq!(
        c.inspection.fs_offset, row.start,
        "{image}: wrong root chosen"
    );
    assert_eq!(c.inspection.fs.uuid, row.uuid);
    assert_eq!(c.inspection.fs.kind.to_string(), row.fs_type);
    match (&c.inspection.container, part) {
        (Container::Bare, None) => {}
        (Container::Partitioned { root_partition, .. }, Some(p)) => {
            assert_eq!(*root_partition as u32, p)
        }
        (other, _) => panic!("{image}: container {other:?}"),
    }
    assert!(
        !c.inspection.guest.xenisms.is_empty(),
        "{image}: no Xen-isms found"
    );
    assert_eq!(c.stats.method, StreamMethod::Bitmaps);

    let root = c.plan.root();
    let json: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&dest))).unwrap();
    let p = &json["partitiontable"]["partitions"];
    assert_eq!(p[0]["start"].as_u64(), Some(root.start_lba));
    assert_eq!(p[0]["size"].as_u64(), Some(root.sectors));
    assert_eq!(p[1]["type"], "82");
    let uuid = run(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "UUID", "-O"])
        .arg(root.start_bytes().to_string())
        .arg(&dest));
    assert_eq!(uuid.trim(), row.uuid);
    assert_fsck_clean(&dest, root.start_bytes());
    let blocks_unchanged = c.plan.grow.is_none();
    manifest(&dest, root.start_bytes()).assert_same(&source, blocks_unchanged);
    if blocks_unchanged {
        assert!(allocated(&dest) <= c.stats.bytes_written + (1 << 20));
    }
    assert_eq!(sha256(&input), sha, "{image} was modified");
}

#[test]
fn synthetic_ext2_bare() {
    convert_fixture("xen-ext2.img", None);
}

#[test]
fn synthetic_ext3_bare() {
    convert_fixture("xen-ext3.img", None);
}

#[test]
fn synthetic_ext4_bare() {
    convert_fixture("xen-ext4.img", None);
}

#[test]
fn synthetic_ext4_mbr_root_after_swap() {
    convert_fixture("xen-ext4-mbr.img", Some(2));
}

#[test]
fn synthetic_ext4_gpt() {
    convert_fixture("xen-ext4-gpt.img", Some(1));
}

#[test]
fn synthetic_dirty_journal() {
    let dir = support::synthetic();
    let input = dir.join("dirty-ext4.img");
    let sha = sha256(&input);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("kvm.img");
    let e = convert(&input, &dest, PlanOptions::default(), false)
        .err()
        .unwrap();
    assert!(
        matches!(&e, imgconv_core::Error::Inspect(i) if matches!(**i, InspectError::DirtyJournal { .. })),
        "{e:?}"
    );
    assert!(!dest.exists());
    let c = convert(&input, &dest, PlanOptions::default(), true).unwrap();
    let off = c.plan.root().start_bytes();
    assert_fsck_clean(&dest, off);
    let text = run(Command::new("debugfs")
        .args(["-R", "cat /etc/imgconv-journal-test"])
        .arg(dev(&dest, off)));
    assert!(text.starts_with("after journal replay"), "{text:?}");
    assert_eq!(sha256(&input), sha);
}
