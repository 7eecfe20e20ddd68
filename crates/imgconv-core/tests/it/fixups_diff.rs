//! The fixups' unified diffs: the dry run's (`convert::plan`) equal the real run's
//! (`convert`), and the real run's describe the output image exactly, as outside tools
//! see it — each edited file's diff, applied by `patch` to the original read from the
//! source with `debugfs cat`, gives the file `debugfs cat` reads from the output; a backup
//! copy holds the original; a created file or link is what the diff adds to nothing; a file
//! moved aside is gone from its old name and whole under its new one.

use crate::support;

use imgconv_core::convert::{convert, plan, ConvertOptions};
use imgconv_core::report::{FileDiff, FileDiffKind};
use imgconv_core::NoProgress;
use std::path::Path;
use support::{debugfs, e2fs_spec, tool_merged};

/// Byte offset of partition 1 of a converted disk, read by sfdisk.
fn root_offset(img: &Path) -> u64 {
    let (rc, json) = tool_merged("sfdisk", &["-J", img.to_str().unwrap()]);
    assert_eq!(rc, 0, "{json}");
    let t: serde_json::Value = serde_json::from_str(&json).unwrap();
    t["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512
}

/// What debugfs shows at `path`: `Some(content)` of a file or the target of a link,
/// `None` when there is nothing.
fn node(spec: &str, path: &str) -> Option<Vec<u8>> {
    let stat = debugfs(spec, &format!("stat \"{path}\""));
    if stat.is_empty() {
        return None;
    }
    if stat.contains("Type: symlink") {
        let dest = stat
            .split("Fast link dest: \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("{path}: a slow symlink? {stat}"));
        return Some(dest.as_bytes().to_vec());
    }
    let out = std::process::Command::new("debugfs")
        .env("DEBUGFS_PAGER", "__none__")
        .args(["-R", &format!("cat \"{path}\""), spec])
        .output()
        .unwrap();
    assert!(out.status.success());
    Some(out.stdout)
}

/// `patch` applies the hunks of `diff` to `old` (a regular file: a link's target is its
/// content); the patched content.
fn patched(dir: &Path, old: &[u8], diff: &str) -> Vec<u8> {
    let (o, d, n) = (dir.join("old"), dir.join("diff"), dir.join("new"));
    std::fs::write(&o, old).unwrap();
    let hunks = diff.find("\n--- ").map_or("", |i| &diff[i + 1..]);
    std::fs::write(&d, hunks).unwrap();
    let _ = std::fs::remove_file(&n);
    let (rc, log) = tool_merged(
        "patch",
        &[
            "-s",
            "-p1",
            "-o",
            n.to_str().unwrap(),
            o.to_str().unwrap(),
            d.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "patch:\n{log}\n{diff}");
    std::fs::read(&n).unwrap()
}

/// Check every diff against the source and the output image.
fn judge(diffs: &[FileDiff], source: &str, output: &str, scratch: &Path) {
    for d in diffs {
        let text = &d.unified;
        let (old, new) = (d.old_path.as_deref(), d.new_path.as_deref());
        match d.kind {
            FileDiffKind::Edited => {
                let p = old.unwrap();
                let before = node(source, p).expect("edited file in the source");
                let after = node(output, p).expect("edited file in the output");
                assert_ne!(before, after, "{p}: an edit changes it");
                if !d.binary {
                    assert_eq!(patched(scratch, &before, text), after, "{text}");
                }
            }
            FileDiffKind::Created => {
                let p = new.unwrap();
                assert_eq!(node(source, p), None, "{p} is new");
                let after = node(output, p).expect("created file in the output");
                assert_eq!(patched(scratch, b"", text), after, "{text}");
            }
            FileDiffKind::Copied | FileDiffKind::Renamed => {
                let (from, to) = (old.unwrap(), new.unwrap());
                assert!(text.contains(&format!("from {}\n", &from[1..])), "{text}");
                let original = node(source, from).expect("original in the source");
                assert_eq!(node(output, to), Some(original), "{to} holds {from}");
                if d.kind == FileDiffKind::Renamed {
                    assert_eq!(node(output, from), None, "{from} moved aside: {text}");
                }
            }
            FileDiffKind::Deleted => {
                let p = old.unwrap();
                assert!(node(source, p).is_some());
                assert_eq!(node(output, p), None, "{p} removed");
            }
        }
    }
}

/// Convert `src` with `donor`: the dry run's diffs equal the real run's (the swap UUID,
/// fresh for each, aside), which `judge` checks.
fn dry_run_diff_is_the_real_diff(src: &Path, donor: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    let opts = ConvertOptions::new(src, Some(donor.to_path_buf()), &out);
    let planned = plan(&opts, &mut NoProgress).unwrap();
    let done = convert(&opts, &mut NoProgress).unwrap();
    assert!(
        done.report.diffs.len() >= 3,
        "{}: {:?}",
        src.display(),
        done.report.diffs
    );
    let fresh = |s: &str, uuid: &Option<uuid::Uuid>| match uuid {
        Some(u) => s.replace(&u.to_string(), "SWAP-UUID"),
        None => s.to_string(),
    };
    let texts = |diffs: &[FileDiff], uuid: &Option<uuid::Uuid>| -> Vec<String> {
        diffs.iter().map(|d| fresh(&d.unified, uuid)).collect()
    };
    assert_eq!(
        texts(&planned.fixups.diffs, &planned.swap_uuid),
        texts(&done.report.diffs, &done.swap_uuid),
        "{}: dry run and real run diffs",
        src.display()
    );
    let source = e2fs_spec(src, done.plan.inspection.fs_offset);
    let output = e2fs_spec(&out, root_offset(&out));
    judge(&done.report.diffs, &source, &output, dir.path());
}

#[test]
fn dry_run_diffs_equal_the_real_runs_and_match_the_output_on_synthetic_guests() {
    let fx = support::synthetic();
    for image in [
        "xen-ext4.img",
        "xen-ext3.img",
        "xen-ext4-mbr.img",
        "xen-ext4-gpt.img",
    ] {
        dry_run_diff_is_the_real_diff(&fx.join(image), &fx.join("donor.img"));
    }
}

#[test]
#[ignore = "slow: converts the real Debian-built guest"]
fn dry_run_diffs_equal_the_real_runs_on_the_real_bookworm_guest() {
    let Some(real) = support::real() else {
        support::skip(
            support::SkipKind::CiCanRun,
            "real fixtures not built (scripts/fixtures real)",
        );
        return;
    };
    dry_run_diff_is_the_real_diff(
        &real.join("bookworm-xen.img"),
        &real.join("bookworm-donor.img"),
    );
}
