//! A bounded cache of directory entries (and symlink targets) for [`super::ExtFs`].
//!
//! Every guest path [`super::ExtFs`] resolves used to cost one `ext2fs_lookup` per
//! component, and each of those reads the directory's blocks again through libext2fs's
//! 8-block I/O cache (which every multi-block data write empties): grafting a modules
//! tree re-read `/`, `/usr`, `/usr/lib`, … some 200,000 times. Here a directory is
//! listed once, on the first lookup in it, and kept as a name → inode map; its entries'
//! kinds are read from their inodes on first use. `ExtFs` is the only writer of the
//! filesystem while it is open, and it reports every entry it adds or removes
//! ([`DirCache::added`], [`DirCache::removed`]), so the cache never goes stale. A
//! directory it creates starts as a known empty listing.
//!
//! Memory is bounded: a directory with more than [`MAX_DIR_ENTRIES`] entries is not
//! kept (lookups in it go to libext2fs as before), and when the total would pass
//! [`MAX_ENTRIES`] everything is dropped and listing starts again.

use crate::guestfs::NodeKind;
use std::collections::{HashMap, HashSet};

/// Most entries kept over all directories (about 100 bytes each).
pub(super) const MAX_ENTRIES: usize = 1 << 17;
/// Largest directory kept.
pub(super) const MAX_DIR_ENTRIES: usize = 1 << 15;
/// Most symlink targets kept.
const MAX_LINKS: usize = 1 << 12;

/// One cached entry: its inode and, once read, its kind (`Some(None)` for an inode mode
/// the filesystem does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub ino: u32,
    pub kind: Option<Option<NodeKind>>,
}

/// What the cache knows about a name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// The directory is listed and has this entry.
    Hit(Entry),
    /// The directory is listed and has no such entry.
    Absent,
    /// The directory has not been listed yet: list it with [`DirCache::fill`].
    Unlisted,
    /// The directory is too large to keep: ask the library.
    Uncached,
}

#[derive(Debug, Default)]
pub(super) struct DirCache {
    dirs: HashMap<u32, HashMap<Box<[u8]>, Entry>>,
    too_big: HashSet<u32>,
    entries: usize,
    links: HashMap<u32, Box<[u8]>>,
}

impl DirCache {
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Lookup {
        match self.dirs.get(&dir) {
            Some(list) => match list.get(name) {
                Some(e) => Lookup::Hit(*e),
                None => Lookup::Absent,
            },
            None if self.too_big.contains(&dir) => Lookup::Uncached,
            None => Lookup::Unlisted,
        }
    }

    /// Keep the listing of `dir` (its live entries without `.` and `..`, in on-disk
    /// order; the first of two equal names wins, as `ext2fs_lookup` finds it). Returns
    /// false when the directory is too large to keep.
    pub fn fill(&mut self, dir: u32, listing: Vec<(Vec<u8>, u32)>) -> bool {
        if listing.len() > MAX_DIR_ENTRIES {
            self.too_big.insert(dir);
            return false;
        }
        if self.entries + listing.len() > MAX_ENTRIES {
            self.clear();
        }
        let mut map = HashMap::with_capacity(listing.len());
        for (name, ino) in listing {
            map.entry(name.into_boxed_slice())
                .or_insert(Entry { ino, kind: None });
        }
        self.entries += map.len();
        self.dirs.insert(dir, map);
        true
    }

    /// Never list `dir` (too large, or the library could not list it whole): lookups in
    /// it go to the library.
    pub fn mark_uncached(&mut self, dir: u32) {
        if let Some(old) = self.dirs.remove(&dir) {
            self.entries -= old.len();
        }
        self.too_big.insert(dir);
    }

    /// Remember the kind read from an entry's inode.
    pub fn set_kind(&mut self, dir: u32, name: &[u8], kind: Option<NodeKind>) {
        if let Some(e) = self.dirs.get_mut(&dir).and_then(|l| l.get_mut(name)) {
            e.kind = Some(kind);
        }
    }

    /// `dir` gained the entry `name` → `ino`.
    pub fn added(&mut self, dir: u32, name: &[u8], ino: u32, kind: NodeKind) {
        if let Some(list) = self.dirs.get_mut(&dir) {
            if list.len() >= MAX_DIR_ENTRIES {
                self.dirs.remove(&dir);
                self.too_big.insert(dir);
                return;
            }
            let entry = Entry {
                ino,
                kind: Some(Some(kind)),
            };
            if list.insert(name.into(), entry).is_none() {
                self.entries += 1;
            }
        }
    }

    /// `dir` lost the entry `name`.
    pub fn removed(&mut self, dir: u32, name: &[u8]) {
        if let Some(list) = self.dirs.get_mut(&dir) {
            if list.remove(name).is_some() {
                self.entries -= 1;
            }
        }
    }

    /// `dir` was just created: it is empty.
    pub fn created_dir(&mut self, dir: u32) {
        self.too_big.remove(&dir);
        self.links.remove(&dir);
        if let Some(old) = self.dirs.insert(dir, HashMap::new()) {
            self.entries -= old.len();
        }
    }

    /// An inode was freed (its number may come back as anything): forget everything,
    /// which is simpler than finding every entry that named it and happens rarely.
    pub fn inode_freed(&mut self) {
        self.clear();
    }

    pub fn link(&self, ino: u32) -> Option<&[u8]> {
        self.links.get(&ino).map(|t| &t[..])
    }

    pub fn set_link(&mut self, ino: u32, target: &[u8]) {
        if self.links.len() >= MAX_LINKS {
            self.links.clear();
        }
        self.links.insert(ino, target.into());
    }

    fn clear(&mut self) {
        self.dirs.clear();
        self.too_big.clear();
        self.links.clear();
        self.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lookups_and_updates() {
        let mut c = DirCache::default();
        assert_eq!(c.lookup(2, b"usr"), Lookup::Unlisted);
        assert!(c.fill(2, vec![(b"usr".to_vec(), 12), (b"usr".to_vec(), 99)]));
        // The first of two equal names wins.
        assert_eq!(
            c.lookup(2, b"usr"),
            Lookup::Hit(Entry {
                ino: 12,
                kind: None
            })
        );
        c.set_kind(2, b"usr", Some(NodeKind::Dir));
        assert_eq!(
            c.lookup(2, b"usr"),
            Lookup::Hit(Entry {
                ino: 12,
                kind: Some(Some(NodeKind::Dir))
            })
        );
        assert_eq!(c.lookup(2, b"etc"), Lookup::Absent);
        c.added(2, b"etc", 13, NodeKind::Dir);
        assert!(matches!(c.lookup(2, b"etc"), Lookup::Hit(e) if e.ino == 13));
        c.removed(2, b"etc");
        assert_eq!(c.lookup(2, b"etc"), Lookup::Absent);
        assert_eq!(c.entries, 1);
        // Entries added to an unlisted directory are not invented.
        c.added(5, b"x", 6, NodeKind::File);
        assert_eq!(c.lookup(5, b"x"), Lookup::Unlisted);
        c.created_dir(7);
        assert_eq!(c.lookup(7, b"x"), Lookup::Absent);
        c.mark_uncached(2);
        assert_eq!(c.lookup(2, b"usr"), Lookup::Uncached);
        assert_eq!(c.entries, 0);
        c.inode_freed();
        assert_eq!(c.lookup(2, b"usr"), Lookup::Unlisted);
        assert_eq!(c.entries, 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = DirCache::default();
        let big: Vec<(Vec<u8>, u32)> = (0..=MAX_DIR_ENTRIES as u32)
            .map(|i| (i.to_string().into_bytes(), i + 11))
            .collect();
        assert!(!c.fill(3, big));
        assert_eq!(c.lookup(3, b"1"), Lookup::Uncached);
        // Filling past the total starts again.
        let per = MAX_DIR_ENTRIES;
        for d in 0..(MAX_ENTRIES / per + 1) as u32 {
            let list = (0..per as u32)
                .map(|i| (i.to_string().into_bytes(), i + 11))
                .collect();
            assert!(c.fill(100 + d, list));
            assert!(c.entries <= MAX_ENTRIES);
        }
        assert_eq!(c.lookup(100, b"1"), Lookup::Unlisted);
        for i in 0..(MAX_LINKS + 1) as u32 {
            c.set_link(i, b"t");
        }
        assert!(c.links.len() <= MAX_LINKS);
    }
}
