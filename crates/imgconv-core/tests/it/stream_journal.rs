//! A source whose journal needs recovery: refused by default with an error that says
//! how to proceed; with the replay option, the *output copy* is repaired (e2fsck through
//! `out.img?offset=N`) and the input is left exactly as it was.
//!
//! The dirty journal is real: debugfs writes a committed transaction into the journal
//! (`journal_open`, `journal_write -b`, `journal_close`) that rewrites a file's data
//! block, and sets needs_recovery, without replaying it.

use crate::support::stream as stream_util;

use imgconv_core::layout::PlanOptions;
use imgconv_core::source::{self, InspectError};
use imgconv_core::stream::StreamMethod;
use std::path::{Path, PathBuf};
use std::process::Command;
use stream_util::*;

const ORIGINAL: &str = "original content, before the crash\n";
const JOURNALED: &str = "JOURNALED content, committed in the log\n";

fn dirty_image(work: &Path, kind: &str) -> PathBuf {
    let tree = work.join("tree");
    guest_tree(&tree, Init::Sysvinit);
    std::fs::write(tree.join("etc/motd"), ORIGINAL).unwrap();
    let img = work.join("dirty.img");
    mkfs(kind, &tree, &img, 64, &["-b", "1024"]);
    let bmap = run(Command::new("debugfs")
        .args(["-R", "bmap /etc/motd 0"])
        .arg(&img));
    let block: u64 = bmap.trim().parse().unwrap();
    let payload = work.join("payload");
    let mut data = JOURNALED.as_bytes().to_vec();
    data.resize(1024, 0);
    std::fs::write(&payload, data).unwrap();
    let cmds = work.join("jcmds");
    std::fs::write(
        &cmds,
        format!("jo\njw -b {block} {}\njc\n", payload.display()),
    )
    .unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img));
    let h = run(Command::new("dumpe2fs").arg("-h").arg(&img));
    assert!(h.contains("needs_recovery"), "fixture is not dirty:\n{h}");
    img
}

fn cat(img: &Path, offset: u64, path: &str) -> String {
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(dev(img, offset)))
}

fn dirty_journal(kind: &str) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let img = dirty_image(w, kind);
    let sha = sha256(&img);
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    std::fs::create_dir(w.join("out")).unwrap();
    let dest = w.join("out/kvm.img");

    let insp = source::inspect(&img).unwrap();
    assert!(insp.fs.needs_recovery && insp.fs.has_journal);

    // Refused by default, before anything is written, saying how to proceed.
    let err = convert(&img, &dest, PlanOptions::default(), false)
        .err()
        .expect("must refuse");
    match &err {
        imgconv_core::Error::Inspect(e) if matches!(**e, InspectError::DirtyJournal { .. }) => {}
        other => panic!("expected DirtyJournal, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("e2fsck -fy"), "{msg}");
    assert_eq!(err.kind(), imgconv_core::ErrorKind::Input);
    assert_eq!(err.hint(), Some(imgconv_core::Hint::ReplayJournal));
    assert_eq!(std::fs::read_dir(w.join("out")).unwrap().count(), 0);

    // With the option: the copy is replayed and repaired.
    let c = convert(&img, &dest, PlanOptions::default(), true).unwrap();
    assert!(
        matches!(&c.stats.method, StreamMethod::WholeFilesystem { reason } if reason.contains("journal")),
        "{:?}",
        c.stats.method
    );
    let replay = c.replay.expect("replay ran");
    assert!(
        replay.command.contains("e2fsck -f -y"),
        "{}",
        replay.command
    );
    let off = c.plan.root().start_bytes();
    assert_fsck_clean(&dest, off);
    let h = run(Command::new("dumpe2fs").arg("-h").arg(dev(&dest, off)));
    assert!(!h.contains("needs_recovery"), "{h}");
    assert_eq!(cat(&dest, off, "/etc/motd"), &JOURNALED[..ORIGINAL.len()]);

    // Re-inspecting the replayed copy: clean, and read without the on-disk fallback.
    let region = imgconv_core::blockio::Region::open(&dest)
        .unwrap()
        .sub(off, c.plan.final_fs_bytes())
        .unwrap();
    let after = source::inspect_region(&region).unwrap();
    assert!(!after.fs.needs_recovery);
    assert_eq!(after.fs.uuid, insp.fs.uuid);
    assert_eq!(after.fs_offset, off);
    assert!(
        after.guest.warnings.is_empty(),
        "{:?}",
        after.guest.warnings
    );
    // The dirty source was inspected through the in-memory replay, which sees the
    // journaled content as e2fsck does, without touching the input.
    assert!(
        !insp.guest.warnings.iter().any(|w| w.contains("journal")),
        "the dirty source was replayed in memory: {:?}",
        insp.guest.warnings
    );
    let replayed =
        imgconv_core::ext::read::ExtReader::open(insp.open_fs().unwrap(), "dirty").unwrap();
    let motd = replayed.read_file("/etc/motd", 4096).unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&motd),
        &JOURNALED[..ORIGINAL.len()],
        "the replay reads the journaled block within the file's size"
    );

    // The input is untouched: same bytes, same mtime, journal still pending.
    assert_eq!(sha256(&img), sha);
    assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), mtime);
    assert!(run(Command::new("dumpe2fs").arg("-h").arg(&img)).contains("needs_recovery"));
    assert_eq!(cat(&img, 0, "/etc/motd"), ORIGINAL);
}

#[test]
fn dirty_ext4_journal_refused_then_replayed_on_the_copy() {
    dirty_journal("ext4");
}

#[test]
fn dirty_ext3_journal_refused_then_replayed_on_the_copy() {
    dirty_journal("ext3");
}
