//! Interruptions and resources: SIGINT and SIGTERM at the start of every stage,
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
    // Whichever writer meets the full disk first (the stream or the graft) names it: the
    // system's "No space left on device" or the output's "no space left on the filesystem".
    assert!(err.to_lowercase().contains("no space left"), "{err}");
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

/// A directory holding a stand-in for `tool` that runs (as `tool`, same PID) until it is
/// killed: the library starts it at a known point and the test can stop imgconv there.
/// With `real_unless`, calls whose arguments lack that option run the real tool.
fn hanging_tool(dir: &Path, tool: &str, real_unless: Option<&str>) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let real = ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{tool} is not installed: run scripts/setup"));
    let guard = match real_unless {
        Some(opt) => format!(
            "case \" $* \" in *\" {opt} \"*) ;; *) exec {} \"$@\" ;; esac\n",
            real.display()
        ),
        None => String::new(),
    };
    let script = bin.join(tool);
    fs::write(
        &script,
        format!("#!/bin/bash\n{guard}exec -a {tool} sleep 600\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The PID of a child of `parent` whose argv[0] is `name`, if one runs.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let argv0 = cmdline.split(|&b| b == 0).next()?;
        (ppid == parent && argv0 == name.as_bytes()).then_some(pid)
    })
}

/// True while `pid` is a live process (not gone, not a zombie) whose argv[0] is `name`.
fn still_running(pid: u32, name: &str) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !zombie && cmdline.split(|&b| b == 0).next() == Some(name.as_bytes())
}

/// Start `imgconv convert SRC … EXTRA` with `path_first` first on PATH, wait until it runs
/// `tool`, send SIGINT `signals` times, and check that imgconv exits 130, leaves no output
/// and leaves no `tool` process behind.
fn interrupt_tool(src: &Path, extra: &[&str], tool: &str, path_first: &Path, signals: usize) {
    let work = tempfile::tempdir().unwrap();
    let outdir = work.path().join("out");
    fs::create_dir(&outdir).unwrap();
    let path = format!(
        "{}:{}",
        path_first.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(bin())
        .arg("convert")
        .arg(src)
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("-o")
        .arg(outdir.join("kvm.img"))
        .args(extra)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let tool_pid = loop {
        if let Some(pid) = child_named(child.id(), tool) {
            break pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("imgconv ended ({status}) without running {tool}:\n{err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "{tool} never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    for _ in 0..signals {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    }
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // An uncancellable tool would keep imgconv waiting for it: bounded, then a failure.
    let t1 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t1.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("imgconv did not stop within 60 s of {signals} SIGINT(s) while {tool} ran");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    // SIGKILL is delivered before kill(1) returns; the process may take a moment to go.
    let t2 = Instant::now();
    while still_running(tool_pid, tool) && t2.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !still_running(tool_pid, tool),
        "{tool} (pid {tool_pid}) still runs after {signals} SIGINT(s):\n{err}"
    );
    if signals == 1 {
        // One Ctrl-C is a clean stop: nothing is left beside the output either.
        assert_eq!(names_in(&outdir), Vec::<String>::new(), "{err}");
    }
}

#[test]
fn ctrl_c_during_grow_leaves_no_resize2fs_behind() {
    let work = tempfile::tempdir().unwrap();
    let bin = hanging_tool(work.path(), "resize2fs", None);
    let src = fx("xen-ext4.img");
    let before = fingerprint(&src);
    let grow = ["--size", "200M", "--swap", "16M"];
    interrupt_tool(&src, &grow, "resize2fs", &bin, 1);
    interrupt_tool(&src, &grow, "resize2fs", &bin, 2);
    assert_eq!(fingerprint(&src), before, "the input changed");
}

#[test]
fn ctrl_c_during_journal_replay_leaves_no_e2fsck_behind() {
    let work = tempfile::tempdir().unwrap();
    // Only the replay (`e2fsck -f -y`) hangs; a read-only check runs the real e2fsck.
    let bin = hanging_tool(work.path(), "e2fsck", Some("-y"));
    let src = fx("dirty-ext4.img");
    let before = fingerprint(&src);
    interrupt_tool(&src, &["--replay-journal"], "e2fsck", &bin, 1);
    interrupt_tool(&src, &["--replay-journal"], "e2fsck", &bin, 2);
    assert_eq!(fingerprint(&src), before, "the input changed");
}
