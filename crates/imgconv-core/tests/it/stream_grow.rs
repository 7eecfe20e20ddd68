//! Growing the copied filesystem: automatically when the graft would not fit, or to an
//! explicit larger target; refused before anything is written when the target is too
//! small. resize2fs runs on the output through `?offset=N`; e2fsck -fn, dumpe2fs, blkid
//! and debugfs judge the result.

use crate::support::stream as stream_util;

use imgconv_core::e2fs_tools::{self, ToolError};
use imgconv_core::layout::{self, GrowReason, PlanError, PlanOptions, SourceSpace};
use imgconv_core::output::TempOutput;
use imgconv_core::source;
use imgconv_core::stream;
use std::path::{Path, PathBuf};
use std::process::Command;
use stream_util::*;

const MIB: u64 = 1 << 20;

fn dumpe2fs_field(device: &str, name: &str) -> u64 {
    let h = run(Command::new("dumpe2fs").arg("-h").arg(device));
    h.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .parse()
        .unwrap()
}

fn guest_image(work: &Path, kind: &str, size_mib: u64) -> PathBuf {
    let tree = work.join("tree");
    guest_tree(&tree, Init::Systemd);
    let img = work.join("xen.img");
    mkfs(kind, &tree, &img, size_mib, &[]);
    img
}

#[test]
fn graft_that_does_not_fit_grows_partition_and_filesystem() {
    let work = tempfile::tempdir().unwrap();
    let img = guest_image(work.path(), "ext4", 80);
    let source_manifest = manifest(&img, 0);
    let dest = work.path().join("kvm.img");
    let graft = 150 * MIB;
    let c = convert(
        &img,
        &dest,
        PlanOptions {
            graft_bytes: graft,
            ..Default::default()
        },
        false,
    )
    .unwrap();
    let g = c.plan.grow.expect("the plan must grow");
    assert!(matches!(g.reason, GrowReason::GraftRoom { .. }));
    assert!(c.plan.to_string().contains("grown"), "{}", c.plan);
    assert!(c.grow.is_some());

    let off = c.plan.root().start_bytes();
    assert_fsck_clean(&dest, off);
    let d = dev(&dest, off);
    let bs = dumpe2fs_field(&d, "Block size:");
    assert_eq!(dumpe2fs_field(&d, "Block count:") * bs, g.to_bytes);
    assert!(g.to_bytes <= c.plan.root().len_bytes());
    let free =
        (dumpe2fs_field(&d, "Free blocks:") - dumpe2fs_field(&d, "Reserved block count:")) * bs;
    assert!(
        free >= graft,
        "only {free} bytes free for a {graft}-byte graft"
    );
    // Every file still there, same metadata and content (block maps may differ).
    manifest(&dest, off).assert_same(&source_manifest, false);
    // The swap partition after it is intact.
    let swap = c.plan.swap().unwrap();
    let blk = run(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", "-O"])
        .arg(swap.start_bytes().to_string())
        .arg(&dest));
    assert_eq!(blk.trim(), "swap");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), c.plan.disk_bytes);
}

#[test]
fn explicit_larger_root_grows_ext3_and_keeps_a_swap_header_written_before() {
    let work = tempfile::tempdir().unwrap();
    let img = guest_image(work.path(), "ext3", 96);
    let source_manifest = manifest(&img, 0);
    let insp = source::inspect(&img).unwrap();
    let plan = layout::plan(
        &SourceSpace::from(&insp.fs),
        &PlanOptions {
            root_bytes: Some(300 * MIB),
            ..Default::default()
        },
    )
    .unwrap();
    let g = plan.grow.unwrap();
    assert_eq!(g.reason, GrowReason::Requested);
    let dest = work.path().join("kvm.img");
    let out = TempOutput::create(&dest, plan.disk_bytes, false).unwrap();
    layout::write_mbr(out.file(), &plan).unwrap();
    let off = plan.root().start_bytes();
    stream::copy_used_blocks(
        &insp.open_fs().unwrap(),
        out.file(),
        off,
        &mut Recorder::default(),
    )
    .unwrap();
    // Swap first, grow second: resize2fs must not cut the file or lose the header.
    let swap = plan.swap().unwrap();
    let uuid =
        imgconv_core::swap::write_swap(out.file(), swap.start_bytes(), swap.len_bytes(), "sw")
            .unwrap();
    e2fs_tools::grow(out.path(), off, g.to_bytes).unwrap();
    assert_eq!(
        out.file().metadata().unwrap().len(),
        plan.disk_bytes,
        "file length restored"
    );
    let dest = out.commit().unwrap();

    assert_fsck_clean(&dest, off);
    let d = dev(&dest, off);
    assert_eq!(
        dumpe2fs_field(&d, "Block count:") * dumpe2fs_field(&d, "Block size:"),
        300 * MIB
    );
    manifest(&dest, off).assert_same(&source_manifest, false);
    let blk = run(Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(swap.start_bytes().to_string())
        .arg(&dest));
    assert!(
        blk.contains("TYPE=swap") && blk.contains(&uuid.to_string()),
        "{blk}"
    );
    let (rc, verify) = run_status(Command::new("sfdisk").arg("--verify").arg(&dest));
    assert_eq!(rc, 0, "{verify}");
}

#[test]
fn too_small_target_fails_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let img = guest_image(work.path(), "ext4", 80);
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("kvm.img");
    let opts = PlanOptions {
        graft_bytes: 200 * MIB,
        root_bytes: Some(100 * MIB),
        ..Default::default()
    };
    let e = convert(&img, &dest, opts, false).err().expect("too small");
    match &e {
        imgconv_core::Error::Plan(PlanError::TargetTooSmall {
            needed, requested, ..
        }) => {
            assert_eq!(*requested, 100 * MIB);
            assert!(*needed > 200 * MIB);
            assert!(e.to_string().contains(&layout::human(*needed)), "{e}");
        }
        other => panic!("expected TargetTooSmall, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}

#[test]
fn growth_smaller_than_the_offset_is_refused_untouched() {
    let work = tempfile::tempdir().unwrap();
    let img = guest_image(work.path(), "ext4", 64);
    let disk = work.path().join("disk.img");
    run(Command::new("truncate")
        .arg("-s")
        .arg((200 * MIB).to_string())
        .arg(&disk));
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));
    let before = sha256(&disk);
    let e = e2fs_tools::grow(&disk, MIB, 64 * MIB + 512 * 1024).unwrap_err();
    assert!(matches!(e, ToolError::GrowthBelowOffset { .. }), "{e}");
    let e = e2fs_tools::grow(&disk, MIB, 32 * MIB).unwrap_err();
    assert!(matches!(e, ToolError::BadSize { .. }), "{e}");
    assert_eq!(sha256(&disk), before);
}
