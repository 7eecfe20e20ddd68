//! Dry runs: `fixups::plan` over a read-only source reports exactly what `apply` would
//! do, and writes nothing.

use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::blockio::Region;
use imgconv_core::ext::read::ExtReader;
use imgconv_core::fixups::{self, dry_run::Overlay};
use imgconv_core::report::Report;

fn applied(entries: &[Entry]) -> (Report, Vec<Node>) {
    let mut fs = memfs(entries);
    let mut report = Report::default();
    fixups::apply(&mut fs, &ctx(), &mut report).unwrap();
    (report, snapshot(&mut fs))
}

fn without_lost_found(nodes: Vec<Node>) -> Vec<Node> {
    nodes
        .into_iter()
        .filter(|n| !n.0.starts_with("/lost+found"))
        .collect()
}

#[test]
fn plan_over_memfs_matches_apply_and_leaves_the_source_alone() {
    let (expected_report, expected_tree) = applied(SYSTEMD_GUEST);
    assert!(expected_report.changes.len() >= 8);

    let mut source = memfs(SYSTEMD_GUEST);
    let before = snapshot(&mut source);
    let report = fixups::plan_over(&mut source, &ctx()).unwrap();
    assert_eq!(report, expected_report);
    assert_eq!(snapshot(&mut source), before, "source unchanged");

    // The overlay's view after apply is the applied guest, node for node.
    let mut overlay = Overlay::new(&mut source);
    fixups::apply(&mut overlay, &ctx(), &mut Report::default()).unwrap();
    assert_eq!(snapshot(&mut overlay), expected_tree);
    // And a second apply through the same overlay is idempotent too.
    let mut again = Report::default();
    fixups::apply(&mut overlay, &ctx(), &mut again).unwrap();
    assert_eq!(again, Report::default());
}

fn image_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn plan_over_a_real_ext4_image_reads_through_ext_reader_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let image = dir.path().join("guest.img");
    host_tree(&tree, SYSTEMD_GUEST);
    mkfs_ext4(&tree, &image, 16);
    let before = image_bytes(&image);

    let region = Region::open(&image).unwrap();
    let reader = ExtReader::open(region, "guest.img").unwrap();
    let report = fixups::plan(&reader, &ctx()).unwrap();

    let (expected_report, expected_tree) = applied(SYSTEMD_GUEST);
    assert_eq!(report, expected_report);

    let mut overlay = Overlay::over_ext(&reader);
    fixups::apply(&mut overlay, &ctx(), &mut Report::default()).unwrap();
    assert_eq!(without_lost_found(snapshot(&mut overlay)), expected_tree);
    assert!(overlay.changed_paths().contains(&"/etc/fstab".to_string()));

    assert!(
        image_bytes(&image) == before,
        "a dry run must not write to the image"
    );
}
