//! Helpers shared by the fixups integration tests (tests/fixups_*.rs).
#![allow(dead_code)]

use imgconv_core::extread::NodeKind;
use imgconv_core::fixups::{self, DiskBus, FixupContext};
use imgconv_core::guestfs::{GuestFs, MemFs};
use imgconv_core::report::Report;

pub const ROOT_UUID: &str = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
pub const SWAP_UUID: &str = "0d9e8f7a-6b5c-4d3e-9f1a-2b3c4d5e6f70";

/// The context of a virtio conversion with a swap partition, at a fixed time.
pub fn ctx() -> FixupContext {
    FixupContext {
        root_uuid: ROOT_UUID.into(),
        root_fstype: "ext4".into(),
        swap_uuid: Some(SWAP_UUID.into()),
        disk_bus: DiskBus::Virtio,
        new_swap_partition_exists: true,
        serial_console: "ttyS0".into(),
        init_system: None,
        mtime: 1_700_000_000,
    }
}

/// One node of a snapshot: path, kind, and content (file) or target (link).
pub type Node = (String, NodeKind, String);

/// Every node of a guest filesystem with its content, walking from the root through any
/// `GuestFs` (read_dir/lstat/read_file/read_link only).
pub fn snapshot(fs: &mut dyn GuestFs) -> Vec<Node> {
    let mut out = Vec::new();
    walk(fs, "", &mut out);
    out
}

fn walk(fs: &mut dyn GuestFs, dir: &str, out: &mut Vec<Node>) {
    let path = if dir.is_empty() { "/" } else { dir };
    let mut items = fs.read_dir(path).unwrap().unwrap();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    for item in items {
        let p = format!("{dir}/{}", item.name);
        let meta = fs.lstat(&p).unwrap().unwrap();
        assert_eq!(meta.kind, item.kind, "{p}");
        match meta.kind {
            NodeKind::File => {
                let data = fs.read_file(&p, u64::MAX).unwrap().unwrap();
                out.push((p, NodeKind::File, String::from_utf8_lossy(&data).into_owned()));
            }
            NodeKind::Symlink => {
                let t = fs.read_link(&p).unwrap().unwrap();
                out.push((p, NodeKind::Symlink, t));
            }
            NodeKind::Dir => {
                out.push((p.clone(), NodeKind::Dir, String::new()));
                walk(fs, &p, out);
            }
            k => out.push((p, k, String::new())),
        }
    }
}

/// Paths added and removed between two snapshots.
pub fn diff(before: &[Node], after: &[Node]) -> (Vec<String>, Vec<String>) {
    let paths = |s: &[Node]| s.iter().map(|n| n.0.clone()).collect::<Vec<_>>();
    let (b, a) = (paths(before), paths(after));
    let added = a.iter().filter(|p| !b.contains(p)).cloned().collect();
    let removed = b.iter().filter(|p| !a.contains(p)).cloned().collect();
    (added, removed)
}

/// Apply the fixups, then apply them again and assert the second run is a no-op: no
/// change, no warning, and the filesystem identical node for node.
pub fn apply_twice(fs: &mut MemFs, ctx: &FixupContext) -> Report {
    let mut report = Report::default();
    fixups::apply(fs, ctx, &mut report).expect("first apply");
    let after_first = snapshot(fs);
    let mut again = Report::default();
    fixups::apply(fs, ctx, &mut again).expect("second apply");
    assert_eq!(again, Report::default(), "second apply must change and report nothing");
    assert_eq!(snapshot(fs), after_first, "second apply must leave the guest as it was");
    report
}

/// (step, path, backup) of each change, for compact assertions.
pub fn changes(report: &Report) -> Vec<(String, String, Option<String>)> {
    report
        .changes
        .iter()
        .map(|c| (c.step.clone(), c.path.clone(), c.backup.clone()))
        .collect()
}

pub fn ch(step: &str, path: &str, backup: Option<&str>) -> (String, String, Option<String>) {
    (step.into(), path.into(), backup.map(str::to_string))
}
