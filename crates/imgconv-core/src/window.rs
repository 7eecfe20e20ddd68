//! A byte window of the output image (or of a read-only input) as `Read + Write + Seek`,
//! for the crates that want a stream: `gpt` writes the partition table through it and
//! `fatfs` formats and fills the ESP through it, each seeing position 0 at the start of
//! its window and nothing beyond its end.
//!
//! All I/O is positioned (`pread`/`pwrite`), so the window keeps its own position and
//! never disturbs (or depends on) the file's shared seek offset.

use crate::blockio::{BlockDevice, Region};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// `[offset, offset + len)` of a file open for writing, or of any output disk.
#[derive(Debug)]
pub struct FileWindow<'a, D: BlockDevice + ?Sized = File> {
    file: &'a D,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<'a, D: BlockDevice + ?Sized> FileWindow<'a, D> {
    /// The window `[offset, offset + len)` of `file`, positioned at its start. The file
    /// must already be at least `offset + len` bytes long (a sparse `set_len` is enough);
    /// a write past the window's end is an error, so a bug can never spill into the next
    /// partition.
    pub fn new(file: &'a D, offset: u64, len: u64) -> Self {
        FileWindow {
            file,
            offset,
            len,
            pos: 0,
        }
    }

    /// Length of the window.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn seek_in(pos: u64, len: u64, to: SeekFrom) -> io::Result<u64> {
    let new = match to {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    new.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "seek before the start of the window",
        )
    })
}

impl<D: BlockDevice + ?Sized> Read for FileWindow<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        // Inside the window but past the file's end (the file was not sized first) is
        // an `UnexpectedEof` error.
        self.file.read_at(self.offset + self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: BlockDevice + ?Sized> Write for FileWindow<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.len.saturating_sub(self.pos);
        if left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write beyond the end of the partition",
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.file.write_at(self.offset + self.pos, &buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: BlockDevice + ?Sized> Seek for FileWindow<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_in(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

/// A read-only [`Region`] as `Read + Write + Seek` for `fatfs`, which wants a writable
/// stream even to read. Every write fails, so reading a donor's ESP can never change it.
#[derive(Debug)]
pub struct ReadOnlyWindow {
    region: Region,
    pos: u64,
}

impl ReadOnlyWindow {
    /// The whole region, positioned at its start.
    pub fn new(region: Region) -> Self {
        ReadOnlyWindow { region, pos: 0 }
    }
}

impl Read for ReadOnlyWindow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.region.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.region.read_at(self.pos, &mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for ReadOnlyWindow {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the donor is read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ReadOnlyWindow {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_in(self.pos, self.region.len(), to)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn window_reads_and_writes_only_inside() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(100).unwrap();
        let mut w = FileWindow::new(&f, 10, 20);
        assert_eq!(w.seek(SeekFrom::End(-5)).unwrap(), 15);
        assert_eq!(w.write(b"0123456789").unwrap(), 5, "clipped at the end");
        assert!(w.write(b"x").is_err(), "nothing past the end");
        w.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 20);
        assert_eq!(&all[15..], b"01234");
        let mut raw = [0u8; 100];
        f.read_exact_at(&mut raw, 0).unwrap();
        assert_eq!(&raw[25..30], b"01234");
        assert!(raw[30..].iter().all(|&b| b == 0));
        assert!(w.seek(SeekFrom::Current(-100)).is_err());
    }

    #[test]
    fn read_only_window_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"abcdefgh").unwrap();
        let region = Region::open(&p).unwrap().sub(2, 4).unwrap();
        let mut w = ReadOnlyWindow::new(region);
        let mut s = String::new();
        w.read_to_string(&mut s).unwrap();
        assert_eq!(s, "cdef");
        assert_eq!(
            w.write(b"x").unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdefgh");
    }
}
