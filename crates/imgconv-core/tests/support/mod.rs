//! Fixture locator for integration tests: `mod support;` then `support::synthetic()`.
//!
//! Fixtures are built by `scripts/fixtures` into a cache outside the repository (see README
//! "Fixtures"); this module only runs that script and parses its MANIFEST.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod qemu;

use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{GuestFs, MemFs};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (crates/imgconv-core/../..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The synthetic fixture directory, built on first use (once per test process) by
/// `scripts/fixtures synthetic`. Panics with the script's stderr if the build fails.
pub fn synthetic() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| run_fixtures(&["synthetic"]).expect("scripts/fixtures synthetic"))
        .clone()
}

/// The real (Debian-built) fixture directory if it is already built; never builds it
/// (that takes minutes and the network: `scripts/fixtures real`).
pub fn real() -> Option<PathBuf> {
    run_fixtures(&["--path", "real"]).ok()
}

fn run_fixtures(args: &[&str]) -> Result<PathBuf, String> {
    let root = repo_root();
    let out = Command::new(root.join("scripts/fixtures"))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/fixtures: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if args[0] != "--path" && !out.status.success() {
        panic!(
            "scripts/fixtures {} failed ({}):\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    if !out.status.success() {
        return Err(stderr);
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        panic!("scripts/fixtures printed {dir:?}, which is not a directory\n{stderr}");
    }
    Ok(dir)
}

/// One MANIFEST row: a filesystem inside a fixture image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    /// File name inside the fixture directory, e.g. `xen-ext4-mbr.img`.
    pub image: String,
    /// `bare`, `mbr` or `gpt`.
    pub kind: String,
    /// 1-based partition number; `None` for a bare filesystem image.
    pub part: Option<u32>,
    /// Byte offset of the filesystem in the image.
    pub start: u64,
    /// Byte size of the filesystem/partition.
    pub size: u64,
    /// blkid TYPE: ext2, ext3, ext4, swap.
    pub fs_type: String,
    /// blkid UUID.
    pub uuid: String,
}

/// Parse `<dir>/MANIFEST` (tab-separated, `#` comments).
pub fn manifest(dir: &Path) -> Vec<ManifestRow> {
    let path = dir.join("MANIFEST");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "bad MANIFEST line {l:?}");
            ManifestRow {
                image: f[0].to_owned(),
                kind: f[1].to_owned(),
                part: if f[2] == "-" {
                    None
                } else {
                    Some(f[2].parse().expect("partition number"))
                },
                start: f[3].parse().expect("start"),
                size: f[4].parse().expect("size"),
                fs_type: f[5].to_owned(),
                uuid: f[6].to_owned(),
            }
        })
        .collect()
}

/// The MANIFEST row of `image` partition `part` (None for a bare image). Panics if absent.
pub fn manifest_row(dir: &Path, image: &str, part: Option<u32>) -> ManifestRow {
    manifest(dir)
        .into_iter()
        .find(|r| r.image == image && r.part == part)
        .unwrap_or_else(|| panic!("{image} part {part:?} not in MANIFEST"))
}

/// The e2fsprogs spelling of a filesystem inside an image: `path?offset=N` (or just the
/// path for offset 0), accepted by e2fsck, debugfs, dumpe2fs.
pub fn e2fs_spec(image: &Path, offset: u64) -> String {
    if offset == 0 {
        image.display().to_string()
    } else {
        format!("{}?offset={offset}", image.display())
    }
}

/// Run an outside tool, returning (exit code, stdout, stderr). Panics if it cannot start.
pub fn tool(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `debugfs -R REQUEST SPEC` stdout (debugfs reports request errors on stderr, exit 0).
pub fn debugfs(spec: &str, request: &str) -> String {
    let (code, out, err) = tool("debugfs", &["-R", request, spec]);
    assert_eq!(code, 0, "debugfs -R {request:?} {spec}: {err}");
    out
}

/// Run an outside tool, returning (exit code, stdout then stderr). Panics if it cannot start.
pub fn tool_merged(program: &str, args: &[&str]) -> (i32, String) {
    let (code, out, err) = tool(program, args);
    (code, out + &err)
}

/// A command for the outside tool `name`, found on PATH or in /usr/sbin, /sbin; panics
/// with the fix (scripts/setup) when it is not installed, rather than failing obscurely.
pub fn command(name: &str) -> Command {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/usr/sbin"), Path::new("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.exists());
    Command::new(found.unwrap_or_else(|| panic!("`{name}` is not installed: run scripts/setup")))
}

/// Run `cmd`, which must succeed; its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copy a MemFs into a host directory (files and directories: what our writers make), for
/// `mkfs.ext4 -d`.
pub fn memfs_to_dir(fs: &mut MemFs, root: &Path) {
    for (path, kind) in fs.list() {
        let host = root.join(path.trim_start_matches('/'));
        match kind {
            NodeKind::Dir => fs::create_dir_all(&host).unwrap(),
            NodeKind::File => {
                fs::create_dir_all(host.parent().unwrap()).unwrap();
                fs::write(&host, fs.read_file(&path, 64 << 20).unwrap().unwrap()).unwrap();
            }
            other => panic!("unexpected {other:?} at {path}"),
        }
    }
}
