//! Writing a qcow2 version 3 image (QEMU's `docs/interop/qcow2.txt`) directly, as the
//! conversion writes its disk: [`Qcow2Sink`] is a [`BlockDevice`] over an empty file.
//!
//! Layout, decided as the writes come: the header (cluster 0) and the L1 table (the
//! clusters after it) have fixed places; every other cluster is allocated at the end of
//! the file, in the order it is first needed: an L2 table when a write first touches its
//! 512 MiB of the disk, a data cluster when a write first puts a non-zero byte in its
//! 64 KiB. A write of zeros into an unallocated cluster allocates nothing, and the part
//! of a new cluster a write does not cover stays a hole of the file (zeros). So the file
//! holds the data once, sparse, and nothing else grows with the disk size.
//!
//! Memory: the L1 table (8 bytes per 512 MiB of disk, 32 KiB for 2 TiB) is the only
//! table held; L2 entries are read from and written into their clusters in the file, in
//! place, a slice per write. At [`Qcow2Sink::finish`] the L1 table, then the refcount
//! table and blocks (after the last cluster: every cluster below the end of the file is
//! in use exactly once, refcount 1), then the header are written and the file synced, so
//! `qemu-img check` finds neither leaks nor errors.
//!
//! Several threads write at once (the stream and the libext2fs graft, on disjoint byte
//! ranges): the allocator and the L2 updates run under one lock; the data moves outside
//! it.

use crate::blockio::BlockDevice;
use crate::Progress;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

/// 64 KiB clusters, QEMU's default.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Disk bytes one L2 table maps (512 MiB).
const TABLE_SPAN: u64 = CLUSTER * L2_ENTRIES;
/// refcount_order 4: 16-bit refcounts, so a refcount block covers this many clusters.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// L1/L2 flag: the cluster's refcount is exactly 1.
const COPIED: u64 = 1 << 63;
/// Host offset bits of an L1 or L2 entry.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Header length of a version 3 image without optional fields.
const HEADER_LEN: u32 = 104;
/// QEMU's bound on the L1 table (`QCOW_MAX_L1_SIZE`, 32 MiB): disks up to 2 PiB.
const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;

/// What [`Qcow2Sink::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Data clusters allocated.
    pub data_clusters: u64,
    /// Length of the qcow2 file.
    pub file_len: u64,
}

/// The allocator and the in-memory L1 table.
#[derive(Debug)]
struct State {
    /// Host offset of each L2 table, 0 where none is allocated.
    l1: Vec<u64>,
    /// First free byte of the file (cluster aligned): where the next cluster goes.
    next: u64,
    data_clusters: u64,
    /// Set by [`Qcow2Sink::finish`]: the image is sealed.
    finished: Option<Written>,
}

/// A qcow2 image being written: a [`BlockDevice`] of [`Qcow2Sink::size`] bytes over its
/// file. Safe to write from several threads at once.
#[derive(Debug)]
pub struct Qcow2Sink {
    file: File,
    size: u64,
    state: Mutex<State>,
}

/// One piece of a disk range inside one cluster run: disk offset, length, and where it
/// lives in the file (`None`: not allocated, reads as zeros).
type Extent = (u64, u64, Option<u64>);

impl Qcow2Sink {
    /// A sink for a disk of `size` bytes writing into `file`, which is emptied.
    pub fn new(file: File, size: u64) -> io::Result<Self> {
        let l1_len = size.div_ceil(TABLE_SPAN);
        if l1_len > MAX_L1_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a qcow2 disk holds at most 2 PiB, not {size} bytes"),
            ));
        }
        file.set_len(0)?;
        let l1_clusters = (l1_len * 8).div_ceil(CLUSTER);
        Ok(Qcow2Sink {
            file,
            size,
            state: Mutex::new(State {
                l1: vec![0; l1_len as usize],
                next: (1 + l1_clusters) * CLUSTER,
                data_clusters: 0,
                finished: None,
            }),
        })
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The qcow2 file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes of mapping tables held in memory (the L1 table): bounded by the disk size
    /// alone, whatever was written.
    pub fn table_bytes(&self) -> usize {
        self.lock().l1.capacity() * 8
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is a few assignments without a panic point between
        // them, so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bounds(&self, offset: u64, len: u64) -> io::Result<u64> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{len} bytes at {offset} lie beyond the end of the {}-byte disk",
                        self.size
                    ),
                )
            })
    }

    /// The L2 entries `first..first + out.len()` of the table at `l2`.
    fn read_entries(&self, l2: u64, first: u64, out: &mut [u64]) -> io::Result<()> {
        let mut raw = vec![0u8; out.len() * 8];
        read_or_zeros(&self.file, &mut raw, l2 + first * 8)?;
        for (e, b) in out.iter_mut().zip(raw.chunks_exact(8)) {
            *e = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        }
        Ok(())
    }

    /// The extents of `[offset, end)`, which lies inside one L2 table's span; adjacent
    /// pieces that are contiguous in the file (or both unallocated) are merged.
    fn extents(&self, st: &State, offset: u64, end: u64) -> io::Result<Vec<Extent>> {
        let l2 = st.l1[(offset / TABLE_SPAN) as usize];
        if l2 == 0 {
            return Ok(vec![(offset, end - offset, None)]);
        }
        let c0 = offset / CLUSTER;
        let mut entries = vec![0u64; (end.div_ceil(CLUSTER) - c0) as usize];
        self.read_entries(l2, c0 % L2_ENTRIES, &mut entries)?;
        let mut out: Vec<Extent> = Vec::new();
        for (k, e) in entries.iter().enumerate() {
            let c = c0 + k as u64;
            let s = (c * CLUSTER).max(offset);
            let n = ((c + 1) * CLUSTER).min(end) - s;
            let host = match e & OFFSET_MASK {
                0 => None,
                h => Some(h + s % CLUSTER),
            };
            match out.last_mut() {
                // Contiguous in the disk, and in the file or both unallocated.
                Some((ps, pn, ph)) if *ps + *pn == s && ph.map(|h| h + *pn) == host => *pn += n,
                _ => out.push((s, n, host)),
            }
        }
        Ok(out)
    }

    /// Call `f` with the extents of `[offset, offset + len)`, one L2 table's span at a
    /// time (so no list grows with the range), the lock released during `f`.
    fn each_extent(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(Extent) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = self.bounds(offset, len)?;
        let mut pos = offset;
        while pos < end {
            let stop = ((pos / TABLE_SPAN + 1) * TABLE_SPAN).min(end);
            let extents = {
                let st = self.lock();
                self.extents(&st, pos, stop)?
            };
            for e in extents {
                f(e)?;
            }
            pos = stop;
        }
        Ok(())
    }

    /// Seal the image: write the L1 table, the refcount table and blocks after the last
    /// cluster, then the header, and sync the file. Writes after this are refused.
    pub fn finish(&self) -> io::Result<Written> {
        let mut st = self.lock();
        if let Some(w) = st.finished {
            return Ok(w);
        }
        let end = st.next;
        let l1_len = st.l1.len() as u64;
        let l1: Vec<u8> = st
            .l1
            .iter()
            .flat_map(|&at| if at == 0 { 0 } else { at | COPIED }.to_be_bytes())
            .collect();
        self.file.write_all_at(&l1, CLUSTER)?;
        // The refcount blocks cover every cluster of the file, themselves and the table
        // included; their count depends on itself, so grow it until it fits.
        let used = end / CLUSTER;
        let (mut rt_clusters, mut rb) = (1u64, 1u64);
        loop {
            let total = used + rt_clusters + rb;
            let need_rb = total.div_ceil(REFCOUNTS_PER_BLOCK);
            let need_rt = (need_rb * 8).div_ceil(CLUSTER);
            if need_rb <= rb && need_rt <= rt_clusters {
                break;
            }
            rb = rb.max(need_rb);
            rt_clusters = rt_clusters.max(need_rt);
        }
        let rt_at = end;
        let rb_at = rt_at + rt_clusters * CLUSTER;
        let file_len = rb_at + rb * CLUSTER;
        self.file.set_len(file_len)?;
        let table: Vec<u8> = (0..rb)
            .flat_map(|i| (rb_at + i * CLUSTER).to_be_bytes())
            .collect();
        self.file.write_all_at(&table, rt_at)?;
        let all = file_len / CLUSTER;
        let mut block = vec![0u8; CLUSTER as usize];
        for i in 0..rb {
            block.fill(0);
            let base = i * REFCOUNTS_PER_BLOCK;
            let n = REFCOUNTS_PER_BLOCK.min(all.saturating_sub(base)) as usize;
            for r in block[..n * 2].chunks_exact_mut(2) {
                r.copy_from_slice(&1u16.to_be_bytes());
            }
            self.file.write_all_at(&block, rb_at + i * CLUSTER)?;
        }
        // Header (version 3), then the end-of-extensions marker after it.
        let mut h = vec![0u8; HEADER_LEN as usize + 8];
        let put32 =
            |h: &mut [u8], at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |h: &mut [u8], at: usize, v: u64| h[at..at + 8].copy_from_slice(&v.to_be_bytes());
        h[..4].copy_from_slice(&super::qcow2::MAGIC);
        put32(&mut h, 4, 3);
        put32(&mut h, 20, CLUSTER_BITS);
        put64(&mut h, 24, self.size);
        put32(&mut h, 36, l1_len as u32);
        put64(&mut h, 40, CLUSTER);
        put64(&mut h, 48, rt_at);
        put32(&mut h, 56, rt_clusters as u32);
        put32(&mut h, 96, 4);
        put32(&mut h, 100, HEADER_LEN);
        self.file.write_all_at(&h, 0)?;
        self.file.sync_all()?;
        let w = Written {
            data_clusters: st.data_clusters,
            file_len,
        };
        st.finished = Some(w);
        Ok(w)
    }
}

/// Fill `buf` from `at`; what lies past the end of the file reads as zeros (a cluster
/// allocated but not written yet ends there).
fn read_or_zeros(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match FileExt::read_at(file, &mut buf[done..], at + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sealed() -> io::Error {
    io::Error::other("the qcow2 image was already finished")
}

impl BlockDevice for Qcow2Sink {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.each_extent(offset, buf.len() as u64, |(s, n, host)| {
            let part = &mut buf[(s - offset) as usize..(s - offset + n) as usize];
            match host {
                Some(h) => read_or_zeros(&self.file, part, h),
                None => {
                    part.fill(0);
                    Ok(())
                }
            }
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = self.bounds(offset, data.len() as u64)?;
        // (file offset, start, end in `data`), contiguous runs merged.
        let mut runs: Vec<(u64, usize, usize)> = Vec::new();
        {
            let mut st = self.lock();
            if st.finished.is_some() {
                return Err(sealed());
            }
            let mut pos = offset;
            while pos < end {
                let t = (pos / TABLE_SPAN) as usize;
                let stop = ((pos / TABLE_SPAN + 1) * TABLE_SPAN).min(end);
                let c0 = pos / CLUSTER;
                let mut entries = vec![0u64; (stop.div_ceil(CLUSTER) - c0) as usize];
                if st.l1[t] != 0 {
                    self.read_entries(st.l1[t], c0 % L2_ENTRIES, &mut entries)?;
                }
                let mut dirty: Option<(usize, usize)> = None;
                for (k, e) in entries.iter_mut().enumerate() {
                    let c = c0 + k as u64;
                    let s = (c * CLUSTER).max(pos);
                    let stop_c = ((c + 1) * CLUSTER).min(stop);
                    let (a, b) = ((s - offset) as usize, (stop_c - offset) as usize);
                    let mut host = *e & OFFSET_MASK;
                    if host == 0 {
                        if data[a..b].chunks(4096).all(crate::bytes::is_zero) {
                            continue;
                        }
                        if st.l1[t] == 0 {
                            st.l1[t] = st.next;
                            st.next += CLUSTER;
                        }
                        host = st.next;
                        st.next += CLUSTER;
                        st.data_clusters += 1;
                        *e = host | COPIED;
                        dirty = Some(dirty.map_or((k, k), |(f, _)| (f, k)));
                    }
                    let at = host + s % CLUSTER;
                    match runs.last_mut() {
                        Some((ph, pa, pb)) if *pb == a && *ph + (*pb - *pa) as u64 == at => *pb = b,
                        _ => runs.push((at, a, b)),
                    }
                }
                if let Some((f, l)) = dirty {
                    let bytes: Vec<u8> = entries[f..=l]
                        .iter()
                        .flat_map(|e| e.to_be_bytes())
                        .collect();
                    let first = (c0 + f as u64) % L2_ENTRIES;
                    self.file.write_all_at(&bytes, st.l1[t] + first * 8)?;
                }
                pos = stop;
            }
        }
        for (at, a, b) in runs {
            self.file.write_all_at(&data[a..b], at)?;
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.lock().finished.is_some() {
            return Err(sealed());
        }
        // Unallocated clusters read as zeros already; allocated ones keep their place
        // and lose their data (a hole where the file system can punch one).
        self.each_extent(offset, len, |(_, n, host)| {
            let Some(at) = host else {
                return Ok(());
            };
            let punched = rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                at,
                n,
            );
            if punched.is_ok() {
                return Ok(());
            }
            let zeros = vec![0u8; n.min(1 << 20) as usize];
            let mut done = 0;
            while done < n {
                let k = (n - done).min(zeros.len() as u64);
                self.file.write_all_at(&zeros[..k as usize], at + done)?;
                done += k;
            }
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The data ranges of `file` in `[0, size)` (whole file when the filesystem cannot say).
fn data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
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

/// Copy the finished raw disk `raw` (`size` bytes) into `sink`, one data range at a time,
/// punching each range out of `raw` once copied (so the two files together hold the data
/// about once). For conversions whose outside tools (e2fsck, resize2fs) need the disk as
/// a raw file first.
pub fn copy_raw(
    raw: &File,
    size: u64,
    sink: &Qcow2Sink,
    progress: &mut dyn Progress,
) -> io::Result<()> {
    const CHUNK: u64 = 8 << 20;
    let ranges = data_ranges(raw, size)?;
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    progress.stage(crate::Stage::Finish, Some(total));
    let mut buf = vec![0u8; CHUNK as usize];
    let mut done = 0u64;
    for (start, len) in ranges {
        let mut at = start;
        while at < start + len {
            if progress.is_cancelled() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let n = (start + len - at).min(CHUNK) as usize;
            raw.read_exact_at(&mut buf[..n], at)?;
            sink.write_at(at, &buf[..n])?;
            at += n as u64;
            done += n as u64;
            progress.advance(done);
        }
        // Best effort: where punching is not offered the raw copy keeps its space.
        let _ = rustix::fs::fallocate(
            raw,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            start,
            len,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockio::BlockSource;
    use std::path::Path;
    use std::process::Command;

    fn qemu_img(args: &[&str], paths: &[&Path]) {
        let out = Command::new("qemu-img")
            .args(args)
            .args(paths)
            .output()
            .expect("qemu-img (scripts/setup installs qemu-utils)");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn sink_in(dir: &Path, name: &str, size: u64) -> (std::path::PathBuf, Qcow2Sink) {
        let path = dir.join(name);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        (path, Qcow2Sink::new(file, size).unwrap())
    }

    /// A little deterministic generator for the test patterns.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// Writes, partial-cluster writes, writes of zeros and zeroed ranges, against a model
    /// of the disk in memory: every read returns what the model holds, before and after
    /// finishing; qemu-img finds the image clean and equal to the model written raw, and
    /// our own reader reads it back.
    #[test]
    fn reads_after_writes_return_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        // Whole sectors (QEMU sizes disks in sectors), not whole clusters.
        let size = (3 << 20) + 25 * 512;
        let (q_path, sink) = sink_in(dir.path(), "d.qcow2", size);
        let mut model = vec![0u8; size as usize];
        let mut rng = Lcg(7);
        for round in 0..400 {
            let at = rng.next() % size;
            let len = (rng.next() % 200_000).min(size - at);
            match round % 5 {
                0 => {
                    sink.zero_range(at, len).unwrap();
                    model[at as usize..(at + len) as usize].fill(0);
                }
                1 => {
                    let zeros = vec![0u8; len as usize];
                    sink.write_at(at, &zeros).unwrap();
                    model[at as usize..(at + len) as usize].fill(0);
                }
                _ => {
                    let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (round as u8) | 1).collect();
                    sink.write_at(at, &data).unwrap();
                    model[at as usize..(at + len) as usize].copy_from_slice(&data);
                }
            }
            let (rat, rlen) = (rng.next() % size, rng.next() % 150_000);
            let rlen = rlen.min(size - rat);
            let mut got = vec![0xeeu8; rlen as usize];
            sink.read_at(rat, &mut got).unwrap();
            assert!(
                got == model[rat as usize..(rat + rlen) as usize],
                "round {round}: read of {rlen} at {rat}"
            );
        }
        // Partial-cluster writes into fresh clusters: the rest reads as zeros.
        sink.write_at(size - 3, b"end").unwrap();
        model[size as usize - 3..].copy_from_slice(b"end");
        let mut all = vec![0u8; size as usize];
        sink.read_at(0, &mut all).unwrap();
        assert!(all == model);
        assert!(
            sink.read_at(size - 2, &mut [0u8; 3]).is_err(),
            "past the end"
        );
        assert!(sink.write_at(size, b"x").is_err(), "past the end");

        let w = sink.finish().unwrap();
        assert_eq!(w.file_len, std::fs::metadata(&q_path).unwrap().len());
        assert!(sink.write_at(0, b"late").is_err(), "sealed");
        sink.read_at(0, &mut all).unwrap();
        assert!(all == model);
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, &model).unwrap();
        qemu_img(&["check", "-f", "qcow2"], &[&q_path]);
        qemu_img(&["compare", "-f", "raw", "-F", "qcow2"], &[&raw, &q_path]);
        let back = super::super::qcow2::Qcow2::open(
            File::open(&q_path).unwrap(),
            &q_path,
            &Default::default(),
            0,
        )
        .unwrap();
        assert_eq!(back.size(), size);
        let mut again = vec![0u8; size as usize];
        back.read_exact_at(0, &mut again).unwrap();
        assert!(again == model);
    }

    /// Zeros allocate nothing: a disk written only with zeros is a header, an L1 table
    /// and the refcount structures.
    #[test]
    fn zeros_allocate_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (q_path, sink) = sink_in(dir.path(), "z.qcow2", 1 << 30);
        sink.write_at(4096, &vec![0u8; 3 << 20]).unwrap();
        sink.zero_range(0, 1 << 30).unwrap();
        let w = sink.finish().unwrap();
        assert_eq!(w.data_clusters, 0);
        assert_eq!(
            w.file_len,
            4 * CLUSTER,
            "header, L1, refcount table and block"
        );
        qemu_img(&["check", "-f", "qcow2"], &[&q_path]);
    }

    /// Two threads write at once, into clusters of their own and into shared clusters
    /// (disjoint 4 KiB halves, both first writes racing to allocate): every cluster is
    /// allocated once (qemu-img check finds none referenced twice) and holds what its
    /// writers wrote.
    #[test]
    fn concurrent_writers_share_the_allocator() {
        let dir = tempfile::tempdir().unwrap();
        let size = 1u64 << 32;
        let (q_path, sink) = sink_in(dir.path(), "c.qcow2", size);
        // 65536 distinct clusters in a scattered order (40503 is odd, so coprime with
        // 65536), over 4 GiB: eight L2 tables, created by whichever thread comes first.
        let place = |i: u64| (i * 40503 % 65536) * CLUSTER;
        let fill = |i: u64, thread: u64| ((i as u8).wrapping_mul(31) ^ (thread as u8)) | 1;
        let shared = 0..1024u64;
        let own = |thread: u64| (1024 + thread * 1024..2048 + thread * 1024).step_by(3);
        let write = |thread: u64| {
            for i in shared.clone() {
                sink.write_at(place(i) + thread * 4096, &[fill(i, thread); 4096])
                    .unwrap();
            }
            for i in own(thread) {
                sink.write_at(place(i), &vec![fill(i, thread); CLUSTER as usize])
                    .unwrap();
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| write(0));
            s.spawn(|| write(1));
        });
        let w = sink.finish().unwrap();
        assert_eq!(w.data_clusters, 1024 + 2 * 342);
        qemu_img(&["check", "-f", "qcow2"], &[&q_path]);
        let back = super::super::qcow2::Qcow2::open(
            File::open(&q_path).unwrap(),
            &q_path,
            &Default::default(),
            0,
        )
        .unwrap();
        let mut got = vec![0u8; CLUSTER as usize];
        for i in shared {
            back.read_exact_at(place(i), &mut got).unwrap();
            assert!(got[..4096].iter().all(|&b| b == fill(i, 0)), "cluster {i}");
            assert!(
                got[4096..8192].iter().all(|&b| b == fill(i, 1)),
                "cluster {i}"
            );
            assert!(got[8192..].iter().all(|&b| b == 0), "cluster {i}");
        }
        for thread in 0..2 {
            for i in own(thread) {
                sink.read_at(place(i), &mut got).unwrap();
                assert!(got.iter().all(|&b| b == fill(i, thread)), "cluster {i}");
            }
        }
    }

    /// A 2 TiB disk written at 1000 scattered places: the tables held in memory stay at
    /// the L1 table's 32 KiB, the file holds the data and its L2 tables only.
    #[test]
    fn memory_stays_bounded_for_a_2_tib_disk() {
        let dir = tempfile::tempdir().unwrap();
        let size = 2u64 << 40;
        let (q_path, sink) = sink_in(dir.path(), "big.qcow2", size);
        let before = sink.table_bytes();
        assert_eq!(before, 32 << 10);
        let mut rng = Lcg(3);
        for _ in 0..1000 {
            let at = rng.next() * 4096 % (size - 8192);
            sink.write_at(at, &[0x5a; 8192]).unwrap();
        }
        assert_eq!(sink.table_bytes(), before, "nothing grows in memory");
        let w = sink.finish().unwrap();
        // Each write: at most two data clusters and one L2 table of its own.
        assert!(w.file_len <= (1000 * 3 + 8) * CLUSTER, "{w:?}");
        qemu_img(&["check", "-f", "qcow2"], &[&q_path]);
    }
}
