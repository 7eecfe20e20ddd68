//! Interruptions and resources (issue 8): SIGINT and SIGTERM at the start of every stage,
//! an output directory that fills up, a read-only output filesystem. Each must end with the
//! documented exit code and message (README, "Exit codes"), leave no output and no
//! temporary file, and leave the input untouched.
//!
//! The stages are interrupted at a known point through the CLI's test hook
//! `IMGCONV_TEST_HOLD_STAGE=<stage>`: the start of that stage waits for the signal. The
//! filesystem cases mount a small tmpfs and need root; without it they print why they
//! skip.

use crate::common;
use crate::support;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fx(name: &str) -> PathBuf {
    support::synthetic().join(name)
}

/// Content hash, size and mtime (ns) of a file: what "untouched" means.
fn fingerprint(path: &Path) -> (String, u64, i64, i64) {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    let m = fs::metadata(path).unwrap();
    (
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Start `imgconv convert` holding at `stage`, send `signal` once the stage's line is on
/// stderr, and return (exit code, stderr).
fn interrupt_at(src: &Path, out: &Path, stage: &str, signal: i32) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .arg("convert")
        .arg(src)
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("-o")
        .arg(out)
        // Bigger than the source: the filesystem is grown, so the grow stage runs.
        .args(["--size", "200M", "--swap", "16M", "--fsck", "pre"])
        .env("NO_COLOR", "1")
        .env("IMGCONV_TEST_HOLD_STAGE", stage)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let want = format!("stage {stage}: started");
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.starts_with(&want) => break,
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "stage {stage} never started"
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                panic!(
                    "imgconv ended before stage {stage}: {}",
                    reader.join().unwrap()
                );
            }
        }
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    (status.code(), reader.join().unwrap())
}

#[test]
fn sigint_and_sigterm_at_every_stage_leave_nothing_and_exit_130() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("xen.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(fx("xen-ext4.img"))
        .arg(&src));
    let before = fingerprint(&src);
    let outdir = work.path().join("out");
    fs::create_dir(&outdir).unwrap();
    let out = outdir.join("kvm.img");
    let stages = [
        "fsck-pre", "inspect", "donor", "plan", "stream", "grow", "graft", "fixups", "boot",
    ];
    let mut failures = Vec::new();
    for stage in stages {
        for (signal, sig_name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
            let (code, err) = interrupt_at(&src, &out, stage, signal);
            let left = names_in(&outdir);
            eprintln!("{sig_name} at {stage}: exit {code:?}, left {left:?}");
            if code != Some(130)
                || !err.contains("imgconv: error: interrupted")
                || !err.contains("imgconv: hint: ")
                || !left.is_empty()
            {
                failures.push(format!(
                    "{sig_name} at {stage}: exit {code:?}, left {left:?}, stderr:\n{err}"
                ));
            }
            for f in left {
                let _ = fs::remove_file(outdir.join(f));
            }
        }
    }
    assert_eq!(fingerprint(&src), before, "the input changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A tmpfs of `size` mounted at a new directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "imgconv-test"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn convert_into(out: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("convert")
        .arg(fx("xen-ext4.img"))
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("-o")
        .arg(out)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_full_output_filesystem_is_exit_5_and_leaves_nothing() {
    if !is_root() {
        support::skip(
            support::SkipKind::CiCanRun,
            "mounting a small tmpfs needs root",
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let before = fingerprint(&fx("xen-ext4.img"));
    // The synthetic guest has a few MiB of data and the graft adds more: 3 MiB fills up.
    let dir = work.path().join("small");
    let mnt = Tmpfs::mount(&dir, "size=3M,mode=0755");
    let out = convert_into(&dir.join("kvm.img"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("imgconv: error: "), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("imgconv: hint: "), "{err}");
    assert_eq!(names_in(&dir), Vec::<String>::new(), "nothing left: {err}");
    drop(mnt);
    assert_eq!(
        fingerprint(&fx("xen-ext4.img")),
        before,
        "the input changed"
    );
}

#[test]
fn a_read_only_output_filesystem_is_exit_5_and_leaves_nothing() {
    if !is_root() {
        support::skip(
            support::SkipKind::CiCanRun,
            "mounting a read-only tmpfs needs root",
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("ro");
    let mnt = Tmpfs::mount(&dir, "size=1M,ro");
    let out = convert_into(&dir.join("kvm.img"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("imgconv: error: "), "{err}");
    assert!(err.contains("imgconv: hint: "), "{err}");
    assert_eq!(names_in(&dir), Vec::<String>::new(), "nothing left: {err}");
    drop(mnt);
}
