//! The copy-on-write view of the output's root filesystem that lets the graft, fixups and
//! boot files be written while the stream is still copying.
//!
//! libext2fs needs the filesystem's metadata and directories to work, and before the
//! stream has finished the output does not hold them yet. Through [`CowDevice`] it sees
//! the filesystem the stream *will* produce instead: a byte range is read from the output
//! if it was written through the device, otherwise from the source filesystem (the
//! read-only input), which is exactly what the stream copies there. Writes go to the
//! output and are recorded in [`WrittenRanges`]; the stream skips those ranges, under the
//! same lock, so an older stream write can never land over a newer graft write.
//!
//! Ranges are recorded in whole units (4 KiB, or the block size when larger); a write that
//! covers a unit only partly first copies that unit from the source (read-modify-write),
//! so every recorded unit holds complete, current data in the output. The set is an
//! interval map, not a bitmap: its size follows what was written, not the filesystem size.

use crate::blockio::BlockDevice;
use crate::blockio::Region;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Unit-aligned byte ranges of the filesystem that were written through a [`CowDevice`].
#[derive(Debug)]
pub struct WrittenRanges {
    unit: u64,
    state: Mutex<State>,
    /// Signalled when the stream's claimed range is done, and when the device has
    /// finished.
    copied: Condvar,
    /// Nothing writes through the device any more.
    device_finished: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// start -> end (exclusive), byte offsets in the filesystem; disjoint, not touching.
    written: BTreeMap<u64, u64>,
    /// The range the stream is copying outside the lock.
    copying: Option<(u64, u64)>,
}

/// Clears the stream's claim when its copy ends, also by an error or a panic.
struct Claim<'a>(&'a WrittenRanges);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.lock().copying = None;
        self.0.copied.notify_all();
    }
}

/// One piece of a byte range: `[start, end)` and whether it was written.
type Piece = (u64, u64, bool);

impl WrittenRanges {
    /// An empty set recording in units of `max(4096, block_size)` bytes.
    pub fn new(block_size: u64) -> Arc<Self> {
        Arc::new(WrittenRanges {
            unit: block_size.max(4096),
            state: Mutex::new(State::default()),
            copied: Condvar::new(),
            device_finished: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The unit writes are recorded in: a piece the stream copies never shares a unit
    /// with one written through the device.
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// Say that nothing writes through the device any more (the graft, fixups and boot
    /// files are done): the stream may then write in ways that would hold such writes up.
    pub fn device_finished(&self) {
        self.device_finished
            .store(true, std::sync::atomic::Ordering::Release);
        // Under the lock, so a waiter that has just seen the flag clear is already
        // waiting when the signal comes.
        let _st = self.lock();
        self.copied.notify_all();
    }

    /// Wait up to `timeout` for [`WrittenRanges::device_finished`]; whether it was called.
    pub fn wait_device_finished(&self, timeout: std::time::Duration) -> bool {
        let st = self.lock();
        let _st = self
            .copied
            .wait_timeout_while(st, timeout, |_| !self.is_device_finished())
            .unwrap_or_else(|e| e.into_inner());
        self.is_device_finished()
    }

    /// Whether [`WrittenRanges::device_finished`] was called.
    pub fn is_device_finished(&self) -> bool {
        self.device_finished
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the map half-updated (every update is one
        // insert/remove sequence without I/O), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock, once the stream copies nothing in `[start, end)`: for a write through
    /// the device.
    fn lock_outside_copy(&self, start: u64, end: u64) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        while st.copying.is_some_and(|(s, e)| s < end && start < e) {
            st = self.copied.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st
    }

    /// `[start, end)` split into written and unwritten pieces, in order.
    fn pieces(map: &BTreeMap<u64, u64>, start: u64, end: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut at = start;
        let first = map.range(..=start).next_back().map(|(&s, &e)| (s, e));
        let rest = map
            .range(start.saturating_add(1)..end)
            .map(|(&s, &e)| (s, e));
        for (s, e) in first.into_iter().chain(rest) {
            if e <= at || s >= end {
                continue;
            }
            if s > at {
                out.push((at, s, false));
            }
            let stop = e.min(end);
            out.push((at.max(s), stop, true));
            at = stop;
        }
        if at < end {
            out.push((at, end, false));
        }
        out
    }

    fn insert(map: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
        // Merge with every range that overlaps or touches [start, end).
        if let Some((&s, &e)) = map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                map.remove(&s);
            }
        }
        let touching: Vec<(u64, u64)> = map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            end = end.max(e);
            map.remove(&s);
        }
        map.insert(start, end);
    }

    /// For the stream: call `write(start, end)` for each piece of `[start, end)` not yet
    /// written through the device. The range is claimed while the pieces are copied, so
    /// the device cannot write into it before they are done.
    pub fn write_unwritten<E>(
        &self,
        start: u64,
        end: u64,
        mut write: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let pieces = {
            let mut st = self.lock();
            // One claim at a time (the stream is one writer; a second waits its turn).
            while st.copying.is_some() {
                st = self.copied.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.copying = Some((start, end));
            Self::pieces(&st.written, start, end)
        };
        let _claim = Claim(self);
        for (s, e, written) in pieces {
            if !written {
                write(s, e)?;
            }
        }
        Ok(())
    }

    /// Bytes recorded as written.
    pub fn written_bytes(&self) -> u64 {
        self.lock().written.iter().map(|(s, e)| e - s).sum()
    }
}

/// The root filesystem as it will be once streamed, plus everything written through it,
/// over the output disk `D` (a raw file, or any [`BlockDevice`] such as a qcow2 sink).
pub struct CowDevice<D = File> {
    /// The source filesystem (read-only).
    source: Region,
    output: D,
    /// Where the filesystem starts in the output.
    out_offset: u64,
    written: Arc<WrittenRanges>,
    /// Starts the disk writes of large writes early, when asked (see [`WriteBack`]).
    write_back: Option<WriteBack>,
}

/// Writes of at least this many bytes (file data; libext2fs writes its metadata a block
/// at a time) have their write-back started early by a [`WriteBack`].
const WRITE_BACK_MIN: usize = 64 << 10;

/// Adjacent large writes are gathered up to this many bytes before their write-back is
/// started.
const WRITE_BACK_BATCH: u64 = 8 << 20;

/// Adjacent byte ranges gathered into batches of about [`WRITE_BACK_BATCH`] bytes.
#[derive(Debug, Default)]
struct Gather {
    /// The batch being gathered: `[start, end)`.
    open: Option<(u64, u64)>,
}

impl Gather {
    /// Add `[at, at + len)`; returns a batch that is complete: the open one when this
    /// range does not continue it, or the open one with this range once it reaches
    /// [`WRITE_BACK_BATCH`].
    fn add(&mut self, at: u64, len: u64) -> Option<(u64, u64)> {
        let end = at.saturating_add(len);
        match &mut self.open {
            Some((_, e)) if *e == at => *e = end,
            open => {
                if let Some(done) = open.replace((at, end)) {
                    return Some(done);
                }
            }
        }
        match self.open {
            Some((s, e)) if e - s >= WRITE_BACK_BATCH => self.open.take(),
            _ => None,
        }
    }

    /// The batch still open.
    fn finish(&mut self) -> Option<(u64, u64)> {
        self.open.take()
    }
}

/// Starts the write-back of the device's large writes (file data) while the graft goes
/// on: a helper thread asks [`crate::blockio::start_write_back`] for each gathered range
/// of the output. Only the ranges of large writes are asked,
/// so the metadata pages libext2fs reads back stay cached.
///
/// Why: while the graft runs, the disk only serves its reads of the donor and the
/// stream's read-ahead; sampled every 100 ms on the 8 GiB bench guest, it was 40–52 %
/// busy then, and the graft's 450 MB of data went to the disk only after it, while the
/// stream waited. Started early, the disk was 56–84 % busy during the graft; the graft
/// took longer (0.47 s against 0.40 s), the whole convert less: cold, interleaved, 6 runs
/// each, a median of 1.90 s (1.86–2.42) against 2.03 s (1.95–2.32). Batches of 2 MiB gave
/// 1.95 s, of 8 MiB 1.97 s, of 32 MiB 2.10 s (a first version, 5 runs each, against
/// 2.09 s without).
struct WriteBack {
    gather: Mutex<Gather>,
    ranges: Option<std::sync::mpsc::Sender<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriteBack {
    /// Start the helper for `file`; `None` when the thread cannot start.
    fn start(file: File) -> Option<WriteBack> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
        let thread = std::thread::Builder::new()
            .name("imgconv-write-back".into())
            .spawn(move || {
                while let Ok((start, end)) = rx.recv() {
                    crate::blockio::start_write_back(
                        &file,
                        start,
                        std::num::NonZeroU64::new(end - start),
                    );
                }
            })
            .ok()?;
        Some(WriteBack {
            gather: Mutex::new(Gather::default()),
            ranges: Some(tx),
            thread: Some(thread),
        })
    }

    /// `len` bytes were written at output byte `at`.
    fn wrote(&self, at: u64, len: u64) {
        let batch = self
            .gather
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(at, len);
        if let (Some(range), Some(tx)) = (batch, &self.ranges) {
            let _ = tx.send(range);
        }
    }
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        let last = self
            .gather
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .finish();
        if let (Some(range), Some(tx)) = (last, &self.ranges) {
            let _ = tx.send(range);
        }
        // Closing the channel ends the helper once it has asked for every range.
        self.ranges = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<D: BlockDevice> CowDevice<D> {
    /// Start the write-back of large writes early (see [`WriteBack`]); `output` is the
    /// output file this device writes into.
    pub fn start_write_back(&mut self, output: &File) {
        if let Ok(file) = output.try_clone() {
            self.write_back = WriteBack::start(file);
        }
    }

    /// `output` must already hold nothing but zeros (or stream data) in the filesystem's
    /// range; `written` is shared with the stream.
    pub fn new(source: Region, output: D, out_offset: u64, written: Arc<WrittenRanges>) -> Self {
        CowDevice {
            source,
            output,
            out_offset,
            written,
            write_back: None,
        }
    }

    /// Read from the source; past its end (never inside the filesystem) reads zeros.
    fn read_source(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let avail = self.source.len().saturating_sub(pos);
        let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
        let (head, tail) = buf.split_at_mut(n);
        if !head.is_empty() {
            self.source.read_exact_at(pos, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Write zeros over `[start, end)` through [`BlockDevice::write_at`], 1 MiB at a time.
    fn write_zeros(&self, start: u64, end: u64) -> io::Result<()> {
        let zeros = vec![0u8; (end.saturating_sub(start)).min(1 << 20) as usize];
        let mut at = start;
        while at < end {
            let n = (end - at).min(zeros.len() as u64);
            self.write_at(at, &zeros[..n as usize])?;
            at += n;
        }
        Ok(())
    }

    fn out_at(&self, pos: u64) -> io::Result<u64> {
        self.out_offset
            .checked_add(pos)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
    }
}

impl<D: BlockDevice> BlockDevice for CowDevice<D> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Only this device's thread adds ranges and the source never changes, so the
        // pieces stay valid after the lock is released.
        let pieces = WrittenRanges::pieces(&self.written.lock().written, offset, end);
        for (s, e, written) in pieces {
            let part = &mut buf[(s - offset) as usize..(e - offset) as usize];
            if written {
                self.output.read_at(self.out_at(s)?, part)?;
            } else {
                self.read_source(s, part)?;
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let unit = self.written.unit;
        let first = offset / unit * unit;
        let last = end.div_ceil(unit) * unit;
        let mut st = self.written.lock_outside_copy(first, last);
        let map = &mut st.written;
        // Partly covered end units not written yet: bring them over from the source
        // first, so the recorded unit is whole.
        let mut partial = Vec::new();
        if offset > first {
            partial.push(first);
        }
        if end < last && !partial.contains(&(last - unit)) {
            partial.push(last - unit);
        }
        for u in partial {
            if !WrittenRanges::pieces(map, u, u + unit)
                .iter()
                .all(|&(_, _, w)| w)
            {
                let mut tmp = vec![0u8; unit as usize];
                self.read_source(u, &mut tmp)?;
                self.output.write_at(self.out_at(u)?, &tmp)?;
                WrittenRanges::insert(map, u, u + unit);
            }
        }
        let at = self.out_at(offset)?;
        self.output.write_at(at, data)?;
        WrittenRanges::insert(map, first, last);
        if let Some(write_back) = &self.write_back {
            if data.len() >= WRITE_BACK_MIN {
                write_back.wrote(at, data.len() as u64);
            }
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let unit = self.written.unit;
        let first_whole = offset.div_ceil(unit) * unit;
        let last_whole = end / unit * unit;
        if first_whole >= last_whole {
            return self.write_zeros(offset, end);
        }
        self.write_zeros(offset, first_whole)?;
        self.write_zeros(last_whole, end)?;
        // Whole units: a hole in the output (it reads as zeros), recorded as written so
        // the stream leaves it alone.
        let mut st = self.written.lock_outside_copy(first_whole, last_whole);
        let at = self.out_at(first_whole)?;
        let punched = self.output.zero_range(at, last_whole - first_whole);
        if punched.is_err() {
            drop(st);
            return self.write_zeros(first_whole, last_whole);
        }
        WrittenRanges::insert(&mut st.written, first_whole, last_whole);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        // The output is synced once, when it is committed.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn set(ranges: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        for &(s, e) in ranges {
            WrittenRanges::insert(&mut m, s, e);
        }
        m
    }

    #[test]
    fn write_back_gathers_adjacent_ranges_into_batches() {
        let mib = 1u64 << 20;
        let mut g = Gather::default();
        assert_eq!(g.add(0, mib), None);
        assert_eq!(g.add(mib, 3 * mib), None);
        // Not adjacent: the open batch is complete.
        assert_eq!(g.add(10 * mib, mib), Some((0, 4 * mib)));
        // Adjacent up to the batch size: complete with the range that reaches it.
        assert_eq!(g.add(11 * mib, 6 * mib), None);
        assert_eq!(g.add(17 * mib, 2 * mib), Some((10 * mib, 19 * mib)));
        assert_eq!(g.finish(), None);
        assert_eq!(g.add(20 * mib, mib), None);
        assert_eq!(g.finish(), Some((20 * mib, 21 * mib)));
        assert_eq!(g.finish(), None);
    }

    #[test]
    fn intervals_merge_and_split() {
        let m = set(&[(4096, 8192), (8192, 12288), (20480, 24576), (0, 4096)]);
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![(0, 12288), (20480, 24576)]
        );
        let m = set(&[(0, 4096), (8192, 12288)]);
        assert_eq!(
            WrittenRanges::pieces(&m, 2048, 16384),
            vec![
                (2048, 4096, true),
                (4096, 8192, false),
                (8192, 12288, true),
                (12288, 16384, false)
            ]
        );
        assert_eq!(
            WrittenRanges::pieces(&m, 4096, 8192),
            vec![(4096, 8192, false)]
        );
        assert_eq!(
            WrittenRanges::pieces(&m, 9000, 9100),
            vec![(9000, 9100, true)]
        );
        let m = set(&[(0, 4096), (8192, 12288), (2048, 10000)]);
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec![(0, 12288)]);
    }

    /// Source of 16 units of recognisable bytes; a device writing into an output at an
    /// offset; partial writes copy their unit first; reads mix source and output; the
    /// stream's writes skip what the device wrote, and its older data never lands on it.
    #[test]
    fn device_reads_through_and_stream_skips_written_units() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let src_bytes: Vec<u8> = (0..16 * 4096u32).map(|i| (i / 4096) as u8 + 1).collect();
        std::fs::write(&src_path, &src_bytes).unwrap();
        let out_path = dir.path().join("out");
        let out = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&out_path)
            .unwrap();
        out.set_len(8192 + 16 * 4096).unwrap();
        let written = WrittenRanges::new(1024);
        let dev = CowDevice::new(
            Region::open(&src_path).unwrap(),
            out.try_clone().unwrap(),
            8192,
            Arc::clone(&written),
        );
        // Superblock-style partial write: 1024 bytes at 1024 (unit 0), and a write
        // straddling units 2 and 3.
        dev.write_at(1024, &[0xaa; 1024]).unwrap();
        dev.write_at(3 * 4096 - 100, &[0xbb; 200]).unwrap();
        assert_eq!(written.written_bytes(), 3 * 4096);
        let mut all = vec![0u8; 16 * 4096];
        dev.read_at(0, &mut all).unwrap();
        let mut expect = src_bytes.clone();
        expect[1024..2048].fill(0xaa);
        expect[3 * 4096 - 100..3 * 4096 + 100].fill(0xbb);
        assert_eq!(all, expect);
        // The stream copies the whole source after the device wrote: written units skipped.
        written
            .write_unwritten(0, 16 * 4096, |s, e| {
                out.write_all_at(&src_bytes[s as usize..e as usize], 8192 + s)
            })
            .unwrap();
        let mut result = vec![0u8; 16 * 4096];
        out.read_exact_at(&mut result, 8192).unwrap();
        assert_eq!(
            result, expect,
            "the graft's bytes win over the stream's older copy"
        );
        // Zeroing: partial units become zeros by writing, whole units by a hole; all of it
        // is recorded, so a later stream copy leaves it zero.
        dev.zero_range(5 * 4096 + 512, 3 * 4096).unwrap();
        let mut z = vec![1u8; 3 * 4096];
        dev.read_at(5 * 4096 + 512, &mut z).unwrap();
        assert!(z.iter().all(|&b| b == 0));
        written
            .write_unwritten(0, 16 * 4096, |s, e| {
                out.write_all_at(&src_bytes[s as usize..e as usize], 8192 + s)
            })
            .unwrap();
        out.read_exact_at(&mut z, 8192 + 5 * 4096 + 512).unwrap();
        assert!(
            z.iter().all(|&b| b == 0),
            "zeroed ranges survive the stream"
        );
        let mut around = [0u8; 512];
        out.read_exact_at(&mut around, 8192 + 5 * 4096).unwrap();
        assert_eq!(
            around, [6u8; 512],
            "the rest of a partly zeroed unit is kept"
        );
        // Overflowing offsets are refused, not wrapped.
        assert!(dev.read_at(u64::MAX - 10, &mut [0u8; 100]).is_err());
    }

    /// While the stream copies a claimed range outside the lock, a device write into it
    /// waits and then lands on top of the stream's bytes; a device write elsewhere goes
    /// ahead meanwhile; the claim ends also when the copy fails.
    #[test]
    fn device_writes_wait_for_the_claimed_copy_and_land_on_top() {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, vec![7u8; 16 * 4096]).unwrap();
        let out = tempfile::tempfile_in(dir.path()).unwrap();
        out.set_len(16 * 4096).unwrap();
        let written = WrittenRanges::new(4096);
        let dev = CowDevice::new(
            Region::open(&src_path).unwrap(),
            out.try_clone().unwrap(),
            0,
            Arc::clone(&written),
        );
        let (in_copy, copying) = mpsc::channel();
        let (go, wait_go) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let (ranges, output) = (&written, &out);
            let stream = scope.spawn(move || {
                ranges.write_unwritten(0, 8 * 4096, |s, e| {
                    in_copy.send(()).unwrap();
                    wait_go.recv().unwrap();
                    output.write_all_at(&vec![7u8; (e - s) as usize], s)
                })
            });
            copying.recv().unwrap();
            // Outside the claimed range: goes ahead while the copy is held.
            dev.write_at(12 * 4096, &[0xcc; 4096]).unwrap();
            let (done_tx, done) = mpsc::channel();
            let dev = &dev;
            scope.spawn(move || {
                dev.write_at(2 * 4096, &[0xdd; 4096]).unwrap();
                done_tx.send(()).unwrap();
            });
            assert!(
                done.recv_timeout(Duration::from_millis(300)).is_err(),
                "a device write into the range being copied waits for the copy"
            );
            go.send(()).unwrap();
            done.recv_timeout(Duration::from_secs(10))
                .expect("the device write goes ahead once the copy is done");
            stream.join().unwrap().unwrap();
        });
        let mut unit = vec![0u8; 4096];
        out.read_exact_at(&mut unit, 2 * 4096).unwrap();
        assert_eq!(
            unit,
            vec![0xdd; 4096],
            "the device's newer bytes are on top"
        );
        out.read_exact_at(&mut unit, 12 * 4096).unwrap();
        assert_eq!(unit, vec![0xcc; 4096]);
        // A failed copy releases its claim too.
        let failed: Result<(), &str> =
            written.write_unwritten(8 * 4096, 12 * 4096, |_, _| Err("full"));
        assert_eq!(failed, Err("full"));
        dev.write_at(9 * 4096, &[0xee; 4096]).unwrap();
        out.read_exact_at(&mut unit, 9 * 4096).unwrap();
        assert_eq!(unit, vec![0xee; 4096]);
    }

    /// A wait for the device's end times out while it runs and returns as soon as another
    /// thread says it has finished.
    #[test]
    fn waiting_for_the_device_ends_when_it_finishes() {
        use std::time::{Duration, Instant};
        let written = WrittenRanges::new(4096);
        assert!(!written.wait_device_finished(Duration::from_millis(20)));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                written.device_finished();
            });
            let asked = Instant::now();
            assert!(written.wait_device_finished(Duration::from_secs(60)));
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "woken by the signal, not the timeout"
            );
        });
        assert!(written.wait_device_finished(Duration::ZERO));
    }
}
