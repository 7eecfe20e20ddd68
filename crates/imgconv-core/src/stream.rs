//! Copy the used blocks of the source filesystem into partition 1, sparse. (issue 3)
//!
//! The walker reads the group descriptors and block bitmaps (like `e2image -ra`) and
//! copies only allocated blocks, coalesced into runs of up to [`CHUNK_BYTES`], with
//! positioned reads and writes through one buffer allocated once: memory does not
//! depend on the image size, and the work grows with used space, not image size.
//! Blocks that are allocated but all zeros are skipped too. Everything else stays a
//! hole in the (freshly `set_len`, hence sparse and zero-filled) destination.
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
//! A group's bitmaps and inode table are always copied, whatever its bitmap says. A
//! block bitmap whose free count disagrees with its group descriptor, or that calls the
//! group's superblock/descriptor blocks free, is corruption the copy cannot fix (the
//! graft would allocate over blocks it wrongly calls free):
//! [`StreamError::InconsistentBitmap`], before anything is written.

use crate::blockio::Region;
use crate::bytes::ParseError;
use crate::output::{self, OutputError};
use crate::progress::{Progress, Stage};
use crate::source::group_desc::{self, DescReader, GroupDesc, GroupDescError};
use crate::source::superblock::{feature, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Largest single read/write: runs of used blocks are coalesced up to this size.
pub const CHUNK_BYTES: usize = 8 << 20;

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
    pub groups: u64,
    pub block_uninit_groups: u64,
    /// Read/write chunks issued.
    pub chunks: u64,
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
/// where nothing is copied. Progress: `stage(Stream, total bytes to copy)`, then
/// `advance(bytes done)` after every chunk; cancellation is checked between chunks.
pub fn copy_used_blocks(
    src: &Region,
    dst: &File,
    dst_offset: u64,
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
        .metadata()
        .map_err(|e| output::write_error(dst, "cannot stat", e))?
        .len();
    let need = dst_offset.saturating_add(fs_bytes);
    if dst_len < need {
        return Err(StreamError::DestinationTooSmall {
            len: dst_len,
            offset: dst_offset,
            need: fs_bytes,
        });
    }
    let mut copier = Copier::new(src, dst, dst_offset, sb.block_size());
    let mut walker = Walker::new(src, &sb);
    let verdict = walker.analyse()?;
    let mut stats = StreamStats {
        method: StreamMethod::Bitmaps,
        fs_bytes,
        selected_bytes: 0,
        bytes_read: 0,
        bytes_written: 0,
        zero_bytes_skipped: 0,
        groups: sb.groups_count(),
        block_uninit_groups: 0,
        chunks: 0,
    };
    match verdict {
        Verdict::Bitmaps {
            used_blocks,
            uninit_groups,
        } => {
            stats.selected_bytes = used_blocks * sb.block_size();
            stats.block_uninit_groups = uninit_groups;
            progress.stage(Stage::Stream, Some(stats.selected_bytes));
            walker.copy(&mut copier, progress)?;
        }
        Verdict::Whole(reason) => {
            progress.note(&format!(
                "copying the whole filesystem (skipping zero blocks) instead of only its used blocks: {reason}"
            ));
            stats.method = StreamMethod::WholeFilesystem { reason };
            stats.selected_bytes = fs_bytes;
            progress.stage(Stage::Stream, Some(fs_bytes));
            let bs = sb.block_size();
            let chunk_blocks = CHUNK_BYTES as u64 / bs;
            let blocks = sb.blocks_count;
            let mut b = 0;
            while b < blocks {
                let n = chunk_blocks.min(blocks - b);
                copier.copy_run(b, n, progress)?;
                b += n;
            }
        }
    }
    stats.bytes_read = copier.read;
    stats.bytes_written = copier.written;
    stats.zero_bytes_skipped = copier.read - copier.written;
    stats.chunks = copier.chunks;
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
struct Copier<'a> {
    src: &'a Region,
    dst: &'a File,
    dst_offset: u64,
    block_size: u64,
    buf: Vec<u8>,
    read: u64,
    written: u64,
    chunks: u64,
}

impl<'a> Copier<'a> {
    fn new(src: &'a Region, dst: &'a File, dst_offset: u64, block_size: u64) -> Self {
        Copier {
            src,
            dst,
            dst_offset,
            block_size,
            buf: vec![0u8; CHUNK_BYTES],
            read: 0,
            written: 0,
            chunks: 0,
        }
    }

    /// Copy `count` blocks from block `first` (`count * block_size <= CHUNK_BYTES`).
    fn copy_run(
        &mut self,
        first: u64,
        count: u64,
        progress: &mut dyn Progress,
    ) -> Result<(), StreamError> {
        if progress.is_cancelled() {
            return Err(StreamError::Cancelled);
        }
        let bs = self.block_size;
        let pos = first * bs;
        let len = (count * bs) as usize;
        let buf = &mut self.buf[..len];
        self.src
            .read_exact_at(pos, buf)
            .map_err(|source| StreamError::Read {
                path: self.src.path().to_path_buf(),
                offset: self.src.offset() + pos,
                source,
            })?;
        // Write maximal stretches of non-zero blocks.
        let bsz = bs as usize;
        let mut i = 0;
        while i < len {
            if is_zero(&buf[i..i + bsz]) {
                i += bsz;
                continue;
            }
            let start = i;
            while i < len && !is_zero(&buf[i..i + bsz]) {
                i += bsz;
            }
            let at = self.dst_offset + pos + start as u64;
            self.dst
                .write_all_at(&buf[start..i], at)
                .map_err(|e| output::write_error(self.dst, "cannot write", e))?;
            self.written += (i - start) as u64;
        }
        self.read += len as u64;
        self.chunks += 1;
        progress.advance(self.read);
        Ok(())
    }
}

/// True when `b` is all zeros (wide compares; the compiler vectorises this).
fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(16);
    let acc = words.by_ref().fold(0u128, |a, w| {
        a | u128::from_ne_bytes(w.try_into().unwrap_or([0; 16]))
    });
    acc == 0 && words.remainder().iter().all(|&x| x == 0)
}

enum Verdict {
    Bitmaps {
        used_blocks: u64,
        uninit_groups: u64,
    },
    Whole(String),
}

/// Why the bitmaps are unusable (then the whole filesystem is copied).
type Unusable = String;

/// Walks the groups and produces each group's used-block bitmap.
struct Walker<'a> {
    src: &'a Region,
    sb: &'a Superblock,
    descs: DescReader<'a>,
    bitmap: Vec<u8>,
    /// Sorted `(first block, count)` bitmaps and inode tables of any group that lie
    /// outside the group they describe (flex_bg).
    foreign: Vec<(u64, u64)>,
}

impl<'a> Walker<'a> {
    fn new(src: &'a Region, sb: &'a Superblock) -> Self {
        Walker {
            src,
            sb,
            descs: DescReader::new(src, sb),
            bitmap: vec![0u8; sb.block_size() as usize],
            foreign: Vec::new(),
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
        // Pass 2: bitmaps.
        let mut used = u64::from(sb.first_data_block);
        for g in 0..groups {
            if let Err(why) = self.load_bitmap(g)? {
                return Ok(Verdict::Whole(why));
            }
            let n = sb.group_block_count(g) as usize;
            let full = n / 8;
            used += self.bitmap[..full]
                .iter()
                .map(|b| u64::from(b.count_ones()))
                .sum::<u64>();
            used += (full * 8..n).filter(|&i| bit(&self.bitmap, i)).count() as u64;
        }
        Ok(Verdict::Bitmaps {
            used_blocks: used,
            uninit_groups,
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
            let itable = group_desc::inode_table_blocks(sb);
            for (s, n) in [
                (d.block_bitmap, 1),
                (d.inode_bitmap, 1),
                (d.inode_table, itable),
            ] {
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

    /// Copy every used block, group by group, coalescing adjacent runs.
    fn copy(
        &mut self,
        copier: &mut Copier<'_>,
        progress: &mut dyn Progress,
    ) -> Result<(), StreamError> {
        let sb = self.sb;
        let max_run = CHUNK_BYTES as u64 / sb.block_size();
        let mut run: Option<(u64, u64)> = None;
        let flush =
            |run: &mut Option<(u64, u64)>, copier: &mut Copier<'_>, progress: &mut dyn Progress| {
                if let Some((s, n)) = run.take() {
                    copier.copy_run(s, n, progress)?;
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
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 4096];
        assert!(is_zero(&b));
        b[4095] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 7]));
        assert!(!is_zero(&[0, 0, 0, 0, 0, 0, 3]));
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
