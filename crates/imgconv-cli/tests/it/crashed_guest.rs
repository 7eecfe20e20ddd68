//! A guest that crashed: an ext2 filesystem written while "mounted" (state not clean,
//! block and inode bitmaps that do not yet mark the newest files), made at test time from
//! the synthetic ext2 guest with debugfs. Converting it as it is would let the graft
//! allocate the kernel over those files; it is refused naming `--repair`, and with
//! `--repair` the copy is repaired by e2fsck before anything is grafted: the output is
//! clean for `e2fsck -fn` and every file of the source is intact (scripts/fidelity).

use crate::common;
use crate::support;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fx(name: &str) -> PathBuf {
    support::synthetic().join(name)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {request}: {}",
        stderr_of(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic, incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Files written "while mounted": guest path and content.
fn crash_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("/root/crash-big", noise(300_000, 1)),
        ("/var/crash/report", noise(40_000, 2)),
        (
            "/var/crash/note",
            b"written just before the crash\n".to_vec(),
        ),
    ]
}

/// The synthetic ext2 guest with the crash files written, then their blocks and inodes
/// (and the new directory's) cleared from the bitmaps, and the state set to "not clean":
/// what a crash leaves when the kernel wrote data and inodes but not the bitmaps.
fn crashed_ext2(dir: &Path) -> PathBuf {
    let img = dir.join("crashed-ext2.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(fx("xen-ext2.img"))
        .arg(&img));
    let mut script = String::from("mkdir /var/crash\n");
    for (i, (path, data)) in crash_files().iter().enumerate() {
        let host = dir.join(format!("crash-{i}"));
        fs::write(&host, data).unwrap();
        script.push_str(&format!("write {} {path}\n", host.display()));
    }
    let cmds = dir.join("write.cmds");
    fs::write(&cmds, script).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img));

    let mut stale = String::new();
    let mut paths: Vec<&str> = crash_files().iter().map(|(p, _)| *p).collect();
    paths.push("/var/crash");
    for path in paths {
        for block in debugfs(&img, &format!("blocks {path}")).split_whitespace() {
            stale.push_str(&format!("freeb {block}\n"));
        }
        stale.push_str(&format!("freei {path}\n"));
    }
    stale.push_str("ssv state 0\n");
    let cmds = dir.join("stale.cmds");
    fs::write(&cmds, stale).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img));

    // The image is what it should be: e2fsck sees the stale bitmaps, debugfs the files.
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&fsck.stdout);
    assert_eq!(fsck.status.code(), Some(4), "{log}");
    assert!(log.contains("bitmap differences"), "{log}");
    assert!(debugfs(&img, "stats").contains("Filesystem state:         not clean"));
    img
}

/// Byte offset of partition 1 of `disk` (sfdisk -J).
fn p1_offset(disk: &Path) -> u64 {
    let sf = Command::new("sfdisk").arg("-J").arg(disk).output().unwrap();
    let t: serde_json::Value = serde_json::from_slice(&sf.stdout).unwrap();
    t["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512
}

fn convert(src: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    imgconv()
        .arg("convert")
        .arg(src)
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("-o")
        .arg(out)
        .args(["--swap", "16M"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_crashed_ext2_guest_is_refused_or_repaired_on_the_copy_before_the_graft() {
    let dir = tempfile::tempdir().unwrap();
    let src = crashed_ext2(dir.path());
    let before = sha256(&src);
    let out = dir.path().join("kvm.img");

    // Refused, naming the reason and the option; nothing written.
    let refused = convert(&src, &out, &[]);
    let err = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(3), "{err}");
    assert!(
        err.contains("not cleanly unmounted") && err.contains("--repair"),
        "{err}"
    );
    assert!(!out.exists());

    // The dry run says what --repair will do.
    let planned = convert(&src, &out, &["--repair", "--dry-run"]);
    let text = String::from_utf8_lossy(&planned.stdout);
    assert!(planned.status.success(), "{}", stderr_of(&planned));
    assert!(
        text.contains("repair:  the filesystem was not cleanly unmounted"),
        "{text}"
    );
    assert!(!out.exists());

    // Repaired on the copy, before the graft.
    let report = dir.path().join("kvm.json");
    let repaired = convert(
        &src,
        &out,
        &[
            "--repair",
            "--fsck",
            "post",
            "--json",
            report.to_str().unwrap(),
        ],
    );
    assert!(repaired.status.success(), "{}", stderr_of(&repaired));
    assert_eq!(sha256(&src), before, "the input is never modified");

    let mut dev = out.clone().into_os_string();
    dev.push(format!("?offset={}", p1_offset(&out)));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&dev)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    for (path, data) in crash_files() {
        let dumped = dir.path().join("dumped");
        let _ = fs::remove_file(&dumped);
        let r = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {path} {}", dumped.display()))
            .arg(&dev)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", stderr_of(&r));
        assert!(fs::read(&dumped).unwrap() == data, "{path} intact");
    }

    // The repair is in the report; every other difference from the source is one the
    // report documents (the repair's own entry, which names "/", is left out of that
    // judgement so that it documents nothing by itself).
    let mut j: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let changes = j["report"]["changes"].as_array_mut().unwrap();
    let repair: Vec<&serde_json::Value> =
        changes.iter().filter(|c| c["step"] == "repair").collect();
    assert_eq!(repair.len(), 1, "{changes:#?}");
    assert!(
        repair[0]["what"].as_str().unwrap().contains("e2fsck -fy"),
        "{repair:?}"
    );
    changes.retain(|c| c["step"] != "repair");
    let judged = dir.path().join("judged.json");
    fs::write(&judged, serde_json::to_vec(&j).unwrap()).unwrap();
    let fidelity =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fidelity"))
            .arg(&src)
            .arg(&out)
            .arg("--report")
            .arg(&judged)
            .output()
            .unwrap();
    assert!(
        fidelity.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fidelity.stdout),
        stderr_of(&fidelity)
    );
}

#[test]
fn an_error_marked_guest_is_refused_or_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("errors.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(fx("xen-ext4.img"))
        .arg(&src));
    // Clean bitmaps, but the kernel recorded errors (state: clean with errors).
    run(Command::new("debugfs")
        .args(["-w", "-R", "ssv state 3"])
        .arg(&src));
    let out = dir.path().join("kvm.img");
    let refused = convert(&src, &out, &[]);
    let err = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(3), "{err}");
    assert!(err.contains("errors") && err.contains("--repair"), "{err}");
    assert!(!out.exists());
    let repaired = convert(&src, &out, &["--repair", "--fsck", "post"]);
    assert!(repaired.status.success(), "{}", stderr_of(&repaired));
}
