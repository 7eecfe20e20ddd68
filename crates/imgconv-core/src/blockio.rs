//! Positioned, bounded reads from an image file or a byte range of it (a partition).
//!
//! A [`Region`] is a shared read-only file plus a window `[offset, offset+len)`. All reads
//! are positioned (`pread`), so several readers (ext4-view, the block streamer, the
//! partition parser) can share one file descriptor without a seek position to fight over,
//! and a read past the window is an error, never a silent read of the neighbouring
//! partition.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A read-only window onto an image file.
#[derive(Debug, Clone)]
pub struct Region {
    file: Arc<File>,
    path: Arc<PathBuf>,
    offset: u64,
    len: u64,
}

impl Region {
    /// Open `path` read-only and return a region covering the whole file.
    pub fn open(path: &Path) -> crate::Result<Self> {
        let file = File::open(path).map_err(|e| crate::Error::io("cannot open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| crate::Error::io("cannot stat", path, e))?
            .len();
        Ok(Self {
            file: Arc::new(file),
            path: Arc::new(path.to_path_buf()),
            offset: 0,
            len,
        })
    }

    /// A region over an already open `file` (named `path` in errors), whole.
    pub fn from_file(file: File, path: &Path) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            path: Arc::new(path.to_path_buf()),
            offset: 0,
            len,
        })
    }

    /// A sub-window `[offset, offset+len)` of this region. Fails if it does not fit.
    pub fn sub(&self, offset: u64, len: u64) -> io::Result<Region> {
        let end = offset
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
        let _ = end;
        Ok(Region {
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            offset: self.offset + offset,
            len,
        })
    }

    /// The file this region reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file, for callers that need its descriptor (e.g. `copy_file_range`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Byte offset of this window in the file.
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
        self.file.read_exact_at(buf, self.offset + pos)
    }

    /// Read up to `buf.len()` bytes at `pos`, stopping at the window's end; returns the
    /// count read (0 at or past the end).
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - pos) as usize;
        self.file.read_exact_at(&mut buf[..n], self.offset + pos)?;
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

impl ext4_view::Ext4Read for Region {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.read_exact_at(start_byte, dst)
            .map_err(|e| Box::new(e) as _)
    }
}

impl bootsector::pio::ReadAt for Region {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        Region::read_at(self, pos, buf)
    }
}

#[cfg(test)]
mod tests {
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
    }
}
