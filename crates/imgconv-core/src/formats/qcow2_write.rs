//! Writing a qcow2 version 3 image (QEMU's `docs/interop/qcow2.txt`) from a sparse raw
//! disk, without a second full-size copy.
//!
//! The raw disk's data ranges (`SEEK_DATA`/`SEEK_HOLE`) bound how many clusters can hold
//! data, so the metadata is laid out once, up front: header (cluster 0), L1 table,
//! refcount table, refcount blocks, the L2 tables the data ranges need, then the data
//! clusters in guest order. Clusters of zeros are left unallocated. Every cluster up to
//! the end of the file is in use and has refcount 1, so the refcount blocks are written
//! last from the final length, and `qemu-img check` finds neither leaks nor errors.
//!
//! After each range is copied it is punched out of the raw disk, so the two files
//! together never hold much more than the data once.

use crate::Progress;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// 64 KiB clusters, QEMU's default.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// refcount_order 4: 16-bit refcounts, so a refcount block covers this many clusters.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
/// Header length of a version 3 image without optional fields.
const HEADER_LEN: u32 = 104;

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Data clusters allocated.
    pub data_clusters: u64,
    /// Length of the qcow2 file.
    pub file_len: u64,
}

/// The data ranges of `file` in `[0, size)` (whole file when the filesystem cannot say).
pub fn data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if pos == 0 => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(e) => return Err(e.into()),
        };
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

/// Write `raw` (a disk of `size` bytes) into the empty file `out` as qcow2; when
/// `punch` is set, each copied range is punched out of `raw` afterwards.
pub fn write(
    raw: &File,
    size: u64,
    out: &File,
    punch: bool,
    progress: &mut dyn Progress,
) -> io::Result<Written> {
    let ranges = data_ranges(raw, size)?;
    // Guest clusters that may hold data, and the L2 tables that cover them.
    let mut candidate = 0u64;
    let mut l2_needed = std::collections::BTreeSet::new();
    for &(s, l) in &ranges {
        let first = s / CLUSTER;
        let last = (s + l).div_ceil(CLUSTER);
        candidate += last - first;
        for t in first / L2_ENTRIES..=(last - 1) / L2_ENTRIES {
            l2_needed.insert(t);
        }
    }
    let l1_size = size.div_ceil(CLUSTER * L2_ENTRIES);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    // The refcount blocks cover every cluster the file can reach; their count depends on
    // itself, so grow it until it fits.
    let fixed = 1 + l1_clusters + l2_needed.len() as u64 + candidate;
    let (mut rt_clusters, mut rb) = (1u64, 1u64);
    loop {
        let total = fixed + rt_clusters + rb;
        let need_rb = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let need_rt = (need_rb * 8).div_ceil(CLUSTER);
        if need_rb <= rb && need_rt <= rt_clusters {
            break;
        }
        rb = rb.max(need_rb);
        rt_clusters = rt_clusters.max(need_rt);
    }
    let l1_at = CLUSTER;
    let rt_at = l1_at + l1_clusters * CLUSTER;
    let rb_at = rt_at + rt_clusters * CLUSTER;
    let l2_at = rb_at + rb * CLUSTER;
    let mut next = l2_at + l2_needed.len() as u64 * CLUSTER;
    let l2_of: std::collections::BTreeMap<u64, u64> = l2_needed
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, l2_at + i as u64 * CLUSTER))
        .collect();

    // Header (version 3), then the end-of-extensions marker after it.
    let mut h = vec![0u8; HEADER_LEN as usize + 8];
    let put32 = |h: &mut [u8], at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |h: &mut [u8], at: usize, v: u64| h[at..at + 8].copy_from_slice(&v.to_be_bytes());
    h[..4].copy_from_slice(&super::qcow2::MAGIC);
    put32(&mut h, 4, 3);
    put32(&mut h, 20, CLUSTER_BITS);
    put64(&mut h, 24, size);
    put32(&mut h, 36, l1_size as u32);
    put64(&mut h, 40, l1_at);
    put64(&mut h, 48, rt_at);
    put32(&mut h, 56, rt_clusters as u32);
    put32(&mut h, 96, 4);
    put32(&mut h, 100, HEADER_LEN);
    out.write_all_at(&h, 0)?;

    // L1 table.
    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    for (&t, &at) in &l2_of {
        l1[(t * 8) as usize..(t * 8 + 8) as usize].copy_from_slice(&(at | COPIED).to_be_bytes());
    }
    out.write_all_at(&l1, l1_at)?;

    // Refcount table: every reserved refcount block is referenced.
    let mut rt = vec![0u8; (rt_clusters * CLUSTER) as usize];
    for i in 0..rb {
        rt[(i * 8) as usize..(i * 8 + 8) as usize]
            .copy_from_slice(&(rb_at + i * CLUSTER).to_be_bytes());
    }
    out.write_all_at(&rt, rt_at)?;

    // Data, one L2 table at a time, in guest order.
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    progress.stage(crate::Stage::Finish, Some(total));
    let mut data_clusters = 0u64;
    let mut table: Option<(u64, Vec<u8>)> = None;
    let mut buf = vec![0u8; CLUSTER as usize];
    let mut done = 0u64;
    let flush = |table: &mut Option<(u64, Vec<u8>)>| -> io::Result<()> {
        if let Some((t, bytes)) = table.take() {
            out.write_all_at(&bytes, l2_of[&t])?;
        }
        Ok(())
    };
    // Data ranges have the filesystem's block granularity, finer than a cluster: a
    // cluster shared by two ranges is copied once, with the first (before that range
    // is punched).
    let mut next_cluster = 0u64;
    for &(s, l) in &ranges {
        if progress.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let first = (s / CLUSTER).max(next_cluster);
        let last = (s + l).div_ceil(CLUSTER);
        next_cluster = next_cluster.max(last);
        for c in first..last {
            let at = c * CLUSTER;
            let n = (size - at).min(CLUSTER) as usize;
            buf[n..].fill(0);
            raw.read_exact_at(&mut buf[..n], at)?;
            if buf.iter().all(|&b| b == 0) {
                continue;
            }
            let t = c / L2_ENTRIES;
            if table.as_ref().is_none_or(|(cur, _)| *cur != t) {
                flush(&mut table)?;
                table = Some((t, vec![0u8; CLUSTER as usize]));
            }
            out.write_all_at(&buf, next)?;
            if let Some((_, bytes)) = table.as_mut() {
                let i = ((c % L2_ENTRIES) * 8) as usize;
                bytes[i..i + 8].copy_from_slice(&(next | COPIED).to_be_bytes());
            }
            next += CLUSTER;
            data_clusters += 1;
        }
        if punch {
            // Best effort: where punching is not offered the raw copy keeps its space.
            let _ = rustix::fs::fallocate(
                raw,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                s,
                l,
            );
        }
        done += l;
        progress.advance(done);
    }
    flush(&mut table)?;
    // L2 tables that stayed all zeros (their ranges held only zero clusters) must still
    // exist: they are referenced from L1.
    let end = next;
    out.set_len(end)?;
    // Refcount blocks: every cluster below the end is in use once.
    let used = end / CLUSTER;
    let mut block = vec![0u8; CLUSTER as usize];
    for i in 0..rb {
        block.fill(0);
        let base = i * REFCOUNTS_PER_BLOCK;
        for j in 0..REFCOUNTS_PER_BLOCK.min(used.saturating_sub(base)) {
            block[(j * 2) as usize..(j * 2 + 2) as usize].copy_from_slice(&1u16.to_be_bytes());
        }
        out.write_all_at(&block, rb_at + i * CLUSTER)?;
    }
    Ok(Written {
        data_clusters,
        file_len: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockio::BlockSource;
    use std::process::Command;

    /// Data at scattered places (one range crossing an L2 table's span, one all-zero
    /// cluster written as data): qemu-img finds the image clean and equal to the raw
    /// disk, and our reader reads back the same bytes.
    #[test]
    fn written_image_is_clean_equal_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let raw_path = dir.path().join("disk.raw");
        let raw = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&raw_path)
            .unwrap();
        let size = (1u64 << 30) + 25 * 512;
        raw.set_len(size).unwrap();
        let pattern: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        raw.write_all_at(&pattern, 4096).unwrap();
        raw.write_all_at(&pattern, (512 << 20) - 100_000).unwrap();
        raw.write_all_at(&vec![0u8; 70_000], 100 << 20).unwrap();
        // Two data ranges inside one cluster, a hole between them.
        raw.write_all_at(b"first", 200 << 20).unwrap();
        raw.write_all_at(b"second", (200 << 20) + 40_000).unwrap();
        raw.write_all_at(b"end", size - 3).unwrap();
        let q_path = dir.path().join("disk.qcow2");
        let q = File::create(&q_path).unwrap();
        let keep = dir.path().join("disk.copy");
        std::fs::copy(&raw_path, &keep).unwrap();
        let w = write(&raw, size, &q, true, &mut crate::NoProgress).unwrap();
        assert_eq!(w.file_len, q.metadata().unwrap().len());
        assert!(w.data_clusters < 20, "zero clusters left out: {w:?}");
        drop(q);
        let check = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&q_path)
            .output()
            .expect("qemu-img (scripts/setup installs qemu-utils)");
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let cmp = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&keep)
            .arg(&q_path)
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "{}",
            String::from_utf8_lossy(&cmp.stdout)
        );
        let back = super::super::qcow2::Qcow2::open(
            File::open(&q_path).unwrap(),
            &q_path,
            &Default::default(),
            0,
        )
        .unwrap();
        assert_eq!(back.size(), size);
        let mut got = vec![0u8; pattern.len()];
        back.read_exact_at((512 << 20) - 100_000, &mut got).unwrap();
        assert_eq!(got, pattern);
        let mut two = [0u8; 40_006];
        back.read_exact_at(200 << 20, &mut two).unwrap();
        assert_eq!((&two[..5], &two[40_000..]), (&b"first"[..], &b"second"[..]));
        let mut tail = [0u8; 3];
        back.read_exact_at(size - 3, &mut tail).unwrap();
        assert_eq!(&tail, b"end");
    }
}
