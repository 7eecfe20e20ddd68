//! What the output gets and where it may go: the source's permission bits (and owner as
//! root), nothing published when `--fsck post` fails (convert and batch), `-o` and
//! `--json` never naming an input (also through symlinks and hard links), paths with any
//! bytes for SRC, DONOR, OUT and `--json`, and `batch --dir` taking symlinks and block
//! devices and naming what it leaves out.

use crate::common;
use crate::support;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fx(name: &str) -> PathBuf {
    support::synthetic().join(name)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn copy(from: &Path, to: &Path) {
    run(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
}

/// The process umask (from /proc/self/status), which the output's mode is filtered by.
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap();
    u32::from_str_radix(v.trim(), 8).unwrap()
}

/// `e2fsck -fn` on partition 1 of `disk` (offset from `sfdisk -J`), as an outside judge.
fn fsck_p1_clean(disk: &Path) -> (bool, String) {
    // Through a plain-named symlink: this judges the image, not our path handling (and
    // sfdisk's JSON would carry the odd name).
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("disk");
    std::os::unix::fs::symlink(disk, &link).unwrap();
    let sf = Command::new("sfdisk")
        .arg("-J")
        .arg(&link)
        .output()
        .unwrap();
    let t: serde_json::Value = serde_json::from_slice(&sf.stdout).unwrap();
    let start = t["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512;
    let mut dev = link.into_os_string();
    dev.push(format!("?offset={start}"));
    let out = Command::new("e2fsck").arg("-fn").arg(dev).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        ),
    )
}

/// A copy of the bare ext4 guest whose /etc/debian_version claims 9 links: e2fsck -fn
/// finds it (exit 4); the conversion itself does not look at link counts.
fn wrong_link_count_source(dir: &Path, name: &str) -> PathBuf {
    let bad = dir.join(name);
    copy(&fx("xen-ext4.img"), &bad);
    run(Command::new("debugfs")
        .args([
            "-w",
            "-R",
            "set_inode_field /etc/debian_version links_count 9",
        ])
        .arg(&bad));
    bad
}

#[test]
fn the_output_gets_the_sources_permission_bits_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, name) in [(0o600, "private"), (0o644, "shared")] {
        let src = dir.path().join(format!("{name}.img"));
        copy(&fx("xen-ext2.img"), &src);
        fs::set_permissions(&src, fs::Permissions::from_mode(mode)).unwrap();
        // As root the owner is the source's (a user and group nobody else uses here);
        // otherwise the output is the caller's, like any file they create.
        let owner = if is_root() {
            run(Command::new("chown").arg("4242:4343").arg(&src));
            (4242, 4343)
        } else {
            let m = fs::metadata(dir.path()).unwrap();
            (m.uid(), m.gid())
        };
        let out = dir.path().join(format!("{name}.raw"));
        let run = imgconv()
            .arg("convert")
            .arg(&src)
            .arg("--donor")
            .arg(fx("donor-dir"))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", stderr_of(&run));
        let m = fs::metadata(&out).unwrap();
        assert_eq!(
            m.mode() & 0o7777,
            (mode & !umask()) | 0o600,
            "a {mode:o} source gives a {:o} output",
            (mode & !umask()) | 0o600
        );
        assert_eq!((m.uid(), m.gid()), owner, "owner of the output");
    }
}

#[test]
fn a_failed_post_fsck_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = wrong_link_count_source(dir.path(), "badlinks.img");
    let outdir = dir.path().join("out");
    fs::create_dir(&outdir).unwrap();
    let out = outdir.join("kvm.img");
    let run = imgconv()
        .arg("convert")
        .arg(&bad)
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("-o")
        .arg(&out)
        .args(["--fsck", "post"])
        .output()
        .unwrap();
    let err = stderr_of(&run);
    assert_eq!(run.status.code(), Some(6), "{err}");
    assert!(
        err.contains("exited 4") && err.contains("before publishing"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        names_in(&outdir),
        Vec::<String>::new(),
        "no OUT, no temporary file"
    );

    // In a batch: the good image is published, the bad one is not, and a second run
    // is not blocked by a leftover (no --force needed).
    let good = dir.path().join("good.img");
    copy(&fx("xen-ext2.img"), &good);
    let batch = |extra: &[&str]| {
        imgconv()
            .arg("batch")
            .arg(&bad)
            .arg(&good)
            .arg("--donor")
            .arg(fx("donor-dir"))
            .arg("--out-dir")
            .arg(&outdir)
            .args(["--fsck", "post", "--keep-going"])
            .args(extra)
            .output()
            .unwrap()
    };
    let run = batch(&[]);
    assert_eq!(run.status.code(), Some(6), "{}", stderr_of(&run));
    assert_eq!(names_in(&outdir), ["good.raw"]);
    fs::remove_file(outdir.join("good.raw")).unwrap();
    let again = batch(&[]);
    assert_eq!(again.status.code(), Some(6), "{}", stderr_of(&again));
    assert_eq!(names_in(&outdir), ["good.raw"]);
}

#[test]
fn output_and_json_never_name_the_source_or_the_donor() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("xen.img");
    copy(&fx("xen-ext2.img"), &src);
    let donor = dir.path().join("donor.img");
    copy(&fx("donor.img"), &donor);
    let (src_sum, donor_sum) = (sha256(&src), sha256(&donor));
    let src_link = dir.path().join("src-link.img");
    std::os::unix::fs::symlink(&src, &src_link).unwrap();
    let donor_hard = dir.path().join("donor-hard.img");
    fs::hard_link(&donor, &donor_hard).unwrap();
    let donor_link = dir.path().join("donor-link.json");
    std::os::unix::fs::symlink(&donor, &donor_link).unwrap();
    let out = dir.path().join("kvm.img");

    let convert = |o: &Path, json: Option<&Path>| {
        let mut c = imgconv();
        c.arg("convert")
            .arg(&src)
            .arg("--donor")
            .arg(&donor)
            .arg("-o")
            .arg(o)
            .arg("--force");
        if let Some(j) = json {
            c.arg("--json").arg(j);
        }
        c.output().unwrap()
    };
    for (o, json, what) in [
        (src_link.as_path(), None, "is the source itself"),
        (donor_hard.as_path(), None, "is the donor itself"),
        (donor.as_path(), None, "is the donor itself"),
        (out.as_path(), Some(src.as_path()), "is the source itself"),
        (
            out.as_path(),
            Some(src_link.as_path()),
            "is the source itself",
        ),
        (
            out.as_path(),
            Some(donor_link.as_path()),
            "is the donor itself",
        ),
        (
            out.as_path(),
            Some(donor_hard.as_path()),
            "is the donor itself",
        ),
        (out.as_path(), Some(out.as_path()), "is the output image"),
    ] {
        let run = convert(o, json);
        let err = stderr_of(&run);
        assert_eq!(
            run.status.code(),
            Some(2),
            "-o {o:?} --json {json:?}: {err}"
        );
        assert!(err.contains(what), "-o {o:?} --json {json:?}: {err}");
    }
    // A JSON path naming the output before it exists, by another spelling.
    let run = convert(&out, Some(&dir.path().join(".").join("kvm.img")));
    assert_eq!(run.status.code(), Some(2), "{}", stderr_of(&run));

    let batch = imgconv()
        .arg("batch")
        .arg(&src)
        .arg("--donor")
        .arg(&donor)
        .arg("--out-dir")
        .arg(dir.path().join("out"))
        .arg("--json")
        .arg(&src_link)
        .output()
        .unwrap();
    assert_eq!(batch.status.code(), Some(2), "{}", stderr_of(&batch));
    assert!(stderr_of(&batch).contains("is the source itself"));

    assert_eq!(sha256(&src), src_sum, "the source is untouched");
    assert_eq!(sha256(&donor), donor_sum, "the donor is untouched");
    assert!(!out.exists());
}

/// Converts SRC with DONOR into OUT with `--json` and `--fsck both`, all given as they
/// are (relative to `cwd` when not absolute), and judges the result.
fn convert_odd(cwd: &Path, src: &OsStr, donor: &OsStr, out: &OsStr, json: &OsStr) {
    let abs = |p: &OsStr| cwd.join(p);
    let src_sum = sha256(&abs(src));
    let mut donor_arg = std::ffi::OsString::from("--donor=");
    donor_arg.push(donor);
    let mut out_arg = std::ffi::OsString::from("--output=");
    out_arg.push(out);
    let mut json_arg = std::ffi::OsString::from("--json=");
    json_arg.push(json);
    let run = imgconv()
        .current_dir(cwd)
        .arg("convert")
        .arg(donor_arg)
        .arg(out_arg)
        .arg(json_arg)
        .args(["--fsck", "both", "--swap", "16M", "--"])
        .arg(src)
        .output()
        .unwrap();
    let err = stderr_of(&run);
    assert!(
        run.status.success(),
        "{src:?} {donor:?} {out:?} {json:?}: {err}"
    );
    assert!(
        err.contains("fsck-pre") && err.contains("fsck-post"),
        "{err}"
    );
    let (clean, log) = fsck_p1_clean(&abs(out));
    assert!(clean, "{log}");
    let report: serde_json::Value = serde_json::from_slice(&fs::read(abs(json)).unwrap()).unwrap();
    assert!(report["root_uuid"].is_string(), "{report}");
    assert_eq!(sha256(&abs(src)), src_sum, "the source is untouched");
}

#[test]
fn any_path_works_for_source_donor_output_and_json() {
    let top = tempfile::tempdir().unwrap();
    // A directory whose name has a space, a '?', a newline and a byte that is not UTF-8,
    // with file names that begin with '-' (absolute paths, so the '?' reaches e2fsck).
    let odd = top.path().join(OsStr::from_bytes(b"odd dir ?\n\xff"));
    fs::create_dir(&odd).unwrap();
    use std::os::unix::ffi::OsStringExt;
    let name = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b.extend_from_slice(b" ?\n\xfe.img");
        std::ffi::OsString::from_vec(b)
    };
    // A partitioned source, so the pre-fsck needs the `?offset=` form.
    copy(&fx("xen-ext4-mbr.img"), &odd.join(name("-src")));
    copy(&fx("donor.img"), &odd.join(name("-donor")));
    let abs = |n: std::ffi::OsString| odd.join(n).into_os_string();
    convert_odd(
        top.path(),
        &abs(name("-src")),
        &abs(name("-donor")),
        &abs(name("-out")),
        &abs(name("-report")),
    );

    // Relative names that begin with '-' themselves (no '?': the argument e2fsck gets
    // is the name as given).
    let plain = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b.extend_from_slice(b" \n\xfd.img");
        std::ffi::OsString::from_vec(b)
    };
    copy(&fx("xen-ext4-mbr.img"), &odd.join(plain("-src")));
    copy(&fx("donor.img"), &odd.join(plain("-donor")));
    convert_odd(
        &odd,
        &plain("-src"),
        &plain("-donor"),
        &plain("-out"),
        &plain("-report"),
    );
}

#[test]
fn batch_dir_takes_symlinks_and_block_devices_and_names_what_it_leaves_out() {
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    fs::create_dir(&images).unwrap();
    let store = work.path().join("store");
    fs::create_dir(&store).unwrap();
    copy(&fx("xen-ext2.img"), &store.join("web.img"));
    std::os::unix::fs::symlink(store.join("web.img"), images.join("web-link.img")).unwrap();
    std::os::unix::fs::symlink(store.join("gone.img"), images.join("dangling.img")).unwrap();
    std::os::unix::fs::symlink(&store, images.join("dir-link")).unwrap();
    fs::create_dir(images.join("subdir")).unwrap();
    fs::write(images.join(".hidden.img"), b"x").unwrap();
    run(Command::new("mkfifo").arg(images.join("pipe")));
    // A block device, through a symlink (loop devices need root).
    let loop_dev = if is_root() {
        copy(&fx("xen-ext3.img"), &store.join("db.img"));
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(store.join("db.img"))
            .output()
            .unwrap();
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "{}", stderr_of(&out));
        std::os::unix::fs::symlink(&dev, images.join("db-disk")).unwrap();
        Some(dev)
    } else {
        support::skip(
            support::SkipKind::CiCanRun,
            "its block-device part needs root (loop devices); the rest runs",
        );
        None
    };
    let outdir = work.path().join("out");
    let report = work.path().join("batch.json");
    let result = imgconv()
        .arg("batch")
        .arg("--dir")
        .arg(&images)
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("--out-dir")
        .arg(&outdir)
        .arg("--json")
        .arg(&report)
        .args(["-j", "2"])
        .output()
        .unwrap();
    if let Some(dev) = &loop_dev {
        let _ = Command::new("losetup").arg("-d").arg(dev).status();
    }
    let err = stderr_of(&result);
    assert!(result.status.success(), "{err}");
    for left_out in [
        "dangling.img (a symlink that cannot be followed",
        "dir-link (a symlink to a directory)",
        "subdir (a directory)",
        ".hidden.img (hidden)",
        "pipe (a fifo)",
    ] {
        assert!(err.contains(left_out), "{left_out}: {err}");
    }
    let mut want = vec!["web-link.raw"];
    if loop_dev.is_some() {
        want.insert(0, "db-disk.raw");
    }
    assert_eq!(names_in(&outdir), want);
    for name in &want {
        let (clean, log) = fsck_p1_clean(&outdir.join(name));
        assert!(clean, "{name}: {log}");
    }
    let j: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(j["ignored"].as_array().unwrap().len(), 5, "{j:#}");
}
