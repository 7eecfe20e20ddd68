//! A bounded read cache between ext4-view and an image file.
//!
//! ext4-view keeps only 64 blocks in its own cache and resolves every path from the root,
//! so streaming file data (the graft reads the donor's kernel, initrd and thousands of
//! modules) evicts the directory, inode-table and extent blocks that the next path lookup
//! needs again: on the real donor that was ~300,000 positioned reads, six times the data
//! grafted. This layer remembers recent small reads (up to [`MAX_CACHED_READ`] bytes,
//! keyed by position and length) up to a fixed number of bytes, first in first out, so a
//! re-read of metadata is a memory copy. Memory is bounded by the limit, whatever the
//! image size. Large reads pass through.

use std::collections::{HashMap, VecDeque};

/// Bytes of reads remembered (the graft's metadata working set fits many times over).
pub const CACHE_BYTES: usize = 16 << 20;
/// Reads longer than this are not cached (ext4-view reads at most 32 KiB at a time).
pub const MAX_CACHED_READ: usize = 64 << 10;

type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An [`ext4_view::Ext4Read`] that caches small reads of an inner reader.
pub struct CachedRead<R> {
    inner: R,
    limit: usize,
    held: usize,
    map: HashMap<(u64, usize), Box<[u8]>>,
    order: VecDeque<(u64, usize)>,
}

impl<R: ext4_view::Ext4Read> CachedRead<R> {
    /// Cache up to `limit` bytes of `inner`'s reads.
    pub fn new(inner: R, limit: usize) -> Self {
        CachedRead {
            inner,
            limit,
            held: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<R: ext4_view::Ext4Read> ext4_view::Ext4Read for CachedRead<R> {
    fn read(&mut self, start_byte: u64, dst: &mut [u8]) -> Result<(), BoxedError> {
        let key = (start_byte, dst.len());
        if let Some(hit) = self.map.get(&key) {
            dst.copy_from_slice(hit);
            return Ok(());
        }
        self.inner.read(start_byte, dst)?;
        if dst.len() <= MAX_CACHED_READ && dst.len() <= self.limit {
            while self.held + dst.len() > self.limit {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if let Some(b) = self.map.remove(&old) {
                    self.held -= b.len();
                }
            }
            self.map.insert(key, dst.to_vec().into_boxed_slice());
            self.order.push_back(key);
            self.held += dst.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        reads: usize,
    }

    impl ext4_view::Ext4Read for Counting {
        fn read(&mut self, start: u64, dst: &mut [u8]) -> Result<(), BoxedError> {
            self.reads += 1;
            for (i, b) in dst.iter_mut().enumerate() {
                *b = (start as usize + i) as u8;
            }
            Ok(())
        }
    }

    #[test]
    fn small_reads_are_served_from_memory_within_the_limit() {
        let mut c = CachedRead::new(Counting { reads: 0 }, 8192);
        let mut a = [0u8; 4096];
        let mut b = [0u8; 4096];
        ext4_view::Ext4Read::read(&mut c, 4096, &mut a).unwrap();
        ext4_view::Ext4Read::read(&mut c, 4096, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(c.inner.reads, 1);
        // Two more blocks evict the first (first in, first out); memory stays bounded.
        ext4_view::Ext4Read::read(&mut c, 8192, &mut b).unwrap();
        ext4_view::Ext4Read::read(&mut c, 12288, &mut b).unwrap();
        assert!(c.held <= 8192);
        ext4_view::Ext4Read::read(&mut c, 4096, &mut b).unwrap();
        assert_eq!(c.inner.reads, 4);
        assert_eq!(a, b);
        // Large reads pass through.
        let mut big = vec![0u8; MAX_CACHED_READ + 1];
        ext4_view::Ext4Read::read(&mut c, 0, &mut big).unwrap();
        ext4_view::Ext4Read::read(&mut c, 0, &mut big).unwrap();
        assert_eq!(c.inner.reads, 6);
    }
}
