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
