//! Input integrity (issue 8): after every command, successful or not, the source image and
//! the donor (an image and an unpacked directory) have the same SHA-256, size and mtime
//! (to the nanosecond) as before. Judged by `sha256sum` and `stat`.

use crate::common;
use crate::support;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// sha256sum, size and mtime of every file under `root` (a file or a directory).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            out.insert(p, (String::new(), 0, m.mtime(), m.mtime_nsec()));
            continue;
        }
        let sum = if m.is_file() {
            let o = Command::new("sha256sum").arg(&p).output().unwrap();
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        } else {
            format!("{:?}", fs::read_link(&p).ok())
        };
        out.insert(p, (sum, m.len(), m.mtime(), m.mtime_nsec()));
    }
    out
}

#[test]
fn inputs_are_unchanged_after_every_command_including_failures() {
    let fx = support::synthetic();
    let work = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let p = work.path().join(name);
        run(Command::new("cp")
            .args(["--sparse=always", "-a"])
            .arg(fx.join(name))
            .arg(&p));
        p
    };
    let src = copy("xen-ext4.img");
    let mbr = copy("xen-ext4-mbr.img");
    let dirty = copy("dirty-ext4.img");
    let donor_img = copy("donor.img");
    let donor_dir = copy("donor-dir");
    let garbage = work.path().join("garbage.img");
    fs::write(&garbage, vec![0x5a; 1 << 20]).unwrap();
    let inputs = [&src, &mbr, &dirty, &donor_img, &donor_dir, &garbage];
    let before: Vec<_> = inputs.iter().map(|p| snapshot(p)).collect();

    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let o = |n: &str| out.join(n).display().to_string();
    let s = |p: &Path| p.display().to_string();
    let (src_s, mbr_s, dirty_s, di, dd, garbage_s) = (
        s(&src),
        s(&mbr),
        s(&dirty),
        s(&donor_img),
        s(&donor_dir),
        s(&garbage),
    );
    // (arguments, expected exit code)
    let commands: Vec<(Vec<String>, i32)> = vec![
        (vec!["inspect".into(), src_s.clone()], 0),
        (vec!["inspect".into(), mbr_s.clone(), "--json".into()], 0),
        (vec!["inspect".into(), dirty_s.clone()], 0),
        (vec!["inspect".into(), garbage_s.clone()], 3),
        // A donor is no guest: refused.
        (vec!["inspect".into(), di.clone()], 3),
        (
            vec![
                "convert",
                &src_s,
                "--donor",
                &di,
                "-o",
                &o("a.img"),
                "--dry-run",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            0,
        ),
        (
            vec![
                "convert",
                &src_s,
                "--donor",
                &di,
                "-o",
                &o("a.img"),
                "--fsck",
                "both",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            0,
        ),
        // OUT exists: refused.
        (
            vec!["convert", &src_s, "--donor", &di, "-o", &o("a.img")]
                .into_iter()
                .map(String::from)
                .collect(),
            5,
        ),
        (
            vec!["convert", &mbr_s, "--donor", &dd, "-o", &o("b.img")]
                .into_iter()
                .map(String::from)
                .collect(),
            0,
        ),
        // Donor problems.
        (
            vec![
                "convert",
                &src_s,
                "--donor",
                &dd,
                "-o",
                &o("c.img"),
                "--kernel",
                "9.9.9",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            4,
        ),
        (
            vec!["convert", &src_s, "--donor", &garbage_s, "-o", &o("c.img")]
                .into_iter()
                .map(String::from)
                .collect(),
            4,
        ),
        // Bad source.
        (
            vec!["convert", &garbage_s, "--donor", &dd, "-o", &o("c.img")]
                .into_iter()
                .map(String::from)
                .collect(),
            3,
        ),
        // Dirty journal: refused, then replayed in the output copy only.
        (
            vec!["convert", &dirty_s, "--donor", &dd, "-o", &o("d.img")]
                .into_iter()
                .map(String::from)
                .collect(),
            3,
        ),
        (
            vec![
                "convert",
                &dirty_s,
                "--donor",
                &dd,
                "-o",
                &o("d.img"),
                "--replay-journal",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            0,
        ),
        // Too small a disk: a usage error.
        (
            vec![
                "convert",
                &src_s,
                "--donor",
                &dd,
                "-o",
                &o("e.img"),
                "--size",
                "8M",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            2,
        ),
        (
            vec![
                "batch",
                &src_s,
                &garbage_s,
                "--donor",
                &dd,
                "--out-dir",
                &o("batch"),
                "--keep-going",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            3,
        ),
        (vec!["verify".into(), o("a.img")], 0),
    ];
    fs::create_dir(out.join("batch")).unwrap();
    let mut failures = Vec::new();
    for (args, want) in &commands {
        let r = Command::new(bin())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        if r.status.code() != Some(*want) {
            failures.push(format!(
                "imgconv {}: exit {:?}, wanted {want}: {err}",
                args.join(" "),
                r.status.code()
            ));
        }
        // The inputs this command was given (hashing all six after each command would
        // only cost time: a command cannot reach a file it was not told about).
        for (i, p) in inputs.iter().enumerate() {
            if !args.iter().any(|a| Path::new(a) == **p) {
                continue;
            }
            if snapshot(p) != before[i] {
                failures.push(format!(
                    "imgconv {} changed the input {}",
                    args.join(" "),
                    p.display()
                ));
            }
        }
    }
    // And all of them once more at the end.
    for (i, p) in inputs.iter().enumerate() {
        if snapshot(p) != before[i] {
            failures.push(format!("the input {} changed", p.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
