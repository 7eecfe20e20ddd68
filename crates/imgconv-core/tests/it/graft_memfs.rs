//! Grafting into an in-memory guest: exact files, modes, owners, symlinks, backups of
//! different pre-existing files, and an idempotent second run.

use crate::support::donor as donor_fixtures;

use donor_fixtures::*;
use imgconv_core::donor::{Donor, DonorKernel};
use imgconv_core::graft::{graft, GraftError, GraftSummary};
use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{GuestFs, MemFs, NodeAttrs, TreeRead};
use imgconv_core::progress::{NoProgress, Progress, Stage};
use imgconv_core::report::Report;
use std::collections::BTreeMap;

const V: &str = "6.1.0-28-amd64";

fn dir_donor(layout: Layout) -> (tempfile::TempDir, Donor, DonorKernel) {
    let dir = tempfile::tempdir().unwrap();
    root_tree(
        dir.path(),
        &[kernel(V)],
        Layout {
            grub: true,
            ..layout
        },
    );
    let donor = Donor::open(dir.path()).unwrap();
    let k = donor.select_kernel(None).unwrap();
    (dir, donor, k)
}

fn run(donor: &Donor, k: &DonorKernel, guest: &mut MemFs, report: &mut Report) -> GraftSummary {
    let grub = donor.grub_files("i386-pc").unwrap().unwrap();
    graft(donor, k, guest, Some(&grub), report, &mut NoProgress).unwrap()
}

/// Every path the graft must create in an empty guest, with its kind.
fn expected_paths() -> BTreeMap<String, NodeKind> {
    use NodeKind::*;
    let m = format!("/lib/modules/{V}");
    let mut set: BTreeMap<String, NodeKind> = [
        ("/boot".to_string(), Dir),
        (format!("/boot/vmlinuz-{V}"), File),
        (format!("/boot/initrd.img-{V}"), File),
        (format!("/boot/config-{V}"), File),
        (format!("/boot/System.map-{V}"), File),
        ("/boot/grub".into(), Dir),
        ("/boot/grub/i386-pc".into(), Dir),
        ("/lib".into(), Dir),
        ("/lib/modules".into(), Dir),
        (m.clone(), Dir),
    ]
    .into_iter()
    .collect();
    for (rel, kind) in [
        ("modules.dep", File),
        ("modules.alias", File),
        ("modules.builtin.bin", File),
        ("build", Symlink),
        ("source", Symlink),
        ("extra", Dir),
        ("extra/owned.ko", File),
        ("kernel", Dir),
        ("kernel/slow-link", Symlink),
        ("kernel/fs", Dir),
        ("kernel/fs/ext4", Dir),
        ("kernel/fs/ext4/ext4.ko", File),
        ("kernel/lib", Dir),
        ("kernel/lib/crc16.ko", File),
        ("kernel/drivers", Dir),
        ("kernel/drivers/block", Dir),
        ("kernel/drivers/block/virtio_blk.ko", File),
        ("kernel/drivers/net", Dir),
        ("kernel/drivers/net/virtio_net.ko", File),
        ("kernel/drivers/net/ethernet", Dir),
    ] {
        set.insert(format!("{m}/{rel}"), kind);
    }
    for name in GRUB_RUNTIME_FILES {
        set.insert(format!("/boot/grub/i386-pc/{name}"), File);
    }
    set
}

fn file(guest: &mut MemFs, path: &str) -> Vec<u8> {
    guest
        .read_file(path, u64::MAX)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} missing"))
}

#[test]
fn graft_into_an_empty_guest_writes_exactly_the_donor_files() {
    let (dir, donor, k) = dir_donor(Layout::default());
    let mut guest = MemFs::new();
    let mut report = Report::default();
    let sum = run(&donor, &k, &mut guest, &mut report);

    let listed: BTreeMap<String, NodeKind> = guest.list().into_iter().collect();
    assert_eq!(listed, expected_paths());
    assert_eq!(sum.kernel_version, V);
    assert_eq!(sum.vmlinuz, format!("/boot/vmlinuz-{V}"));
    assert_eq!(sum.initrd, format!("/boot/initrd.img-{V}"));
    assert_eq!(sum.files, 4 + 8 + GRUB_RUNTIME_FILES.len() as u64);
    assert_eq!(sum.symlinks, 3);
    assert_eq!(
        sum.dirs,
        6 + 9,
        "/boot, /lib, /lib/modules, /boot/grub, i386-pc, the tree root, 9 below"
    );
    assert_eq!(sum.unchanged, 0);
    assert!(sum.backups.is_empty());

    // Content byte-identical to the donor's files.
    let m = format!("/lib/modules/{V}");
    assert_eq!(
        file(&mut guest, &format!("/boot/vmlinuz-{V}")),
        vmlinuz_bytes(V, true)
    );
    assert_eq!(
        file(&mut guest, &format!("/boot/initrd.img-{V}")),
        bytes(&format!("initrd-{V}"), 150_000)
    );
    for rel in [
        "kernel/fs/ext4/ext4.ko",
        "kernel/lib/crc16.ko",
        "modules.dep",
        "modules.builtin.bin",
    ] {
        let donor_bytes = std::fs::read(dir.path().join("lib/modules").join(V).join(rel)).unwrap();
        assert_eq!(
            file(&mut guest, &format!("{m}/{rel}")),
            donor_bytes,
            "{rel}"
        );
    }
    let grub_src = dir.path().join("usr/lib/grub/i386-pc");
    for name in GRUB_RUNTIME_FILES {
        assert_eq!(
            file(&mut guest, &format!("/boot/grub/i386-pc/{name}")),
            std::fs::read(grub_src.join(name)).unwrap(),
            "{name}"
        );
    }
    // Modes, owners (root for a directory donor), mtimes, symlink targets.
    let meta = |g: &mut MemFs, p: &str| g.lstat(p).unwrap().unwrap_or_else(|| panic!("{p}"));
    assert_eq!(
        meta(&mut guest, &format!("/boot/System.map-{V}")).mode,
        0o600
    );
    assert_eq!(meta(&mut guest, &format!("/boot/vmlinuz-{V}")).mode, 0o644);
    assert_eq!(
        meta(&mut guest, &format!("{m}/kernel/drivers/net/virtio_net.ko")).mode,
        0o600
    );
    assert_eq!(
        meta(&mut guest, &format!("{m}/kernel/drivers/net/ethernet")).mode,
        0o700
    );
    let owned = meta(&mut guest, &format!("{m}/extra/owned.ko"));
    assert_eq!((owned.mode, owned.uid, owned.gid), (0o640, 0, 0));
    assert_eq!(
        meta(&mut guest, &format!("{m}/kernel/lib/crc16.ko")).mtime,
        OLD_MTIME as i64
    );
    assert_eq!(
        meta(&mut guest, &format!("{m}/modules.dep")).mtime,
        MTIME as i64
    );
    assert_eq!(
        guest.read_link(&format!("{m}/build")).unwrap().unwrap(),
        format!("/usr/src/linux-headers-{V}")
    );
    assert_eq!(
        guest.read_link(&format!("{m}/source")).unwrap().unwrap(),
        "build"
    );
    assert_eq!(
        guest
            .read_link(&format!("{m}/kernel/slow-link"))
            .unwrap()
            .unwrap(),
        slow_target()
    );

    // The report names every piece once, without backups: each directory the graft had
    // to create, then what it put there.
    let paths: Vec<&str> = report.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/boot",
            format!("/boot/vmlinuz-{V}").as_str(),
            &format!("/boot/initrd.img-{V}"),
            &format!("/boot/config-{V}"),
            &format!("/boot/System.map-{V}"),
            "/lib",
            "/lib/modules",
            &m,
            "/boot/grub",
            "/boot/grub/i386-pc",
            "/boot/grub/i386-pc"
        ]
    );
    let created: Vec<usize> = (0..paths.len())
        .filter(|&i| report.changes[i].what == "created the directory")
        .collect();
    assert_eq!(created, [0, 5, 6, 8, 9]);
    assert!(report
        .changes
        .iter()
        .all(|c| c.step == "graft" && c.backup.is_none()));
    assert!(
        report.changes[7]
            .what
            .contains("8 files, 10 directories, 3 symlinks"),
        "{}",
        report.changes[7].what
    );
    assert!(report.warnings.is_empty());
}

#[test]
fn image_donor_owners_survive_the_graft() {
    let b = ext4_donor(
        &[kernel(V)],
        Layout {
            grub: true,
            ..Layout::default()
        },
    );
    let donor = Donor::open(&b.image).unwrap();
    let k = donor.select_kernel(None).unwrap();
    let mut guest = MemFs::new();
    run(&donor, &k, &mut guest, &mut Report::default());
    let owned = guest
        .lstat(&format!("/lib/modules/{V}/extra/owned.ko"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (owned.mode, owned.uid, owned.gid),
        (0o640, OWNED_UID, OWNED_GID)
    );
    assert_eq!(
        file(&mut guest, &format!("/lib/modules/{V}/extra/owned.ko")),
        bytes(&format!("owned-{V}"), 5_000)
    );
}

#[test]
fn merged_usr_guest_gets_the_tree_under_usr() {
    let (_dir, donor, k) = dir_donor(Layout::default());
    let mut guest = MemFs::new()
        .with_symlink("/lib", "usr/lib")
        .with_file("/usr/lib/os-release", "ID=debian\n");
    let mut report = Report::default();
    run(&donor, &k, &mut guest, &mut report);
    // The guest had no /usr/lib/modules: the report names the directory the graft made.
    let created: Vec<&str> = report
        .changes
        .iter()
        .filter(|c| c.what == "created the directory")
        .map(|c| c.path.as_str())
        .collect();
    assert!(created.contains(&"/lib/modules"), "{created:?}");
    assert!(
        !created.contains(&"/lib"),
        "the guest's /lib link existed: {created:?}"
    );
    assert_eq!(
        guest.lstat("/lib").unwrap().unwrap().kind,
        NodeKind::Symlink,
        "the guest's /lib link is kept"
    );
    assert_eq!(guest.read_link("/lib").unwrap().as_deref(), Some("usr/lib"));
    assert_eq!(
        guest
            .lstat(&format!("/usr/lib/modules/{V}/modules.dep"))
            .unwrap()
            .unwrap()
            .kind,
        NodeKind::File
    );
    assert_eq!(
        guest
            .read_link(&format!("/usr/lib/modules/{V}/build"))
            .unwrap()
            .unwrap(),
        format!("/usr/src/linux-headers-{V}")
    );
}

#[test]
fn different_existing_files_are_kept_identical_ones_left_alone() {
    let (dir, donor, k) = dir_donor(Layout::default());
    let config = std::fs::read_to_string(dir.path().join(format!("boot/config-{V}"))).unwrap();
    let m = format!("/lib/modules/{V}");
    let mut guest = MemFs::new()
        .with_file(&format!("/boot/vmlinuz-{V}"), "the guest's own kernel")
        .with_file(
            &format!("/boot/vmlinuz-{V}.imgconv-orig"),
            "an older backup",
        )
        .with_file(&format!("/boot/config-{V}"), &config)
        .with_file(&format!("{m}/modules.dep"), "stale\n")
        .with_file(&format!("{m}/build/Makefile"), "headers")
        .with_file("/boot/grub/i386-pc/normal.mod", "old grub");
    let mut report = Report::default();
    let sum = run(&donor, &k, &mut guest, &mut report);

    // Different: renamed aside, the donor's file written.
    assert_eq!(
        file(&mut guest, &format!("/boot/vmlinuz-{V}")),
        vmlinuz_bytes(V, true)
    );
    assert_eq!(
        guest
            .text(&format!("/boot/vmlinuz-{V}.imgconv-orig.1"))
            .as_deref(),
        Some("the guest's own kernel")
    );
    assert_eq!(
        guest
            .text(&format!("/boot/vmlinuz-{V}.imgconv-orig"))
            .as_deref(),
        Some("an older backup")
    );
    assert_eq!(
        guest
            .text(&format!("{m}/modules.dep.imgconv-orig"))
            .as_deref(),
        Some("stale\n")
    );
    assert_eq!(
        guest
            .text(&format!("{m}/build.imgconv-orig/Makefile"))
            .as_deref(),
        Some("headers")
    );
    assert_eq!(
        guest.lstat(&format!("{m}/build")).unwrap().unwrap().kind,
        NodeKind::Symlink
    );
    assert_eq!(
        guest
            .text("/boot/grub/i386-pc/normal.mod.imgconv-orig")
            .as_deref(),
        Some("old grub")
    );
    // Identical (content, mode, owner): untouched, no backup.
    assert!(guest
        .lstat(&format!("/boot/config-{V}.imgconv-orig"))
        .unwrap()
        .is_none());
    assert!(!sum.written.contains(&format!("/boot/config-{V}")));
    assert_eq!(
        sum.unchanged, 2,
        "the config and the existing /lib/modules/VER directory"
    );

    let mut backups: Vec<(String, String)> = sum
        .backups
        .iter()
        .map(|b| (b.path.clone(), b.backup.clone()))
        .collect();
    backups.sort();
    let mut expect = vec![
        (
            format!("/boot/vmlinuz-{V}"),
            format!("/boot/vmlinuz-{V}.imgconv-orig.1"),
        ),
        (
            format!("{m}/modules.dep"),
            format!("{m}/modules.dep.imgconv-orig"),
        ),
        (format!("{m}/build"), format!("{m}/build.imgconv-orig")),
        (
            "/boot/grub/i386-pc/normal.mod".into(),
            "/boot/grub/i386-pc/normal.mod.imgconv-orig".into(),
        ),
    ];
    expect.sort();
    assert_eq!(backups, expect);
    // Each backup is in the report with its place.
    for (path, backup) in &expect {
        let c = report
            .changes
            .iter()
            .find(|c| &c.path == path && c.backup.as_ref() == Some(backup))
            .unwrap_or_else(|| panic!("no report entry for {path}: {:#?}", report.changes));
        assert_eq!(c.step, "graft");
    }
    assert!(!report
        .changes
        .iter()
        .any(|c| c.path == format!("/boot/config-{V}")));
}

#[test]
fn a_second_graft_changes_nothing() {
    let (_dir, donor, k) = dir_donor(Layout::default());
    let mut guest = MemFs::new().with_file(&format!("/boot/vmlinuz-{V}"), "guest kernel");
    let mut report = Report::default();
    let first = run(&donor, &k, &mut guest, &mut report);
    assert_eq!(first.backups.len(), 1);
    let after_first = guest.list();
    let changes_first = report.changes.len();

    let second = run(&donor, &k, &mut guest, &mut report);
    assert_eq!(
        guest.list(),
        after_first,
        "no node added, removed or renamed"
    );
    assert_eq!(
        (second.files, second.dirs, second.symlinks, second.bytes),
        (0, 0, 0, 0)
    );
    assert!(second.backups.is_empty() && second.written.is_empty());
    assert_eq!(
        second.unchanged,
        first.files + first.symlinks + 10, // the tree root and its 9 directories
        "every grafted node is found identical"
    );
    assert_eq!(
        report.changes.len(),
        changes_first,
        "the second run reports no change"
    );
    assert_eq!(
        guest
            .text(&format!("/boot/vmlinuz-{V}.imgconv-orig"))
            .as_deref(),
        Some("guest kernel")
    );
}

#[test]
fn mode_difference_alone_counts_as_different() {
    let (dir, donor, k) = dir_donor(Layout::default());
    let data = std::fs::read(dir.path().join(format!("boot/System.map-{V}"))).unwrap();
    let mut guest = MemFs::new();
    guest.mkdir_p("/boot", NodeAttrs::root(0o755, 0)).unwrap();
    let mut r: &[u8] = &data;
    guest
        .create_file(
            &format!("/boot/System.map-{V}"),
            &mut r,
            data.len() as u64,
            NodeAttrs::root(0o644, 0),
        )
        .unwrap();
    let sum = run(&donor, &k, &mut guest, &mut Report::default());
    assert_eq!(sum.backups.len(), 1);
    assert_eq!(
        guest
            .lstat(&format!("/boot/System.map-{V}"))
            .unwrap()
            .unwrap()
            .mode,
        0o600
    );
}

#[test]
fn a_file_in_the_way_of_boot_is_kept() {
    let (_dir, donor, k) = dir_donor(Layout::default());
    let mut guest = MemFs::new().with_file("/boot", "not a directory");
    let mut report = Report::default();
    run(&donor, &k, &mut guest, &mut report);
    assert_eq!(
        guest.text("/boot.imgconv-orig").as_deref(),
        Some("not a directory")
    );
    assert_eq!(guest.lstat("/boot").unwrap().unwrap().kind, NodeKind::Dir);
    assert!(report
        .changes
        .iter()
        .any(|c| c.path == "/boot" && c.backup.as_deref() == Some("/boot.imgconv-orig")));
}

#[derive(Default)]
struct Recorder {
    stages: Vec<(Stage, Option<u64>)>,
    advances: Vec<u64>,
    cancel_after: Option<u64>,
}

impl Progress for Recorder {
    fn stage(&mut self, stage: Stage, total: Option<u64>) {
        self.stages.push((stage, total));
    }
    fn advance(&mut self, done: u64) {
        self.advances.push(done);
    }
    fn is_cancelled(&self) -> bool {
        self.cancel_after
            .is_some_and(|n| self.advances.len() as u64 >= n)
    }
}

#[test]
fn progress_counts_every_node_and_cancellation_stops_between_files() {
    let (_dir, donor, k) = dir_donor(Layout::default());
    let grub = donor.grub_files("i386-pc").unwrap().unwrap();
    let mut rec = Recorder::default();
    let mut guest = MemFs::new();
    graft(
        &donor,
        &k,
        &mut guest,
        Some(&grub),
        &mut Report::default(),
        &mut rec,
    )
    .unwrap();
    let total = 4 + 1 + 20 + GRUB_RUNTIME_FILES.len() as u64;
    assert_eq!(rec.stages, [(Stage::Graft, Some(total))]);
    assert_eq!(rec.advances, (1..=total).collect::<Vec<_>>());

    let mut rec = Recorder {
        cancel_after: Some(6),
        ..Recorder::default()
    };
    let mut guest = MemFs::new();
    let err = graft(
        &donor,
        &k,
        &mut guest,
        Some(&grub),
        &mut Report::default(),
        &mut rec,
    )
    .unwrap_err();
    assert!(matches!(err, GraftError::Cancelled), "{err}");
    assert_eq!(
        rec.advances.len(),
        6,
        "stopped at the first check after the 6th node"
    );
    assert!(
        guest.lstat("/boot/grub").unwrap().is_none(),
        "nothing after the cancel point"
    );
}

#[test]
fn without_grub_files_and_optional_boot_files() {
    let dir = tempfile::tempdir().unwrap();
    root_tree(
        dir.path(),
        &[KernelSpec {
            config: false,
            system_map: false,
            ..kernel(V)
        }],
        Layout::default(),
    );
    let donor = Donor::open(dir.path()).unwrap();
    assert!(donor.grub_files("i386-pc").unwrap().is_none());
    let k = donor.select_kernel(None).unwrap();
    let mut guest = MemFs::new();
    let sum = graft(
        &donor,
        &k,
        &mut guest,
        None,
        &mut Report::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(sum.files, 2 + 8);
    assert!(guest.lstat(&format!("/boot/config-{V}")).unwrap().is_none());
    assert!(guest.lstat("/boot/grub").unwrap().is_none());
}
