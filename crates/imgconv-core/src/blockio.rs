//! One way to read a disk: the [`BlockSource`] trait, the [`Region`] window over one, and
//! the [`BlockDevice`] vocabulary for the write side.
//!
//! Every kind of input (a plain image file, a block device, an XVA export, a VHD, a qcow2
//! image, a decompressed archive) is a [`BlockSource`]: positioned reads plus a size, and
//! optionally a map of the ranges that hold data. A [`Region`] is a shared source plus a
//! window `[offset, offset+len)` onto it (a partition, a filesystem). All reads are
//! positioned, so several readers (the ext reader, the block streamer, the partition
//! parser) share one source without a seek position to fight over, and a read past the
//! window is an error, never a silent read of the neighbouring partition.
//!
//! The write side (the copy-on-write device libext2fs writes through, the output file)
//! speaks [`BlockDevice`]: read-at, write-at, zero a range, flush.

use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a source is, in words and as a short tag, for `inspect` and the plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceFormat {
    /// Short tag: `raw`, `block-device`, `xva`, `vhd-fixed`, `vhd-dynamic`, `qcow2`,
    /// `gzip`, `xz`, `zstd`.
    pub kind: &'static str,
    /// One line of details (sizes, versions, what was checked).
    pub details: String,
}

/// A read-only disk: positioned reads and a size.
///
/// Implementations check what they read from their own metadata; a read inside
/// `[0, size)` that finds the image damaged is an `InvalidData` error naming the fault.
pub trait BlockSource: Send + Sync + fmt::Debug {
    /// The disk's size in bytes.
    fn size(&self) -> u64;

    /// Fill `buf` from `pos`. Callers (through [`Region`]) never ask past [`Self::size`].
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;

    /// What this source is.
    fn format(&self) -> SourceFormat;

    /// The ranges of `[pos, pos+len)` that may hold data, in order; everything else reads
    /// as zeros. `None` when the source keeps no such map (every byte may be data).
    fn data_ranges(&self, _pos: u64, _len: u64) -> Option<Vec<(u64, u64)>> {
        None
    }

    /// The file whose byte `p` is this source's byte `p`, when there is one (a plain
    /// image file): only then can data move with `copy_file_range`.
    fn plain_file(&self) -> Option<&File> {
        None
    }

    /// `[pos, pos+len)` will be read soon: start reading it ahead where the source can
    /// (`POSIX_FADV_WILLNEED` on the file ranges that hold it). Only a hint: nothing is
    /// checked or reported, and sources that cannot say do nothing.
    fn will_need(&self, _pos: u64, _len: u64) {}
}

/// The piece one `POSIX_FADV_WILLNEED` asks for: the kernel reads at most the larger of
/// the device's read-ahead window and its largest request of each call (Linux's
/// `force_page_cache_ra`), and the window is 128 KiB unless someone raised it.
pub const WILL_NEED_PIECE: u64 = 128 << 10;

/// Ask the kernel to read `[offset, offset+len)` of `file` ahead; a failure only costs
/// the read-ahead. Asked [`WILL_NEED_PIECE`] at a time: with the default 128 KiB window,
/// one call was read ahead only as far as the disk's largest request (64 MiB asked, 4 MiB
/// read), and the bench guest's stream, cold, took 1.94 s against 1.70 s asked in pieces
/// (median of 5 each; no change with an 8 MiB window).
pub fn will_need_file(file: &File, offset: u64, len: u64) {
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let n = (end - at).min(WILL_NEED_PIECE);
        let _ = rustix::fs::fadvise(
            file,
            at,
            std::num::NonZeroU64::new(n),
            rustix::fs::Advice::WillNeed,
        );
        at += n;
    }
}

/// Start writing the dirty pages of `[offset, offset+len)` of `file` back (the rest of the
/// file with `len` `None`) and return without waiting for the disk: `POSIX_FADV_DONTNEED`
/// writes the range back without waiting (`WB_SYNC_NONE`) and drops the pages already
/// clean, which nothing reads again. A failure only leaves the pages for the final sync.
pub fn start_write_back(file: &File, offset: u64, len: Option<std::num::NonZeroU64>) {
    let _ = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed);
}

/// A plain image file or a block device, read as it is.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    device: bool,
}

impl RawFile {
    /// Wrap an open file. A block device's size comes from the device itself (seeking to
    /// its end asks the kernel for it, without an ioctl); a regular file's from its
    /// metadata.
    pub fn new(mut file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let device = meta.file_type().is_block_device();
        let size = if device {
            let end = file.seek(SeekFrom::End(0))?;
            file.seek(SeekFrom::Start(0))?;
            end
        } else {
            meta.len()
        };
        Ok(RawFile { file, size, device })
    }

    /// The file back.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl BlockSource for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn format(&self) -> SourceFormat {
        SourceFormat {
            kind: if self.device { "block-device" } else { "raw" },
            details: String::new(),
        }
    }

    fn plain_file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn will_need(&self, pos: u64, len: u64) {
        will_need_file(&self.file, pos, len);
    }
}

/// The data ranges of `[pos, pos+len)` in a source of `size` bytes that maps its data in
/// fixed units of `unit` bytes (clusters, blocks, chunks): the units for which
/// `has_data(unit_index)` holds, clipped to the range, adjacent ones merged. For the
/// formats' [`BlockSource::data_ranges`].
pub fn unit_data_ranges(
    pos: u64,
    len: u64,
    size: u64,
    unit: u64,
    has_data: impl Fn(u64) -> bool,
) -> Vec<(u64, u64)> {
    let end = pos.saturating_add(len).min(size);
    let mut out: Vec<(u64, u64)> = Vec::new();
    if unit == 0 {
        return out;
    }
    let mut u = pos / unit;
    while u.saturating_mul(unit) < end {
        if has_data(u) {
            let s = (u * unit).max(pos);
            let e = u.saturating_add(1).saturating_mul(unit).min(end);
            match out.last_mut() {
                Some((ls, ll)) if *ls + *ll == s => *ll += e - s,
                _ => out.push((s, e - s)),
            }
        }
        u += 1;
    }
    out
}

/// A read-only window onto a [`BlockSource`].
#[derive(Clone)]
pub struct Region {
    source: Arc<dyn BlockSource>,
    path: Arc<PathBuf>,
    offset: u64,
    len: u64,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("format", &self.source.format().kind)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl Region {
    /// Open `path` read-only as a plain image (file or block device) and return a region
    /// covering all of it.
    pub fn open(path: &Path) -> crate::Result<Self> {
        let file = File::open(path).map_err(|e| crate::Error::io("cannot open", path, e))?;
        let raw = RawFile::new(file).map_err(|e| crate::Error::io("cannot stat", path, e))?;
        Ok(Self::whole(Arc::new(raw), path))
    }

    /// A region over an already open `file` (named `path` in errors), whole.
    pub fn from_file(file: File, path: &Path) -> io::Result<Self> {
        Ok(Self::whole(Arc::new(RawFile::new(file)?), path))
    }

    /// A region covering all of `source`, which was read from `path`.
    pub fn whole(source: Arc<dyn BlockSource>, path: &Path) -> Self {
        let len = source.size();
        Self {
            source,
            path: Arc::new(path.to_path_buf()),
            offset: 0,
            len,
        }
    }

    /// A sub-window `[offset, offset+len)` of this region. Fails if it does not fit.
    pub fn sub(&self, offset: u64, len: u64) -> io::Result<Region> {
        offset
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "range {offset}+{len} lies beyond the end of {} ({} bytes)",
                        self.path.display(),
                        self.len
                    ),
                )
            })?;
        Ok(Region {
            source: Arc::clone(&self.source),
            path: Arc::clone(&self.path),
            offset: self.offset + offset,
            len,
        })
    }

    /// The file this region reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The source under this window.
    pub fn source(&self) -> &Arc<dyn BlockSource> {
        &self.source
    }

    /// What the source is.
    pub fn format(&self) -> SourceFormat {
        self.source.format()
    }

    /// The size of the whole source (not just this window).
    pub fn source_size(&self) -> u64 {
        self.source.size()
    }

    /// The plain file under this region, whose byte `offset() + p` is the region's byte
    /// `p`; `None` for sources that translate (XVA, VHD, qcow2, ...). For
    /// `copy_file_range`.
    pub fn plain_file(&self) -> Option<&File> {
        self.source.plain_file()
    }

    /// Byte offset of this window in the source.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of this window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ranges of `[pos, pos+len)` (window positions) that may hold data; `None` when
    /// the source keeps no map.
    pub fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let len = len.min(self.len.saturating_sub(pos));
        let ranges = self.source.data_ranges(self.offset + pos, len)?;
        Some(
            ranges
                .into_iter()
                .map(|(s, l)| (s - self.offset, l))
                .collect(),
        )
    }

    /// Window positions `[pos, pos+len)` will be read soon (see
    /// [`BlockSource::will_need`]); clipped to the window.
    pub fn will_need(&self, pos: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(pos));
        if len > 0 {
            self.source.will_need(self.offset + pos, len);
        }
    }

    /// Fill `buf` from window position `pos`; reading past the window is `UnexpectedEof`.
    pub fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = buf.len() as u64;
        if pos.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {n} bytes at {pos} lies beyond the end of {} (window of {} bytes at offset {})",
                    self.path.display(),
                    self.len,
                    self.offset
                ),
            ));
        }
        self.source.read_exact_at(self.offset + pos, buf)
    }

    /// Read up to `buf.len()` bytes at `pos`, stopping at the window's end; returns the
    /// count read (0 at or past the end).
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - pos) as usize;
        self.source
            .read_exact_at(self.offset + pos, &mut buf[..n])?;
        Ok(n)
    }

    /// Read `len` bytes at `pos` into a new buffer; `len` must be at most `cap`, the
    /// caller's bound for this structure, so a size read from disk can't exhaust memory.
    pub fn read_vec(&self, pos: u64, len: u64, cap: u64) -> io::Result<Vec<u8>> {
        if len > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refusing to read {len} bytes at once (bound is {cap})"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(pos, &mut buf)?;
        Ok(buf)
    }
}

/// A window is a source too (a partition read as a disk of its own).
impl BlockSource for Region {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        Region::read_exact_at(self, pos, buf)
    }

    fn format(&self) -> SourceFormat {
        let mut f = self.source.format();
        f.details = format!("{} bytes at offset {} of {}", self.len, self.offset, f.kind);
        f
    }

    fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        Region::data_ranges(self, pos, len)
    }

    fn will_need(&self, pos: u64, len: u64) {
        Region::will_need(self, pos, len)
    }
}

/// The write side: what libext2fs's I/O channel and the output writers need of a disk.
pub trait BlockDevice {
    /// Fill `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make `len` bytes at `offset` read as zeros (a hole where the medium allows).
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make what was written durable.
    fn flush(&self) -> io::Result<()>;
}

/// A plain output file as a [`BlockDevice`]: zeroed ranges become holes.
impl BlockDevice for File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let punched = rustix::fs::fallocate(
            self,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        );
        if punched.is_ok() {
            return Ok(());
        }
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            self.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// The disk a conversion writes into, as the stream and the boot writers see it: a
/// [`BlockDevice`] that several threads may write at once (on disjoint ranges), and
/// whose raw file, when it is one, allows `copy_file_range` and device ioctls.
pub trait OutputDevice: BlockDevice + Sync + fmt::Debug {
    /// The file whose byte `p` is the disk's byte `p` (a raw image or a block device);
    /// `None` for a container such as qcow2.
    fn raw_file(&self) -> Option<&File>;
    /// The file that holds the disk, to name it in errors.
    fn backing_file(&self) -> &File;
    /// The disk's size in bytes.
    fn disk_len(&self) -> io::Result<u64>;
}

/// A raw image file or a block device.
impl OutputDevice for File {
    fn raw_file(&self) -> Option<&File> {
        Some(self)
    }

    fn backing_file(&self) -> &File {
        self
    }

    fn disk_len(&self) -> io::Result<u64> {
        crate::blockdev::len_of(self)
    }
}

impl bootsector::pio::ReadAt for Region {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        Region::read_at(self, pos, buf)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_data_ranges_clip_and_merge() {
        // Units of 10 bytes in a 45-byte source; units 1, 2 and 4 hold data.
        let has = |u: u64| matches!(u, 1 | 2 | 4);
        assert_eq!(
            unit_data_ranges(0, 45, 45, 10, has),
            vec![(10, 20), (40, 5)]
        );
        assert_eq!(
            unit_data_ranges(15, 30, 45, 10, has),
            vec![(15, 15), (40, 5)]
        );
        assert_eq!(unit_data_ranges(0, 100, 45, 0, has), vec![]);
    }

    use super::*;
    use std::io::Write;

    #[test]
    fn sub_region_reads_are_bounded_to_the_window() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&(0u8..=99).collect::<Vec<_>>()).unwrap();
        let whole = Region::open(tmp.path()).unwrap();
        assert_eq!(whole.len(), 100);
        let part = whole.sub(10, 20).unwrap();
        let mut b = [0u8; 5];
        part.read_exact_at(0, &mut b).unwrap();
        assert_eq!(b, [10, 11, 12, 13, 14]);
        assert!(
            part.read_exact_at(16, &mut b).is_err(),
            "crosses the window end"
        );
        assert_eq!(part.read_at(18, &mut b).unwrap(), 2);
        assert!(whole.sub(90, 20).is_err());
        assert!(whole.sub(u64::MAX, 2).is_err());
        assert!(part.read_vec(0, 10, 5).is_err(), "over the caller's cap");
        assert_eq!(whole.format().kind, "raw");
        assert!(whole.plain_file().is_some());
    }

    /// A window used as a source keeps its bounds: the nested window reads the right
    /// bytes and refuses to pass its own end.
    #[test]
    fn a_window_is_a_source() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&(0u8..=99).collect::<Vec<_>>()).unwrap();
        let whole = Region::open(tmp.path()).unwrap();
        let part: Arc<dyn BlockSource> = Arc::new(whole.sub(50, 20).unwrap());
        let nested = Region::whole(part, tmp.path());
        assert_eq!(nested.len(), 20);
        let mut b = [0u8; 3];
        nested.read_exact_at(17, &mut b).unwrap();
        assert_eq!(b, [67, 68, 69]);
        assert!(nested.read_exact_at(18, &mut b).is_err());
        assert!(nested.plain_file().is_none());
    }
}
