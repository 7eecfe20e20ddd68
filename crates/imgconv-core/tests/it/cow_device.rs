//! The copy-on-write block device (ext::write::cow) under libext2fs itself: the ext engine grafts
//! into the filesystem the stream will produce before (or while) the stream writes it, and
//! the stream skips what the graft wrote. Judged by OUTSIDE tools: `e2fsck -fn
//! 'out?offset=N'` must be clean and debugfs must read the grafted files, the replaced
//! fstab and no removed file, whatever order the stream's chunks and the graft's writes
//! come in (ext2/3/4, 1 KiB blocks smaller than the 4 KiB unit, and 4 KiB blocks). The
//! device's byte-level behaviour is unit-tested in src/ext/write/cow.rs.

use crate::support::ext_fixture as ext_engine_util;

use ext_engine_util::*;
use imgconv_core::blockio::Region;
use imgconv_core::ext::write::cow::{CowDevice, WrittenRanges};
use imgconv_core::ext::write::ExtFs;
use imgconv_core::guestfs::{GuestFs, NodeAttrs};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

type SharedWritten = Arc<WrittenRanges>;

const OUT_OFFSET: u64 = 1 << 20;
const CHUNK: usize = 256 << 10;

fn device(src: &Path, out: &Path, written: &SharedWritten) -> CowDevice {
    CowDevice::new(
        Region::open(src).unwrap(),
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(out)
            .unwrap(),
        OUT_OFFSET,
        Arc::clone(written),
    )
}

/// A new sparse output in `dir` with room for the filesystem at [`OUT_OFFSET`].
fn fresh_output(dir: &Path, fs_len: u64) -> std::path::PathBuf {
    let out = dir.join("out.img");
    File::create(&out)
        .unwrap()
        .set_len(OUT_OFFSET + fs_len)
        .unwrap();
    out
}

/// The graft: new directories and files (one of several MiB), a replaced file, a removed one.
fn graft(fs: &mut ExtFs) {
    let attrs = NodeAttrs::root(0o755, 1_700_000_000);
    fs.mkdir_p("/lib/modules/6.1.0-cow/kernel", attrs).unwrap();
    for i in 0..40u64 {
        let data = pattern(i, 1000 + 3000 * i as usize);
        fs.create_file(
            &format!("/lib/modules/6.1.0-cow/kernel/m{i:02}.ko"),
            &mut data.as_slice(),
            data.len() as u64,
            attrs,
        )
        .unwrap();
    }
    let big = pattern(99, 5 << 20);
    fs.create_file(
        "/boot-vmlinuz",
        &mut big.as_slice(),
        big.len() as u64,
        attrs,
    )
    .unwrap();
    fs.replace_content("/etc/fstab", b"UUID=cow / ext4 defaults 0 1\n")
        .unwrap();
    fs.remove("/etc/old-config").unwrap();
}

/// Stream the chunks `which` of the source filesystem into the output, skipping written units.
fn stream(
    src: &Path,
    fs_len: u64,
    out: &Path,
    written: &SharedWritten,
    which: impl Iterator<Item = u64>,
) {
    let src = File::open(src).unwrap();
    let out = fs::OpenOptions::new().write(true).open(out).unwrap();
    let mut buf = vec![0u8; CHUNK];
    for c in which {
        let off = c * CHUNK as u64;
        let len = (fs_len - off).min(CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..len], off).unwrap();
        let data = &buf[..len];
        written
            .write_unwritten(off, off + len as u64, |s, e| {
                out.write_all_at(
                    &data[(s - off) as usize..(e - off) as usize],
                    OUT_OFFSET + s,
                )
            })
            .unwrap();
    }
}

fn judge(out: &Path) {
    let spec = format!("{}?offset={OUT_OFFSET}", out.display());
    let (rc, o, e) = run("e2fsck", &["-fn", &spec]);
    assert_eq!(rc, 0, "e2fsck -fn {spec}:\n{o}\n{e}");
    let cat = |p: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", &format!("cat {p}"), &spec])
            .output()
            .unwrap();
        out.stdout
    };
    assert_eq!(cat("/etc/fstab"), b"UUID=cow / ext4 defaults 0 1\n");
    assert_eq!(cat("/boot-vmlinuz"), pattern(99, 5 << 20));
    assert_eq!(
        cat("/usr/lib/modules/6.1.0-cow/kernel/m39.ko"),
        pattern(39, 1000 + 3000 * 39)
    );
    assert_eq!(cat("/etc/hostname"), b"xenguest\n");
    let ls = run_ok("debugfs", &["-R", "ls -l /etc", &spec]);
    assert!(!ls.contains("old-config"), "{ls}");
}

#[derive(Clone, Copy, Debug)]
enum Order {
    /// The whole stream after the graft closed: every stale block must be skipped.
    StreamLast,
    /// Half the stream, the graft, the other half.
    Interleaved,
    /// The stream first (what the sequential path does).
    StreamFirst,
}

fn run_case(kind: Kind, mkfs_opts: &[&str], order: Order) {
    let fx = fixture_full(kind, "64M", 0, mkfs_opts, 10);
    let src_before = fs::read(&fx.img).unwrap();
    let out = fresh_output(fx.dir.path(), fx.fs_len);
    let written = WrittenRanges::new(1024);
    let chunks = fx.fs_len.div_ceil(CHUNK as u64);
    let do_graft = || {
        let mut fs = ExtFs::open_cow(device(&fx.img, &out, &written), &out, OUT_OFFSET).unwrap();
        graft(&mut fs);
        fs.close().unwrap();
    };
    match order {
        Order::StreamLast => {
            do_graft();
            stream(&fx.img, fx.fs_len, &out, &written, 0..chunks);
        }
        Order::Interleaved => {
            stream(&fx.img, fx.fs_len, &out, &written, (0..chunks).step_by(2));
            do_graft();
            stream(&fx.img, fx.fs_len, &out, &written, (1..chunks).step_by(2));
        }
        Order::StreamFirst => {
            stream(&fx.img, fx.fs_len, &out, &written, 0..chunks);
            do_graft();
        }
    }
    judge(&out);
    assert!(fs::read(&fx.img).unwrap() == src_before, "source changed");
    let w = written.written_bytes();
    assert!(
        w > 0 && w < fx.fs_len / 2,
        "{w} bytes written through the device"
    );
}

#[test]
fn graft_through_cow_then_stream_ext4_1k_blocks() {
    for order in [Order::StreamLast, Order::Interleaved, Order::StreamFirst] {
        run_case(Kind::Ext4, &["-b", "1024"], order);
    }
}

#[test]
fn graft_through_cow_then_stream_ext4_4k_and_ext2_ext3() {
    run_case(Kind::Ext4, &["-b", "4096"], Order::StreamLast);
    run_case(Kind::Ext4, &["-b", "4096"], Order::Interleaved);
    run_case(Kind::Ext2, &[], Order::StreamLast);
    run_case(Kind::Ext3, &["-b", "4096"], Order::Interleaved);
}

/// Without the skip the stream's stale copies win: the same graft with a plain stream
/// afterwards loses the grafted files (so the tests above are not vacuous).
#[test]
fn stream_without_skip_would_clobber_the_graft() {
    let fx = fixture_full(Kind::Ext4, "64M", 0, &["-b", "4096"], 10);
    let out = fresh_output(fx.dir.path(), fx.fs_len);
    let written = WrittenRanges::new(1024);
    let mut fs = ExtFs::open_cow(device(&fx.img, &out, &written), &out, OUT_OFFSET).unwrap();
    graft(&mut fs);
    fs.close().unwrap();
    let plain = WrittenRanges::new(1024);
    stream(
        &fx.img,
        fx.fs_len,
        &out,
        &plain,
        0..fx.fs_len.div_ceil(CHUNK as u64),
    );
    let spec = format!("{}?offset={OUT_OFFSET}", out.display());
    let ls = run_ok("debugfs", &["-R", "ls -l /", &spec]);
    assert!(
        !ls.contains("boot-vmlinuz"),
        "the stale root directory should have won:\n{ls}"
    );
    let fstab = run_ok("debugfs", &["-R", "cat /etc/fstab", &spec]);
    assert_eq!(fstab, FSTAB, "the stale fstab should have won");
}
