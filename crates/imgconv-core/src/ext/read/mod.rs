//! The inode-level reader of ext2/3/4 filesystems: the one engine behind
//! [`crate::ext::read::ExtReader`]'s path API, and the donor walk's direct reader for many
//! files of one tree (the donor's modules tree).
//!
//! A directory is listed once, giving its entries' inode numbers, and a file is read by
//! inode number straight from its extents, block map or inline data in large positioned
//! reads (a path-only API that walks `/`, `/usr`, `/usr/lib`, … again for every file
//! and re-verifies each directory block was most of the graft's CPU time before).
//!
//! One on-disk structure per module: inodes ([`inode`]), in-inode extended attributes
//! ([`xattr`]), inline data ([`inline`]), extent trees ([`extent`]), block maps
//! ([`blockmap`]), directory blocks ([`dir`]), where the group metadata lies
//! ([`layout`]) and the jbd2 journal, replayed in memory when it needs recovery
//! ([`journal`]). An inode is found as inodes.rst, "Finding an Inode" says (group
//! `(ino - 1) / s_inodes_per_group`, then its slot in that group's inode table), and a
//! symlink target under 60 bytes is read from `i_block` (ifork.rst, "Symbolic Links").
//! Every number read from disk is checked before use (inode numbers against the inode
//! count, blocks against the filesystem and its metadata, sizes and counts against fixed
//! bounds) and, with `metadata_csum`, every checksum is verified. What it does not read
//! (encrypted directories, a value kept in its own inode) is [`RawError::Unsupported`].

pub mod blockmap;
pub mod dir;
pub mod extent;
pub mod inline;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod reader;
pub mod xattr;

use crate::blockio::Region;
use crate::ext::group_desc::{desc_position, expected_desc_checksum, GroupDesc};
use crate::ext::superblock::{feature, Superblock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use dir::RawDirEntry;
pub use inode::RawInode;
pub use reader::{ExtFileReader, ExtReadError, ExtReader};

/// What went wrong reading by inode.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Reading the image failed.
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The on-disk data is inconsistent.
    #[error("inode {ino}: {why}")]
    Corrupt { ino: u32, why: String },
    /// A directory has more entries than the caller allows.
    #[error("directory inode {ino} has more than {cap} entries")]
    TooManyEntries { ino: u32, cap: usize },
    /// Valid, but not something this reader handles.
    #[error("inode {ino}: {why} (not read by inode)")]
    Unsupported { ino: u32, why: &'static str },
    /// The inode's block map or extent tree names a block it may not own.
    #[error("inode {ino}: {problem}")]
    BadMap { ino: u32, problem: MapProblem },
    /// The group descriptors, which say where the metadata is, cannot be read.
    #[error("the filesystem's block groups: {0}")]
    Layout(String),
}

/// What is wrong with a block map or extent tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapProblem {
    #[error("block {block} lies outside the filesystem ({count} blocks)")]
    Outside { block: u64, count: u64 },
    #[error("block {block} is filesystem metadata (superblock, group descriptors, a bitmap or an inode table)")]
    Metadata { block: u64 },
    #[error("block {block} is listed twice")]
    Twice { block: u64 },
    #[error("more than {max} indirect blocks")]
    TooManyIndirect { max: usize },
    #[error("more than {max} runs of blocks")]
    TooManyRuns { max: usize },
}

/// A field of an on-disk structure that could not be read (see [`crate::bytes::Fields`]).
fn malformed(ino: u32, e: crate::bytes::ParseError) -> RawError {
    corrupt(ino, e.to_string())
}

fn corrupt(ino: u32, why: impl Into<String>) -> RawError {
    RawError::Corrupt {
        ino,
        why: why.into(),
    }
}

/// An ext4 filesystem in a [`Region`], read by inode number.
pub struct RawFs {
    region: Region,
    sb: Superblock,
    block_size: u64,
    /// `metadata_csum`: verify inode, extent-block and directory-block checksums.
    csum: bool,
    /// The filesystem's checksum seed (with `metadata_csum`).
    seed: u32,
    /// Inode table start per group already read.
    itables: Mutex<HashMap<u32, u64>>,
    /// The metadata blocks, read on first use.
    metadata: OnceLock<Result<layout::Metadata, String>>,
    /// What the journal replay did, when the filesystem was read through one.
    replayed: Option<Replayed>,
}

/// What an in-memory journal replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Committed transactions replayed.
    pub transactions: u32,
    /// Filesystem blocks read from the journal.
    pub blocks: usize,
}

/// Why a filesystem cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The superblock cannot be read.
    #[error("reading the superblock: {0}")]
    Io(#[source] std::io::Error),
    /// The superblock does not parse.
    #[error("{0}")]
    Superblock(#[source] crate::bytes::ParseError),
    /// Its inode geometry is impossible.
    #[error("an impossible inode geometry: {0}")]
    Geometry(String),
    /// It uses a feature this reader does not read.
    #[error("{0}")]
    Unsupported(String),
    /// Its journal needs recovery and cannot be replayed.
    #[error("its journal needs recovery and cannot be replayed in memory: {0}")]
    Journal(#[from] journal::JournalError),
}

/// The superblock of the filesystem in `region`.
fn read_superblock(region: &Region) -> Result<Superblock, OpenError> {
    let mut raw = [0u8; 1024];
    region
        .read_exact_at(1024, &mut raw)
        .map_err(OpenError::Io)?;
    Superblock::parse(&raw).map_err(OpenError::Superblock)
}

impl std::fmt::Debug for RawFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFs").finish_non_exhaustive()
    }
}

/// Groups whose inode-table position is remembered (8 bytes each).
const MAX_ITABLES: usize = 1 << 16;

impl RawFs {
    /// Open the filesystem in `region` as a mounted kernel would see it: a journal that
    /// needs recovery is replayed in memory first ([`journal`]), and everything is then
    /// read through the replayed blocks. ext2 and ext3 are read by their block maps.
    pub fn open(region: Region) -> Result<RawFs, OpenError> {
        let sb = read_superblock(&region)?;
        if !sb.needs_recovery() {
            return Self::with(region, sb, None);
        }
        let disk = Self::with(region.clone(), sb, None)?;
        let Some(replay) = journal::replay(&disk)? else {
            // An empty log: the filesystem is as it is on disk.
            return Ok(disk);
        };
        let bs = disk.block_size;
        let stats = Replayed {
            transactions: replay.transactions,
            blocks: replay.overlay.len(),
        };
        let region = journal::overlay::Replayed::new(region, bs, replay.overlay).into_region();
        let sb = read_superblock(&region)?;
        if sb.block_size() != bs {
            return Err(OpenError::Unsupported(
                "the journal replaces the superblock with one of another block size".into(),
            ));
        }
        Self::with(region, sb, Some(stats))
    }

    /// Open the filesystem in `region` as it is on disk, without replaying a journal
    /// that needs recovery (the last committed transactions are then missing).
    pub fn open_unreplayed(region: Region) -> Result<RawFs, OpenError> {
        let sb = read_superblock(&region)?;
        Self::with(region, sb, None)
    }

    fn with(
        region: Region,
        sb: Superblock,
        replayed: Option<Replayed>,
    ) -> Result<RawFs, OpenError> {
        let unsupported = |why: &str| Err(OpenError::Unsupported(why.into()));
        if sb.has_incompat(feature::INCOMPAT_ENCRYPT) {
            return unsupported("encryption");
        }
        if sb.has_incompat(feature::INCOMPAT_DIRDATA) {
            return unsupported("dirdata");
        }
        if sb.inodes_per_group == 0
            || u32::from(sb.inode_size) < inode::MIN_INODE_SIZE
            || u64::from(sb.inode_size) > sb.block_size()
        {
            return Err(OpenError::Geometry(format!(
                "{} inodes per group of {} bytes",
                sb.inodes_per_group, sb.inode_size
            )));
        }
        let csum = sb.has_ro_compat(feature::RO_COMPAT_METADATA_CSUM);
        if csum && sb.checksum_type != 1 {
            return Err(OpenError::Unsupported(format!(
                "metadata checksum type {}",
                sb.checksum_type
            )));
        }
        Ok(RawFs {
            block_size: sb.block_size(),
            csum,
            seed: if csum { sb.csum_seed() } else { 0 },
            sb,
            region,
            itables: Mutex::new(HashMap::new()),
            metadata: OnceLock::new(),
            replayed,
        })
    }

    /// What the in-memory journal replay did, when [`RawFs::open`] replayed one.
    pub fn replayed(&self) -> Option<Replayed> {
        self.replayed
    }

    /// Open any ext2/3/4 filesystem to check its inodes' block maps and extent trees
    /// (no `extent` or `filetype` needed, unlike [`RawFs::open`]); why not when this
    /// reader cannot (an unreadable superblock, bigalloc, a checksum type it does not
    /// know).
    pub fn open_for_check(region: Region) -> Result<RawFs, String> {
        let mut raw = [0u8; 1024];
        region
            .read_exact_at(1024, &mut raw)
            .map_err(|e| format!("reading the superblock: {e}"))?;
        let sb = Superblock::parse(&raw).map_err(|e| e.to_string())?;
        if sb.inodes_per_group == 0
            || u32::from(sb.inode_size) < inode::MIN_INODE_SIZE
            || u64::from(sb.inode_size) > sb.block_size()
        {
            return Err(format!("an inode size of {} bytes", sb.inode_size));
        }
        if sb.has_ro_compat(feature::RO_COMPAT_BIGALLOC) {
            return Err("bigalloc (block maps count clusters)".into());
        }
        let csum = sb.has_ro_compat(feature::RO_COMPAT_METADATA_CSUM);
        if csum && sb.checksum_type != 1 {
            return Err(format!("checksum type {}", sb.checksum_type));
        }
        Ok(RawFs {
            block_size: sb.block_size(),
            csum,
            seed: if csum { sb.csum_seed() } else { 0 },
            sb,
            region,
            itables: Mutex::new(HashMap::new()),
            metadata: OnceLock::new(),
            replayed: None,
        })
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The image range the filesystem lies in.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The filesystem checksum seed inodes are checked with (with `metadata_csum`).
    pub fn inode_seed(&self) -> Option<u32> {
        self.csum.then_some(self.seed)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Blocks in the filesystem.
    pub fn blocks_count(&self) -> u64 {
        self.sb.blocks_count
    }

    /// Inode `ino`, checked (number in range, checksum, a known file type).
    pub fn inode(&self, ino: u32) -> Result<RawInode, RawError> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(corrupt(
                ino,
                format!("inode number out of range (1..={})", self.sb.inodes_count),
            ));
        }
        let group = (ino - 1) / self.sb.inodes_per_group;
        let index = u64::from((ino - 1) % self.sb.inodes_per_group);
        let table = self.inode_table(group, ino)?;
        let size = u64::from(self.sb.inode_size);
        let pos = table
            .checked_mul(self.block_size)
            .and_then(|p| p.checked_add(index * size))
            .filter(|p| p + size <= self.sb.blocks_count.saturating_mul(self.block_size))
            .ok_or_else(|| corrupt(ino, "the inode lies outside the filesystem"))?;
        let mut buf = vec![0u8; size as usize];
        self.region
            .read_exact_at(pos, &mut buf)
            .map_err(|source| RawError::Io {
                what: format!("inode {ino}"),
                source,
            })?;
        RawInode::parse(ino, &buf, self.csum.then_some(self.seed))
    }

    /// Where group `group`'s inode table starts (descriptor checked).
    fn inode_table(&self, group: u32, ino: u32) -> Result<u64, RawError> {
        if let Some(t) = self
            .itables
            .lock()
            .ok()
            .and_then(|m| m.get(&group).copied())
        {
            return Ok(t);
        }
        let g = u64::from(group);
        if g >= self.sb.groups_count() {
            return Err(corrupt(ino, "the inode's group does not exist"));
        }
        let mut raw = vec![0u8; self.sb.desc_size() as usize];
        self.region
            .read_exact_at(desc_position(&self.sb, g), &mut raw)
            .map_err(|source| RawError::Io {
                what: format!("group descriptor {g}"),
                source,
            })?;
        let desc = GroupDesc::parse(&raw, &self.sb)
            .map_err(|e| corrupt(ino, format!("group descriptor {g}: {e}")))?;
        if expected_desc_checksum(&self.sb, g, &raw).is_some_and(|c| c != desc.checksum) {
            return Err(corrupt(
                ino,
                format!("group descriptor {g} fails its checksum"),
            ));
        }
        let table = desc.inode_table;
        if table == 0 || table >= self.sb.blocks_count {
            return Err(corrupt(
                ino,
                format!("group descriptor {g} puts the inode table outside the filesystem"),
            ));
        }
        if let Ok(mut m) = self.itables.lock() {
            if m.len() >= MAX_ITABLES {
                m.clear();
            }
            m.insert(group, table);
        }
        Ok(table)
    }

    /// The data runs of a file or directory inode, checked (see [`extent::map`] and
    /// [`blockmap::map`]).
    pub fn extents(&self, inode: &RawInode) -> Result<Vec<extent::Run>, RawError> {
        if inode.has_flag(inode::FLAG_EXTENTS) || inode.has_flag(inode::FLAG_INLINE_DATA) {
            extent::map(self, inode)
        } else {
            blockmap::map(self, inode)
        }
    }

    /// Every block `inode` owns (data and tree or indirect blocks, also past its size),
    /// checked (see [`extent::walk`] and [`blockmap::walk`]).
    pub fn owned_blocks(&self, inode: &RawInode) -> Result<blockmap::BlockMap, RawError> {
        if inode.has_flag(inode::FLAG_EXTENTS) {
            extent::walk(self, inode)
        } else {
            blockmap::walk(self, inode)
        }
    }

    /// The filesystem's metadata blocks (read from the group descriptors once).
    pub fn metadata(&self) -> Result<&layout::Metadata, RawError> {
        self.metadata
            .get_or_init(|| {
                layout::Metadata::read(&self.region, &self.sb)
                    .map(|(m, _)| m)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| RawError::Layout(e.clone()))
    }

    /// Read `buf.len()` bytes at filesystem block `block`, byte `offset` within it.
    pub(crate) fn read_at(&self, block: u64, offset: u64, buf: &mut [u8]) -> Result<(), RawError> {
        let pos = block
            .checked_mul(self.block_size)
            .and_then(|p| p.checked_add(offset))
            .ok_or_else(|| corrupt(0, format!("block {block} is out of range")))?;
        self.region
            .read_exact_at(pos, buf)
            .map_err(|source| RawError::Io {
                what: format!("block {block}"),
                source,
            })
    }

    /// The live entries of directory `inode` in on-disk order (no `.`, `..`, or
    /// non-UTF-8 names), at most `cap` of them.
    pub fn read_dir(&self, inode: &RawInode, cap: usize) -> Result<Vec<RawDirEntry>, RawError> {
        dir::read(self, inode, cap)
    }

    /// A symlink's target (at most `cap` bytes): inline data, in the inode below 60
    /// bytes, else its first block.
    pub fn read_link(self: &Arc<Self>, inode: &RawInode, cap: u64) -> Result<Vec<u8>, RawError> {
        let len = inode.size;
        if len == 0 || len > cap || len > self.block_size {
            return Err(corrupt(inode.ino, format!("a symlink of {len} bytes")));
        }
        if inode.has_flag(inode::FLAG_INLINE_DATA) {
            return inline::content(inode);
        }
        if len < inode::I_BLOCK_LEN as u64 && !inode.has_flag(inode::FLAG_EXTENTS) {
            let target = crate::bytes::Fields::new("ext4 fast symlink", &inode.i_block).bytes(
                "i_block",
                0,
                len as usize,
            );
            return Ok(target.map_err(|e| malformed(inode.ino, e))?.to_vec());
        }
        let mut out = vec![0u8; len as usize];
        let mut reader = FileReader::new(self, inode)?;
        reader.read_exact_into(&mut out)?;
        Ok(out)
    }

    /// A streaming reader over a regular file's content.
    pub fn open_file(self: &Arc<Self>, inode: &RawInode) -> Result<FileReader, RawError> {
        FileReader::new(self, inode)
    }
}

impl blockmap::Blocks for RawFs {
    fn block_size(&self) -> u64 {
        self.block_size
    }

    fn first_data_block(&self) -> u64 {
        u64::from(self.sb.first_data_block)
    }

    fn blocks_count(&self) -> u64 {
        self.sb.blocks_count
    }

    fn metadata_in(&self, start: u64, count: u64) -> Result<Option<u64>, RawError> {
        Ok(self.metadata()?.first_in(start, count))
    }

    fn read_block(&self, block: u64, buf: &mut [u8]) -> Result<(), RawError> {
        self.read_at(block, 0, buf)
    }
}

/// Reads one file's content by its extents: holes and unwritten extents read as zeros,
/// data in one positioned read per extent piece.
pub struct FileReader {
    fs: Arc<RawFs>,
    ino: u32,
    runs: Vec<extent::Run>,
    size: u64,
    pos: u64,
    /// Index of the first run that may still hold `pos`.
    next: usize,
    /// The whole content of an inline-data file (then `runs` is empty).
    inline: Option<Vec<u8>>,
}

impl FileReader {
    fn new(fs: &Arc<RawFs>, inode: &RawInode) -> Result<Self, RawError> {
        let (runs, inline) = if inode.has_flag(inode::FLAG_INLINE_DATA) {
            (Vec::new(), Some(inline::content(inode)?))
        } else {
            (fs.extents(inode)?, None)
        };
        Ok(FileReader {
            fs: Arc::clone(fs),
            ino: inode.ino,
            runs,
            size: inode.size,
            pos: 0,
            next: 0,
            inline,
        })
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.size - self.pos
    }

    fn read_exact_into(&mut self, mut buf: &mut [u8]) -> Result<(), RawError> {
        while !buf.is_empty() {
            let n = self.read_some(buf)?;
            if n == 0 {
                return Err(corrupt(self.ino, "the content ends early"));
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// Read from the current position into `buf`; 0 at the end.
    pub fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, RawError> {
        let want = (buf.len() as u64).min(self.size - self.pos) as usize;
        if want == 0 {
            return Ok(0);
        }
        if let Some(data) = &self.inline {
            // `inline::content` holds exactly `size` bytes.
            let at = self.pos as usize;
            buf[..want].copy_from_slice(&data[at..at + want]);
            self.pos += want as u64;
            return Ok(want);
        }
        let bs = self.fs.block_size;
        let lblk = self.pos / bs;
        let within = self.pos % bs;
        while self
            .runs
            .get(self.next)
            .is_some_and(|r| r.lblk + u64::from(r.len) <= lblk)
        {
            self.next += 1;
        }
        let n = match self.runs.get(self.next) {
            // Inside a run: read up to its end.
            Some(r) if r.lblk <= lblk => {
                let left = (r.lblk + u64::from(r.len) - lblk) * bs - within;
                let n = want.min(usize::try_from(left).unwrap_or(usize::MAX));
                if r.unwritten {
                    buf[..n].fill(0);
                } else {
                    self.fs
                        .read_at(r.pblk + (lblk - r.lblk), within, &mut buf[..n])?;
                }
                n
            }
            // A hole up to the next run (or the end).
            next => {
                let end = next.map_or(u64::MAX, |r| r.lblk.saturating_mul(bs));
                let n = want.min(usize::try_from(end - self.pos).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_some(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }
}
