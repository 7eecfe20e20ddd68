//! The filesystem as the journal replay leaves it, without writing anything: a
//! [`BlockSource`] over the filesystem's region in which every block the replay names
//! reads from its last committed copy in the journal (with the journal magic put back
//! where the log escaped it). Every other byte reads from the region as it is.

use super::header::MAGIC;
use crate::blockio::{BlockSource, Region, SourceFormat};
use std::collections::BTreeMap;
use std::io;

/// The high bit of a [`Replayed`] entry: the copy was escaped in the log.
const ESCAPED: u64 = 1 << 63;

/// Filesystem blocks replaced by journal blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Filesystem block → filesystem block holding its copy, [`ESCAPED`] or-ed in.
    copies: BTreeMap<u64, u64>,
}

impl Overlay {
    /// Replace `block` by the copy in filesystem block `copy` (a later copy wins).
    pub fn insert(&mut self, block: u64, copy: u64, escaped: bool) {
        self.copies
            .insert(block, copy | if escaped { ESCAPED } else { 0 });
    }

    /// Blocks replaced.
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    /// True when the replay replaces nothing.
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }

    /// Where `block` reads from: its copy and whether that was escaped.
    pub fn get(&self, block: u64) -> Option<(u64, bool)> {
        self.copies
            .get(&block)
            .map(|&c| (c & !ESCAPED, c & ESCAPED != 0))
    }
}

/// The replayed view of a filesystem region.
#[derive(Debug)]
pub struct Replayed {
    base: Region,
    block_size: u64,
    overlay: Overlay,
}

impl Replayed {
    /// `base` read through `overlay`, in blocks of `block_size` bytes.
    pub fn new(base: Region, block_size: u64, overlay: Overlay) -> Self {
        Replayed {
            base,
            block_size,
            overlay,
        }
    }

    /// A region over the replayed view, named as `base` is.
    pub fn into_region(self) -> Region {
        let path = self.base.path().to_path_buf();
        Region::whole(std::sync::Arc::new(self), &path)
    }

    /// Copy `buf.len()` bytes of `block`'s journal copy from byte `within` of it.
    fn read_copy(&self, copy: u64, escaped: bool, within: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = copy
            .checked_mul(self.block_size)
            .and_then(|p| p.checked_add(within))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "journal copy out of range")
            })?;
        self.base.read_exact_at(at, buf)?;
        if escaped && within < 4 {
            let magic = MAGIC.to_be_bytes();
            let w = within as usize;
            let n = buf.len().min(4 - w);
            buf[..n].copy_from_slice(&magic[w..w + n]);
        }
        Ok(())
    }
}

impl BlockSource for Replayed {
    fn size(&self) -> u64 {
        self.base.len()
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let bs = self.block_size;
        let end = pos
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        let mut cur = pos;
        for (&block, &c) in self.overlay.copies.range(pos / bs..=(end - 1) / bs) {
            let start = block * bs;
            if start > cur {
                let (a, b) = ((cur - pos) as usize, (start - pos) as usize);
                self.base.read_exact_at(cur, &mut buf[a..b])?;
                cur = start;
            }
            let within = cur - start;
            let n = (bs - within).min(end - cur);
            let a = (cur - pos) as usize;
            self.read_copy(
                c & !ESCAPED,
                c & ESCAPED != 0,
                within,
                &mut buf[a..a + n as usize],
            )?;
            cur += n;
        }
        if cur < end {
            let a = (cur - pos) as usize;
            self.base.read_exact_at(cur, &mut buf[a..])?;
        }
        Ok(())
    }

    fn format(&self) -> SourceFormat {
        let mut f = self.base.format();
        f.details = format!(
            "{}{}journal replayed in memory ({} blocks)",
            f.details,
            if f.details.is_empty() { "" } else { "; " },
            self.overlay.len()
        );
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_cross_block_boundaries_and_restore_escaped_magic() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Eight blocks of 16 bytes, block n filled with n.
        for n in 0..8u8 {
            file.write_all(&[n; 16]).unwrap();
        }
        let base = Region::open(file.path()).unwrap();
        let mut o = Overlay::default();
        o.insert(2, 6, false);
        o.insert(3, 7, true);
        let r = Replayed::new(base, 16, o).into_region();
        let mut buf = vec![0u8; 48];
        r.read_exact_at(24, &mut buf).unwrap();
        assert_eq!(&buf[..8], &[1; 8]);
        assert_eq!(&buf[8..24], &[6; 16]);
        assert_eq!(&buf[24..28], &MAGIC.to_be_bytes());
        assert_eq!(&buf[28..40], &[7; 12]);
        assert_eq!(&buf[40..], &[4; 8]);
        // Starting inside the escaped bytes.
        let mut two = [0u8; 2];
        r.read_exact_at(16 * 3 + 1, &mut two).unwrap();
        assert_eq!(two, MAGIC.to_be_bytes()[1..3]);
        assert!(r.read_exact_at(16 * 8 - 1, &mut two).is_err());
    }
}
