//! Replays the kept crash inputs: every file under
//! `testdata/regressions/<target>/` goes through the fuzz harness of that name
//! (`fuzz/harness.rs`, the same code `scripts/fuzz` runs), which must return without a
//! panic. An input that aborts the process fails this test binary outright.

#[path = "../../../../fuzz/harness.rs"]
mod harness;

use std::path::Path;

type Harness = fn(&[u8]);

const TARGETS: &[(&str, Harness)] = &[
    ("partition_table", harness::partition_table),
    ("superblock", harness::superblock),
    ("inspect", harness::inspect),
    ("donor", harness::donor),
    ("moddep", harness::moddep),
    ("boot_records", harness::boot_records),
    ("extraw_inode", harness::extraw_inode),
    ("extraw_blockmap", harness::extraw_blockmap),
    ("extraw_extent", harness::extraw_extent),
    ("extraw_dir", harness::extraw_dir),
    ("extraw_journal", harness::extraw_journal),
    ("formats", harness::formats),
    ("lvm", harness::lvm),
    ("lvm_text", harness::lvm_text),
    ("xen_config", harness::xen_config),
];

#[test]
fn kept_fuzz_and_mutation_inputs_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/regressions");
    let mut replayed = 0;
    let mut failures = Vec::new();
    for (target, run) in TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            if f.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let data = std::fs::read(&f).unwrap();
            assert!(
                data.len() < 64 * 1024,
                "{}: keep regressions small",
                f.display()
            );
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failures.push(format!("{target}: {}", f.display()));
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= 3,
        "only {replayed} inputs found under {}",
        root.display()
    );
    assert!(
        failures.is_empty(),
        "harness panicked on:\n{}",
        failures.join("\n")
    );
}

/// The two mutation-suite findings kept as small images behave as fixed: a typed error.
#[test]
fn kept_mutation_findings_end_in_typed_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/regressions/inspect");
    // /sbin -> usr/sbin claims 4 GiB (it aborted the process): the guest is still found
    // through /usr/sbin/init, and the symlink itself is a typed error.
    let img = dir.join("symlink-size-4gib-abort.ext2");
    let ins = imgconv_core::source::inspect(&img).expect("the guest is found");
    let reader =
        imgconv_core::ext::read::ExtReader::open(ins.open_fs().unwrap(), "regress").unwrap();
    assert!(matches!(
        reader.metadata("/sbin/init"),
        Err(imgconv_core::ext::read::ExtReadError::TooLarge {
            size: 0x1_0000_0008,
            ..
        })
    ));
    // The block bitmap calls /etc/fstab's block free: the stream refuses the copy.
    let img = dir.join("block-bitmap-frees-fstab-block.ext2");
    let ins = imgconv_core::source::inspect(&img).expect("inspection reads the guest");
    let src = ins.open_fs().unwrap();
    let out = tempfile::tempfile().unwrap();
    out.set_len(ins.fs_len).unwrap();
    let err = imgconv_core::stream::copy_used_blocks(&src, &out, 0, &mut imgconv_core::NoProgress)
        .unwrap_err();
    assert!(
        matches!(
            err,
            imgconv_core::stream::StreamError::InconsistentBitmap { group: 0, .. }
        ),
        "{err}"
    );
}
