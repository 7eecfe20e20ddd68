//! Everything that is not a convertible ext2/3/4 guest gets a typed error naming what
//! was found. Foreign filesystems are made by their own mkfs when installed (scripts/setup
//! installs them); otherwise their signature is written where blkid looks for it.

use crate::support::stream as stream_util;

use imgconv_core::partition::PartitionError;
use imgconv_core::source::{self, Foreign, InspectError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use stream_util::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn sized(work: &Path, name: &str, mib: u64) -> PathBuf {
    let p = work.join(name);
    run(Command::new("truncate")
        .arg("-s")
        .arg(format!("{mib}M"))
        .arg(&p));
    p
}

fn put(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn foreign(err: InspectError) -> (Foreign, String) {
    match err {
        InspectError::Foreign { found, place, .. } => (found, place),
        other => panic!("expected Foreign, got {other:?}"),
    }
}

#[test]
fn foreign_filesystems_are_named() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut cases: Vec<(PathBuf, Foreign)> = Vec::new();

    let xfs = sized(w, "xfs.img", 300);
    if have("mkfs.xfs") {
        run(Command::new("mkfs.xfs").arg("-q").arg(&xfs));
    } else {
        put(&xfs, 0, b"XFSB");
    }
    cases.push((xfs, Foreign::Xfs));

    let btrfs = sized(w, "btrfs.img", 200);
    if have("mkfs.btrfs") {
        run(Command::new("mkfs.btrfs").arg("-q").arg(&btrfs));
    } else {
        put(&btrfs, 0x10040, b"_BHRfS_M");
    }
    cases.push((btrfs, Foreign::Btrfs));

    let luks = sized(w, "luks.img", 40);
    if have("cryptsetup") {
        let mut c = Command::new("cryptsetup");
        c.args([
            "luksFormat",
            "-q",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
        ])
        .arg(&luks)
        .arg("-")
        .stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"pass").unwrap();
        assert!(child.wait().unwrap().success());
    } else {
        put(&luks, 0, b"LUKS\xba\xbe");
    }
    cases.push((luks, Foreign::Luks));

    let reiser = sized(w, "reiser.img", 40);
    if have("mkreiserfs") {
        run(Command::new("mkreiserfs").args(["-q", "-f"]).arg(&reiser));
    } else {
        put(&reiser, 0x10034, b"ReIsEr2Fs");
    }
    cases.push((reiser, Foreign::Reiserfs));

    let swap = sized(w, "swap.img", 16);
    run(Command::new("mkswap").arg(&swap));
    cases.push((swap, Foreign::Swap));

    let fat = sized(w, "fat.img", 16);
    run(Command::new("mkfs.vfat").arg(&fat));
    cases.push((fat, Foreign::Fat));

    if have("mksquashfs") {
        let d = w.join("sqdir");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("x"), "x").unwrap();
        let sq = w.join("sq.img");
        run(Command::new("mksquashfs")
            .arg(&d)
            .arg(&sq)
            .args(["-quiet", "-no-progress"]));
        cases.push((sq, Foreign::Squashfs));
    }

    // LVM2 physical volume label (pvcreate needs a block device): sector 1.
    let lvm = sized(w, "lvm.img", 16);
    let mut label = vec![0u8; 32];
    label[..8].copy_from_slice(b"LABELONE");
    label[0x18..0x20].copy_from_slice(b"LVM2 001");
    put(&lvm, 512, &label);
    cases.push((lvm, Foreign::Lvm2));

    let gz = w.join("xen.img.gz");
    std::fs::write(w.join("plain"), noise(100_000, 3)).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        w.join("plain").display(),
        gz.display()
    )));
    // A gzip image is decompressed and what it holds is inspected: noise is unrecognised.
    assert!(
        matches!(
            source::inspect(&gz),
            Err(source::InspectError::Unrecognized { zeros: false, .. })
        ),
        "{:?}",
        source::inspect(&gz)
    );

    for (img, expected) in cases {
        let err = source::inspect(&img).unwrap_err();
        let msg = err.to_string();
        let (found, place) = foreign(err);
        assert_eq!(found, expected, "{}", img.display());
        assert_eq!(place, "the image");
        assert!(msg.contains(expected.describe()), "{msg}");
    }
}

#[test]
fn lvm_partition_is_named_with_its_number() {
    let work = tempfile::tempdir().unwrap();
    let disk = sized(work.path(), "disk.img", 40);
    let mut c = Command::new("sfdisk");
    c.args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"label: dos\nstart=2048, size=16384, type=83\nstart=18432, size=40000, type=8e\n",
        )
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut label = vec![0u8; 32];
    label[..8].copy_from_slice(b"LABELONE");
    label[0x18..0x20].copy_from_slice(b"LVM2 001");
    put(&disk, 18432 * 512 + 512, &label);
    let (found, place) = foreign(source::inspect(&disk).unwrap_err());
    assert_eq!((found, place.as_str()), (Foreign::Lvm2, "partition 2"));
}

#[test]
fn empty_tiny_zero_and_garbage_files() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let empty = w.join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        source::inspect(&empty),
        Err(InspectError::Empty { .. })
    ));

    let tiny = w.join("tiny.img");
    std::fs::write(&tiny, noise(100, 1)).unwrap();
    assert!(matches!(
        source::inspect(&tiny),
        Err(InspectError::TooSmall { size: 100, .. })
    ));

    let zeros = sized(w, "zeros.img", 8);
    let e = source::inspect(&zeros).unwrap_err();
    assert!(
        matches!(e, InspectError::Unrecognized { zeros: true, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("zeros"));

    let garbage = w.join("garbage.img");
    std::fs::write(&garbage, noise(4 << 20, 7)).unwrap();
    assert!(matches!(
        source::inspect(&garbage),
        Err(InspectError::Unrecognized { zeros: false, .. })
    ));

    assert!(matches!(
        source::inspect(w),
        Err(InspectError::NotAFile { .. })
    ));
    assert!(matches!(
        source::inspect(&w.join("missing.img")),
        Err(InspectError::Io { .. })
    ));
}

fn small_root(work: &Path, kind: &str, extra: &[&str]) -> PathBuf {
    let tree = work.join("tree");
    guest_tree(&tree, Init::Sysvinit);
    let img = work.join("xen.img");
    mkfs(kind, &tree, &img, 80, extra);
    img
}

#[test]
fn truncated_bare_image() {
    let work = tempfile::tempdir().unwrap();
    let img = small_root(work.path(), "ext4", &[]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(50 << 20).unwrap();
    match source::inspect(&img).unwrap_err() {
        InspectError::Truncated {
            fs_bytes,
            available,
            place,
            ..
        } => {
            assert_eq!(
                (fs_bytes, available, place.as_str()),
                (80 << 20, 50 << 20, "the image")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_partitioned_images() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let img = small_root(w, "ext3", &[]);
    let disk = w.join("disk.img");
    partitioned(&img, &disk, "dos", false, w);
    // The partition entry runs past the end of the file.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(60 << 20).unwrap();
    drop(f);
    assert!(matches!(
        source::inspect(&disk),
        Err(InspectError::Partition(PartitionError::OutOfBounds {
            number: 1,
            ..
        }))
    ));

    // The filesystem claims more than its partition holds.
    let disk2 = sized(w, "disk2.img", 100);
    let mut c = Command::new("sfdisk");
    c.args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk2)
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=102400, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", disk2.display()))
        .args(["bs=1M", "seek=1", "count=50", "conv=notrunc", "status=none"]));
    match source::inspect(&disk2).unwrap_err() {
        InspectError::Truncated {
            place,
            fs_bytes,
            available,
            ..
        } => {
            assert_eq!(
                (place.as_str(), fs_bytes, available),
                ("partition 1", 80 << 20, 50 << 20)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn external_journal_device_is_unsupported() {
    let work = tempfile::tempdir().unwrap();
    let j = sized(work.path(), "journal.img", 16);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-O", "journal_dev", "-b", "4096"])
        .arg(&j));
    match source::inspect(&j).unwrap_err() {
        InspectError::Unsupported { feature, why, .. } => {
            assert_eq!(feature, "journal_dev");
            assert!(why.contains("external journal"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_superblock_checksum() {
    let work = tempfile::tempdir().unwrap();
    let img = small_root(work.path(), "ext4", &[]);
    put(&img, 1024 + 0x78, b"tampered");
    let e = source::inspect(&img).unwrap_err();
    assert!(matches!(e, InspectError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("s_checksum"), "{e}");
}

#[test]
fn filesystem_without_a_guest() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("data");
    std::fs::create_dir_all(tree.join("home/user")).unwrap();
    std::fs::write(tree.join("home/user/notes"), "no OS here").unwrap();
    let img = work.path().join("data.img");
    mkfs("ext4", &tree, &img, 16, &[]);
    let e = source::inspect(&img).unwrap_err();
    assert!(matches!(e, InspectError::NoGuestRoot { .. }), "{e:?}");
    assert!(
        e.to_string().contains("without /etc/fstab and an init"),
        "{e}"
    );
}

#[test]
fn meta_bg_guest_is_read() {
    // The reader finds meta_bg group descriptors where e2fsprogs puts them.
    let work = tempfile::tempdir().unwrap();
    let img = small_root(work.path(), "ext4", &["-O", "meta_bg,^resize_inode"]);
    let i = source::inspect(&img).unwrap();
    assert!(i.fs.features.has("meta_bg"));
    assert_eq!(i.guest.hostname.as_deref(), Some("xenguest"));
    assert!(i.guest.warnings.is_empty(), "{:?}", i.guest.warnings);
}
