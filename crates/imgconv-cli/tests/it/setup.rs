//! `scripts/setup --check-only`: the check that follows every install. On this machine
//! (set up by scripts/setup) it passes; with a PATH that lacks one tool it fails and names
//! the package that provides the tool.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn setup_script() -> PathBuf {
    crate::support::repo_root().join("scripts/setup")
}

fn check_only(path: &str) -> Output {
    Command::new("/bin/bash")
        .arg(setup_script())
        .arg("--check-only")
        .env("PATH", path)
        .output()
        .expect("bash runs scripts/setup")
}

/// A directory with a link to every executable of /usr/bin and /usr/sbin except `left_out`.
fn path_without(dir: &Path, left_out: &[&str]) -> String {
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    for d in ["/usr/sbin", "/usr/bin"] {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if left_out.contains(&name.as_ref()) || bin.join(&*name).exists() {
                continue;
            }
            symlink(e.path(), bin.join(&*name)).unwrap();
        }
    }
    bin.to_string_lossy().into_owned()
}

#[test]
fn check_passes_on_this_machine() {
    let out = check_only("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/setup --check-only fails here:\n{err}"
    );
    assert!(
        err.contains("required commands, files and libraries are present"),
        "{err}"
    );
}

#[test]
fn check_names_the_package_of_a_missing_tool() {
    for (tool, package) in [
        ("qemu-img", "qemu-utils"),
        ("mkfs.vfat", "dosfstools"),
        ("debugfs", "e2fsprogs"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = path_without(dir.path(), &[tool]);
        let out = check_only(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tool} missing:\n{err}");
        assert!(
            err.contains(&format!("missing: {tool} (package {package}")),
            "{tool} missing:\n{err}"
        );
        assert!(
            err.contains(&format!("FAILED: install {package}")),
            "{tool} missing:\n{err}"
        );
        // Only the one tool is reported.
        assert_eq!(err.matches("missing: ").count(), 1, "{err}");
    }
}

#[test]
fn check_only_is_the_only_option() {
    let out = Command::new("/bin/bash")
        .arg(setup_script())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
