//! Regressions found by the mutation suite, each rebuilt from scratch on a small
//! guest made with `mkfs -d`, corrupted with an outside tool (`debugfs -w`, which keeps
//! the metadata checksums right, or a byte written with `dd` semantics), then run through
//! the library. Every case must end in a typed error or a correct conversion, with the
//! input untouched and nothing left in the output directory.

use crate::support;

use imgconv_core::convert::{convert, ConvertOptions};
use imgconv_core::ext::read::{ExtReadError, ExtReader};
use imgconv_core::source::{self, InspectError};
use imgconv_core::stream::StreamError;
use imgconv_core::{Error, NoProgress};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal guest root: /etc/fstab, an init, merged-/usr symlinks.
fn guest_tree(root: &Path) {
    for d in ["etc", "usr/sbin", "usr/lib", "usr/bin", "boot", "var"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/fstab"),
        "/dev/xvda1 / ext4 defaults 0 1\n/dev/xvda2 none swap sw 0 0\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/hostname"), "regress\n").unwrap();
    std::fs::copy("/usr/bin/true", root.join("usr/sbin/init")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    // Enough data that the bitmap has many set bits.
    std::fs::write(root.join("var/data.bin"), vec![0x5a; 256 * 1024]).unwrap();
}

fn mkfs(dir: &Path, kind: &str, extra: &[&str]) -> PathBuf {
    let tree = dir.join(format!("tree-{kind}"));
    guest_tree(&tree);
    let img = dir.join(format!("{kind}.img"));
    support::mkfs(kind, Some(&tree), &img, 32, extra);
    img
}

fn sha256(p: &Path) -> String {
    sh("sha256sum", &[p.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn left_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A symlink on the way to /sbin/init whose inode claims 4 GiB: ext4-view allocates a
/// symlink target's claimed size at once, which aborted the whole process ("memory
/// allocation of 4294967304 bytes failed") before paths were resolved by ExtReader.
#[test]
fn symlink_with_absurd_size_is_a_typed_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "ext4", &[]);
    // debugfs recomputes the inode checksum, so the size reaches the reader.
    sh(
        "debugfs",
        &[
            "-w",
            "-R",
            "sif /sbin size 0x100000008",
            img.to_str().unwrap(),
        ],
    );
    let before = sha256(&img);

    let region = imgconv_core::blockio::Region::open(&img).unwrap();
    let reader = ExtReader::open(region, "regress").unwrap();
    match reader.metadata("/sbin/init") {
        Err(ExtReadError::TooLarge { size, .. }) => assert_eq!(size, 0x1_0000_0008),
        other => panic!("metadata through the corrupt symlink: {other:?}"),
    }
    assert!(matches!(
        reader.read_link("/sbin"),
        Err(ExtReadError::TooLarge { .. })
    ));
    // Paths that do not cross it still resolve, also through the other symlinks.
    assert!(reader.metadata("/usr/sbin/init").unwrap().is_some());
    assert_eq!(
        reader.read_link("/lib").unwrap().as_deref(),
        Some("usr/lib")
    );
    // `..` after a symlink is the parent of its target, as in the kernel: /bin/.. is /usr.
    assert!(reader.metadata("/bin/../sbin/init").unwrap().is_some());
    assert!(reader.metadata("/bin/../etc/fstab").unwrap().is_none());

    // Inspection still finds the guest (through /usr/sbin/init or reports it clearly).
    let _ = source::inspect(&img);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let fx = support::synthetic();
    let opts = ConvertOptions::new(&img, Some(fx.join("donor-dir")), out_dir.join("o.img"));
    match convert(&opts, &mut NoProgress) {
        Ok(_) => {}
        Err(e) => {
            assert!(left_in(&out_dir).is_empty(), "{e}: {:?}", left_in(&out_dir));
        }
    }
    assert_eq!(sha256(&img), before, "the input is never written");
}

/// A symlink loop is reported as such, not followed forever.
#[test]
fn symlink_loop_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "ext4", &[]);
    let spec = img.to_str().unwrap();
    sh(
        "debugfs",
        &["-w", "-R", "symlink /etc/loop-a /etc/loop-b", spec],
    );
    sh("debugfs", &["-w", "-R", "symlink /etc/loop-b loop-a", spec]);
    let region = imgconv_core::blockio::Region::open(&img).unwrap();
    let reader = ExtReader::open(region, "regress").unwrap();
    match reader.metadata("/etc/loop-a") {
        Err(ExtReadError::Path { why, .. }) => assert!(why.contains("symbolic links"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Not following the last component is fine.
    assert_eq!(
        reader.read_link("/etc/loop-a").unwrap().as_deref(),
        Some("/etc/loop-b")
    );
}

/// Clear one used bit of `group 0`'s block bitmap (no bitmap checksums on ext2/ext3).
fn free_one_used_block(img: &Path) -> u64 {
    let dump = sh("dumpe2fs", &[img.to_str().unwrap()]);
    let bs: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let bitmap: u64 = dump
        .lines()
        .find_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    // A data block of /var/data.bin: blocks lists its physical blocks.
    let blocks = sh(
        "debugfs",
        &["-R", "blocks /var/data.bin", img.to_str().unwrap()],
    );
    let data: u64 = blocks.split_whitespace().nth(3).unwrap().parse().unwrap();
    let first_data_block = u64::from(bs == 1024);
    let bit = data - first_data_block;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut byte = [0u8];
    let pos = bitmap * bs + bit / 8;
    f.read_exact_at(&mut byte, pos).unwrap();
    assert_ne!(byte[0] & (1 << (bit % 8)), 0, "block {data} is in use");
    byte[0] &= !(1 << (bit % 8));
    f.write_all_at(&byte, pos).unwrap();
    data
}

/// A block bitmap that calls a used block free made the stream skip it and the graft
/// allocate over it (an inode table block, in the case the suite found): now a typed
/// error before anything is written, naming the group and the repair.
#[test]
fn inconsistent_block_bitmap_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["ext2", "ext3"] {
        let img = mkfs(dir.path(), kind, &[]);
        let freed = free_one_used_block(&img);
        let rc = support::e2fsck_n(img.to_str().unwrap()).0;
        assert_eq!(rc, 4, "e2fsck sees the corruption too (block {freed})");
        refused_as_inconsistent_bitmap(&img, &dir.path().join(format!("out-{kind}")), "free");
    }
}

/// Converting `img` into `out_dir` fails with `InconsistentBitmap` for group 0, its reason
/// naming `why_word`; nothing is left in `out_dir` and `img` is unchanged.
fn refused_as_inconsistent_bitmap(img: &Path, out_dir: &Path, why_word: &str) {
    let before = sha256(img);
    std::fs::create_dir(out_dir).unwrap();
    let fx = support::synthetic();
    let opts = ConvertOptions::new(img, Some(fx.join("donor-dir")), out_dir.join("o.img"));
    match convert(&opts, &mut NoProgress) {
        Err(Error::Stream(StreamError::InconsistentBitmap { group, why, .. })) => {
            assert_eq!(group, 0);
            assert!(why.contains(why_word), "{why}");
        }
        other => panic!("{}: {:?}", img.display(), other.map(|c| c.output)),
    }
    assert!(left_in(out_dir).is_empty(), "{:?}", left_in(out_dir));
    assert_eq!(sha256(img), before);
}

/// Flip two bits of group 0's block bitmap so that its free count still agrees with the
/// descriptor: an inode-table block marked free, a free block marked used (the mutation
/// suite's ext4-gpt case 175 did this; the graft then allocated over the inode table).
#[test]
fn bitmap_calling_an_inode_table_block_free_is_refused_even_when_counts_agree() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "ext2", &[]);
    let dump = sh("dumpe2fs", &[img.to_str().unwrap()]);
    let num = |prefix: &str| -> (u64, u64) {
        // Group lines are indented ("  Free blocks: 660-8192"); the header's are not.
        let r = dump
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {dump}"));
        let range = r.split_whitespace().next().unwrap().trim_end_matches(',');
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let bs: u64 = num("Block size:").0;
    let bitmap = num("  Block bitmap at ").0;
    let itable = num("  Inode table at ").0;
    let free = num("  Free blocks: ").0;
    let first_data_block = u64::from(bs == 1024);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    for (block, used) in [(itable + 1, false), (free, true)] {
        let bit = block - first_data_block;
        let pos = bitmap * bs + bit / 8;
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, pos).unwrap();
        assert_eq!(byte[0] & (1 << (bit % 8)) != 0, !used, "block {block}");
        byte[0] ^= 1 << (bit % 8);
        f.write_all_at(&byte, pos).unwrap();
    }
    drop(f);
    refused_as_inconsistent_bitmap(&img, &dir.path().join("out"), "inode table");
}

/// The unmodified small guest converts (so the failures above are the corruption's).
#[test]
fn pristine_small_guest_converts() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "ext3", &[]);
    let fx = support::synthetic();
    let out = dir.path().join("o.img");
    let opts = ConvertOptions::new(&img, Some(fx.join("donor-dir")), &out);
    let done = convert(&opts, &mut NoProgress).expect("pristine guest converts");
    let root = done.plan.disk.root().start_bytes();
    support::assert_e2fsck_clean(&support::e2fs_spec(&out, root));
    // Inspection errors are typed too: a zero-length image.
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        source::inspect(&empty),
        Err(InspectError::Empty { .. })
    ));
}
