//! Helpers shared by the fixups integration tests (tests/fixups_*.rs).

use imgconv_core::fixups::{self, DiskBus, FixupContext};
use imgconv_core::guestfs::NodeKind;
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
        esp_uuid: None,
        extra_kernel_args: Vec::new(),
        keep_cloud_init: false,
        volumes: None,
        root_aliases: Vec::new(),
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
    let mut items = fs.read_dir(path, 100_000).unwrap().unwrap();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    for item in items {
        let p = format!("{dir}/{}", item.name);
        let meta = fs.lstat(&p).unwrap().unwrap();
        assert_eq!(meta.kind, item.kind, "{p}");
        match meta.kind {
            NodeKind::File => {
                let data = fs.read_file(&p, u64::MAX).unwrap().unwrap();
                out.push((
                    p,
                    NodeKind::File,
                    String::from_utf8_lossy(&data).into_owned(),
                ));
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
/// change, no new warning, and the filesystem identical node for node.
pub fn apply_twice(fs: &mut MemFs, ctx: &FixupContext) -> Report {
    let mut report = Report::default();
    fixups::apply(fs, ctx, &mut report).expect("first apply");
    let after_first = snapshot(fs);
    let mut again = Report::default();
    fixups::apply(fs, ctx, &mut again).expect("second apply");
    assert_nothing_new(&report, &again);
    assert_eq!(
        snapshot(fs),
        after_first,
        "second apply must leave the guest as it was"
    );
    report
}

/// A second run reports no change, and no warning the first run did not give (a
/// condition the fixups cannot repair, e.g. a missing unit file, is reported again).
pub fn assert_nothing_new(first: &Report, second: &Report) {
    assert!(
        second.changes.is_empty(),
        "second apply must change nothing: {:#?}",
        second.changes
    );
    for w in &second.warnings {
        assert!(
            first.warnings.contains(w),
            "new warning on the second run: {w}"
        );
    }
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

/// One node of a fixture tree, usable both for a `MemFs` and for a host directory that
/// `mkfs.ext4 -d` turns into a real image.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    File(&'static str, &'static str),
    Link(&'static str, &'static str),
}

/// A `MemFs` holding `entries`.
pub fn memfs(entries: &[Entry]) -> MemFs {
    let mut fs = MemFs::new();
    for e in entries {
        fs = match *e {
            Entry::File(p, c) => fs.with_file(p, c),
            Entry::Link(p, t) => fs.with_symlink(p, t),
        };
    }
    fs
}

/// Write `entries` under `root` on the host (files 0644, directories 0755).
pub fn host_tree(root: &std::path::Path, entries: &[Entry]) {
    use std::os::unix::fs::PermissionsExt;
    for e in entries {
        let (p, _) = match *e {
            Entry::File(p, c) => (p, c),
            Entry::Link(p, t) => (p, t),
        };
        let host = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        match *e {
            Entry::File(_, c) => {
                std::fs::write(&host, c).unwrap();
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            Entry::Link(_, t) => std::os::unix::fs::symlink(t, &host).unwrap(),
        }
    }
}

/// `mkfs.ext4 -d tree` (root-owned, with [`ROOT_UUID`]) into a new image of `size_mib` MiB.
pub fn mkfs_ext4(tree: &std::path::Path, image: &std::path::Path, size_mib: u64) {
    super::mkfs(
        "ext4",
        Some(tree),
        image,
        size_mib,
        &["-E", "root_owner=0:0", "-U", ROOT_UUID],
    );
}

/// A Debian-like systemd Xen guest touching every fixup.
pub const SYSTEMD_GUEST: &[Entry] = &[
    Entry::File("/usr/lib/systemd/systemd", "ELF"),
    Entry::File("/usr/lib/systemd/system/serial-getty@.service", "[Unit]\n"),
    Entry::File("/usr/lib/systemd/system/getty@.service", "[Unit]\n"),
    Entry::File("/usr/lib/systemd/system/xe-linux-distribution.service", "[Unit]\n"),
    Entry::Link("/lib", "usr/lib"),
    Entry::Link("/sbin", "usr/sbin"),
    Entry::Link("/usr/sbin/init", "../lib/systemd/systemd"),
    Entry::Link(
        "/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
        "/lib/systemd/system/serial-getty@.service",
    ),
    Entry::Link(
        "/etc/systemd/system/multi-user.target.wants/xe-linux-distribution.service",
        "/lib/systemd/system/xe-linux-distribution.service",
    ),
    Entry::File(
        "/etc/fstab",
        "# xen-tools\n/dev/xvda2\t/\text4\terrors=remount-ro\t0\t1\n/dev/xvda1\tnone\tswap\tsw\t0\t0\nproc /proc proc defaults 0 0\n",
    ),
    Entry::File("/etc/udev/rules.d/70-persistent-net.rules", "NAME=\"eth0\"\n"),
    Entry::File("/etc/modules", "loop\nxen-netfront\n"),
    Entry::File("/etc/modprobe.d/xen.conf", "alias eth0 xennet\n"),
    Entry::File("/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/xvda1\n"),
    Entry::File("/etc/hostname", "xen-guest\n"),
];
