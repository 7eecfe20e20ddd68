//! Guests whose block maps or bitmaps lie, made at test time from the synthetic ext3 and
//! ext4 guests with debugfs and raw writes: `imgconv convert` refuses each with exit 3
//! and a message naming the file, in bounded time and memory (the child's peak RSS from
//! wait4), leaving nothing in the output directory; with `--repair`, the cases e2fsck
//! repairs without losing content (shared blocks, used blocks marked free) give an
//! output `e2fsck -fn` finds clean, the files as they were.

use crate::common::*;
use crate::support;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Peak RSS a refused conversion may reach (KiB): the bound is 100 MiB.
const MAX_RSS_KIB: i64 = 100 * 1024;
/// A conversion still running after this is hung (the fixtures convert in seconds).
const HANG: Duration = Duration::from_secs(300);

fn fx(name: &str) -> PathBuf {
    support::synthetic().join(name)
}

/// A private copy of fixture `name`.
fn copy_of(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    fs::copy(fx(name), &img).unwrap();
    img
}

fn debugfs(img: &Path, write: bool, cmd: &str) -> String {
    let mut c = Command::new("debugfs");
    if write {
        c.arg("-w");
    }
    let out = c.arg("-R").arg(cmd).arg(img).output().expect("run debugfs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // debugfs exits 0 whatever a command does: its complaints are on stderr.
    let complaint = err
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .collect::<Vec<_>>();
    assert!(
        complaint.is_empty(),
        "debugfs {cmd} on {}: {}",
        img.display(),
        complaint.join("\n")
    );
    text
}

/// The physical block of logical block `lblk` of `path`.
fn bmap(img: &Path, path: &str, lblk: u64) -> u64 {
    let out = debugfs(img, false, &format!("bmap {path} {lblk}"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bmap {path}: {out}"))
}

/// The inode-table block holding `path`'s inode ("located at block N, offset ...").
fn inode_block(img: &Path, path: &str) -> u64 {
    let out = debugfs(img, false, &format!("imap {path}"));
    out.split("located at block ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("imap {path}: {out}"))
}

/// A free block, then marked used (so only what points at it is wrong).
fn take_free_block(img: &Path) -> u64 {
    let out = debugfs(img, false, "ffb 1 2000");
    let b: u64 = out
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ffb: {out}"));
    debugfs(img, true, &format!("setb {b}"));
    adjust_free(img, b, -1);
    b
}

/// debugfs's setb/freeb change only the bitmap: bring the free counts of the group
/// holding `block` and of the superblock along by `delta`, so the bitmaps agree with
/// the counts and only what the inodes say is wrong.
fn adjust_free(img: &Path, block: u64, delta: i64) {
    let stats = debugfs(img, false, "stats");
    let field = |name: &str| -> i64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in stats: {stats}"))
    };
    let per_group = field("Blocks per group:") as u64;
    let group = block.saturating_sub(u64::from(block_size(img) == 1024)) / per_group;
    let head = format!(" Group {group:2}: ");
    let group_free: i64 = stats
        .split(&head)
        .nth(1)
        .and_then(|s| s.lines().nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("group {group} in stats: {stats}"));
    let sb_free = field("Free blocks:");
    debugfs(
        img,
        true,
        &format!("set_bg {group} free_blocks_count {}", group_free + delta),
    );
    debugfs(
        img,
        true,
        &format!("set_super_value free_blocks_count {}", sb_free + delta),
    );
    if stats.contains("metadata_csum") {
        // (libext2fs recomputes the superblock's own checksum when it writes it.)
        debugfs(img, true, &format!("set_bg {group} checksum calc"));
    }
}

fn block_size(img: &Path) -> u64 {
    let out = debugfs(img, false, "stats");
    out.lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("stats: {out}"))
}

/// Fill block `block` with the 32-bit block number `entry`, over and over.
fn fill_block(img: &Path, block: u64, entry: u32) {
    let bs = block_size(img);
    let data: Vec<u8> = (0..bs / 4).flat_map(|_| entry.to_le_bytes()).collect();
    write_at(img, block * bs, &data);
}

fn set(img: &Path, path: &str, field: &str, value: u64) {
    debugfs(
        img,
        true,
        &format!("set_inode_field {path} {field} {value}"),
    );
}

struct Run {
    code: Option<i32>,
    stderr: String,
    /// The converter's peak RSS in KiB (`/usr/bin/time`'s %M).
    max_rss_kib: i64,
}

/// Run `imgconv convert SRC --donor donor-dir -o DIR/out.img EXTRA…` under
/// `/usr/bin/time`, which reports the converter's own peak RSS: a child forked straight
/// from this test process would inherit the process's high-water mark in its
/// `ru_maxrss` (Linux keeps it across exec), so any big test running beside this one
/// would show up in it. Killed (and the test failed) if it hangs.
fn convert(src: &Path, dir: &Path, extra: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    let err_path = dir.join("stderr.txt");
    let rss_path = dir.join("rss.txt");
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_path)
        .arg(bin())
        .env("NO_COLOR", "1")
        .arg("convert")
        .arg(src)
        .arg("--donor")
        .arg(fx("donor-dir"))
        .arg("-o")
        .arg(dir.join("out/out.img"))
        .arg("--quiet")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG {
            // SAFETY: kill the process group of our own child (time and imgconv).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!("imgconv convert {} hung", src.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // time writes "Command exited with non-zero status N" first when it does, then %M.
    let rss = fs::read_to_string(&rss_path).unwrap();
    let max_rss_kib = rss
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {rss:?}"));
    Run {
        code: status.code(),
        stderr: fs::read_to_string(&err_path).unwrap(),
        max_rss_kib,
    }
}

/// Converting `img` fails with exit 3 naming every one of `paths`, within the memory
/// bound, and leaves nothing in the output directory.
fn refused(img: &Path, dir: &Path, paths: &[&str], why: &str) -> Run {
    fs::create_dir_all(dir.join("out")).unwrap();
    let run = convert(img, dir, &[]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let mut lines = run
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("imgconv: error: "));
    let first = lines.next().unwrap_or_else(|| panic!("{}", run.stderr));
    for p in paths {
        assert!(
            first.contains(&format!("{p} (inode ")),
            "{p} not named: {}",
            run.stderr
        );
    }
    assert!(first.contains(why), "expected {why:?}: {}", run.stderr);
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("imgconv: hint: "),
        "{}",
        run.stderr
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        run.max_rss_kib
    );
    let left: Vec<_> = fs::read_dir(dir.join("out")).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    run
}

#[test]
fn ext3_fstab_with_a_self_referencing_triple_indirect_block_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext3.img");
    // Every entry of the triple-indirect block is the block itself: 2^30 block numbers
    // for a naive walk.
    let b = take_free_block(&img);
    fill_block(&img, b, b as u32);
    set(&img, "/etc/fstab", "block[TIND]", b);
    refused(
        &img,
        dir.path(),
        &["/etc/fstab"],
        &format!("block {b} is listed twice"),
    );
}

#[test]
fn a_directory_with_a_looping_block_map_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext3.img");
    let b = take_free_block(&img);
    fill_block(&img, b, b as u32);
    set(&img, "/etc/init.d", "block[DIND]", b);
    refused(
        &img,
        dir.path(),
        &["/etc/init.d"],
        &format!("block {b} is listed twice"),
    );
}

#[test]
fn an_extent_leaf_overlapping_the_inode_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext4.img");
    // i_block: the 12-byte header (entries 0-2), then the first extent: ee_block (3),
    // ee_len | ee_start_hi << 16 (4), ee_start_lo (5). Two blocks ending in the table.
    let table = inode_block(&img, "/etc/hosts");
    set(&img, "/etc/hosts", "block[4]", 2);
    set(&img, "/etc/hosts", "block[5]", table - 1);
    refused(&img, dir.path(), &["/etc/hosts"], "is filesystem metadata");
}

#[test]
fn an_fstab_extent_pointing_into_the_inode_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext4.img");
    let table = inode_block(&img, "/etc/fstab");
    set(&img, "/etc/fstab", "block[5]", table);
    refused(
        &img,
        dir.path(),
        &["/etc/fstab"],
        &format!("block {table} is filesystem metadata"),
    );
}

#[test]
fn an_inode_listing_a_block_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext3.img");
    let b = bmap(&img, "/etc/inittab", 0);
    set(&img, "/etc/inittab", "block[1]", b);
    refused(
        &img,
        dir.path(),
        &["/etc/inittab"],
        &format!("block {b} is listed twice"),
    );
}

/// `path`'s content in a filesystem image (`img` may carry `?offset=N`).
fn cat(img: &str, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The byte offset of the output's root partition (the first Linux one).
fn root_offset(out: &Path) -> u64 {
    let o = Command::new("sfdisk").arg("-J").arg(out).output().unwrap();
    assert!(o.status.success(), "sfdisk -J {}", out.display());
    let j = json(&o.stdout);
    let parts = j["partitiontable"]["partitions"].as_array().unwrap();
    let start = parts
        .iter()
        .find(|p| {
            let t = p["type"].as_str().unwrap_or_default().to_ascii_lowercase();
            t == "83" || t == "0fc63daf-8483-4772-8e79-3d69d8477de4"
        })
        .and_then(|p| p["start"].as_u64())
        .unwrap();
    start * 512
}

/// With --repair: exit 0, e2fsck -fn finds the root clean, `files` read as in `src`.
fn repaired(src: &Path, dir: &Path, files: &[&str]) {
    let run = convert(src, dir, &["--repair"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = dir.join("out/out.img");
    let root = format!("{}?offset={}", out.display(), root_offset(&out));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn {root}: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    for f in files {
        let want = cat(&src.to_string_lossy(), f);
        assert!(!want.is_empty(), "{f} is empty in the source");
        assert!(cat(&root, f) == want, "{f} differs after the repair");
    }
}

#[test]
fn two_files_sharing_a_block_are_refused_or_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext3.img");
    let shared = bmap(&img, "/etc/group", 0);
    set(&img, "/etc/debian_version", "block[0]", shared);
    refused(
        &img,
        dir.path(),
        &["/etc/group", "/etc/debian_version"],
        &format!("block {shared} is owned by another file too"),
    );
    assert!(
        refused_hint(&img, dir.path()).contains("--repair"),
        "the hint names the option that repairs"
    );
    repaired(&img, dir.path(), &["/etc/group", "/etc/debian_version"]);
}

#[test]
fn a_data_block_marked_free_is_refused_or_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext4.img");
    let b = bmap(&img, "/etc/debian_version", 0);
    // Marked free with the free counts to match: nothing but the inode disagrees.
    debugfs(&img, true, &format!("freeb {b}"));
    adjust_free(&img, b, 1);
    refused(
        &img,
        dir.path(),
        &["/etc/debian_version"],
        &format!("block {b} is in use but the block bitmap marks it free"),
    );
    repaired(&img, dir.path(), &["/etc/debian_version"]);
}

/// The hint line of a refused conversion of `img`.
fn refused_hint(img: &Path, dir: &Path) -> String {
    let run = convert(img, dir, &[]);
    run.stderr
        .lines()
        .find(|l| l.starts_with("imgconv: hint: "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_hostile_fstab_the_inode_bitmap_calls_free_is_refused() {
    // The pass over in-use inodes does not see it; libext2fs reaches it by name all the
    // same, so it is checked as a fixup target.
    let dir = tempfile::tempdir().unwrap();
    let img = copy_of(dir.path(), "xen-ext3.img");
    let b = take_free_block(&img);
    fill_block(&img, b, b as u32);
    set(&img, "/etc/fstab", "block[TIND]", b);
    debugfs(&img, true, "freei /etc/fstab");
    refused(
        &img,
        dir.path(),
        &["/etc/fstab"],
        &format!("block {b} is listed twice"),
    );
}
