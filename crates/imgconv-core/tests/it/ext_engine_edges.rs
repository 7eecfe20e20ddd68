//! The ext engine at its edges: refusals (dirty journal, corrupt or foreign images, an
//! image the OS will not let us write), what dropping without close does and does not
//! write, failure clean-up, directory growth and limits. Judged by e2fsck, debugfs and
//! dumpe2fs.

use crate::support::ext_fixture as ext_engine_util;

use ext_engine_util::*;
use imgconv_core::ext::write::{ExtError, ExtFs};
use imgconv_core::guestfs::{GuestFs, GuestFsError, NodeAttrs, TreeRead};
use std::io::{self, Read};
use std::path::Path;

fn attrs() -> NodeAttrs {
    NodeAttrs::root(0o644, 1_600_000_000)
}

fn open_err(img: &Path, offset: u64) -> ExtError {
    match ExtFs::open(img, offset) {
        Ok(fs) => panic!("{} opened: {fs:?}", img.display()),
        Err(e) => e,
    }
}

#[test]
fn superblock_facts_match_dumpe2fs() {
    for kind in [Kind::Ext2, Kind::Ext3, Kind::Ext4] {
        let fx = small_fixture(kind, "64M");
        let d = fx.dumpe2fs();
        let fs = ExtFs::open(&fx.img, 0).unwrap();
        assert_eq!(fs.uuid().to_string(), d["Filesystem UUID"]);
        assert_eq!(fs.block_size().to_string(), d["Block size"]);
        assert_eq!(fs.blocks_count().to_string(), d["Block count"]);
        assert_eq!(fs.free_blocks().to_string(), d["Free blocks"]);
        let features = &d["Filesystem features"];
        let has = |name: &str| features.split_whitespace().any(|f| f == name);
        assert_eq!(
            fs.feature_compat() & 0x4 != 0,
            has("has_journal"),
            "{kind:?}"
        );
        assert_eq!(
            fs.feature_compat() & 0x20 != 0,
            has("dir_index"),
            "{kind:?}"
        );
        assert_eq!(
            fs.feature_incompat() & 0x2 != 0,
            has("filetype"),
            "{kind:?}"
        );
        assert_eq!(fs.feature_incompat() & 0x40 != 0, has("extent"), "{kind:?}");
        assert_eq!(fs.feature_incompat() & 0x80 != 0, has("64bit"), "{kind:?}");
        assert_eq!(
            fs.feature_ro_compat() & 0x400 != 0,
            has("metadata_csum"),
            "{kind:?}"
        );
        assert_eq!(has("extent"), kind == Kind::Ext4);
    }
}

#[test]
fn a_journal_that_needs_recovery_is_refused_without_writing() {
    let fx = small_fixture(Kind::Ext4, "64M");
    run_ok(
        "debugfs",
        &[
            "-w",
            "-R",
            "feature needs_recovery",
            fx.img.to_str().unwrap(),
        ],
    );
    let before = fx.snapshot();
    let err = open_err(&fx.img, 0);
    assert!(
        matches!(err, ExtError::NeedsRecovery { offset: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("e2fsck"), "{err}");
    assert!(fx.snapshot() == before, "the refused image was modified");
}

#[test]
fn corrupt_or_foreign_images_are_typed_errors() {
    // ext2 with 1 KiB blocks: no checksums, so the library's own checks must catch these.
    let fx = small_fixture(Kind::Ext2, "64M");
    let good = fx.snapshot();
    let img = fx.dir.path().join("bad.img");
    // (what, change to the first 64 KiB)
    type Corruption = (&'static str, fn(&mut Vec<u8>));
    let cases: [Corruption; 9] = [
        ("zeroed magic", |b| b[1024 + 56..1024 + 58].fill(0)),
        ("huge block size", |b| b[1024 + 24] = 0xff),
        ("no inodes", |b| b[1024..1028].fill(0)),
        ("zero blocks per group", |b| b[1024 + 32..1024 + 36].fill(0)),
        ("first data block", |b| b[1024 + 20] = 7),
        ("group descriptors", |b| b[2048..2048 + 64].fill(0xee)),
        ("truncated", |b| b.truncate(100 * 1024)),
        ("all zeros", |b| b.iter_mut().for_each(|x| *x = 0)),
        ("empty file", |b| b.clear()),
    ];
    for (what, corrupt) in cases {
        let mut bytes = good.clone();
        corrupt(&mut bytes);
        std::fs::write(&img, &bytes).unwrap();
        match ExtFs::open(&img, 0) {
            Err(ExtError::Open { message, image, .. }) => {
                assert!(!message.is_empty(), "{what}");
                assert_eq!(image, img, "{what}");
            }
            Err(e) => panic!("{what}: unexpected {e}"),
            Ok(_) => panic!("{what}: the damaged image was opened"),
        }
    }
    // metadata_csum catches a flipped byte anywhere in the superblock.
    let fx4 = small_fixture(Kind::Ext4, "64M");
    let mut bytes = fx4.snapshot();
    bytes[1024 + 120] ^= 0x55; // inside s_volume_name
    std::fs::write(&img, &bytes).unwrap();
    let e = open_err(&img, 0);
    assert!(e.to_string().contains("checksum"), "{e}");
    // A filesystem past the end of the file, and paths that are not images.
    let e = open_err(&fx.img, 1 << 40);
    assert!(matches!(e, ExtError::Open { .. }), "{e}");
    let e = open_err(&fx.dir.path().join("missing.img"), 0);
    assert!(e.to_string().contains("No such file"), "{e}");
    let e = open_err(fx.dir.path(), 0);
    assert!(matches!(e, ExtError::Open { .. }), "{e}");
}

/// Random byte flips in an ext2 superblock (no checksum to catch them): every outcome is
/// either a clean error or a filesystem we can read and close, never a crash.
#[test]
fn random_superblock_damage_never_crashes() {
    let fx = small_fixture(Kind::Ext2, "32M");
    let good = fx.snapshot();
    let img = fx.dir.path().join("fuzz.img");
    let noise = pattern(99, 4096);
    let (mut refused, mut opened) = (0, 0);
    for run in 0..60 {
        let mut bytes = good.clone();
        for k in 0..3 {
            let r = &noise[(run * 6 + k * 2) % 4000..];
            // Offsets inside the used part of the superblock (first 0x170 bytes).
            let at = 1024 + (usize::from(r[0]) << 8 | usize::from(r[1])) % 0x170;
            bytes[at] ^= r[2] | 1;
        }
        std::fs::write(&img, &bytes).unwrap();
        match ExtFs::open(&img, 0) {
            Err(ExtError::Open { .. }) => refused += 1,
            Err(e) => panic!("run {run}: unexpected {e}"),
            Ok(mut fs) => {
                opened += 1;
                // Whatever the damage, reads answer with a value or a typed error.
                let _ = fs.read_dir("/", 100_000);
                let _ = fs.read_file("/etc/fstab", 1 << 20);
                let _ = fs.stat("/lib/modules/x");
                drop(fs);
            }
        }
    }
    eprintln!("superblock damage: {refused} refused, {opened} opened");
    assert_eq!(refused + opened, 60);
    assert!(refused > 0, "no damage was detected at all");
}

#[test]
fn an_image_the_os_will_not_let_us_write_is_refused() {
    let fx = small_fixture(Kind::Ext4, "64M");
    let path = fx.img.to_str().unwrap().to_string();
    // Root may write any mode, so as root make the file immutable instead.
    let root = run("id", &["-u"]).1.trim() == "0";
    struct Immutable(String);
    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .args(["-i", &self.0])
                .status();
        }
    }
    let _guard;
    if root {
        let (rc, _, err) = run("chattr", &["+i", &path]);
        if rc != 0 {
            crate::support::skip(
                crate::support::SkipKind::Host,
                &format!("the temporary directory's filesystem has no immutable flag ({err})"),
            );
            return;
        }
        _guard = Immutable(path.clone());
    } else {
        run_ok("chmod", &["0444", &path]);
    }
    let before = fx.snapshot();
    match open_err(&fx.img, 0) {
        ExtError::Open { message, .. } => assert!(
            message.contains("Operation not permitted") || message.contains("Permission denied"),
            "{message}"
        ),
        e => panic!("unexpected {e}"),
    }
    assert!(fx.snapshot() == before);
}

#[test]
fn reading_and_dropping_writes_nothing() {
    let fx = small_fixture(Kind::Ext4, "64M");
    let before = fx.snapshot();
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    assert_eq!(
        fs.read_file("/lib/modules/x", 100).unwrap().unwrap(),
        b"module x\n"
    );
    assert_eq!(
        fs.read_link("/etc/abs").unwrap().unwrap(),
        "/usr/lib/modules/x"
    );
    assert_eq!(fs.read_dir("/bigdir", 100_000).unwrap().unwrap().len(), 10);
    assert!(fs.stat("/etc/missing").unwrap().is_none());
    drop(fs);
    assert!(fx.snapshot() == before, "reading changed the image");
}

/// Dropping without close frees everything but writes no bitmaps, group descriptors or
/// superblock: the allocation counters on disk stay as they were. (Such an image is
/// inconsistent by design and is deleted by the caller.)
#[test]
fn drop_without_close_does_not_write_the_metadata() {
    let fx = small_fixture(Kind::Ext4, "64M");
    let before = fx.dumpe2fs();
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    let data = pattern(5, 3 << 20);
    fs.mkdir_p("/new/dir", attrs()).unwrap();
    fs.create_file("/new/dir/f", &mut &data[..], data.len() as u64, attrs())
        .unwrap();
    assert!(fs.free_blocks() < before["Free blocks"].parse::<u64>().unwrap() - 700);
    drop(fs);
    let after = fx.dumpe2fs();
    for key in ["Free blocks", "Free inodes", "Last write time"] {
        assert_eq!(after[key], before[key], "{key}");
    }
}

#[test]
fn open_and_close_without_changes_stays_clean() {
    let fx = fixture(Kind::Ext3, "256M", 1 << 20);
    ExtFs::open(&fx.img, fx.offset).unwrap().close().unwrap();
    fx.assert_fsck_clean();
    fx.assert_guards_intact();
}

/// A source that fails after `ok` bytes.
struct Failing {
    ok: usize,
}
impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("donor read failed"));
        }
        let n = buf.len().min(self.ok);
        buf[..n].fill(0x42);
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn a_failed_create_is_undone() {
    for kind in [Kind::Ext3, Kind::Ext4] {
        let fx = small_fixture(kind, "64M");
        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        let free = fs.free_blocks();
        let e = fs
            .create_file(
                "/etc/broken",
                &mut Failing { ok: 3 << 20 },
                8 << 20,
                attrs(),
            )
            .unwrap_err();
        assert!(
            matches!(&e, GuestFsError::Source { path, .. } if path == "/etc/broken"),
            "{e}"
        );
        let e = fs
            .create_file("/etc/short", &mut &b"abc"[..], 10, attrs())
            .unwrap_err();
        assert!(matches!(e, GuestFsError::Source { .. }), "{e}");
        assert!(fs.lstat("/etc/broken").unwrap().is_none());
        assert!(fs.lstat("/etc/short").unwrap().is_none());
        assert_eq!(fs.free_blocks(), free, "{kind:?}: blocks given back");
        // The directory still takes new entries.
        fs.create_file("/etc/broken", &mut &b"ok"[..], 2, attrs())
            .unwrap();
        fs.close().unwrap();
        fx.assert_fsck_clean();
        assert_eq!(fx.dump("/etc/broken"), b"ok");
    }
}

#[test]
fn directories_grow_and_keep_link_counts() {
    for kind in [Kind::Ext2, Kind::Ext4] {
        let fx = small_fixture(kind, "128M");
        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        fs.mkdir_p("/many", attrs()).unwrap();
        for i in 0..120 {
            fs.mkdir_p(&format!("/many/sub-{i:03}-{}", "d".repeat(40)), attrs())
                .unwrap();
        }
        for i in 0..300 {
            let name = format!("/many/file-{i:03}-{}", "f".repeat(60));
            fs.create_file(&name, &mut &b"x"[..], 1, attrs()).unwrap();
        }
        // Move one subdirectory out and one file in.
        let sub = format!("/many/sub-000-{}", "d".repeat(40));
        fs.rename(&sub, "/etc/sub-moved").unwrap();
        fs.rename("/etc/hostname", "/many/hostname").unwrap();
        assert_eq!(
            fs.read_dir("/many", 100_000).unwrap().unwrap().len(),
            119 + 300 + 1
        );
        fs.close().unwrap();
        fx.assert_fsck_clean();
        let many = fx.stat("/many");
        assert_eq!(many.links, 2 + 119, "{kind:?}");
        assert!(
            many.size > 4 * 4096,
            "{kind:?}: the directory grew ({})",
            many.size
        );
        assert_eq!(
            fx.stat("/etc").links,
            3,
            "{kind:?}: /etc gained a subdirectory"
        );
        assert_eq!(fx.stat("/etc/sub-moved").links, 2);
    }
}

#[test]
fn a_directory_cannot_move_inside_itself() {
    let fx = small_fixture(Kind::Ext4, "64M");
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    fs.mkdir_p("/a/b/c", attrs()).unwrap();
    for to in ["/a/b/c/a", "/a/x", "/etc/../a/b/y"] {
        let e = fs.rename("/a", to).unwrap_err();
        assert!(
            matches!(e, GuestFsError::Engine { op: "rename", .. }),
            "{to}: {e}"
        );
    }
    // But into a sibling is fine.
    fs.mkdir_p("/z", attrs()).unwrap();
    fs.rename("/a/b", "/z/b").unwrap();
    fs.close().unwrap();
    fx.assert_fsck_clean();
    assert_eq!(fx.stat("/z/b/c").kind, "directory");
}

#[test]
fn names_and_targets_are_bounded() {
    let fx = fixture_full(Kind::Ext4, "64M", 0, &["-b", "4096"], 10);
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    let long = format!("/etc/{}", "n".repeat(256));
    let e = fs
        .create_file(&long, &mut &b""[..], 0, attrs())
        .unwrap_err();
    assert!(matches!(e, GuestFsError::Engine { op: "name", .. }), "{e}");
    let max = format!("/etc/{}", "n".repeat(255));
    fs.create_file(&max, &mut &b"m"[..], 1, attrs()).unwrap();
    let e = fs
        .symlink("/etc/l", &"t".repeat(4096), attrs())
        .unwrap_err();
    assert!(
        matches!(e, GuestFsError::Engine { op: "symlink", .. }),
        "{e}"
    );
    let e = fs.symlink("/etc/l", "", attrs()).unwrap_err();
    assert!(
        matches!(e, GuestFsError::Engine { op: "symlink", .. }),
        "{e}"
    );
    let e = fs.stat("/etc/a\0b").unwrap_err();
    assert!(matches!(e, GuestFsError::Engine { .. }), "{e}");
    fs.symlink("/etc/l", &"t".repeat(4095), attrs()).unwrap();
    assert_eq!(fs.read_link("/etc/l").unwrap().unwrap().len(), 4095);
    fs.close().unwrap();
    fx.assert_fsck_clean();
    assert_eq!(fx.dump(&max), b"m");
}

/// A guest made with `inline_data` (small files and directories stored in the inode):
/// lookups, reads and edits work, new symlinks may be inline, and the result is clean.
#[test]
fn inline_data_guests_work() {
    const INLINE_DATA_FL: u32 = 0x1000_0000;
    let fx = fixture_full(
        Kind::Ext4,
        "64M",
        0,
        &["-O", "inline_data", "-b", "4096"],
        10,
    );
    assert_ne!(fx.stat("/etc/hostname").flags & INLINE_DATA_FL, 0);
    assert_ne!(fx.stat("/usr/lib/modules").flags & INLINE_DATA_FL, 0);
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    // mkfs -d stored these inline.
    assert_eq!(
        fs.read_file("/etc/hostname", 100).unwrap().unwrap(),
        b"xenguest\n"
    );
    assert_eq!(
        fs.read_file("/lib/modules/x", 100).unwrap().unwrap(),
        b"module x\n"
    );
    assert_eq!(fs.read_dir("/etc", 100_000).unwrap().unwrap().len(), 6);
    assert_eq!(
        fs.read_dir("/lib/modules", 100_000).unwrap().unwrap().len(),
        1
    );
    // Adding entries to an inline directory moves it to a block.
    for i in 0..20 {
        let p = format!("/lib/modules/added-module-{i}");
        fs.create_file(&p, &mut &b"m"[..], 1, attrs()).unwrap();
    }
    // Grow an inline file past the inode, and add to an inline directory.
    let big = pattern(3, 10_000);
    fs.replace_content("/etc/hostname", &big).unwrap();
    fs.create_file("/etc/new", &mut &b"n"[..], 1, attrs())
        .unwrap();
    let mid = format!("/{}", "m".repeat(100));
    fs.symlink("/etc/mid", &mid, attrs()).unwrap();
    assert_eq!(fs.read_link("/etc/mid").unwrap().unwrap(), mid);
    fs.remove("/etc/escape").unwrap();
    fs.close().unwrap();
    fx.assert_fsck_clean();
    assert_eq!(fx.dump("/etc/hostname"), big);
    assert_eq!(fx.dump("/etc/new"), b"n");
    assert_eq!(fx.dump("/usr/lib/modules/added-module-19"), b"m");
    assert_ne!(
        fx.stat("/etc/mid").flags & INLINE_DATA_FL,
        0,
        "an inline symlink"
    );
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    assert_eq!(fs.read_link("/etc/mid").unwrap().unwrap(), mid);
    assert_eq!(
        fs.read_file("/etc/hostname", 1 << 20).unwrap().unwrap(),
        big
    );
}

/// A full filesystem: the write fails as "no space in the guest" with libext2fs's own
/// message, the half-written file is freed, and the filesystem stays consistent and usable.
#[test]
fn a_full_filesystem_is_a_clear_error() {
    let fx = small_fixture(Kind::Ext4, "16M");
    let mut fs = ExtFs::open(&fx.img, 0).unwrap();
    let free = fs.free_blocks();
    let data = pattern(8, 32 << 20);
    let e = fs
        .create_file("/etc/huge", &mut &data[..], data.len() as u64, attrs())
        .unwrap_err();
    match &e {
        GuestFsError::NoSpace {
            path,
            why,
            in_guest,
            ..
        } => {
            assert_eq!(path, "/etc/huge");
            assert!(why.contains("allocate"), "{why}");
            assert!(in_guest, "the guest filesystem is what is full");
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(e.kind(), imgconv_core::ErrorKind::Output);
    assert!(fs.lstat("/etc/huge").unwrap().is_none());
    assert_eq!(fs.free_blocks(), free);
    fs.create_file("/etc/small", &mut &b"fits"[..], 4, attrs())
        .unwrap();
    fs.close().unwrap();
    fx.assert_fsck_clean();
    assert_eq!(fx.dump("/etc/small"), b"fits");
}

/// The inode and path that own `block`, found with debugfs icheck and ncheck.
fn owner_of(fx: &Fixture, block: u64) -> (u32, String) {
    let out = fx.debugfs(&[format!("icheck {block}")]);
    let ino: u32 = out[0]
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("nobody owns block {block}:\n{}", out[0]));
    let out = fx.debugfs(&[format!("ncheck {ino}")]);
    let path = out[0]
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no name for inode {ino}:\n{}", out[0]));
    (ino, format!("/{}", path.trim_start_matches('/')))
}

/// Create files of the given sizes until the filesystem is full.
fn fill_up(fs: &mut ExtFs, n: &mut u64, sizes: &[usize]) {
    for &size in sizes {
        loop {
            let data = pattern(*n, size);
            let path = format!("/fill-{n}");
            *n += 1;
            if fs
                .create_file(&path, &mut &data[..], size as u64, attrs())
                .is_err()
            {
                break;
            }
        }
    }
}

/// The file holding the filesystem's very last block can be emptied and removed
/// (`ext2fs_punch` in e2fsprogs 1.47 refuses exactly that case; the engine frees blocks
/// itself).
#[test]
fn the_file_on_the_last_block_can_be_replaced_and_removed() {
    for kind in [Kind::Ext3, Kind::Ext4] {
        let fx = small_fixture(kind, "16M");
        let last = fx.dumpe2fs()["Block count"].parse::<u64>().unwrap() - 1;
        let mut n = 0;
        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        fill_up(&mut fs, &mut n, &[1 << 20, 16 << 10, 1 << 10]);
        fs.close().unwrap();
        fx.assert_fsck_clean();
        let (owner, path) = owner_of(&fx, last);

        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        fs.replace_content(&path, b"now small\n").unwrap();
        fs.close().unwrap();
        fx.assert_fsck_clean();
        assert_eq!(fx.stat(&path).ino, owner, "{kind:?}: same inode");
        assert_eq!(fx.dump(&path), b"now small\n");

        // Again for removal: fill up, find the owner of the last block, remove it.
        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        fill_up(&mut fs, &mut n, &[16 << 10, 1 << 10]);
        fs.close().unwrap();
        let (_, path) = owner_of(&fx, last);
        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        let free = fs.free_blocks();
        fs.remove(&path).unwrap();
        assert!(fs.free_blocks() > free, "{kind:?}: blocks freed");
        fs.close().unwrap();
        fx.assert_fsck_clean();
        assert!(Stat::parse(&fx.debugfs(&[format!("stat {path}")])[0]).is_none());
    }
}
