//! An inode's extent tree (Documentation/filesystems/ext4/ifork.rst, "Extent Tree"):
//! `struct ext4_extent_header`, the index (`struct ext4_extent_idx`) and leaf
//! (`struct ext4_extent`) entries, and the `metadata_csum` tail of tree blocks
//! (`struct ext4_extent_tail`). Every field is read through [`crate::bytes::Fields`].

use super::blockmap::{check_disjoint, BlockMap};
use super::inode::{RawInode, FLAG_EXTENTS, FLAG_INLINE_DATA};
use super::{corrupt, malformed, MapProblem, RawError, RawFs};
use crate::bytes::Fields;
use crate::ext::csum;

/// `eh_magic`.
const MAGIC: u16 = 0xF30A;
/// Deepest tree accepted (the kernel's own limit is 5).
const MAX_DEPTH: u16 = 5;
/// Most tree blocks read for one file (a real tree of millions of extents needs a few
/// thousand; a corrupt one pointing back at itself stops here).
const MAX_NODES: usize = 1 << 14;
/// Most extents kept for one file (24 bytes each): 4 GiB of 4 KiB blocks in pieces of
/// at least 16 blocks; more is a corrupt or absurdly fragmented file.
const MAX_RUNS: usize = 1 << 20;
/// Lengths above this in `ee_len` mark an unwritten extent.
const INIT_MAX_LEN: u16 = 32768;

/// `len` blocks of a file from logical block `lblk` at physical block `pblk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub lblk: u64,
    pub pblk: u64,
    pub len: u32,
    /// Allocated but unwritten: reads as zeros.
    pub unwritten: bool,
}

struct Walk<'a> {
    fs: &'a RawFs,
    inode: &'a RawInode,
    /// Blocks the file's size covers: runs are clipped to them.
    file_blocks: u64,
    /// Clip to `file_blocks` (a reader), or keep everything the tree lists (a check).
    clip: bool,
    runs: Vec<Run>,
    /// The tree blocks below the inode, in the order walked.
    tree: Vec<u64>,
    /// Logical block where the next extent may start (extents are sorted, disjoint).
    next_lblk: u64,
    nodes: usize,
}

/// The runs of `inode`'s data, in logical order, clipped to its size; holes are gaps
/// between runs. Block-mapped and inline-data inodes are [`RawError::Unsupported`].
pub fn map(fs: &RawFs, inode: &RawInode) -> Result<Vec<Run>, RawError> {
    Ok(run_walk(fs, inode, true)?.runs)
}

/// Every block `inode`'s extent tree owns: all its extents (not clipped to the size,
/// as libext2fs frees them all) and its tree blocks, each inside the filesystem, none
/// in the group metadata, none listed twice.
pub fn walk(fs: &RawFs, inode: &RawInode) -> Result<BlockMap, RawError> {
    let map = run_walk(fs, inode, false)?;
    check_disjoint(inode.ino, &map)?;
    Ok(map)
}

fn run_walk(fs: &RawFs, inode: &RawInode, clip: bool) -> Result<BlockMap, RawError> {
    if inode.has_flag(FLAG_INLINE_DATA) {
        return Err(RawError::Unsupported {
            ino: inode.ino,
            why: "inline data",
        });
    }
    if !inode.has_flag(FLAG_EXTENTS) {
        return Err(RawError::Unsupported {
            ino: inode.ino,
            why: "a block map, not extents",
        });
    }
    let bs = fs.block_size();
    let file_blocks = inode.size.div_ceil(bs);
    if file_blocks > 1 << 32 {
        return Err(corrupt(
            inode.ino,
            format!("a size of {} bytes", inode.size),
        ));
    }
    let mut walk = Walk {
        fs,
        inode,
        file_blocks,
        clip,
        runs: Vec::new(),
        tree: Vec::new(),
        next_lblk: 0,
        nodes: 0,
    };
    let root = inode.i_block;
    let depth = walk.header(&root, None)?;
    walk.node(&root, depth)?;
    Ok(BlockMap {
        runs: walk.runs,
        indirect: walk.tree,
    })
}

impl Walk<'_> {
    /// Check a node's header; returns its depth (`want` is the depth its parent implies).
    fn header(&self, node: &[u8], want: Option<u16>) -> Result<u16, RawError> {
        let ino = self.inode.ino;
        let f = Fields::new("ext4 extent header", node);
        let u16 = |field, off| f.u16(field, off).map_err(|e| malformed(ino, e));
        if u16("eh_magic", 0)? != MAGIC {
            return Err(corrupt(ino, "an extent node without the extent magic"));
        }
        let (entries, max, depth) = (
            u16("eh_entries", 2)?,
            u16("eh_max", 4)?,
            u16("eh_depth", 6)?,
        );
        if entries > max || 12 + 12 * usize::from(max) > node.len() {
            return Err(corrupt(
                ino,
                format!("an extent node claims {entries} of {max} entries"),
            ));
        }
        if depth > MAX_DEPTH || want.is_some_and(|w| w != depth) {
            return Err(corrupt(ino, format!("an extent node of depth {depth}")));
        }
        Ok(depth)
    }

    fn node(&mut self, node: &[u8], depth: u16) -> Result<(), RawError> {
        let ino = self.inode.ino;
        let err = |e| malformed(ino, e);
        let f = Fields::new("ext4 extent node", node);
        let entries = usize::from(f.u16("eh_entries", 2).map_err(err)?);
        for i in 0..entries {
            let e = Fields::new(
                if depth > 0 {
                    "ext4 extent index"
                } else {
                    "ext4 extent"
                },
                f.bytes("extent entry", 12 + 12 * i, 12).map_err(err)?,
            );
            let u16 = |field, off| e.u16(field, off).map_err(err);
            let u32 = |field, off| e.u32(field, off).map_err(err);
            let lblk = u64::from(u32("ee_block", 0)?);
            if depth > 0 {
                let child =
                    u64::from(u32("ei_leaf_lo", 4)?) | (u64::from(u16("ei_leaf_hi", 8)?) << 32);
                if self.clip && lblk >= self.file_blocks {
                    // Everything below is past the end of the file.
                    break;
                }
                self.child(child, depth - 1)?;
                continue;
            }
            let raw_len = u16("ee_len", 4)?;
            let (len, unwritten) = if raw_len > INIT_MAX_LEN {
                (raw_len - INIT_MAX_LEN, true)
            } else {
                (raw_len, false)
            };
            let pblk =
                u64::from(u32("ee_start_lo", 8)?) | (u64::from(u16("ee_start_hi", 6)?) << 32);
            if len == 0
                || pblk == 0
                || pblk
                    .checked_add(u64::from(len))
                    .is_none_or(|end| end > self.fs.blocks_count())
            {
                return Err(corrupt(
                    ino,
                    format!("an extent of {len} blocks at block {pblk}"),
                ));
            }
            if let Some(block) = self.fs.metadata()?.first_in(pblk, u64::from(len)) {
                return Err(RawError::BadMap {
                    ino,
                    problem: MapProblem::Metadata { block },
                });
            }
            if lblk < self.next_lblk {
                return Err(corrupt(ino, "extents overlap or are out of order"));
            }
            self.next_lblk = lblk + u64::from(len);
            let len = if self.clip {
                if lblk >= self.file_blocks {
                    continue;
                }
                u64::from(len).min(self.file_blocks - lblk) as u32
            } else {
                u32::from(len)
            };
            if self.runs.len() >= MAX_RUNS {
                return Err(corrupt(ino, "more extents than any file needs"));
            }
            self.runs.push(Run {
                lblk,
                pblk,
                len,
                unwritten,
            });
        }
        Ok(())
    }

    fn child(&mut self, block: u64, depth: u16) -> Result<(), RawError> {
        let ino = self.inode.ino;
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(corrupt(ino, "an extent tree of too many blocks"));
        }
        if block == 0 || block >= self.fs.blocks_count() {
            return Err(RawError::BadMap {
                ino,
                problem: MapProblem::Outside {
                    block,
                    count: self.fs.blocks_count(),
                },
            });
        }
        if self.fs.metadata()?.first_in(block, 1).is_some() {
            return Err(RawError::BadMap {
                ino,
                problem: MapProblem::Metadata { block },
            });
        }
        self.tree.push(block);
        let mut buf = vec![0u8; self.fs.block_size() as usize];
        self.fs.read_at(block, 0, &mut buf)?;
        self.header(&buf, Some(depth))?;
        if let Some(seed) = self.inode.seed {
            // struct ext4_extent_tail follows the `eh_max` entries.
            let f = Fields::new("ext4 extent block", &buf);
            let err = |e| malformed(ino, e);
            let end = 12 + 12 * usize::from(f.u16("eh_max", 4).map_err(err)?);
            let body = f.bytes("extent entries", 0, end).map_err(err)?;
            if csum::crc32c_raw(seed, body) != f.u32("et_checksum", end).map_err(err)? {
                return Err(corrupt(
                    ino,
                    format!("extent tree block {block} fails its checksum"),
                ));
            }
        }
        self.node(&buf, depth)
    }
}
