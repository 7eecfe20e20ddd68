//! The stream's direct writes: the output written with `O_DIRECT`, past the page cache,
//! by [`WRITERS`] threads while the stream reads the next run.
//!
//! Why: a buffered write copies every byte into a fresh page-cache page, which the
//! kernel's flusher writes back later. Profiled on a converted 8 GiB guest, two thirds of
//! the conversion's CPU time went to that copy (`copy_folio_from_iter_atomic`), CPU the
//! graft running beside the stream needs; and the copy's gigabytes, which nobody reads
//! again, pushed everything else out of the cache. With `O_DIRECT` the disk takes the
//! data from our buffer itself: on that guest, cold, three runs of the stream took
//! 2.0–2.1 s and 0.8–0.9 s of CPU, against 2.0–4.8 s and 0.8–4.0 s with buffered writes.
//!
//! Runs of at least [`DIRECT_READ_BYTES`] are read with `O_DIRECT` too, when the source is
//! a plain file that allows it and is not in the page cache already: the first
//! [`PROBED_RUNS`] long runs are probed (their first and last page, with `RWF_NOWAIT`),
//! so a source just written (decompressed) or read whole is still read from the cache,
//! and a run read ahead while the stream waited for the graft is read from there without
//! the kernel's read-ahead. Shorter runs (a fragmented filesystem) stay buffered, where
//! the kernel's read-ahead joins them into large requests. Why: a buffered read fills
//! fresh page-cache pages and copies them out again. In a whole convert, whose graft also
//! fills the cache, that copy and the page allocations cost more than the disk: on the
//! 8 GiB bench guest, cold, interleaved, 8 runs each, the convert took a median of
//! 3.12 s (2.54–3.41) with buffered reads and 2.13 s (2.01–2.68) with direct ones, the
//! stream stage 3.00 s and 2.00 s. The stream alone, with nothing else in the cache,
//! gained nothing measurable (1.65 s against 1.68 s, 6 runs each).
//!
//! The reading thread hands each filled buffer to the writing threads over a channel of
//! [`BUFFERS`] (that many [`CHUNK_BYTES`] buffers in all per stream), so the read of one
//! run overlaps the writes of the ones before. The writers take chunks in turn and write
//! disjoint ranges, so their order does not matter; an error in one stops the others and
//! the reader.
//!
//! When (everything else is written through the page cache as before):
//! * the output is a raw file — not a block device, which needs its all-zero used
//!   blocks zeroed, and not qcow2;
//! * its filesystem reports a direct-I/O alignment (`statx` `STATX_DIOALIGN`, Linux 6.1)
//!   that divides the copied filesystem's block size and the output offset, so every
//!   write's offset and length is aligned; buffers are aligned to the page size, which is
//!   at least the memory alignment asked;
//! * beside a graft writing into the same filesystem through the page cache
//!   ([`WrittenRanges`]), only once the graft has finished
//!   ([`WrittenRanges::device_finished`]): ext4 holds the file's lock through the whole
//!   of a direct write that allocates blocks, and a writer through the page cache beside
//!   it waits for every one (the graft of a donor kernel took 2.4 s instead of 0.5 s),
//!   and the graft's small reads of the donor and the source queue behind the stream's
//!   8 MiB requests (with its writes gathered 16 MiB at a time, it still took 4.0 s).
//!   Until then the stream only asks the kernel to read its next runs ahead (the copier's
//!   `WAIT_READ_AHEAD_BYTES`) and writes nothing; when the graft is done, a third thread
//!   starts the graft's pages for the disk ([`Feed::device_finished`]) while the stream
//!   writes all of its runs direct. Before, the runs went through the page cache while
//!   the graft ran: on the 8 GiB bench guest, cold, interleaved, 5 runs each, the whole
//!   convert took a median of 3.35 s (2.54–5.56) that way and 2.40 s (2.22–2.52) waiting;
//!   the disk here serves reads and writes from one budget (1.5 GB/s reading alone,
//!   1.7 GB/s writing alone, 0.9 GB/s each at once), so running beside the graft bought
//!   no bandwidth, while every buffered byte cost a copy into a fresh page and its
//!   write-back at the final sync. The graft's unit and the output offset must be
//!   multiples of the page size, so a page never holds a block the graft wrote (buffered)
//!   beside one the stream writes direct, which the kernel cannot keep coherent; the
//!   units the graft wrote are still skipped.
//!
//! A direct write the kernel refuses with `EINVAL` (a filesystem that accepts the flag at
//! open but not the request) is redone through the page cache, and the rest of the copy
//! stays there.

use super::{write_nonzero, StreamError, CHUNK_BYTES};
use crate::blockio::Region;
use crate::ext::write::cow::WrittenRanges;
use crate::output;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

/// Writing threads per stream. With one, the disk saw one 8 MiB write at a time and
/// waited for the reader between them; with two, one writes while the other waits for
/// its next chunk. The 8 GiB bench guest's stream alone, cold, interleaved (medians): 1.96 s
/// with one writer and 1.61 s with two (5 runs each), 2.13 s and 1.95 s (8 runs each);
/// while the host's disk was slow, 2.40 s and 2.45 s (6 runs each). A third writer, and
/// `fallocate` before each write (so that ext4 takes its lock shared), gained nothing.
const WRITERS: usize = 2;

/// Buffers per stream: one being read while each writer writes another.
const BUFFERS: usize = WRITERS + 1;

/// Shortest run read with `O_DIRECT` (see the module docs); shorter ones go through the
/// page cache and its read-ahead.
pub(super) const DIRECT_READ_BYTES: usize = 1 << 20;

/// Runs probed for the page cache before the copy settles on direct or buffered reads
/// (see [`Feed::reads_direct`]). More than one: a source converted again holds the runs
/// read ahead the last time, and where those end depends on when that graft finished.
const PROBED_RUNS: usize = 8;

/// A [`CHUNK_BYTES`] window of a larger allocation, aligned to the page size. Moving it
/// between threads moves the vector, not its heap block, so the window stays aligned.
pub(super) struct Buffer {
    data: Vec<u8>,
    at: usize,
}

impl Buffer {
    fn new(align: usize) -> Self {
        let data = vec![0u8; CHUNK_BYTES + align];
        let at = data.as_ptr().align_offset(align).min(align);
        Buffer { data, at }
    }

    fn window(&mut self, len: usize) -> &mut [u8] {
        &mut self.data[self.at..self.at + len]
    }
}

/// One chunk read, to be written: `len` bytes at filesystem byte `pos`.
pub(super) struct Job {
    buf: Buffer,
    len: usize,
    pos: u64,
}

/// The output opened for direct writes, before the writers start.
pub(super) struct Files {
    dst: File,
    /// The output opened as it was (buffered), for writes the kernel refuses direct.
    dst_buffered: File,
    align: usize,
}

/// The direct I/O alignment of `file` (`STATX_DIOALIGN`): (memory, file offset), or
/// `None` when the filesystem does not support `O_DIRECT` or the kernel does not say.
fn dio_align(file: &File) -> Option<(u64, u64)> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let st = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
    if st.stx_mask & StatxFlags::DIOALIGN.bits() == 0
        || st.stx_dio_mem_align == 0
        || st.stx_dio_offset_align == 0
    {
        return None;
    }
    Some((
        u64::from(st.stx_dio_mem_align),
        u64::from(st.stx_dio_offset_align),
    ))
}

/// Open `file` again as `options` say (through `/proc/self/fd`, which also reaches an
/// unlinked `O_TMPFILE` output): a new open file description, with its own flags and
/// read-ahead state.
fn reopen(file: &File, options: &std::fs::OpenOptions) -> Option<File> {
    use std::os::fd::AsRawFd;
    options
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// `O_DIRECT` (and `O_CLOEXEC`, which `custom_flags` would otherwise drop) for
/// [`reopen`], reading or writing.
fn direct_options(write: bool) -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
    options
}

/// The source opened for direct reads, and the file-offset alignment they need.
struct SourceDirect {
    file: File,
    align: u64,
    /// The source opened again, buffered, without read-ahead (`POSIX_FADV_RANDOM`): for
    /// the probes and for the runs found in the page cache. Through the stream's own
    /// descriptor, a buffered read would start the kernel's sequential read-ahead of the
    /// next runs, every probe would then find its run cached, and the rest of the source
    /// would be read through the page cache.
    cached: File,
}

impl SourceDirect {
    /// Open `src`'s file with `O_DIRECT` when it is a plain file whose filesystem
    /// reports a direct-I/O alignment that page-aligned buffers meet.
    fn open(src: &Region) -> Option<SourceDirect> {
        let file = src.plain_file()?;
        let (mem_align, align) = dio_align(file)?;
        if mem_align > rustix::param::page_size() as u64 {
            return None;
        }
        let direct = reopen(file, &direct_options(false))?;
        let cached = reopen(file, std::fs::OpenOptions::new().read(true))?;
        rustix::fs::fadvise(&cached, 0, None, rustix::fs::Advice::Random).ok()?;
        Some(SourceDirect {
            file: direct,
            align,
            cached,
        })
    }
}

/// Whether the page at `at` of `file` is in the page cache, probed with an `RWF_NOWAIT`
/// read into `buf` (`EAGAIN` when it is not); `None` when the kernel cannot tell.
fn in_page_cache(file: &File, at: u64, buf: &mut [u8]) -> Option<bool> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    match preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        at,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Some(n > 0),
        Err(Errno::AGAIN) => Some(false),
        Err(_) => None,
    }
}

/// Open `dst` for direct writes when the copy qualifies (see the module docs).
pub(super) fn open(
    dst: &File,
    dst_offset: u64,
    block_size: u64,
    around: Option<&WrittenRanges>,
) -> Option<Files> {
    let page = rustix::param::page_size() as u64;
    if crate::blockdev::is_device_file(dst) {
        return None;
    }
    if around.is_some_and(|w| w.unit() % page != 0 || dst_offset % page != 0) {
        return None;
    }
    let (mem_align, offset_align) = dio_align(dst)?;
    if mem_align > page || block_size % offset_align != 0 || dst_offset % offset_align != 0 {
        return None;
    }
    Some(Files {
        dst: reopen(dst, &direct_options(true))?,
        dst_buffered: dst.try_clone().ok()?,
        align: page as usize,
    })
}

/// The reading side, held by the stream's copier.
pub(super) struct Feed {
    /// The source for direct reads, until one is refused or the source is found in the
    /// page cache.
    source: Option<SourceDirect>,
    /// Runs still to probe before the copy reads direct (see [`Feed::reads_direct`]).
    probes_left: usize,
    /// Bytes read with `O_DIRECT`.
    pub o_direct_read_bytes: u64,
    jobs: Option<SyncSender<Job>>,
    free: Receiver<Buffer>,
    /// Tells the flusher that the device beside the stream has finished.
    device_done: Option<Sender<()>>,
}

/// What the writers did.
pub(super) struct Written {
    pub bytes: u64,
    pub result: Result<(), StreamError>,
}

/// Start the writers in `scope`; returns the feed for the reading side (which reads
/// `src`) and the writers.
pub(super) fn start<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    src: &Region,
    files: Files,
    dst_offset: u64,
    block_size: u64,
    around: Option<&'scope WrittenRanges>,
) -> (Feed, Writers<'scope>) {
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<Job>(BUFFERS);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Buffer>(BUFFERS);
    for _ in 0..BUFFERS {
        // The channel holds BUFFERS: these sends cannot block or fail.
        let _ = free_tx.send(Buffer::new(files.align));
    }
    let Files {
        dst, dst_buffered, ..
    } = files;
    let device_done = match (around, dst_buffered.try_clone()) {
        (Some(_), Ok(file)) => {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            scope.spawn(move || {
                if rx.recv().is_ok() {
                    crate::blockio::start_write_back(&file, 0, None);
                }
            });
            Some(tx)
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        jobs: Mutex::new(jobs_rx),
        failed: AtomicBool::new(false),
    });
    // Each writer has its own descriptors. A clone the kernel refuses (out of
    // descriptors) only leaves fewer writers; the first has the files themselves.
    let mut outputs = vec![(dst, dst_buffered)];
    while outputs.len() < WRITERS {
        match (outputs[0].0.try_clone(), outputs[0].1.try_clone()) {
            (Ok(d), Ok(b)) => outputs.push((d, b)),
            _ => break,
        }
    }
    let mut handles = Vec::with_capacity(outputs.len());
    for (dst, dst_buffered) in outputs {
        let (shared, free) = (Arc::clone(&shared), free_tx.clone());
        handles.push(scope.spawn(move || {
            let mut w = Writer {
                dst,
                dst_buffered,
                buffered: false,
                dst_offset,
                block_size: block_size as usize,
                around,
                bytes: 0,
            };
            let result = w.run(&shared, &free);
            if result.is_err() {
                shared.failed.store(true, Ordering::Relaxed);
            }
            Written {
                bytes: w.bytes,
                result,
            }
        }));
    }
    (
        Feed {
            source: SourceDirect::open(src),
            probes_left: PROBED_RUNS,
            o_direct_read_bytes: 0,
            jobs: Some(jobs_tx),
            free: free_rx,
            device_done,
        },
        Writers { handles },
    )
}

/// What the writers share: the queue of chunks to write, and whether one of them failed
/// (the others then stop too, and so does the reader, waiting for a free buffer).
struct Shared {
    jobs: Mutex<Receiver<Job>>,
    failed: AtomicBool,
}

/// The running writers.
pub(super) struct Writers<'scope> {
    handles: Vec<std::thread::ScopedJoinHandle<'scope, Written>>,
}

impl Writers<'_> {
    /// Wait for every writer (the feed must be closed first): the bytes they wrote, and
    /// an error when one failed (the others stop at their next chunk then; when several
    /// failed, the first started's). A writer's panic goes on here.
    pub(super) fn join(self) -> Written {
        let mut all = Written {
            bytes: 0,
            result: Ok(()),
        };
        for handle in self.handles {
            let done = handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            all.bytes += done.bytes;
            if all.result.is_ok() {
                all.result = done.result;
            }
        }
        all
    }
}

impl Feed {
    /// Whether the run of `len` bytes at filesystem byte `pos` of `src` is to be read with
    /// `O_DIRECT`: then the caller does not ask the kernel to read it ahead. The first
    /// [`PROBED_RUNS`] runs long enough decide for the whole copy, before anything
    /// announced them for read-ahead: once the first or last page of one is not in the
    /// page cache, the rest is read direct; when all of them are there, the rest is read
    /// through the page cache.
    pub(super) fn reads_direct(&mut self, src: &Region, pos: u64, len: u64) -> bool {
        let Some(direct) = &self.source else {
            return false;
        };
        let at = src.offset() + pos;
        if len < DIRECT_READ_BYTES as u64
            || at % direct.align != 0
            || len % direct.align != 0
            || pos.checked_add(len).is_none_or(|end| end > src.len())
        {
            return false;
        }
        if self.probes_left == 0 {
            return true;
        }
        let page = (rustix::param::page_size() as u64).max(direct.align);
        let mut probe = vec![0u8; page as usize];
        let cached = [at, at + len - page]
            .iter()
            .map(|&p| in_page_cache(&direct.cached, p, &mut probe))
            .collect::<Option<Vec<bool>>>();
        match cached {
            Some(c) if c.contains(&false) => {
                self.probes_left = 0;
                true
            }
            Some(_) if self.probes_left > 1 => {
                self.probes_left -= 1;
                false
            }
            _ => {
                self.source = None;
                false
            }
        }
    }

    /// Read `len` bytes at filesystem byte `pos` of `src` and hand them to the writers.
    /// `direct`: [`Feed::reads_direct`] said so for this run. `Ok(false)` when the
    /// writers have stopped (the error is in their [`Written`]).
    pub(super) fn push(
        &mut self,
        src: &Region,
        pos: u64,
        len: usize,
        direct: bool,
    ) -> Result<bool, StreamError> {
        let Ok(mut buf) = self.free.recv() else {
            return Ok(false);
        };
        let data = buf.window(len);
        let read = self.read(src, pos, data, direct);
        read.map_err(|source| StreamError::Read {
            path: src.path().to_path_buf(),
            offset: src.offset() + pos,
            source,
        })?;
        let Some(jobs) = &self.jobs else {
            return Ok(false);
        };
        Ok(jobs.send(Job { buf, len, pos }).is_ok())
    }

    /// Read `buf.len()` bytes at `pos` of `src`: with `O_DIRECT` when `direct`, else
    /// through the page cache, without read-ahead when the copy reads direct (the run was
    /// read ahead already, or is short). A direct read the kernel refuses (`EINVAL`) is
    /// redone through the page cache, as the rest of the copy is then.
    fn read(&mut self, src: &Region, pos: u64, buf: &mut [u8], direct: bool) -> io::Result<()> {
        let at = src.offset() + pos;
        if let Some(source) = &self.source {
            if direct {
                match source.file.read_exact_at(buf, at) {
                    Ok(()) => {
                        self.o_direct_read_bytes += buf.len() as u64;
                        return Ok(());
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.source = None,
                    Err(e) => return Err(e),
                }
            } else if src.len().saturating_sub(pos) >= buf.len() as u64 {
                return source.cached.read_exact_at(buf, at);
            }
        }
        src.read_exact_at(pos, buf)
    }

    /// The device beside the stream has finished: its pages, written through the page
    /// cache, start for the disk now, while the stream goes on, instead of all at the
    /// output's final sync.
    pub(super) fn device_finished(&self) {
        if let Some(tx) = &self.device_done {
            // The flusher ends only after this, or when the feed closes.
            let _ = tx.send(());
        }
    }

    /// No more chunks: the writers finish the queued ones and end, and so does the
    /// flusher.
    pub(super) fn close(&mut self) {
        self.jobs = None;
        self.device_done = None;
    }
}

struct Writer<'a> {
    dst: File,
    dst_buffered: File,
    /// A direct write was refused: write through the page cache from now on.
    buffered: bool,
    dst_offset: u64,
    block_size: usize,
    around: Option<&'a WrittenRanges>,
    bytes: u64,
}

impl Writer<'_> {
    fn run(&mut self, shared: &Shared, free: &SyncSender<Buffer>) -> Result<(), StreamError> {
        let (around, block) = (self.around, self.block_size);
        while !shared.failed.load(Ordering::Relaxed) {
            // The lock is held only to take the next chunk, not while writing it.
            let next = match shared.jobs.lock() {
                Ok(jobs) => jobs.recv(),
                Err(_) => break,
            };
            let Ok(mut job) = next else { break };
            if shared.failed.load(Ordering::Relaxed) {
                break;
            }
            let data = job.buf.window(job.len);
            self.bytes += write_nonzero(data, job.pos, block, around, |at, data| {
                self.write_at(self.dst_offset + at, data)
            })
            .map_err(|e| {
                StreamError::Write(output::write_error(&self.dst_buffered, "cannot write", e))
            })?;
            // The reader waits for a free buffer; it ends first only on its own error.
            if free.send(job.buf).is_err() {
                break;
            }
        }
        Ok(())
    }

    fn write_at(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        if !self.buffered {
            match self.dst.write_all_at(data, at) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.buffered = true,
                other => return other,
            }
        }
        self.dst_buffered.write_all_at(data, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `chunks` chunks of non-zero bytes in `dir`.
    fn source(dir: &std::path::Path, chunks: usize) -> Region {
        let path = dir.join("src");
        std::fs::write(&path, vec![0xA5u8; chunks * CHUNK_BYTES]).unwrap();
        Region::open(&path).unwrap()
    }

    /// `out` as the writers' files.
    fn files(out: File) -> Files {
        Files {
            dst: out.try_clone().unwrap(),
            dst_buffered: out,
            align: rustix::param::page_size(),
        }
    }

    /// Push a chunk at each of `positions` until `most` were taken or the writers stopped
    /// taking them; how many were taken.
    fn push_all(
        feed: &mut Feed,
        src: &Region,
        positions: impl Iterator<Item = u64>,
        most: usize,
    ) -> usize {
        let mut pushed = 0;
        for pos in positions.take(most) {
            match feed.push(src, pos, CHUNK_BYTES, false) {
                Ok(true) => pushed += 1,
                Ok(false) => break,
                Err(e) => panic!("the read failed: {e}"),
            }
        }
        pushed
    }

    #[test]
    fn a_failed_write_stops_the_writers_and_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), 1);
        let out_path = dir.path().join("out");
        std::fs::write(&out_path, b"").unwrap();
        // Opened read-only, every write fails (EBADF), direct or not.
        let files = files(File::open(&out_path).unwrap());
        std::thread::scope(|scope| {
            let (mut feed, writers) = start(scope, &src, files, 0, 4096, None);
            let pushed = push_all(&mut feed, &src, std::iter::repeat(0), 100);
            feed.close();
            let done = writers.join();
            // No failed writer gives its buffer back: the reader stops once the
            // buffers it had are used.
            assert!(
                pushed <= BUFFERS,
                "{pushed} chunks pushed after the failure"
            );
            assert!(
                matches!(done.result, Err(StreamError::Write(_))),
                "{:?}",
                done.result.err()
            );
            assert_eq!(done.bytes, 0);
        });
    }

    /// The largest size `file`'s filesystem lets it have (its `s_maxbytes`): `ftruncate`
    /// refuses a size past it.
    fn largest_size(file: &File) -> u64 {
        let (mut ok, mut refused) = (0u64, i64::MAX as u64 + 1);
        while refused - ok > 1 {
            let mid = ok + (refused - ok) / 2;
            if file.set_len(mid).is_ok() {
                ok = mid;
            } else {
                refused = mid;
            }
        }
        file.set_len(0).unwrap();
        ok
    }

    #[test]
    fn a_writer_that_fails_stops_the_one_that_could_go_on() {
        let chunk = CHUNK_BYTES as u64;
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), 3);
        let out = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("out"))
            .unwrap();
        // The output starts two chunks before the largest size its filesystem allows:
        // chunks 0 and 1 can be written there, chunk 2 cannot (EFBIG, or EINVAL past the
        // largest file offset).
        let limit = largest_size(&out);
        assert!(
            limit > 3 * chunk,
            "a filesystem this small cannot run the test"
        );
        let files = files(out);
        std::thread::scope(|scope| {
            let (mut feed, writers) = start(scope, &src, files, limit - 2 * chunk, 4096, None);
            let positions = [0, chunk, 2 * chunk]
                .into_iter()
                .chain(std::iter::repeat(0));
            let pushed = push_all(&mut feed, &src, positions, 100);
            feed.close();
            let done = writers.join();
            // Chunk 0 rewritten over and over would go on as long as it is pushed: the
            // writer still able to write stops once the other has failed, and the reader
            // with it (after a few chunks, or more if the failing writer is slow to run).
            assert!(
                pushed < 100,
                "{pushed} chunks pushed: the writers went on after one failed"
            );
            assert!(
                matches!(done.result, Err(StreamError::Write(_))),
                "{:?}",
                done.result.err()
            );
        });
    }
}
