//! The guest's other volumes carried by worker threads beside the root's stream: the same
//! disk as carrying them one after the other (`Overlap::Sequential`), judged per
//! filesystem by `e2fsck -fn` and `debugfs rdump`; each volume's progress reported as
//! it copies; and a volume whose copy fails stops the rest and leaves no output.

use crate::convert_volumes::{
    assert_ext_partitions_clean, blkid, centos_guest, donor, ext_image, sfdisk, spec,
};
use crate::overlap_equivalence::tree;
use crate::support;

use imgconv_core::convert::{convert, ConvertOptions, CopyMethod, Overlap, SourceDisk};
use imgconv_core::{Progress, Stage};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

/// Records stages, their ends and each volume's last progress; runs `on_volumes` when
/// the volumes stage begins.
#[derive(Default)]
struct Recorder {
    stages: Vec<Stage>,
    done: Vec<Stage>,
    parts: HashMap<String, (u64, Option<u64>)>,
    on_volumes: Option<Box<dyn FnMut()>>,
}

impl Progress for Recorder {
    fn stage(&mut self, stage: Stage, _total: Option<u64>) {
        self.stages.push(stage);
        if stage == Stage::Volumes {
            if let Some(f) = &mut self.on_volumes {
                f();
            }
        }
    }
    fn advance_part(&mut self, stage: Stage, part: &str, done: u64, total: Option<u64>) {
        assert_eq!(stage, Stage::Volumes);
        self.parts.insert(part.to_string(), (done, total));
    }
    fn stage_done(&mut self, stage: Stage, _seconds: f64) {
        self.done.push(stage);
    }
}

/// Every ext filesystem of `out` by UUID: its `debugfs rdump` tree.
fn trees(out: &Path, scratch: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let (_, parts) = sfdisk(out);
    let mut all = BTreeMap::new();
    for p in &parts {
        let off = p.2 * 512;
        if !blkid(out, off, "TYPE").starts_with("ext") {
            continue;
        }
        let dump = scratch.join(format!("tree-{off}"));
        fs::create_dir(&dump).unwrap();
        let (rc, log) = support::tool_merged(
            "debugfs",
            &[
                "-R",
                &format!("rdump / {}", dump.display()),
                &spec(out, off),
            ],
        );
        assert_eq!(rc, 0, "debugfs rdump:\n{log}");
        all.insert(blkid(out, off, "UUID"), tree(&dump));
        fs::remove_dir_all(&dump).unwrap();
    }
    all
}

#[test]
fn volumes_carried_beside_the_root_give_the_disk_carried_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // p1 /boot, p2 root, p3 /home, p4 swap, and two more disks: three source disks, so
    // three workers (/boot is copied before them).
    let (src, _) = centos_guest(d);
    let a = ext_image(
        d,
        "a",
        "ext4",
        24,
        &["-L", "srva"],
        &[("a/data.bin", support::prng_bytes(21, 6 << 20))],
    );
    let b = ext_image(
        d,
        "b",
        "ext2",
        16,
        &["-L", "srvb"],
        &[("b/data.bin", support::prng_bytes(22, 3 << 20))],
    );
    let disks = vec![SourceDisk::new(&a, "xvdb1"), SourceDisk::new(&b, "xvdc1")];
    let mut results = Vec::new();
    for overlap in [Overlap::Auto, Overlap::Sequential] {
        let out = d.join(format!("{overlap:?}.raw"));
        let opts = ConvertOptions::new(&src, Some(donor()), &out)
            .with_disks(disks.clone())
            .with_overlap(overlap)
            .with_copy_method(CopyMethod::ReadWrite);
        let mut rec = Recorder::default();
        let done = convert(&opts, &mut rec).unwrap_or_else(|e| panic!("{overlap:?}: {e}"));
        let (_, parts) = sfdisk(&out);
        // /boot, root, /home and the two disks' filesystems.
        assert_eq!(assert_ext_partitions_clean(&out, &parts), 5, "{parts:?}");
        let volumes = done
            .timings
            .iter()
            .filter(|t| t.stage == Stage::Volumes)
            .count();
        match overlap {
            Overlap::Auto => {
                // /boot's volumes stage, then the others' begun before the root's stream
                // and ended by its stage_done; every volume copied beside reported to its
                // end.
                assert_eq!(volumes, 2, "{:?}", done.timings);
                let at = |s| rec.stages.iter().position(|x| *x == s).unwrap();
                assert!(at(Stage::Volumes) < at(Stage::Stream), "{:?}", rec.stages);
                assert!(rec.done.contains(&Stage::Volumes), "{:?}", rec.done);
                let mut names: Vec<&str> = rec.parts.keys().map(String::as_str).collect();
                names.sort();
                assert_eq!(names, ["p3", "xvdb1", "xvdc1"], "{:?}", rec.parts);
                for (name, (done, total)) in &rec.parts {
                    assert_eq!(Some(*done), *total, "{name}: {:?}", rec.parts);
                    assert!(*done > 0, "{name}");
                }
            }
            Overlap::Sequential => {
                // /boot before the root, the others after it.
                assert_eq!(volumes, 2, "{:?}", done.timings);
                assert!(rec.parts.is_empty(), "{:?}", rec.parts);
            }
        }
        results.push(trees(&out, d));
        fs::remove_file(&out).unwrap();
    }
    let (beside, sequential) = (&results[0], &results[1]);
    assert_eq!(beside.len(), 5, "{:?}", beside.keys());
    for (uuid, t) in beside {
        assert!(t.len() > 2, "{uuid}: too few paths: {t:?}");
        let s = &sequential[uuid];
        let diff: Vec<String> = t
            .iter()
            .filter(|(k, v)| s.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {v} vs {:?}", s.get(k)))
            .chain(
                s.keys()
                    .filter(|k| !t.contains_key(*k))
                    .map(|k| format!("{k}: only sequential")),
            )
            .collect();
        assert!(diff.is_empty(), "{uuid}:\n{}", diff.join("\n"));
    }
    assert_eq!(
        beside.keys().collect::<Vec<_>>(),
        sequential.keys().collect::<Vec<_>>()
    );
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn a_volume_that_fails_stops_the_others_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A root whose stream copies 640 MiB, a /home disk and a data disk.
    let root = support::large_guest(d);
    let home = ext_image(
        d,
        "home",
        "ext4",
        48,
        &["-L", "home"],
        &[("big.bin", support::prng_bytes(31, 32 << 20))],
    );
    let data = ext_image(
        d,
        "data",
        "ext4",
        32,
        &["-L", "data"],
        &[("big.bin", support::prng_bytes(32, 20 << 20))],
    );
    let outs = d.join("out");
    fs::create_dir(&outs).unwrap();
    let out = outs.join("out.raw");
    let opts = |disk: &Path| {
        ConvertOptions::new(&root, Some(donor()), &out)
            .with_disks(vec![
                SourceDisk::new(&home, "xvdb1"),
                SourceDisk::new(disk, "xvdc1"),
            ])
            .with_copy_method(CopyMethod::ReadWrite)
    };

    // Truncated before the conversion: its filesystem is longer than the image.
    let short = d.join("short.img");
    fs::copy(&data, &short).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let e = convert(&opts(&short), &mut Recorder::default()).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains(&short.display().to_string()) && m.contains("truncated"),
        "{m}"
    );
    assert_eq!(e.kind(), imgconv_core::ErrorKind::Input, "{m}");
    assert!(entries(&outs).is_empty(), "{:?}", entries(&outs));

    // Truncated while the volumes copy (once planned, as the volumes stage begins): its
    // copy fails reading, which stops the root's stream and the other volume's
    // copy.
    let late = d.join("late.img");
    fs::copy(&data, &late).unwrap();
    let cut = late.clone();
    let mut rec = Recorder {
        on_volumes: Some(Box::new(move || {
            fs::OpenOptions::new()
                .write(true)
                .open(&cut)
                .unwrap()
                .set_len(4 << 20)
                .unwrap();
        })),
        ..Recorder::default()
    };
    let e = convert(&opts(&late), &mut rec).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains(&late.display().to_string()) && m.contains("reading"),
        "the failing volume's error, not a cancellation: {m}"
    );
    assert!(
        !rec.done.contains(&Stage::Stream) && !rec.done.contains(&Stage::Volumes),
        "the root's stream and the volumes were stopped: {:?}",
        rec.done
    );
    assert!(entries(&outs).is_empty(), "{:?}", entries(&outs));
}
