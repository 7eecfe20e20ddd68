//! The stream's direct I/O (`O_DIRECT` reads and writes past the page cache) against its
//! page-cache copy, on filesystems made by the real mkfs: both give the same bytes at the
//! same places and the same holes, e2fsck -fn finds the direct copy clean, and copies the
//! kernel cannot do direct (an output offset off its alignment) fall back to the page
//! cache with the same result.

use crate::support::stream as stream_util;
use crate::support::{skip, SkipKind};
use imgconv_core::blockio::Region;
use imgconv_core::stream::{copy_used_blocks_with, CopyMethod, StreamStats};
use imgconv_core::NoProgress;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use stream_util::*;

const MIB: u64 = 1 << 20;

fn copy(src: &Region, out: &Path, offset: u64, method: CopyMethod) -> StreamStats {
    let f = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(out)
        .unwrap();
    f.set_len(offset + src.len() + MIB).unwrap();
    copy_used_blocks_with(src, &f, offset, method, &mut NoProgress).unwrap()
}

/// Copy the root filesystem of `disk` (at `in_offset`) both ways at `out_offset` and
/// compare; returns the direct copy's stats.
fn both_ways(w: &Path, disk: &Path, in_offset: u64, fs_len: u64, out_offset: u64) -> StreamStats {
    let src = Region::open(disk).unwrap().sub(in_offset, fs_len).unwrap();
    let cached = w.join("cached.img");
    let direct = w.join("direct.img");
    let c = copy(&src, &cached, out_offset, CopyMethod::ReadWrite);
    let d = copy(&src, &direct, out_offset, CopyMethod::Direct);
    assert_eq!(
        c.direct_bytes, 0,
        "the page-cache copy reads nothing direct"
    );
    assert_eq!(
        (d.bytes_read, d.bytes_written, d.selected_bytes),
        (c.bytes_read, c.bytes_written, c.selected_bytes)
    );
    assert_eq!(
        sha256(&direct),
        sha256(&cached),
        "the same bytes at the same places"
    );
    assert_eq!(data_map(&direct), data_map(&cached), "the same holes");
    assert_fsck_clean(&direct, out_offset);
    d
}

/// The file's data ranges (`SEEK_DATA` / `SEEK_HOLE`): where its holes are, whatever
/// extent-tree blocks its filesystem spent on them.
fn data_map(path: &Path) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < len {
        let Ok(start) = seek(&f, SeekFrom::Data(at)) else {
            break;
        };
        let end = seek(&f, SeekFrom::Hole(start)).unwrap();
        out.push((start, end));
        at = end;
    }
    out
}

fn direct_supported(d: &StreamStats) -> bool {
    if d.direct_bytes == 0 {
        skip(
            SkipKind::Host,
            "the temporary directory's filesystem does not offer O_DIRECT (statx STATX_DIOALIGN): only the page-cache copy was compared",
        );
        return false;
    }
    true
}

#[test]
fn direct_and_page_cache_copies_agree_on_ext4_in_an_mbr_disk() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    guest_tree(&tree, Init::Systemd);
    // Big files across many chunks, with holes, beside the guest tree.
    std::fs::write(tree.join("srv-big.bin"), noise(20 * MIB as usize, 3)).unwrap();
    let f = File::create(tree.join("sparse.bin")).unwrap();
    f.set_len(40 * MIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &noise(MIB as usize, 5), 17 * MIB).unwrap();
    drop(f);
    let fs_img = w.join("fs.img");
    mkfs("ext4", &tree, &fs_img, 128, &["-b", "4096"]);
    let disk = w.join("disk.img");
    let off = partitioned(&fs_img, &disk, "dos", false, w);
    let fs_len = std::fs::metadata(&fs_img).unwrap().len();
    let d = both_ways(w, &disk, off, fs_len, MIB);
    if direct_supported(&d) {
        assert_eq!(d.direct_bytes, d.bytes_read, "every run was read direct");
    }
}

#[test]
fn direct_and_page_cache_copies_agree_on_ext2_with_1k_blocks() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    guest_tree(&tree, Init::Sysvinit);
    let fs_img = w.join("fs.img");
    mkfs("ext2", &tree, &fs_img, 48, &["-b", "1024"]);
    let fs_len = std::fs::metadata(&fs_img).unwrap().len();
    let d = both_ways(w, &fs_img, 0, fs_len, MIB);
    if direct_supported(&d) {
        assert_eq!(d.direct_bytes, d.bytes_read);
    }
}

/// An output offset no direct-I/O alignment divides: the copy goes through the page
/// cache, whole and equal.
#[test]
fn an_unaligned_output_offset_falls_back_to_the_page_cache() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    guest_tree(&tree, Init::Systemd);
    let fs_img = w.join("fs.img");
    mkfs("ext4", &tree, &fs_img, 64, &[]);
    let fs_len = std::fs::metadata(&fs_img).unwrap().len();
    let src = Region::open(&fs_img).unwrap().sub(0, fs_len).unwrap();
    let odd = MIB + 1;
    let d = copy(&src, &w.join("odd.img"), odd, CopyMethod::Direct);
    assert_eq!(
        d.direct_bytes, 0,
        "an unaligned offset is not copied direct"
    );
    let c = copy(&src, &w.join("aligned.img"), MIB, CopyMethod::ReadWrite);
    assert_eq!(d.bytes_written, c.bytes_written);
    let read = |p: &Path, at: u64| {
        let mut v = vec![0u8; fs_len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&File::open(p).unwrap(), &mut v, at).unwrap();
        v
    };
    assert!(
        read(&w.join("odd.img"), odd) == read(&w.join("aligned.img"), MIB),
        "the same filesystem bytes at either offset"
    );
}

/// Beside a graft: once the device has finished, the stream writes direct, and a unit the
/// device wrote keeps the device's bytes, not the source's.
#[test]
fn beside_a_finished_graft_the_stream_writes_direct_around_its_units() {
    use imgconv_core::blockio::BlockDevice;
    use imgconv_core::ext::write::cow::{CowDevice, WrittenRanges};
    use imgconv_core::stream::copy_used_blocks_around;
    use std::os::unix::fs::FileExt;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    guest_tree(&tree, Init::Systemd);
    std::fs::write(tree.join("srv-big.bin"), noise(12 * MIB as usize, 9)).unwrap();
    let fs_img = w.join("fs.img");
    mkfs("ext4", &tree, &fs_img, 64, &["-b", "4096"]);
    let fs_len = std::fs::metadata(&fs_img).unwrap().len();
    let src = Region::open(&fs_img).unwrap().sub(0, fs_len).unwrap();
    // The plain copy, and the unit the device will write: the superblock's 4 KiB.
    let plain = w.join("plain.img");
    copy(&src, &plain, MIB, CopyMethod::ReadWrite);
    let out_path = w.join("beside.img");
    let out = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&out_path)
        .unwrap();
    out.set_len(MIB + fs_len + MIB).unwrap();
    let written = WrittenRanges::new(4096);
    let dev = CowDevice::new(
        src.clone(),
        out.try_clone().unwrap(),
        MIB,
        Arc::clone(&written),
    );
    dev.write_at(0, &[0xab; 4096]).unwrap();
    written.device_finished();
    let stats = copy_used_blocks_around(
        &src,
        &out,
        MIB,
        &written,
        CopyMethod::Direct,
        &mut NoProgress,
    )
    .unwrap();
    if direct_supported(&stats) {
        assert_eq!(stats.direct_bytes, stats.bytes_read, "all of it direct");
    }
    let mut unit = vec![0u8; 4096];
    out.read_exact_at(&mut unit, MIB).unwrap();
    assert_eq!(unit, vec![0xab; 4096], "the device's unit is kept");
    // Everything else as the plain copy has it.
    let mut expect = vec![0u8; fs_len as usize];
    File::open(&plain)
        .unwrap()
        .read_exact_at(&mut expect, MIB)
        .unwrap();
    expect[..4096].fill(0xab);
    let mut got = vec![0u8; fs_len as usize];
    out.read_exact_at(&mut got, MIB).unwrap();
    assert!(got == expect, "the rest equals the plain copy");
    // While the device may still write, nothing goes direct.
    let busy = WrittenRanges::new(4096);
    let again = File::options()
        .write(true)
        .read(true)
        .open(w.join("plain.img"))
        .unwrap();
    let stats = copy_used_blocks_around(
        &src,
        &again,
        MIB,
        &busy,
        CopyMethod::Direct,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(
        stats.direct_bytes, 0,
        "no direct write beside a running graft"
    );
}
