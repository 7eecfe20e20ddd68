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

/// Drop `path`'s pages from the page cache (written back first), as after a reboot.
fn evict(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

/// An ext4 filesystem (4 KiB blocks) of the guest tree plus `mib` MiB of file data, and
/// its window.
fn fs_with_big_file(w: &Path, mib: u64, seed: u64) -> (Region, u64) {
    let tree = w.join("tree");
    guest_tree(&tree, Init::Systemd);
    std::fs::write(tree.join("srv-big.bin"), noise((mib * MIB) as usize, seed)).unwrap();
    let fs_img = w.join("fs.img");
    mkfs("ext4", &tree, &fs_img, 64, &["-b", "4096"]);
    let fs_len = std::fs::metadata(&fs_img).unwrap().len();
    (
        Region::open(&fs_img).unwrap().sub(0, fs_len).unwrap(),
        fs_len,
    )
}

/// A filesystem holding 24 MiB of file data, so that its runs are long enough to be
/// read direct.
fn long_runs_fixture(w: &Path) -> (Region, u64) {
    fs_with_big_file(w, 24, 11)
}

/// A source that is not in the page cache is read with O_DIRECT as well, and the copy
/// equals the page-cache copy byte for byte.
#[test]
fn an_uncached_source_is_read_direct_with_the_same_result() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (src, _) = long_runs_fixture(w);
    let plain = w.join("plain.img");
    let c = copy(&src, &plain, MIB, CopyMethod::ReadWrite);
    evict(&w.join("fs.img"));
    let direct = w.join("direct.img");
    let d = copy(&src, &direct, MIB, CopyMethod::Direct);
    if !direct_supported(&d) {
        return;
    }
    assert!(
        d.direct_read_bytes >= 24 * MIB,
        "the big file's runs were read direct: {} bytes",
        d.direct_read_bytes
    );
    assert!(d.direct_read_bytes <= d.direct_bytes);
    assert_eq!(c.direct_read_bytes, 0, "the page-cache copy reads buffered");
    assert_eq!(
        (d.bytes_read, d.bytes_written),
        (c.bytes_read, c.bytes_written)
    );
    assert_eq!(sha256(&direct), sha256(&plain), "the same bytes");
    assert_eq!(data_map(&direct), data_map(&plain), "the same holes");
    assert_fsck_clean(&direct, MIB);
}

/// A source already in the page cache (just written, as a decompressed input is) is
/// read from there, not again from the disk, though the copy still writes direct.
#[test]
fn a_cached_source_is_read_through_the_page_cache() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (src, _) = long_runs_fixture(w);
    // mkfs has just written it; read it all once more to be sure every page is there.
    std::io::copy(
        &mut File::open(w.join("fs.img")).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    let d = copy(&src, &w.join("direct.img"), MIB, CopyMethod::Direct);
    if !direct_supported(&d) {
        return;
    }
    assert_eq!(d.direct_read_bytes, 0, "nothing read direct");
    assert_eq!(d.direct_bytes, d.bytes_read, "all of it written direct");
}

/// A guest filesystem with 12 MiB of file data, its window, and its plain copy at 1 MiB.
fn beside_fixture(w: &Path) -> (Region, std::path::PathBuf, u64) {
    let (src, fs_len) = fs_with_big_file(w, 12, 9);
    let plain = w.join("plain.img");
    copy(&src, &plain, MIB, CopyMethod::ReadWrite);
    (src, plain, fs_len)
}

/// A fresh output file for the copy at 1 MiB.
fn fresh_output(path: &Path, fs_len: u64) -> File {
    let out = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    out.set_len(MIB + fs_len + MIB).unwrap();
    out
}

/// The output's copy equals the plain copy, except its first 4 KiB unit holds `unit`.
fn assert_plain_but_first_unit(out: &File, plain: &Path, fs_len: u64, unit: u8) {
    use std::os::unix::fs::FileExt;
    let mut expect = vec![0u8; fs_len as usize];
    File::open(plain)
        .unwrap()
        .read_exact_at(&mut expect, MIB)
        .unwrap();
    expect[..4096].fill(unit);
    let mut got = vec![0u8; fs_len as usize];
    out.read_exact_at(&mut got, MIB).unwrap();
    assert!(got[..4096] == expect[..4096], "the device's unit is kept");
    assert!(got == expect, "the rest equals the plain copy");
}

/// The stream of `src` into `out` at 1 MiB beside the device recording into `written`.
fn around(
    src: &Region,
    out: &File,
    written: &imgconv_core::ext::write::cow::WrittenRanges,
    method: CopyMethod,
    progress: &mut dyn imgconv_core::Progress,
) -> Result<StreamStats, imgconv_core::stream::StreamError> {
    imgconv_core::stream::copy_used_blocks_around(src, out, MIB, written, method, progress)
}

/// The device writing into `out`'s copy of `src` at 1 MiB beside the stream.
fn cow_over(
    src: &Region,
    out: &File,
    written: &Arc<imgconv_core::ext::write::cow::WrittenRanges>,
) -> imgconv_core::ext::write::cow::CowDevice {
    imgconv_core::ext::write::cow::CowDevice::new(
        src.clone(),
        out.try_clone().unwrap(),
        MIB,
        Arc::clone(written),
    )
}

/// Beside a graft: once the device has finished, the stream writes direct, and a unit the
/// device wrote keeps the device's bytes, not the source's.
#[test]
fn beside_a_finished_graft_the_stream_writes_direct_around_its_units() {
    use imgconv_core::blockio::BlockDevice;
    use imgconv_core::ext::write::cow::WrittenRanges;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (src, plain, fs_len) = beside_fixture(w);
    let out = fresh_output(&w.join("beside.img"), fs_len);
    let written = WrittenRanges::new(4096);
    let dev = cow_over(&src, &out, &written);
    // The superblock's unit.
    dev.write_at(0, &[0xab; 4096]).unwrap();
    written.device_finished();
    let stats = around(&src, &out, &written, CopyMethod::Direct, &mut NoProgress).unwrap();
    if direct_supported(&stats) {
        assert_eq!(stats.direct_bytes, stats.bytes_read, "all of it direct");
    }
    assert_plain_but_first_unit(&out, &plain, fs_len, 0xab);
    // Through the page cache, the stream does not wait for a running device.
    let busy = WrittenRanges::new(4096);
    let again = fresh_output(&w.join("again.img"), fs_len);
    let stats = around(&src, &again, &busy, CopyMethod::ReadWrite, &mut NoProgress).unwrap();
    assert_eq!(stats.direct_bytes, 0);
    assert_eq!(
        sha256(&w.join("again.img")),
        sha256(&plain),
        "the plain copy"
    );
}

/// The fixture beside a device, when this filesystem takes direct writes (a Host SKIP line
/// otherwise): the source, its plain copy and length, a direct copy's statistics, a fresh
/// output and the device's record.
struct BesideDirect {
    src: Region,
    plain: std::path::PathBuf,
    fs_len: u64,
    probe: StreamStats,
    out: File,
    written: Arc<imgconv_core::ext::write::cow::WrittenRanges>,
}

fn beside_direct(w: &Path) -> Option<BesideDirect> {
    let (src, plain, fs_len) = beside_fixture(w);
    // Whether this filesystem takes direct writes at all.
    let probe = copy(&src, &w.join("probe.img"), MIB, CopyMethod::Direct);
    if !direct_supported(&probe) {
        return None;
    }
    let out = fresh_output(&w.join("beside.img"), fs_len);
    Some(BesideDirect {
        src,
        plain,
        fs_len,
        probe,
        out,
        written: imgconv_core::ext::write::cow::WrittenRanges::new(4096),
    })
}

/// Beside a running graft, a stream that writes direct writes nothing until the device
/// has finished (its writes would hold the device's up), then writes all of it direct,
/// around what the device wrote meanwhile.
#[test]
fn beside_a_running_graft_the_direct_stream_waits_for_it() {
    use imgconv_core::blockio::BlockDevice;
    use std::os::unix::fs::FileExt;
    let work = tempfile::tempdir().unwrap();
    let Some(BesideDirect {
        src,
        plain,
        fs_len,
        probe,
        out,
        written,
    }) = beside_direct(work.path())
    else {
        return;
    };
    let dev = cow_over(&src, &out, &written);
    let stats = std::thread::scope(|scope| {
        let device = scope.spawn(|| {
            // Time for a stream that did not wait to write everything.
            std::thread::sleep(std::time::Duration::from_millis(400));
            let mut fs = vec![0u8; fs_len as usize];
            out.read_exact_at(&mut fs, MIB).unwrap();
            assert!(
                fs.iter().all(|&b| b == 0),
                "the stream wrote while the device was running"
            );
            dev.write_at(0, &[0xcd; 4096]).unwrap();
            written.device_finished();
        });
        let stats = around(&src, &out, &written, CopyMethod::Direct, &mut NoProgress).unwrap();
        device.join().unwrap();
        stats
    });
    assert_eq!(stats.direct_bytes, stats.bytes_read, "all of it direct");
    assert_eq!(stats.bytes_read, probe.bytes_read);
    assert_plain_but_first_unit(&out, &plain, fs_len, 0xcd);
}

/// Cancelled while it waits for a device that never finishes, the stream stops.
#[test]
fn a_stream_waiting_for_the_graft_stops_when_cancelled() {
    use imgconv_core::stream::StreamError;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Cancel<'a>(&'a AtomicBool);
    impl imgconv_core::Progress for Cancel<'_> {
        fn is_cancelled(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
    let work = tempfile::tempdir().unwrap();
    let Some(BesideDirect {
        src, out, written, ..
    }) = beside_direct(work.path())
    else {
        return;
    };
    let cancel = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let r = around(
                &src,
                &out,
                &written,
                CopyMethod::Direct,
                &mut Cancel(&cancel),
            );
            let _ = tx.send(r.map(|_| ()));
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "the stream did not wait");
        cancel.store(true, Ordering::SeqCst);
        let r = rx.recv_timeout(std::time::Duration::from_secs(30));
        if r.is_err() {
            // Let the scope end instead of hanging the test binary.
            written.device_finished();
        }
        assert!(
            matches!(r, Ok(Err(StreamError::Cancelled))),
            "cancelled within 30 s: {r:?}"
        );
    });
}
