//! Copy the used blocks of the source filesystem into partition 1, sparse.
//!
//! The walker reads the group descriptors and block bitmaps (like `e2image -ra`) and
//! copies only allocated blocks, coalesced into runs of up to [`CHUNK_BYTES`], with
//! positioned reads and writes through one buffer allocated once: memory does not
//! depend on the image size, and the work grows with used space, not image size.
//! Blocks that are allocated but all zeros are skipped too. Everything else stays a
//! hole in the (freshly `set_len`, hence sparse and zero-filled) destination.
//!
//! When the source and the output sit on one filesystem that shares extents on copy
//! (btrfs, XFS with reflink, bcachefs, OpenZFS block cloning, NFS 4.2 server-side copy),
//! runs go through `copy_file_range(2)` instead: the kernel links the blocks rather than
//! copying them, so a run costs no read, no write and no new space (see `shares_extents`).
//!
//! Which blocks are used, group by group:
//! * an initialised group: its block bitmap (checked against its metadata_csum
//!   checksum, and required to mark the group's own superblock/descriptor copies);
//! * a `BLOCK_UNINIT` group (only with `gdt_csum`/`metadata_csum`, as in the kernel):
//!   its bitmap was never written, and the group holds nothing but metadata. We compute
//!   it as e2fsprogs' `read_bitmaps` does: the superblock backup, descriptor table
//!   copy and reserved GDT blocks (`sparse_super`, `sparse_super2`, `meta_bg` aware), plus
//!   the group's own bitmaps and inode table — wherever flex_bg placed them, so those
//!   that landed in another group are added to that group's set too.
//! * ext2/ext3 have no flags: every group has a real bitmap.
//!
//! When the bitmaps cannot be trusted — the journal needs recovery (replaying it will
//! reference blocks the on-disk bitmaps do not mark yet), the filesystem was not cleanly
//! unmounted or has recorded errors, a checksum fails, a bitmap or table lies outside the filesystem, bigalloc
//! — the whole filesystem is copied instead, still skipping all-zero blocks, and the
//! reason is reported through [`Progress::note`] and [`StreamStats::method`].
//!
//! Into a raw output file whose filesystem allows it, the runs are written with
//! `O_DIRECT` by two writer threads while the next run is read (see the `direct` module):
//! the written gigabytes do not pass through the page cache. Runs of a plain source file
//! that is not in the page cache are read with `O_DIRECT` too, when they are long.
//!
//! The end of an inode table that no inode ever used (past `bg_itable_unused`, trusted
//! only with descriptor checksums, as the kernel and e2fsck do) is not read at all: the
//! fresh output reads zeros there, as mke2fs and the kernel's lazy init leave it. A block
//! device output gets the whole table, since its old data would stay.
//!
//! The log of a clean internal journal is not read either, under the same condition:
//! when the filesystem has `has_journal` with a journal inode (`s_journal_inum`), its
//! `needs_recovery` flag is clear and the journal superblock's `s_start` is 0, every
//! journal block after the journal superblock is left out (see
//! [`crate::ext::read::journal::idle_log`]); the journal superblock and the inode's
//! extent tree or indirect blocks are copied. An empty log is never read:
//! Documentation/filesystems/ext4/journal.rst ("Super Block") puts `s_start`, big-endian,
//! at 0x1C of the journal superblock, the log's first block, and the kernel's
//! `jbd2_journal_recover` and e2fsprogs' recovery return without reading the log when it
//! is 0. That field alone does not make the filesystem clean (journal.rst says so: a
//! mounted filesystem may have committed nothing yet), hence `needs_recovery` must be
//! clear too. After the next mount jbd2 writes each transaction before any recovery
//! could read it, and recovery accepts a block only with the journal magic and the
//! expected sequence, so zeros serve as well as the stale transactions they replace. A
//! journal that is not clean, or has anything odd about it (a hole, a block outside the
//! filesystem, fast commits, an unknown feature, a bad checksum), is copied whole.
//!
//! A group's bitmaps and inode table are always copied, whatever its bitmap says. A
//! block bitmap whose free count disagrees with its group descriptor, or that calls the
//! group's superblock/descriptor blocks, bitmaps or inode tables free, is corruption the copy cannot fix (the
//! graft would allocate over blocks it wrongly calls free):
//! [`StreamError::InconsistentBitmap`], before anything is written.

use crate::blockio::{OutputDevice, Region};
use crate::bytes::ParseError;
use crate::ext::group_desc::{self, DescReader, GroupDesc, GroupDescError};
use crate::ext::superblock::{feature, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::output::{self, OutputError};
use crate::progress::{Progress, Stage};
use std::fs::File;
use std::io;
use std::path::PathBuf;

mod direct;

/// Largest single read/write: runs of used blocks are coalesced up to this size.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Source bytes announced for read-ahead while direct writes wait for the device beside
/// the stream (see [`Copier::push_run`]): they sit in the page cache, not in memory of
/// ours, and the kernel drops them under pressure.
const WAIT_READ_AHEAD_BYTES: u64 = 256 << 20;

/// At most this many runs queued meanwhile (a fragmented filesystem has runs of one
/// block).
const WAIT_READ_AHEAD_RUNS: usize = 65_536;

/// How often a wait for the device checks for cancellation.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Most out-of-group bitmap and inode-table extents remembered (16 bytes each; flex_bg
/// places up to three per group elsewhere, so this covers ~350k groups, ~40 TiB at
/// 4 KiB blocks); a filesystem needing more is copied whole.
const MAX_FOREIGN_EXTENTS: usize = 1 << 20;

/// How the blocks to copy were chosen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum StreamMethod {
    /// From the block bitmaps.
    Bitmaps,
    /// The whole filesystem, skipping all-zero blocks, because the bitmaps were unusable.
    WholeFilesystem { reason: String },
}

/// What a stream did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    pub method: StreamMethod,
    /// Size of the filesystem.
    pub fs_bytes: u64,
    /// Bytes selected for copying (used blocks, or the whole filesystem).
    pub selected_bytes: u64,
    pub bytes_read: u64,
    /// Bytes written (selected bytes that were not all zeros).
    pub bytes_written: u64,
    /// Selected bytes skipped because they were zeros.
    pub zero_bytes_skipped: u64,
    /// Selected bytes not even read: the ends of inode tables that hold no inode ever
    /// used (past `bg_itable_unused`), which the fresh output reads as zeros.
    pub unused_inode_table_bytes: u64,
    /// Selected bytes not even read: the log of a clean internal journal (its blocks
    /// after the journal superblock, not its extent tree or indirect blocks), which
    /// nothing reads before writing it again and the fresh output reads as zeros.
    pub clean_journal_bytes: u64,
    pub groups: u64,
    pub block_uninit_groups: u64,
    /// Read/write chunks issued.
    pub chunks: u64,
    /// Bytes handed to `copy_file_range(2)` (shared with the source where the filesystem
    /// can; counted in `bytes_read` and `bytes_written` too). 0 when read + write was used.
    pub copy_file_range_bytes: u64,
    /// Bytes of the runs read for direct writes (`O_DIRECT`, past the page cache; counted
    /// in `bytes_read` too); 0 when the output does not allow them (see the `direct`
    /// module).
    pub direct_bytes: u64,
    /// Bytes of those runs read with `O_DIRECT` as well (long runs of a source file not
    /// in the page cache; see the `direct` module); counted in `direct_bytes` too.
    pub direct_read_bytes: u64,
}

/// Errors of the stream and swap stages.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the source filesystem in {}: {source}", path.display())]
    Superblock {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    #[error("the source filesystem in {} claims {fs_bytes} bytes but its range is {available} bytes (truncated image?)", path.display())]
    SourceTooShort {
        path: PathBuf,
        fs_bytes: u64,
        available: u64,
    },
    #[error("{} holds an external ext journal (journal_dev), not a filesystem", path.display())]
    NotAFilesystem { path: PathBuf },
    #[error("reading {} at byte {offset}: {source}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("the source filesystem in {} is inconsistent: group {group}: {why} (e2fsck -fn reports it too). Writing into the copy could overwrite live data: repair a copy of the image (cp it, run e2fsck -fy on the copy) and convert the copy", path.display())]
    InconsistentBitmap {
        path: PathBuf,
        group: u64,
        why: String,
    },
    #[error(transparent)]
    Write(#[from] OutputError),
    #[error("the output is {len} bytes, too short for {need} bytes at offset {offset}")]
    DestinationTooSmall { len: u64, offset: u64, need: u64 },
    #[error("a swap area of {len} bytes is too small: it needs at least {min} bytes")]
    SwapTooSmall { len: u64, min: u64 },
    #[error("swap label {label:?} is {len} bytes; the swap header holds at most 16")]
    SwapLabelTooLong { label: String, len: usize },
    #[error("cancelled")]
    Cancelled,
}

impl From<StreamError> for crate::Error {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Cancelled => crate::Error::Cancelled,
            other => crate::Error::Stream(other),
        }
    }
}

/// Copy the used blocks of the filesystem in `src` to `dst` at `dst_offset`.
///
/// `dst` must already be at least `dst_offset + filesystem size` long and read as zeros
/// in that range (a fresh sparse file: see [`crate::output::TempOutput`]); holes are left
/// where nothing is copied. A block device `dst` gets its used all-zero blocks zeroed
/// (free blocks keep whatever the device held). Progress: `stage(Stream, total bytes to copy)`, then
/// `advance(bytes done)` after every chunk; cancellation is checked between chunks.
pub fn copy_used_blocks<D: OutputDevice>(
    src: &Region,
    dst: &D,
    dst_offset: u64,
    progress: &mut dyn Progress,
) -> Result<StreamStats, StreamError> {
    copy_used_blocks_with(src, dst, dst_offset, CopyMethod::Auto, progress)
}

/// [`copy_used_blocks`] with the copy method chosen by the caller.
pub fn copy_used_blocks_with<D: OutputDevice>(
    src: &Region,
    dst: &D,
    dst_offset: u64,
    method: CopyMethod,
    progress: &mut dyn Progress,
) -> Result<StreamStats, StreamError> {
    copy(src, dst, dst_offset, None, method, progress)
}

/// Copy all of `src` to `dst` at `dst_offset`, for a volume that is not an ext
/// filesystem (XFS, FAT, unknown data): only the ranges the source maps as data when it
/// keeps a map ([`Region::data_ranges`]), and of those only the 4 KiB blocks that are not
/// all zeros, so the copy stays sparse. `dst` must read as zeros there (a fresh sparse
/// output). Progress: `stage(Stream, bytes to read)`, `advance` per chunk; cancellation is
/// checked between chunks. Returns the bytes written.
pub fn copy_sparse<D: OutputDevice>(
    src: &Region,
    dst: &D,
    dst_offset: u64,
    progress: &mut dyn Progress,
) -> Result<u64, StreamError> {
    const BLOCK: usize = 4096;
    let ranges = src
        .data_ranges(0, src.len())
        .unwrap_or_else(|| vec![(0, src.len())]);
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    progress.stage(Stage::Stream, Some(total));
    let mut buf = vec![0u8; CHUNK_BYTES];
    let (mut done, mut written) = (0u64, 0u64);
    for (start, len) in ranges {
        let end = start.saturating_add(len).min(src.len());
        let mut pos = start;
        while pos < end {
            if progress.is_cancelled() {
                return Err(StreamError::Cancelled);
            }
            let n = (end - pos).min(CHUNK_BYTES as u64) as usize;
            let chunk = &mut buf[..n];
            src.read_exact_at(pos, chunk)
                .map_err(|source| StreamError::Read {
                    path: src.path().to_path_buf(),
                    offset: src.offset() + pos,
                    source,
                })?;
            // Runs of blocks that are not all zeros, written one run at a time.
            let mut i = 0;
            while i < n {
                let blk = |i: usize| &chunk[i..(i + BLOCK).min(n)];
                if crate::bytes::is_zero(blk(i)) {
                    i += BLOCK;
                    continue;
                }
                let run_start = i;
                while i < n && !crate::bytes::is_zero(blk(i)) {
                    i += BLOCK;
                }
                let run_end = i.min(n);
                dst.write_at(
                    dst_offset + pos + run_start as u64,
                    &chunk[run_start..run_end],
                )
                .map_err(|e| {
                    output::write_error(dst.backing_file(), "cannot write a carried volume to", e)
                })?;
                written += (run_end - run_start) as u64;
            }
            pos += n as u64;
            done += n as u64;
            progress.advance(done);
        }
    }
    Ok(written)
}

/// How the stream moves the blocks it copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMethod {
    /// For a stream that is the output file's only writer while it runs:
    /// `copy_file_range(2)` where input and output share a filesystem that shares extents
    /// (see [`CopyMethod::CopyFileRange`]); elsewhere read + write, the writes with
    /// `O_DIRECT` where the output allows them ([`CopyMethod::Direct`]).
    #[default]
    Auto,
    /// [`CopyMethod::Auto`] for a stream that shares the output file with other writers
    /// working at the same time: `copy_file_range(2)` where extents are shared, else read
    /// and write through the page cache. ext4 holds the file's lock through the whole of a
    /// direct write that allocates blocks, so a writer through the page cache beside it
    /// waits for every one (measured: the graft of a donor kernel took 0.5 s alone and
    /// 2.4 s beside a stream writing direct).
    AutoShared,
    /// Always try `copy_file_range(2)` first (falling back to read + write for good when
    /// the kernel refuses it for the two files). On a filesystem without shared extents
    /// this copies through the page cache and allocates all-zero blocks.
    CopyFileRange,
    /// Always read + write through the page cache, leaving all-zero blocks as holes.
    ReadWrite,
    /// Write with `O_DIRECT` where the output allows it, and read long runs of a source
    /// not in the page cache with `O_DIRECT` too (see the `direct` module; through the
    /// page cache elsewhere); never `copy_file_range(2)`.
    Direct,
}

impl CopyMethod {
    /// The method two switches ask for (each `always`, `never`, or anything else for the
    /// default): `copy_file_range` forced (`always`) or forbidden (`never`: direct
    /// writes where allowed), direct writes forbidden (`never`: the page cache only).
    pub fn from_switches(copy_file_range: &str, direct_io: &str) -> Self {
        match (copy_file_range, direct_io) {
            ("always", _) => CopyMethod::CopyFileRange,
            (_, "never") => CopyMethod::ReadWrite,
            ("never", _) => CopyMethod::Direct,
            _ => CopyMethod::Auto,
        }
    }

    /// This method for a stream that shares the output file with other writers at the
    /// same time: never direct writes (see [`CopyMethod::AutoShared`]).
    pub fn beside_other_writers(self) -> Self {
        match self {
            CopyMethod::Auto => CopyMethod::AutoShared,
            CopyMethod::Direct => CopyMethod::ReadWrite,
            other => other,
        }
    }
}

/// [`copy_used_blocks`] while the graft writes into the same filesystem through a
/// [`crate::ext::write::cow::CowDevice`]: ranges in `written` are left alone (see that module).
/// `stage(Stream, …)` is reported only once the bitmaps were checked, so a caller can wait
/// for it before letting anything else write. copy_file_range is not used here: a run
/// has to be split around the written ranges. With direct writes ([`CopyMethod::Auto`],
/// [`CopyMethod::Direct`], where the output allows them) the stream reads ahead and
/// writes nothing until the device has finished
/// ([`crate::ext::write::cow::WrittenRanges::device_finished`], which the caller must
/// call, also on its errors; see the `direct` module); through the page cache it copies
/// beside the device's writes.
pub fn copy_used_blocks_around<D: OutputDevice>(
    src: &Region,
    dst: &D,
    dst_offset: u64,
    written: &crate::ext::write::cow::WrittenRanges,
    method: CopyMethod,
    progress: &mut dyn Progress,
) -> Result<StreamStats, StreamError> {
    copy(src, dst, dst_offset, Some(written), method, progress)
}

fn copy<D: OutputDevice>(
    src: &Region,
    dst: &D,
    dst_offset: u64,
    written: Option<&crate::ext::write::cow::WrittenRanges>,
    method: CopyMethod,
    progress: &mut dyn Progress,
) -> Result<StreamStats, StreamError> {
    let sb = read_superblock(src)?;
    if sb.has_incompat(feature::INCOMPAT_JOURNAL_DEV) {
        return Err(StreamError::NotAFilesystem {
            path: src.path().to_path_buf(),
        });
    }
    let fs_bytes = sb.fs_bytes();
    if fs_bytes > src.len() {
        return Err(StreamError::SourceTooShort {
            path: src.path().to_path_buf(),
            fs_bytes,
            available: src.len(),
        });
    }
    let dst_len = dst
        .disk_len()
        .map_err(|e| output::write_error(dst.backing_file(), "cannot stat", e))?;
    let need = dst_offset.saturating_add(fs_bytes);
    if dst_len < need {
        return Err(StreamError::DestinationTooSmall {
            len: dst_len,
            offset: dst_offset,
            need: fs_bytes,
        });
    }
    let mut copier = Copier::new(src, dst, dst_offset, sb.block_size());
    copier.use_copy_range = written.is_none()
        && match method {
            CopyMethod::Auto | CopyMethod::AutoShared => src
                .plain_file()
                .zip(dst.raw_file())
                .is_some_and(|(f, d)| shares_extents(f, d)),
            CopyMethod::CopyFileRange => true,
            CopyMethod::ReadWrite | CopyMethod::Direct => false,
        };
    copier.written_around = written;
    let mut walker = Walker::new(src, &sb);
    // A fresh output file reads as zeros where nothing is written; a device does not.
    walker.skip_unused_tables = dst
        .raw_file()
        .is_none_or(|f| !crate::blockdev::is_device_file(f));
    walker.skip_clean_journal = walker.skip_unused_tables;
    let verdict = walker.analyse()?;
    let mut stats = StreamStats {
        method: StreamMethod::Bitmaps,
        fs_bytes,
        selected_bytes: 0,
        bytes_read: 0,
        bytes_written: 0,
        zero_bytes_skipped: 0,
        unused_inode_table_bytes: 0,
        clean_journal_bytes: 0,
        groups: sb.groups_count(),
        block_uninit_groups: 0,
        chunks: 0,
        copy_file_range_bytes: 0,
        direct_bytes: 0,
        direct_read_bytes: 0,
    };
    let bs = sb.block_size();
    let copy_all = |copier: &mut Copier<'_, D>,
                    walker: &mut Walker<'_>,
                    verdict: &Verdict,
                    progress: &mut dyn Progress|
     -> Result<(), StreamError> {
        match verdict {
            Verdict::Bitmaps { .. } => walker.copy(copier, progress),
            Verdict::Whole(_) => {
                let chunk_blocks = CHUNK_BYTES as u64 / bs;
                let blocks = sb.blocks_count;
                let mut b = 0;
                while b < blocks {
                    let n = chunk_blocks.min(blocks - b);
                    copier.push_run(b, n, progress)?;
                    b += n;
                }
                copier.finish(progress)
            }
        }
    };
    match &verdict {
        Verdict::Bitmaps {
            used_blocks,
            uninit_groups,
            unused_table_blocks,
            clean_journal_blocks,
        } => {
            stats.selected_bytes = used_blocks * bs;
            stats.unused_inode_table_bytes = unused_table_blocks * bs;
            stats.clean_journal_bytes = clean_journal_blocks * bs;
            stats.block_uninit_groups = *uninit_groups;
            progress.stage(
                Stage::Stream,
                Some(
                    stats.selected_bytes
                        - stats.unused_inode_table_bytes
                        - stats.clean_journal_bytes,
                ),
            );
        }
        Verdict::Whole(reason) => {
            progress.note(&format!(
                "copying the whole filesystem (skipping zero blocks) instead of only its used blocks: {reason}"
            ));
            stats.method = StreamMethod::WholeFilesystem {
                reason: reason.clone(),
            };
            stats.selected_bytes = fs_bytes;
            progress.stage(Stage::Stream, Some(fs_bytes));
        }
    }
    let direct_files = match method {
        CopyMethod::Auto | CopyMethod::Direct if !copier.use_copy_range => dst
            .raw_file()
            .and_then(|d| direct::open(d, dst_offset, bs, written)),
        _ => None,
    };
    match direct_files {
        None => copy_all(&mut copier, &mut walker, &verdict, progress)?,
        Some(files) => std::thread::scope(|scope| {
            let (feed, writers) = direct::start(scope, src, files, dst_offset, bs, written);
            copier.direct = Some(feed);
            // The writers and the flusher end when the feed closes, also after a panic:
            // the scope waits for them before the panic goes on.
            let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                copy_all(&mut copier, &mut walker, &verdict, progress)
            }));
            if let Some(feed) = &mut copier.direct {
                feed.close();
            }
            let copied = copied.unwrap_or_else(|p| std::panic::resume_unwind(p));
            let done = writers.join();
            copier.written += done.bytes;
            // The writers stop early only on an error, which is then why the reader
            // stopped too.
            done.result.and(copied)
        })?,
    }
    stats.bytes_read = copier.read;
    stats.bytes_written = copier.written;
    stats.zero_bytes_skipped = copier.read - copier.written;
    stats.chunks = copier.chunks;
    stats.copy_file_range_bytes = copier.ranged;
    stats.direct_bytes = copier.direct_read;
    stats.direct_read_bytes = copier
        .direct
        .as_ref()
        .map_or(0, |feed| feed.o_direct_read_bytes);
    Ok(stats)
}

fn read_superblock(src: &Region) -> Result<Superblock, StreamError> {
    let mut raw = vec![0u8; SUPERBLOCK_SIZE];
    src.read_exact_at(SUPERBLOCK_OFFSET, &mut raw)
        .map_err(|source| StreamError::Read {
            path: src.path().to_path_buf(),
            offset: src.offset() + SUPERBLOCK_OFFSET,
            source,
        })?;
    Superblock::parse(&raw).map_err(|source| StreamError::Superblock {
        path: src.path().to_path_buf(),
        source,
    })
}

/// Reads runs of blocks into one buffer and writes their non-zero blocks.
struct Copier<'a, D> {
    src: &'a Region,
    dst: &'a D,
    dst_offset: u64,
    block_size: u64,
    buf: Vec<u8>,
    /// Runs go through `copy_file_range` (see [`shares_extents`]); cleared for good when
    /// the kernel refuses it for these two files.
    use_copy_range: bool,
    /// Ranges another writer owns (see [`copy_used_blocks_around`]).
    written_around: Option<&'a crate::ext::write::cow::WrittenRanges>,
    /// The destination is a block device: all-zero used blocks are zeroed there, not
    /// left as holes.
    zero_fill: bool,
    /// Runs queued and not copied yet, oldest first, each with whether it is to be read
    /// with `O_DIRECT` rather than announced for read-ahead (see [`Copier::push_run`]),
    /// and their bytes.
    ahead: std::collections::VecDeque<(u64, u64, bool)>,
    ahead_bytes: u64,
    read: u64,
    written: u64,
    ranged: u64,
    chunks: u64,
    /// The reading side of a direct copy (see the `direct` module): runs are read here
    /// and written with `O_DIRECT` by its writer threads.
    direct: Option<direct::Feed>,
    /// Bytes read for the direct copy.
    direct_read: u64,
}

impl<'a, D: OutputDevice> Copier<'a, D> {
    fn new(src: &'a Region, dst: &'a D, dst_offset: u64, block_size: u64) -> Self {
        Copier {
            src,
            dst,
            dst_offset,
            block_size,
            buf: vec![0u8; CHUNK_BYTES],
            use_copy_range: false,
            written_around: None,
            zero_fill: dst.raw_file().is_some_and(crate::blockdev::is_device_file),
            ahead: std::collections::VecDeque::new(),
            ahead_bytes: 0,
            read: 0,
            written: 0,
            ranged: 0,
            chunks: 0,
            direct: None,
            direct_read: 0,
        }
    }

    /// Queue the run of `count` blocks from block `first` and copy the runs queued
    /// before it, keeping one ahead.
    ///
    /// The kernel is asked to read the new run ahead (`POSIX_FADV_WILLNEED`) while the
    /// previous one is checked for zeros and written, so the source's reads overlap with
    /// the copy's own work instead of waiting for it: one run (at most [`CHUNK_BYTES`])
    /// ahead, so the page cache holds no more than two runs of the source at a time. A
    /// run the direct copy may read with `O_DIRECT` is not announced: its pages would
    /// only be read twice.
    /// While direct writes wait for the device beside the stream to finish (see
    /// [`Copier::copy_run`]), up to [`WAIT_READ_AHEAD_BYTES`] are announced instead: the
    /// disk reads them while it would otherwise only serve the device.
    fn push_run(
        &mut self,
        first: u64,
        count: u64,
        progress: &mut dyn Progress,
    ) -> Result<(), StreamError> {
        let (pos, len) = (first * self.block_size, count * self.block_size);
        let waiting = self.direct_waits_for_device();
        let direct_read = !waiting
            && match &mut self.direct {
                Some(feed) => feed.reads_direct(self.src, pos, len),
                None => false,
            };
        if !self.use_copy_range && !direct_read {
            self.src.will_need(pos, len);
        }
        self.ahead.push_back((first, count, direct_read));
        self.ahead_bytes += count * self.block_size;
        let (bytes, runs) = if waiting {
            (WAIT_READ_AHEAD_BYTES, WAIT_READ_AHEAD_RUNS)
        } else {
            (0, 1)
        };
        while self.ahead.len() > runs || (self.ahead.len() > 1 && self.ahead_bytes > bytes) {
            self.copy_oldest(progress)?;
        }
        Ok(())
    }

    /// Copy the runs still queued by [`Copier::push_run`].
    fn finish(&mut self, progress: &mut dyn Progress) -> Result<(), StreamError> {
        while !self.ahead.is_empty() {
            self.copy_oldest(progress)?;
        }
        Ok(())
    }

    fn copy_oldest(&mut self, progress: &mut dyn Progress) -> Result<(), StreamError> {
        match self.ahead.pop_front() {
            Some((f, c, direct_read)) => {
                self.ahead_bytes -= c * self.block_size;
                self.copy_run(f, c, direct_read, progress)
            }
            None => Ok(()),
        }
    }

    /// Direct writes are set up beside a device that has not finished yet.
    fn direct_waits_for_device(&self) -> bool {
        self.direct.is_some() && self.written_around.is_some_and(|w| !w.is_device_finished())
    }

    /// Beside a graft, direct writes wait until it has finished (see the `direct`
    /// module); then its pages are sent to the disk while the stream goes on.
    fn wait_for_device(&self, progress: &mut dyn Progress) -> Result<(), StreamError> {
        let (Some(w), Some(feed)) = (self.written_around, &self.direct) else {
            return Ok(());
        };
        while !w.wait_device_finished(WAIT_POLL) {
            if progress.is_cancelled() {
                return Err(StreamError::Cancelled);
            }
        }
        feed.device_finished();
        Ok(())
    }

    /// Copy `len` bytes at `pos` (relative to the filesystem) with `copy_file_range`.
    /// `Ok(false)` when the kernel does not offer it for these files (nothing was copied
    /// by this call then, and the caller falls back to read + write).
    fn copy_range(&mut self, pos: u64, len: u64) -> Result<bool, StreamError> {
        let (Some(src_file), Some(dst_file)) = (self.src.plain_file(), self.dst.raw_file()) else {
            return Ok(false);
        };
        let mut src_at = self.src.offset() + pos;
        let mut dst_at = self.dst_offset + pos;
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            match rustix::fs::copy_file_range(
                src_file,
                Some(&mut src_at),
                dst_file,
                Some(&mut dst_at),
                want,
            ) {
                Ok(0) => {
                    return Err(StreamError::Read {
                        path: self.src.path().to_path_buf(),
                        offset: src_at,
                        source: io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(n) => left -= n as u64,
                // Not offered for this pair (another filesystem after all, an old kernel,
                // a file system without the operation): only before any byte moved.
                Err(e)
                    if left == len
                        && [
                            rustix::io::Errno::XDEV,
                            rustix::io::Errno::OPNOTSUPP,
                            rustix::io::Errno::NOSYS,
                            rustix::io::Errno::INVAL,
                        ]
                        .contains(&e) =>
                {
                    return Ok(false)
                }
                Err(e) => {
                    return Err(StreamError::Write(output::write_error(
                        dst_file,
                        "cannot copy (copy_file_range) into",
                        e.into(),
                    )))
                }
            }
        }
        Ok(true)
    }

    /// Copy `count` blocks from block `first` (`count * block_size <= CHUNK_BYTES`);
    /// `direct_read`: read them with `O_DIRECT` (see [`Copier::push_run`]).
    fn copy_run(
        &mut self,
        first: u64,
        count: u64,
        direct_read: bool,
        progress: &mut dyn Progress,
    ) -> Result<(), StreamError> {
        if progress.is_cancelled() {
            return Err(StreamError::Cancelled);
        }
        let bs = self.block_size;
        let pos = first * bs;
        let len = (count * bs) as usize;
        if self.use_copy_range {
            if self.copy_range(pos, len as u64)? {
                self.read += len as u64;
                self.written += len as u64;
                self.ranged += len as u64;
                self.chunks += 1;
                progress.advance(self.read);
                return Ok(());
            }
            self.use_copy_range = false;
        }
        if self.direct_waits_for_device() {
            self.wait_for_device(progress)?;
        }
        if let Some(feed) = &mut self.direct {
            if !feed.push(self.src, pos, len, direct_read)? {
                // A writer failed; its error is reported instead of this one.
                return Err(StreamError::Cancelled);
            }
            self.read += len as u64;
            self.direct_read += len as u64;
            self.chunks += 1;
            progress.advance(self.read);
            return Ok(());
        }
        let buf = &mut self.buf[..len];
        self.src
            .read_exact_at(pos, buf)
            .map_err(|source| StreamError::Read {
                path: self.src.path().to_path_buf(),
                offset: self.src.offset() + pos,
                source,
            })?;
        let bsz = bs as usize;
        if self.zero_fill {
            // A block device holds old data where a file has holes: zero the used
            // all-zero blocks there.
            let mut at = 0;
            for (start, end) in nonzero_runs(buf, bsz).chain(std::iter::once((len, len))) {
                if start > at {
                    let (dst, dst_offset) = (self.dst, self.dst_offset);
                    let zero = |s: u64, e: u64| match dst.raw_file() {
                        Some(f) => crate::blockdev::zero_range(f, dst_offset + s, e - s),
                        None => dst.zero_range(dst_offset + s, e - s),
                    };
                    let (s, e) = (pos + at as u64, pos + start as u64);
                    match self.written_around {
                        None => zero(s, e),
                        Some(w) => w.write_unwritten(s, e, zero),
                    }
                    .map_err(|e| output::write_error(self.dst.backing_file(), "cannot zero", e))?;
                }
                at = end;
            }
        }
        let (dst, dst_offset) = (self.dst, self.dst_offset);
        self.written += write_nonzero(buf, pos, bsz, self.written_around, |at, data| {
            dst.write_at(dst_offset + at, data)
        })
        .map_err(|e| output::write_error(self.dst.backing_file(), "cannot write", e))?;
        self.read += len as u64;
        self.chunks += 1;
        progress.advance(self.read);
        Ok(())
    }
}

/// Write the stretches of `buf` (the filesystem's bytes from `pos` on) that are not all
/// zeros through `write(filesystem offset, bytes)`, leaving out the pieces `around` says
/// another writer wrote (see [`crate::ext::write::cow::WrittenRanges::write_unwritten`]).
/// Returns the bytes of those stretches.
fn write_nonzero<E>(
    buf: &[u8],
    pos: u64,
    block: usize,
    around: Option<&crate::ext::write::cow::WrittenRanges>,
    mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut bytes = 0;
    for (start, end) in nonzero_runs(buf, block) {
        let (from, to) = (pos + start as u64, pos + end as u64);
        let data = &buf[start..end];
        let mut piece = |s: u64, e: u64| write(s, &data[(s - from) as usize..(e - from) as usize]);
        match around {
            None => piece(from, to),
            Some(w) => w.write_unwritten(from, to, piece),
        }?;
        bytes += (end - start) as u64;
    }
    Ok(bytes)
}

/// The maximal stretches `[start, end)` of `buf` made of whole `block`-byte blocks that
/// are not all zeros, in order (`buf.len()` is a multiple of `block`).
fn nonzero_runs(buf: &[u8], block: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let len = buf.len();
    let zero = move |i: usize| crate::bytes::is_zero(&buf[i..(i + block).min(len)]);
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < len && zero(i) {
            i += block;
        }
        if i >= len {
            return None;
        }
        let start = i;
        while i < len && !zero(i) {
            i += block;
        }
        Some((start, i.min(len)))
    })
}

/// Whether `src` and `dst` sit on one filesystem that shares extents on
/// `copy_file_range(2)`: btrfs, XFS (reflink, the mkfs.xfs default since xfsprogs 5.1; on
/// an XFS without it the kernel copies in place, still without a pass through user
/// space), bcachefs, OpenZFS 2.2+ (block cloning), and NFS 4.2 and OCFS2 (server- or
/// cluster-side copy). Elsewhere — ext4, tmpfs, two filesystems — read + write is kept:
/// `copy_file_range` would copy through the page cache all the same and allocate the
/// all-zero blocks that read + write leaves as holes.
///
/// [`CopyMethod`] overrides the choice (benchmarks and tests).
fn shares_extents(src: &File, dst: &File) -> bool {
    const BTRFS: i64 = 0x9123_683e;
    const XFS: i64 = 0x5846_5342;
    const BCACHEFS: i64 = 0xca45_1a4e;
    const ZFS: i64 = 0x2fc1_2fc1;
    const NFS: i64 = 0x6969;
    const OCFS2: i64 = 0x7461_636f;
    let (Ok(a), Ok(b)) = (rustix::fs::fstat(src), rustix::fs::fstat(dst)) else {
        return false;
    };
    if a.st_dev != b.st_dev {
        return false;
    }
    rustix::fs::fstatfs(dst)
        // `f_type` is `__fsword_t`: i64 here, narrower on other architectures.
        .is_ok_and(|fs| {
            #[allow(clippy::unnecessary_cast)]
            let kind = fs.f_type as i64;
            [BTRFS, XFS, BCACHEFS, ZFS, NFS, OCFS2].contains(&kind)
        })
}

enum Verdict {
    Bitmaps {
        used_blocks: u64,
        uninit_groups: u64,
        /// Of `used_blocks`, the inode-table ends left out of the copy.
        unused_table_blocks: u64,
        /// Of `used_blocks`, the clean journal's log left out of the copy.
        clean_journal_blocks: u64,
    },
    Whole(String),
}

/// Why the bitmaps are unusable (then the whole filesystem is copied).
type Unusable = String;

/// Used blocks the copy leaves out, since the fresh output reads them as zeros.
#[derive(Clone, Copy)]
enum Skipped {
    /// [`Walker::unused_tables`].
    UnusedTables,
    /// [`Walker::clean_journal`].
    CleanJournal,
}

/// Walks the groups and produces each group's used-block bitmap.
struct Walker<'a> {
    src: &'a Region,
    sb: &'a Superblock,
    descs: DescReader<'a>,
    bitmap: Vec<u8>,
    /// Sorted `(first block, count)` bitmaps and inode tables of any group that lie
    /// outside the group they describe (flex_bg).
    foreign: Vec<(u64, u64)>,
    /// Sorted `(first block, count)` ends of inode tables that hold no inode ever used
    /// ([`GroupDesc::unused_inode_table`]): left out of the copy, where the fresh output
    /// reads them as zeros, as mke2fs and the kernel's lazy init leave them. Empty when
    /// the destination is a block device (its old data would stay there).
    unused_tables: Vec<(u64, u64)>,
    skip_unused_tables: bool,
    /// Sorted `(first block, count)` pieces of a clean internal journal's log
    /// ([`crate::ext::read::journal::idle_log`]): left out of the copy like the table
    /// ends, under the same condition.
    clean_journal: Vec<(u64, u64)>,
    skip_clean_journal: bool,
}

impl<'a> Walker<'a> {
    fn new(src: &'a Region, sb: &'a Superblock) -> Self {
        Walker {
            src,
            sb,
            descs: DescReader::new(src, sb),
            bitmap: vec![0u8; sb.block_size() as usize],
            foreign: Vec::new(),
            unused_tables: Vec::new(),
            skip_unused_tables: false,
            clean_journal: Vec::new(),
            skip_clean_journal: false,
        }
    }

    fn desc(&mut self, g: u64) -> Result<Result<GroupDesc, Unusable>, StreamError> {
        let end = group_desc::desc_position(self.sb, g) + self.sb.desc_size();
        if end > self.sb.fs_bytes() {
            return Ok(Err(format!(
                "the descriptor of group {g} lies beyond the end of the filesystem"
            )));
        }
        match self.descs.get(g) {
            Ok((d, true)) => Ok(Ok(d)),
            Ok((_, false)) => Ok(Err(format!("group {g}: descriptor checksum mismatch"))),
            Err(GroupDescError::Parse(e)) => Ok(Err(format!("group {g}: {e}"))),
            Err(GroupDescError::Io { source, .. }) => Err(StreamError::Read {
                path: self.src.path().to_path_buf(),
                offset: self.src.offset() + group_desc::desc_position(self.sb, g),
                source,
            }),
        }
    }

    /// Check everything before any byte is written; count the used blocks.
    fn analyse(&mut self) -> Result<Verdict, StreamError> {
        let sb = self.sb;
        if sb.needs_recovery() {
            return Ok(Verdict::Whole(
                "the journal needs recovery, and replaying it may reference blocks the on-disk bitmaps do not mark yet".into(),
            ));
        }
        if !sb.is_clean() {
            return Ok(Verdict::Whole(
                "the filesystem was not cleanly unmounted, so its bitmaps may be stale".into(),
            ));
        }
        if sb.has_errors() {
            return Ok(Verdict::Whole(
                "the kernel recorded errors in this filesystem, so its bitmaps may be wrong".into(),
            ));
        }
        if sb.has_ro_compat(feature::RO_COMPAT_BIGALLOC) {
            return Ok(Verdict::Whole(
                "bigalloc bitmaps track clusters, which the bitmap walker does not handle".into(),
            ));
        }
        let groups = sb.groups_count();
        let itable = group_desc::inode_table_blocks(sb);
        let mut uninit_groups = 0;
        // Pass 1: descriptors.
        for g in 0..groups {
            let d = match self.desc(g)? {
                Ok(d) => d,
                Err(why) => return Ok(Verdict::Whole(why)),
            };
            let checks = [
                ("block bitmap", d.block_bitmap, 1),
                ("inode bitmap", d.inode_bitmap, 1),
                ("inode table", d.inode_table, itable),
            ];
            for (what, start, n) in checks {
                if start < u64::from(sb.first_data_block)
                    || start.saturating_add(n) > sb.blocks_count
                {
                    return Ok(Verdict::Whole(format!(
                        "group {g}: its {what} (block {start}, {n} blocks) lies outside the filesystem ({} blocks)",
                        sb.blocks_count
                    )));
                }
            }
            // A group's bitmaps and inode table are copied whatever its bitmap says
            // (a corrupt bitmap must not drop the inodes); those that flex_bg placed in
            // another group are marked when that group's bitmap is loaded.
            if d.block_uninit(sb) {
                uninit_groups += 1;
            }
            if self.skip_unused_tables {
                if let Some(tail) = d.unused_inode_table(sb) {
                    if self.unused_tables.len() >= MAX_FOREIGN_EXTENTS {
                        self.skip_unused_tables = false;
                        self.unused_tables = Vec::new();
                    } else {
                        self.unused_tables.push(tail);
                    }
                }
            }
            let gstart = sb.group_first_block(g);
            let gend = gstart + sb.group_block_count(g);
            for (_, start, n) in checks {
                if start < gstart || start + n > gend {
                    if self.foreign.len() >= MAX_FOREIGN_EXTENTS {
                        return Ok(Verdict::Whole(
                            "too many groups keep their tables in other groups".into(),
                        ));
                    }
                    self.foreign.push((start, n));
                }
            }
        }
        self.foreign.sort_unstable();
        self.unused_tables.sort_unstable();
        if self.skip_clean_journal {
            self.clean_journal = self.clean_journal_log();
        }
        // Pass 2: bitmaps.
        let mut used = u64::from(sb.first_data_block);
        let (mut unused_tables, mut clean_journal) = (0, 0);
        for g in 0..groups {
            if let Err(why) = self.load_bitmap(g)? {
                return Ok(Verdict::Whole(why));
            }
            let n = sb.group_block_count(g) as usize;
            let marked = self.marked(n);
            used += marked;
            self.drop_ranges(g, Skipped::UnusedTables);
            let without_tables = self.marked(n);
            unused_tables += marked - without_tables;
            self.drop_ranges(g, Skipped::CleanJournal);
            clean_journal += without_tables - self.marked(n);
        }
        Ok(Verdict::Bitmaps {
            used_blocks: used,
            uninit_groups,
            unused_table_blocks: unused_tables,
            clean_journal_blocks: clean_journal,
        })
    }

    /// Fill `self.bitmap` with group `g`'s used blocks.
    fn load_bitmap(&mut self, g: u64) -> Result<Result<(), Unusable>, StreamError> {
        let sb = self.sb;
        let d = match self.desc(g)? {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
        let gstart = sb.group_first_block(g);
        let gcount = sb.group_block_count(g);
        let base = group_desc::base_metadata(sb, g);
        if d.block_uninit(sb) {
            self.bitmap.fill(0);
            for (s, n) in base {
                mark(&mut self.bitmap, gstart, gcount, s, n);
            }
            let itable = group_desc::inode_table_blocks(sb);
            for (s, n) in [
                (d.block_bitmap, 1),
                (d.inode_bitmap, 1),
                (d.inode_table, itable),
            ] {
                mark(&mut self.bitmap, gstart, gcount, s, n);
            }
        } else {
            let pos = d.block_bitmap * sb.block_size();
            self.src
                .read_exact_at(pos, &mut self.bitmap)
                .map_err(|source| StreamError::Read {
                    path: self.src.path().to_path_buf(),
                    offset: self.src.offset() + pos,
                    source,
                })?;
            if let Some(expected) = group_desc::expected_bitmap_checksum(sb, &self.bitmap) {
                if expected != d.block_bitmap_csum {
                    return Ok(Err(format!("group {g}: block bitmap checksum mismatch")));
                }
            }
            // A bitmap that disagrees with its group's free count (a flipped bit, on a
            // filesystem without bitmap checksums) is corruption that copying cannot fix:
            // the libext2fs graft would allocate over live data the bitmap calls free.
            let n = gcount as usize;
            let used = self.bitmap[..n / 8]
                .iter()
                .map(|b| u64::from(b.count_ones()))
                .sum::<u64>()
                + (n / 8 * 8..n).filter(|&i| bit(&self.bitmap, i)).count() as u64;
            let free = gcount - used.min(gcount);
            let inconsistent = |why: String| StreamError::InconsistentBitmap {
                path: self.src.path().to_path_buf(),
                group: g,
                why,
            };
            if free != u64::from(d.free_blocks) {
                return Err(inconsistent(format!(
                    "its block bitmap marks {free} blocks free, its descriptor says {}",
                    d.free_blocks
                )));
            }
            for (s, n) in base {
                if !(s..s + n).all(|b| bit(&self.bitmap, (b - gstart) as usize)) {
                    return Err(inconsistent(
                        "its block bitmap marks the group's own superblock/descriptor blocks free"
                            .into(),
                    ));
                }
            }
            // The bitmaps and inode tables kept in this group (its own, and those flex_bg
            // placed here) must be marked used too, or the graft would allocate over them.
            let itable = group_desc::inode_table_blocks(sb);
            let own = [
                (d.block_bitmap, 1),
                (d.inode_bitmap, 1),
                (d.inode_table, itable),
            ];
            let gend = gstart + gcount;
            let from = self.foreign.partition_point(|&(s, n)| s + n <= gstart);
            let here = self.foreign[from..]
                .iter()
                .take_while(|&&(s, _)| s < gend)
                .copied();
            for (s, n) in own.into_iter().chain(here) {
                let (lo, hi) = (s.max(gstart), (s + n).min(gend));
                if lo < hi && !(lo..hi).all(|b| bit(&self.bitmap, (b - gstart) as usize)) {
                    return Err(inconsistent(format!(
                        "its block bitmap marks blocks of a bitmap or inode table ({s}..{}) free",
                        s + n
                    )));
                }
            }
            for (s, n) in own {
                mark(&mut self.bitmap, gstart, gcount, s, n);
            }
        }
        // Tables of uninitialised groups that flex_bg placed in this group.
        let gend = gstart + gcount;
        let from = self.foreign.partition_point(|&(s, n)| s + n <= gstart);
        for &(s, n) in &self.foreign[from..] {
            if s >= gend {
                break;
            }
            mark(&mut self.bitmap, gstart, gcount, s, n);
        }
        Ok(Ok(()))
    }

    /// Blocks marked in the first `n` bits of the loaded bitmap.
    fn marked(&self, n: usize) -> u64 {
        let full = n / 8;
        self.bitmap[..full]
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>()
            + (full * 8..n).filter(|&i| bit(&self.bitmap, i)).count() as u64
    }

    /// The pieces of the journal's log to leave out: those of
    /// [`crate::ext::read::journal::idle_log`] when the filesystem has a clean internal
    /// journal, none when it has none, when the log may hold something, or when anything
    /// about the journal is odd (then it is copied whole, as any used block).
    fn clean_journal_log(&self) -> Vec<(u64, u64)> {
        use crate::ext::read::{journal, RawFs};
        let sb = self.sb;
        if !sb.has_compat(feature::COMPAT_HAS_JOURNAL) || sb.journal_inum == 0 {
            return Vec::new();
        }
        let Ok(fs) = RawFs::open_unreplayed(self.src.clone()) else {
            return Vec::new();
        };
        match journal::idle_log(&fs) {
            Ok(Some(pieces))
                if pieces
                    .iter()
                    .all(|&(s, n)| s >= 1 && s.saturating_add(n) <= sb.blocks_count) =>
            {
                pieces
            }
            _ => Vec::new(),
        }
    }

    /// Clear, in the loaded bitmap of group `g`, the blocks `which` leaves out (after
    /// the checks of [`Walker::load_bitmap`], which want them marked).
    fn drop_ranges(&mut self, g: u64, which: Skipped) {
        let gstart = self.sb.group_first_block(g);
        let gcount = self.sb.group_block_count(g);
        let gend = gstart + gcount;
        let ranges = match which {
            Skipped::UnusedTables => &self.unused_tables,
            Skipped::CleanJournal => &self.clean_journal,
        };
        let from = ranges.partition_point(|&(s, n)| s + n <= gstart);
        for &(s, n) in &ranges[from..] {
            if s >= gend {
                break;
            }
            let (lo, hi) = (s.max(gstart), s.saturating_add(n).min(gend));
            for b in lo..hi {
                let i = (b - gstart) as usize;
                if let Some(byte) = self.bitmap.get_mut(i / 8) {
                    *byte &= !(1 << (i % 8));
                }
            }
        }
    }

    /// Copy every used block, group by group, coalescing adjacent runs.
    fn copy<D: OutputDevice>(
        &mut self,
        copier: &mut Copier<'_, D>,
        progress: &mut dyn Progress,
    ) -> Result<(), StreamError> {
        let sb = self.sb;
        let max_run = CHUNK_BYTES as u64 / sb.block_size();
        let mut run: Option<(u64, u64)> = None;
        let flush = |run: &mut Option<(u64, u64)>,
                     copier: &mut Copier<'_, D>,
                     progress: &mut dyn Progress| {
            if let Some((s, n)) = run.take() {
                copier.push_run(s, n, progress)?;
            }
            Ok::<(), StreamError>(())
        };
        // Blocks before the first group (block 0 of a 1 KiB-block filesystem: the boot
        // sector area) are not tracked by any bitmap; copy them as they are.
        if sb.first_data_block > 0 {
            run = Some((0, u64::from(sb.first_data_block)));
        }
        for g in 0..sb.groups_count() {
            if let Err(why) = self.load_bitmap(g)? {
                // The analysis pass accepted this group: the image changed under us.
                return Err(StreamError::Read {
                    path: self.src.path().to_path_buf(),
                    offset: self.src.offset(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("source changed during the copy: {why}"),
                    ),
                });
            }
            self.drop_ranges(g, Skipped::UnusedTables);
            self.drop_ranges(g, Skipped::CleanJournal);
            let gstart = sb.group_first_block(g);
            let n = sb.group_block_count(g) as usize;
            let mut i = 0;
            while i < n {
                let byte = self.bitmap[i / 8];
                if i % 8 == 0 && byte == 0 && i + 8 <= n {
                    i += 8;
                    continue;
                }
                if bit(&self.bitmap, i) {
                    let b = gstart + i as u64;
                    match run {
                        Some((s, len)) if s + len == b && len < max_run => run = Some((s, len + 1)),
                        _ => {
                            flush(&mut run, copier, progress)?;
                            run = Some((b, 1));
                        }
                    }
                }
                i += 1;
            }
        }
        flush(&mut run, copier, progress)?;
        copier.finish(progress)
    }
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Set the bits of blocks `[s, s+n)` that fall in the group `[gstart, gstart+gcount)`.
fn mark(bitmap: &mut [u8], gstart: u64, gcount: u64, s: u64, n: u64) {
    let lo = s.max(gstart);
    let hi = s.saturating_add(n).min(gstart + gcount);
    for b in lo..hi {
        let i = (b - gstart) as usize;
        if let Some(byte) = bitmap.get_mut(i / 8) {
            *byte |= 1 << (i % 8);
        }
    }
}

impl StreamError {
    /// What the error concerns: reading and the source's structures are the input's,
    /// writing the output's, a swap area too small for its header the options'.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            StreamError::Cancelled => K::Cancelled,
            StreamError::Write(o) => o.kind(),
            StreamError::Superblock { .. }
            | StreamError::SourceTooShort { .. }
            | StreamError::NotAFilesystem { .. }
            | StreamError::InconsistentBitmap { .. } => K::Input,
            StreamError::Read { source, .. } => crate::error::io_kind(source, K::Input),
            StreamError::SwapTooSmall { .. } => K::Options,
            _ => K::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// The copy switches' reading, and the method beside other writers.
    #[test]
    fn copy_method_switches() {
        use CopyMethod::*;
        for (cfr, dio, want) in [
            ("", "", Auto),
            ("always", "", CopyFileRange),
            ("always", "never", CopyFileRange),
            ("never", "", Direct),
            ("never", "never", ReadWrite),
            ("", "never", ReadWrite),
            ("yes", "always", Auto),
        ] {
            assert_eq!(CopyMethod::from_switches(cfr, dio), want, "{cfr:?} {dio:?}");
        }
        assert_eq!(Auto.beside_other_writers(), AutoShared);
        assert_eq!(Direct.beside_other_writers(), ReadWrite);
        assert_eq!(CopyFileRange.beside_other_writers(), CopyFileRange);
    }

    /// copy_file_range and read + write give the same bytes at the same places, from a
    /// sub-region of the source into an offset of the destination, across short kernel
    /// copies; read + write leaves the all-zero block as a hole, copy_file_range does not
    /// have to.
    #[test]
    fn copy_file_range_and_read_write_agree() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src.img");
        let bs = 4096u64;
        let mut data = Vec::new();
        for i in 0..40u64 {
            let fill = if i == 7 {
                0
            } else {
                (i as u8).wrapping_mul(37) | 1
            };
            data.extend(std::iter::repeat_n(fill, bs as usize));
        }
        let mut f = File::create(&src_path).unwrap();
        f.write_all(&[0xee; 512]).unwrap(); // the filesystem starts at byte 512
        f.write_all(&data).unwrap();
        drop(f);
        let src = Region::open(&src_path)
            .unwrap()
            .sub(512, data.len() as u64)
            .unwrap();
        let run = |ranged: bool| -> (Vec<u8>, u64, u64) {
            let path = dir.path().join(if ranged { "cfr.img" } else { "rw.img" });
            let dst = File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            dst.set_len(1 << 20).unwrap();
            let mut c = Copier::new(&src, &dst, 65536, bs);
            c.use_copy_range = ranged;
            c.copy_run(0, 10, false, &mut crate::progress::NoProgress)
                .unwrap();
            c.copy_run(20, 20, false, &mut crate::progress::NoProgress)
                .unwrap();
            assert_eq!(
                c.use_copy_range, ranged,
                "copy_file_range works between two files here"
            );
            let mut out = vec![0u8; 1 << 20];
            dst.read_exact_at(&mut out, 0).unwrap();
            (out, c.written, c.ranged)
        };
        let (rw, rw_written, rw_ranged) = run(false);
        let (cfr, cfr_written, cfr_ranged) = run(true);
        assert_eq!(rw, cfr);
        assert_eq!(&rw[65536..65536 + 10 * 4096], &data[..10 * 4096]);
        assert_eq!(
            &rw[65536 + 20 * 4096..65536 + 40 * 4096],
            &data[20 * 4096..]
        );
        assert!(rw[65536 + 10 * 4096..65536 + 20 * 4096]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(
            (rw_written, rw_ranged),
            (29 * 4096, 0),
            "the zero block 7 is skipped"
        );
        assert_eq!((cfr_written, cfr_ranged), (30 * 4096, 30 * 4096));
    }

    #[test]
    fn marks_only_inside_the_group() {
        let mut bm = vec![0u8; 4];
        mark(&mut bm, 100, 32, 90, 12); // blocks 100 and 101
        mark(&mut bm, 100, 32, 131, 5); // block 131 only
        assert_eq!(bm, vec![0b11, 0, 0, 0b1000_0000]);
        assert!(bit(&bm, 0) && bit(&bm, 1) && !bit(&bm, 2) && bit(&bm, 31));
    }
}
