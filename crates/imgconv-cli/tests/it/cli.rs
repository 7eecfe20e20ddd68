//! Argument parsing, the checks made before any work, exit codes and the two-line
//! error format, and progress rendering on a terminal versus a pipe.

use crate::common;
use common::*;
use std::fs;
use std::process::Command;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["convert", "x.img", "-o", "o.img", "--swap", "12Q"],
        vec!["convert", "x.img", "-o", "o.img", "--size", "1.5"],
        vec!["convert", "x.img", "-o", "o.img", "--bus", "scsi"],
        vec!["convert", "x.img", "-o", "o.img", "--fsck", "sometimes"],
        vec!["convert", "x.img"],
        vec!["batch", "--out-dir", "o"],
        vec!["batch", "a.img", "--out-dir", "o", "-j", "0"],
        vec!["verify", "x.img", "--timeout", "5"],
    ] {
        let out = imgconv().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
    }
    let out = imgconv()
        .args(["convert", "x", "-o", "y", "--swap", "12Q"])
        .output()
        .unwrap();
    assert!(
        stderr_of(&out).contains("unknown size unit"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn help_and_version_exit_0() {
    let out = imgconv().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["inspect", "convert", "batch", "verify", "Exit codes"] {
        assert!(text.contains(sub), "{text}");
    }
    let out = imgconv().args(["convert", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--donor",
        "--swap",
        "--size",
        "--kernel",
        "--use-guest-kernel",
        "--firmware",
        "--bus",
        "--fsck",
        "--loop",
        "--replay-journal",
        "--dry-run",
        "--json",
        "--force",
        "--quiet",
        "--grub-dir",
    ] {
        assert!(text.contains(opt), "{opt} missing from convert --help");
    }
    assert!(imgconv()
        .arg("--version")
        .output()
        .unwrap()
        .status
        .success());
}

/// Fixture files for the up-front checks: a source, a donor dir, an existing output.
fn files() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("xen.img");
    fs::write(&src, vec![0u8; 4096]).unwrap();
    let donor = dir.path().join("donor");
    fs::create_dir(&donor).unwrap();
    let out = dir.path().join("kvm.img");
    fs::write(&out, b"precious").unwrap();
    (dir, src, donor, out)
}

#[test]
fn convert_refuses_before_any_work_with_the_right_class() {
    let (dir, src, donor, out) = files();
    let convert = |args: &[&std::ffi::OsStr]| {
        let o = imgconv().arg("convert").args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), stderr_of(&o))
    };
    let d = donor.as_os_str();
    let s = src.as_os_str();
    let fresh = dir.path().join("new.img");

    // 5: the output exists (and is left alone).
    let (code, err) = convert(&[s, "--donor".as_ref(), d, "-o".as_ref(), out.as_os_str()]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("imgconv: error:") && err.contains("already exists"),
        "{err}"
    );
    assert!(
        err.contains("imgconv: hint:") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"precious");

    // 5: the output directory does not exist.
    let nodir = dir.path().join("no/such/dir/out.img");
    let (code, err) = convert(&[s, "--donor".as_ref(), d, "-o".as_ref(), nodir.as_os_str()]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("does not exist") && err.contains("mkdir -p"),
        "{err}"
    );

    // 3: the source is missing.
    let missing = dir.path().join("missing.img");
    let (code, err) = convert(&[
        missing.as_os_str(),
        "--donor".as_ref(),
        d,
        "-o".as_ref(),
        fresh.as_os_str(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing.img"), "{err}");

    // 4: the donor is missing.
    let nodonor = dir.path().join("nodonor");
    let (code, err) = convert(&[
        s,
        "--donor".as_ref(),
        nodonor.as_os_str(),
        "-o".as_ref(),
        fresh.as_os_str(),
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("donor") && err.contains("does not exist"),
        "{err}"
    );

    // 2: no donor and no --use-guest-kernel; output == source.
    let (code, err) = convert(&[s, "-o".as_ref(), fresh.as_os_str()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--donor"), "{err}");
    let (code, err) = convert(&[
        s,
        "--donor".as_ref(),
        d,
        "-o".as_ref(),
        s,
        "--force".as_ref(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is the source itself"), "{err}");

    // --force lifts the existence check (whatever happens next, it is not that refusal).
    let (_, err) = convert(&[
        s,
        "--donor".as_ref(),
        d,
        "-o".as_ref(),
        out.as_os_str(),
        "--force".as_ref(),
    ]);
    assert!(!err.contains("already exists"), "{err}");
    assert!(!fresh.exists());
}

#[test]
fn inspect_of_a_missing_file_is_exit_3() {
    let out = imgconv()
        .args(["inspect", "/nonexistent/xen.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr_of(&out);
    assert!(
        err.contains("imgconv: error:") && err.contains("/nonexistent/xen.img"),
        "{err}"
    );
    assert!(err.contains("imgconv: hint:"), "{err}");
}

#[test]
fn batch_refuses_existing_outputs_and_names_same_stems_apart() {
    let (dir, src, donor, _) = files();
    let outdir = dir.path().join("out");
    fs::create_dir(&outdir).unwrap();
    fs::write(outdir.join("xen.raw"), b"old").unwrap();
    let out = imgconv()
        .arg("batch")
        .arg(&src)
        .arg("--donor")
        .arg(&donor)
        .arg("--out-dir")
        .arg(&outdir)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("xen.raw") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(fs::read(outdir.join("xen.raw")).unwrap(), b"old");

    let other = dir.path().join("sub");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("xen.img"), b"x").unwrap();
    let out = imgconv()
        .arg("batch")
        .arg(&src)
        .arg(other.join("xen.img"))
        .arg("--donor")
        .arg(&donor)
        .arg("--out-dir")
        .arg(dir.path().join("out2"))
        .output()
        .unwrap();
    // Two sources named xen.img: each output is named after its directory, and the
    // sources are refused for what they are (not images), not for their names.
    let err = stderr_of(&out);
    assert!(!err.contains("both be written to"), "{err}");
    let report = dir.path().join("out2.json");
    let out = imgconv()
        .arg("batch")
        .arg(&src)
        .arg(other.join("xen.img"))
        .arg("--donor")
        .arg(&donor)
        .arg("--out-dir")
        .arg(dir.path().join("out3"))
        .arg("--keep-going")
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", stderr_of(&out)));
    let mut outputs: Vec<String> = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            std::path::Path::new(i["output"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    outputs.sort();
    let src_dir = src.parent().unwrap().file_name().unwrap().to_string_lossy();
    let mut want = vec![format!("{src_dir}-xen.raw"), "sub-xen.raw".to_string()];
    want.sort();
    assert_eq!(outputs, want);

    // The same source twice is refused.
    let out = imgconv()
        .arg("batch")
        .arg(&src)
        .arg(&src)
        .arg("--donor")
        .arg(&donor)
        .arg("--out-dir")
        .arg(dir.path().join("out4"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("given twice"), "{err}");
}

#[test]
fn batch_stops_launching_after_a_failure_unless_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let donor = dir.path().join("donor");
    fs::create_dir(&donor).unwrap();
    // Three sources that cannot convert (garbage), converted one at a time.
    let srcs: Vec<_> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("bad{i}.img"));
            fs::write(&p, vec![0xa5u8; 64 * 1024]).unwrap();
            p
        })
        .collect();
    let run = |keep: bool, tag: &str| {
        let report = dir.path().join(format!("{tag}.json"));
        let mut c = imgconv();
        c.arg("batch").args(&srcs).arg("--donor").arg(&donor);
        c.arg("--out-dir")
            .arg(dir.path().join(tag))
            .args(["-j", "1", "--json"])
            .arg(&report);
        if keep {
            c.arg("--keep-going");
        }
        let out = c.output().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
        (out, r)
    };
    let results = |r: &serde_json::Value| -> Vec<String> {
        r["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["result"].as_str().unwrap().to_string())
            .collect()
    };
    let (out, r) = run(false, "stop");
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(results(&r), ["failed", "skipped", "skipped"], "{r:#}");
    assert_eq!(
        (
            r["failed"].as_u64(),
            r["skipped"].as_u64(),
            r["ok"].as_bool()
        ),
        (Some(1), Some(2), Some(false))
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("IMAGE")
            && summary.contains("RESULT")
            && summary.contains("0 ok, 1 failed, 2 skipped"),
        "{summary}"
    );

    let (out, r) = run(true, "keep");
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(results(&r), ["failed", "failed", "failed"], "{r:#}");
    for e in r["images"].as_array().unwrap() {
        assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()));
        let output = std::path::Path::new(e["output"].as_str().unwrap());
        assert!(!output.exists(), "no output on failure");
    }
}

/// Run the binary as an unprivileged user (nobody) when we are root, else as ourselves.
fn unprivileged() -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin());
        c
    } else {
        Command::new(bin())
    }
}

#[test]
fn unreadable_source_is_3_and_unwritable_output_dir_is_5_before_any_work() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, src, donor, _) = files();
    let mode = |p: &std::path::Path, m: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap()
    };
    mode(dir.path(), 0o755);
    mode(&donor, 0o755);
    let ro = dir.path().join("readonly");
    fs::create_dir(&ro).unwrap();
    mode(&ro, 0o555);

    // Readable source, unwritable output directory: 5.
    mode(&src, 0o644);
    let out = unprivileged()
        .arg("convert")
        .arg(&src)
        .arg("--donor")
        .arg(&donor)
        .arg("-o")
        .arg(ro.join("kvm.img"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("cannot write in the output directory"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&ro).unwrap().count(), 0, "nothing left behind");

    // Unreadable source: 3.
    mode(&src, 0o000);
    let out = unprivileged()
        .arg("convert")
        .arg(&src)
        .arg("--donor")
        .arg(&donor)
        .arg("-o")
        .arg(dir.path().join("kvm2.img"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("cannot open the source") && err.contains("ermission denied"),
        "{err}"
    );
}
